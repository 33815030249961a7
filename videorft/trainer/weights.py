"""Which weights train, and loading saved weights back: the vision tower frozen on request,
and a resume that really loads the checkpoint's weights.

transformers 5.24's own resume loads a Qwen2.5-VL checkpoint without undoing
``save_pretrained``'s key renaming, i.e. loads nothing (issue #43701), so
:func:`resumable_trainer` gives the trainer :func:`load_saved_weights` as its full-model resume
(LoRA, FSDP and DeepSpeed checkpoints keep the Trainer's own loader).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from videorft.trainer.checkpoints import checkpoint_weight_files

log = logging.getLogger(__name__)


def vision_tower(model: Any) -> tuple[str, Any]:
    """``(name, module)`` of the model's vision encoder: the outermost submodule whose config
    is the model's ``vision_config`` (``model.visual`` in transformers 5.24's Qwen2.5-VL)."""
    config = getattr(getattr(model, "config", None), "vision_config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config.vision_config: no vision tower "
                         "to freeze (train.freeze_vision needs a vision-language model)")
    for name, module in model.named_modules():
        if module is not model and isinstance(getattr(module, "config", None), type(config)):
            return name, module
    raise ValueError(f"{type(model).__name__}: no submodule carries the vision config "
                     f"({type(config).__name__}); cannot find the vision tower to freeze")


def freeze_vision(model: Any) -> int:
    """Stop gradients to the vision tower; returns how many parameters were frozen."""
    name, tower = vision_tower(model)
    count = 0
    for param in tower.parameters():
        param.requires_grad_(False)
        count += param.numel()
    log.info("freeze_vision: %s frozen (%d parameters)", name, count)
    return count


def load_saved_weights(model: Any, folder: Path) -> None:
    """Load a checkpoint that ``save_pretrained`` wrote into ``model``, undoing the key
    conversion it applied on saving (for Qwen2.5-VL in transformers 5.24 it writes
    ``visual.*``/``model.layers.*`` for the live ``model.visual.*``/
    ``model.language_model.layers.*``).

    The Trainer's own resume (``Trainer._load_from_checkpoint``) loads the file with a plain,
    non-strict ``load_state_dict``: with those keys *nothing* loads, the model silently
    restarts from its initial weights while optimizer and step resume (transformers issue
    #43701, open). The saved name of every live tensor is what ``revert_weight_conversion`` (the
    function ``save_pretrained`` uses) maps it to; the load is checked to cover every weight.
    """
    from safetensors.torch import load_file
    from transformers.core_model_loading import revert_weight_conversion

    files = checkpoint_weight_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no model.safetensors(.index.json) to resume from")
    live = model.state_dict(keep_vars=True)
    saved_name = {id(t): k for k, t in revert_weight_conversion(model, dict(live)).items()}
    to_live: dict[str, str] = {}
    for key, tensor in live.items():
        if id(tensor) in saved_name:
            to_live.setdefault(saved_name[id(tensor)], key)
    state: dict[str, Any] = {}
    for file in files:
        for key, tensor in load_file(str(file), device="cpu").items():
            state[to_live.get(key, key)] = tensor
    result = model.load_state_dict(state, strict=False)
    loaded = {id(live[k]) for k in state if k in live}
    missing = [k for k in result.missing_keys if id(live[k]) not in loaded]  # tied: loaded
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{folder}: checkpoint does not match the model (missing "
                           f"{missing[:5]}, unexpected {result.unexpected_keys[:5]})")


def resumable_trainer(base: type) -> type:
    """``base`` (VideoGRPOTrainer) with :func:`load_saved_weights` as its full-model resume."""

    class ResumableVideoGRPOTrainer(base):
        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            from accelerate.utils import is_peft_model

            model = self.model if model is None else model
            if (is_peft_model(model) or self.is_fsdp_enabled or self.is_deepspeed_enabled
                    or not checkpoint_weight_files(Path(resume_from_checkpoint))):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            log.info("loading model weights from %s", resume_from_checkpoint)
            load_saved_weights(model, Path(resume_from_checkpoint))
            return None

    return ResumableVideoGRPOTrainer
