"""Accept token logprobs in any of the supported shapes."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..call import TokenLogprob
from ..errors import InputError
from ..models import logprobs as parsers


def parse_any(value: Any) -> list[TokenLogprob] | None:
    """A list of TokenLogprob (or their dicts), an OpenAI chat logprobs object, or a legacy completions one."""
    if value is None:
        return None
    if isinstance(value, dict):
        if "content" in value:
            return parsers.from_openai_chat(value)
        if "tokens" in value:
            return parsers.from_openai_completions(value)
        raise InputError("logprobs object has neither 'content' (chat) nor 'tokens' (completions)", source="logprobs")
    if isinstance(value, list):
        try:
            return [t if isinstance(t, TokenLogprob) else TokenLogprob.model_validate(t) for t in value]
        except ValidationError as exc:
            raise InputError(
                f"bad token logprob: {exc.errors(include_url=False)[0]['msg']}", source="logprobs"
            ) from None
    raise InputError(f"cannot read logprobs from {type(value).__name__}", source="logprobs")
