"""Load a video LLM and its processor through transformers' Auto classes.

Why the Auto classes: the class to build is named by the checkpoint's own ``config.json``
(``model_type``), so the tiny model, Qwen/Qwen2.5-VL-7B-Instruct, Qwen2-VL and a fine-tuned
copy of any of them all go through this one path. The public VideoChat-R1 code instead picked
a class by matching substrings of the path ("Qwen2-VL" in the name...), which silently builds
the wrong architecture for a renamed or locally saved checkpoint; we never do that.

Only local folders (the tiny model) are exercised by the tests: this machine has no network.
Hub ids are passed to ``from_pretrained`` unchanged, so they load wherever the Hub (or its
cache) is reachable.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from videorft.errors import VideoRFTError

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16", "auto")
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")


class ModelNotFoundError(VideoRFTError, FileNotFoundError):
    """There is no loadable model (or processor) at the given path or hub id."""


def resolve_dtype(dtype: str) -> Any:
    """The torch dtype for a name from params (``"auto"`` stays a string: the checkpoint's)."""
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
             "auto": "auto"}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return table[dtype]


def resolve_attn_implementation(requested: str | None) -> str | None:
    """``requested``, or ``"sdpa"`` (with a one-line warning) where flash-attn cannot run.

    ``flash_attention_2`` needs the flash-attn package, which compiles against the local CUDA
    and so is no pip extra of ours, and a CUDA GPU. Without them transformers fails when the
    model loads; PyTorch's SDPA computes the same attention (with its own fused kernels on a
    GPU), so a preset that asks for flash-attn still runs on any machine.
    """
    if requested != "flash_attention_2":
        return requested
    from transformers.utils import is_flash_attn_2_available

    if is_flash_attn_2_available():
        return requested
    log.warning("model.attn_implementation: flash_attention_2 needs the flash-attn package "
                "and a CUDA GPU, not found here; using sdpa (to install flash-attn: pip "
                "install flash-attn --no-build-isolation)")
    return "sdpa"


def _is_path_like(name_or_path: str) -> bool:
    """Whether the caller clearly means a local folder (a hub id is ``owner/name``)."""
    return (
        os.path.exists(name_or_path)
        or name_or_path.startswith((".", "/", "~"))
        or name_or_path.count("/") > 1
        or (os.sep != "/" and os.sep in name_or_path)
    )


def _check_local_folder(path: Path) -> None:
    """Fail early, naming the folder, instead of with a Hub error about a repo id."""
    if not path.exists():
        raise ModelNotFoundError(f"{path}: no such model folder")
    if not path.is_dir():
        raise ModelNotFoundError(f"{path}: not a folder (expected a model checkpoint folder)")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"{path}: no model in this folder (no config.json). Point at a checkpoint folder "
            "or hub id, or build the tiny default model there with "
            "videorft.model.build_tiny_model."
        )
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise ModelNotFoundError(f"{path}: has config.json but no weights (*.safetensors, *.bin)")


def load_model_and_processor(
    name_or_path: str | os.PathLike,
    *,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """``(model, processor)`` for a local checkpoint folder or a hub id, via the Auto classes.

    ``dtype`` is one of ``DTYPES`` ("auto": whatever the checkpoint was saved in).
    ``attn_implementation`` is passed through ("sdpa", "flash_attention_2", "eager"; None:
    transformers' default), except that flash_attention_2 falls back to sdpa where flash-attn
    cannot run (:func:`resolve_attn_implementation`). The model comes back in eval mode, as
    ``from_pretrained`` leaves it, with Qwen2.5-VL's vision windows batched
    (:func:`~videorft.model.vision_attention.batch_vision_windows`: the same numbers, fewer
    attention calls). Raises ModelNotFoundError naming ``name_or_path`` when nothing loadable
    is there.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch_dtype = resolve_dtype(dtype)
    name = os.fspath(name_or_path)
    if _is_path_like(name):
        path = Path(name).expanduser()
        _check_local_folder(path)
        name = str(path)
    model_kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    attn_implementation = resolve_attn_implementation(attn_implementation)
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, **model_kwargs)
        processor = AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
    except OSError as exc:  # transformers' "not a local folder nor a hub repo", offline misses
        offline = " (HF_HUB_OFFLINE is set: only cached hub models load)" if os.environ.get(
            "HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") else ""
        raise ModelNotFoundError(
            f"{name}: cannot load a model and processor from this folder or hub id{offline}: "
            f"{exc}"
        ) from exc
    except ValueError as exc:  # e.g. "Unrecognized configuration class" for a text-only LLM
        raise ModelNotFoundError(f"{name}: not an image/video-text-to-text model: {exc}") from exc
    if getattr(processor, "video_processor", None) is None:
        # AutoProcessor falls back to a bare tokenizer when the processor files are missing.
        raise ModelNotFoundError(
            f"{name}: no video processor saved with this model (got {type(processor).__name__}); "
            "save the processor next to the weights (processor.save_pretrained)"
        )
    from videorft.model.vision_attention import batch_vision_windows

    batch_vision_windows(model)
    return model, processor
