"""`policy check` verifies every artifact a policy names, as the Guard does when it starts: a flipped byte in
any kind of artifact, a missing manifest, or an artifact made with another embedder makes it exit non-zero
naming the file and the fix (it used to say "ok" and the failure showed only at load)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from guardrails_uq import ArtifactError, Guard, TokenLogprob
from guardrails_uq.artifacts import seal
from guardrails_uq.cli import main
from guardrails_uq.embeddings import default_embedder
from guardrails_uq.guidelines import GuidelineIndex, GuidelineLibrary
from guardrails_uq.uncertainty.deferral import PostHocDeferral

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # builds the guideline index with the packaged MiniLM

POLICY = """version: 1
name: every-artifact
guidelines: {library: guidelines/safety.yaml, calibration: calibration/guidelines.json}
retrieval: {calibration: calibration/nimbus.json}
injection: {calibration: calibration/injection.json}
provenance: {index: indexes/unsafe-corpus, calibration: indexes/unsafe-corpus.calibration.json, verify: size}
uncertainty: {calibration: calibration/deferral.json, deferral: calibration/posthoc.json}
grounding: {calibration: calibration/grounding.json}
rules:
  - {name: harmful, at: input, when: "guidelines.flagged", action: abstain}
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy folder holding one artifact of each kind (shipped calibrations, the unsafe-corpus index and
    its calibration, the guideline library's saved index)."""
    from guardrails_uq.provenance.evaldata import ensure_unsafe_index

    ensure_unsafe_index(ROOT / "policies" / "indexes" / "unsafe-corpus")
    folder = tmp_path_factory.mktemp("artifacts")
    shutil.copytree(ROOT / "policies" / "calibration", folder / "calibration")
    (folder / "guidelines").mkdir()
    shutil.copy(ROOT / "policies" / "guidelines" / "safety.yaml", folder / "guidelines" / "safety.yaml")
    (folder / "indexes").mkdir()
    shutil.copytree(ROOT / "policies" / "indexes" / "unsafe-corpus", folder / "indexes" / "unsafe-corpus")
    shutil.copy(
        ROOT / "policies" / "indexes" / "unsafe-corpus.calibration.json",
        folder / "indexes" / "unsafe-corpus.calibration.json",
    )
    GuidelineIndex.open(GuidelineLibrary.load(folder / "guidelines" / "safety.yaml"), default_embedder())
    answers = [[TokenLogprob(token=f"t{i}", logprob=-0.1 * (i % 7) - 0.01 * j) for j in range(5)] for i in range(20)]
    PostHocDeferral().fit(answers, [i % 7 < 4 for i in range(20)]).save(folder / "calibration" / "posthoc.json")
    (folder / "policy.yaml").write_text(POLICY, encoding="utf-8")
    return folder


@pytest.fixture
def folder(prepared: Path, tmp_path: Path) -> Path:
    shutil.copytree(prepared, tmp_path / "p")
    return tmp_path / "p"


def _check(folder: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["policy", "check", str(folder / "policy.yaml"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_intact_policy_folder_is_ok(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _check(folder, capsys)
    assert code == 0, err
    assert out.startswith("ok:") and "error" not in err


def _flip(path: Path) -> None:
    """Change one byte: a digit of a JSON artifact (so it still parses), any byte of a binary file."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".json":
        at = next(i for i in range(len(data) // 2, len(data)) if chr(data[i]).isdigit())
        data[at] = ord("7") if data[at] != ord("7") else ord("3")
    else:
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


ARTIFACTS = [
    "calibration/guidelines.json",
    "calibration/nimbus.json",
    "calibration/injection.json",
    "calibration/deferral.json",
    "calibration/posthoc.json",
    "calibration/grounding.json",
    "indexes/unsafe-corpus.calibration.json",
    "indexes/unsafe-corpus/vocab.txt",
    "indexes/unsafe-corpus/shard-00000/sa.npy",
    "indexes/unsafe-corpus/shard-00000/tokens.npy",
    "guidelines/safety.yaml.index/vectors.npy",
    "guidelines/safety.yaml.index/index.faiss",
]


@pytest.mark.parametrize("relative", ARTIFACTS)
def test_a_flipped_byte_in_any_artifact_fails_the_check(
    folder: Path, relative: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _flip(folder / relative)
    code, out, err = _check(folder, capsys)
    assert code == 2 and not out.startswith("ok"), (out, err)
    assert relative.split("/")[-1] in err and "fix:" in err, err


def test_a_missing_manifest_fails_the_check(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "indexes" / "unsafe-corpus" / "manifest.json").unlink()
    code, _, err = _check(folder, capsys)
    assert code == 2 and "unsafe-corpus" in err and "no manifest.json" in err and "fix:" in err, err


def _reseal(path: Path, update: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    update(data)
    path.write_text(json.dumps(seal(data)), encoding="utf-8")


FOREIGN: dict[str, Callable[[dict], None]] = {
    "calibration/guidelines.json": lambda d: d.update(embedder="intfloat/e5-small@1"),
    "calibration/injection.json": lambda d: d.update(embedder="intfloat/e5-small@1"),
    "calibration/grounding.json": lambda d: d.update(embedder="intfloat/e5-small@1"),
    "calibration/nimbus.json": lambda d: d.update(fingerprint="intfloat/e5-small@1+faiss-ip"),
}


@pytest.mark.parametrize("relative", sorted(FOREIGN))
def test_an_artifact_made_with_another_embedder_fails_the_check(
    folder: Path, relative: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _reseal(folder / relative, FOREIGN[relative])  # a valid, sealed artifact: only its embedder differs
    code, _, err = _check(folder, capsys)
    assert code == 2 and relative.split("/")[-1] in err and "e5-small" in err and "fix:" in err, err


def test_the_embedder_the_app_passes_is_the_one_checked(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(folder, capsys, "--embedder", "intfloat/e5-small@1")
    assert code == 2 and "intfloat/e5-small@1" in err
    for name in ("guidelines:", "retrieval:", "injection:", "grounding:"):
        assert name in err, err  # every failing check is reported, not only the first


def test_the_guard_refuses_a_damaged_guideline_index_as_the_check_does(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One verification serves both: the Guard never uses (nor silently replaces) a damaged saved index."""
    _flip(folder / "guidelines" / "safety.yaml.index" / "index.faiss")
    with pytest.raises(ArtifactError, match=r"index\.faiss.*checksum mismatch"):
        Guard.from_policy(folder / "policy.yaml", audit=False)
