"""TRL's ``GRPOConfig`` (and peft's ``LoraConfig``) from ``params.train``, and the check that
the data can fill one generation batch under it.

:func:`grpo_config` maps every ``train.*`` knob onto TRL's ``GRPOConfig`` (the field names are
TRL's). ``warmup_ratio`` becomes ``warmup_steps`` (transformers 5 reads a float in [0, 1) there
as a ratio of the total steps and has no ``warmup_ratio`` any more);
``remove_unused_columns=False`` because the rewards read ``task``/``solution`` and the video
loader ``frames_key``/``sample_fps``; ``report_to="none"`` because metrics go through
:class:`~videorft.trainer.metrics.MetricsCallback`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videorft.errors import ConfigError
from videorft.params import LoraParams, Params


def grpo_config(params: Params, output_dir: Path) -> Any:
    """TRL ``GRPOConfig`` for ``params.train``, writing checkpoints to ``output_dir``.

    Must be built before the model is loaded: with DeepSpeed ZeRO-3 the arguments register the
    config that makes ``from_pretrained`` shard the weights as they load. The ``train`` fields
    that are no GRPOConfig field act elsewhere: ``freeze_vision``, ``lora`` and
    ``reward_weights`` in :func:`~videorft.trainer.grpo.train_grpo`,
    ``num_processes``/``accelerate_config`` at launch (stage ``train``), ``shared_prompt`` and
    ``compile_generation`` on the trainer (:class:`~videorft.trainer.video_grpo.VideoGRPOTrainer`).
    """
    import torch
    from trl import GRPOConfig

    t = params.train
    return GRPOConfig(
        output_dir=str(output_dir),
        # GRPO
        num_generations=t.num_generations,
        beta=t.beta,
        epsilon=t.epsilon,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        temperature=t.temperature,
        top_p=t.top_p,
        max_completion_length=t.max_completion_length,
        cache_implementation=None if t.cache_implementation == "dynamic" else
        t.cache_implementation,
        num_iterations=t.num_iterations,
        # optimisation
        learning_rate=t.learning_rate,
        optim=t.optim,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio if t.warmup_ratio > 0 else 0,  # float < 1: ratio
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        # transformers 5's names for gradient_checkpointing(_kwargs), which mirror them
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        bf16=t.mixed_precision == "bf16",
        fp16=t.mixed_precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        seed=t.seed,
        shuffle_dataset=t.shuffle_dataset,
        # checkpoints and logs
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        save_only_model=False,  # optimizer, scheduler and RNG states too: exact resume
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        report_to="none",
        log_completions=False,
        disable_tqdm=False,
        remove_unused_columns=False,
    )


def lora_config(lora: LoraParams) -> Any:
    """peft ``LoraConfig`` for the language model's projections named in ``lora``."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def check_enough_prompts(n_rows: int, args: Any, source: str) -> None:
    """Fail loudly when the split cannot fill one generation batch.

    TRL's sampler drops an incomplete batch, so a too-small split "trains" zero steps and
    reports success; that must be an error naming the numbers to change instead.
    """
    needed = args.generation_batch_size // args.num_generations
    if n_rows < needed:
        raise ConfigError(
            f"{source}: {n_rows} training prompt(s), but one generation batch needs {needed} "
            f"(per_device_train_batch_size {args.per_device_train_batch_size} x processes "
            f"{args.world_size} x steps_per_generation {args.steps_per_generation} / "
            f"num_generations {args.num_generations}); lower the batch size or add data")
