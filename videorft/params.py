"""params.yaml: the single source of every knob, validated; presets are overlay files.

Layout of params.yaml (see the file itself for every field's meaning):

- ``preset``: the name of the preset last applied (informational).
- ``paths``: where each stage reads and writes; dvc.yaml interpolates the same keys.
- one section per stage (``download``, ``extract_frames``, ``build_dataset``, ...): the
  *effective* values, which is what DVC tracks, key by key, to decide what to rerun.

Presets are files beside it, ``configs/presets/<name>.yaml`` (``tiny-cpu``, ``videochat-r1``,
...): each a complete overlay with a header saying how to run it. Applying one writes its values
into the stage sections, as ``dvc exp run -S`` would, so DVC sees exactly what changed; the
preset files themselves are no stage's dependency. Every preset sets the same keys, so
switching presets is reversible. A path to a YAML file works as a preset too.

Edits keep the file's comments (ruamel.yaml round trip) and are written atomically.
"""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from videorft.errors import ConfigError, one_line
from videorft.io import atomic_write_text
from videorft.model.tiny_spec import TinyModelSpec
from videorft.video_tasks import CANONICAL as CANONICAL_TASKS
from videorft.video_tasks import get as get_task

PARAMS_FILE = "params.yaml"
#: Where the named presets live, relative to the folder that holds params.yaml.
PRESETS_DIR = Path("configs") / "presets"
PRESET_SUFFIXES = (".yaml", ".yml")
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SOURCE_TYPES = ("synthetic", "charades_sta", "activitynet", "got10k", "nextgqa", "mcq")


class _Section(BaseModel):
    # Unknown keys are typos; NaN and infinity are never a meaningful setting (a NaN learning
    # rate trains nothing, silently).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PathsParams(_Section):
    """Where the stages read and write, relative to the project root."""

    raw: str = Field(
        "data/raw", description="Downloaded (or generated) datasets, one folder per source."
    )
    records: str = Field(
        "data/records.jsonl", description="All sources' samples in the canonical record schema."
    )
    frames: str = Field(
        "data/frames", description="Frame store: sampled, resized frames per video."
    )
    dataset: str = Field(
        "data/dataset", description="train.jsonl / val.jsonl with prompts, read by the trainer."
    )
    reports: str = Field("reports", description="Small JSON reports that DVC tracks as metrics.")
    base_model: str = Field(
        "models/base",
        description="Stage base_model's output: the built tiny model, or a pointer to the "
        "hub/local model named in model.name_or_path.",
    )
    warm_start: str = Field(
        "models/warm_start", description="Supervised warm-start model (or a 'skipped' marker)."
    )
    checkpoints: str = Field(
        "models/checkpoints",
        description="GRPO checkpoints (full training state); persisted so a re-run resumes.",
    )
    trained: str = Field("models/trained", description="The final GRPO model and processor.")
    evaluation: str = Field(
        "reports/eval",
        description="Stage evaluate's outputs: raw predictions per model (persisted, so a "
        "crashed evaluation resumes), per-item scores, metrics, the comparison table, plots.",
    )
    package: str = Field(
        "models/package",
        description="Stage publish's package: weights, processor, model card, manifest.",
    )

    @field_validator("*")
    @classmethod
    def _inside_the_project(cls, path: str) -> str:
        # Stages write to these folders and DVC tracks them: they must stay in the checkout.
        parts = PurePosixPath(path.replace("\\", "/")).parts
        if not path or path.startswith(("/", "~")) or ".." in parts or ":" in path:
            raise ValueError(f"{path!r} must be a relative path inside the project (no '..', "
                             "no absolute path)")
        return path


class SourceParams(_Section):
    """One dataset to fetch and convert to canonical records."""

    name: str = Field(description="Unique name: folder under paths.raw and prefix of record ids.")
    type: Literal[SOURCE_TYPES] = Field(
        description="Native format: " + ", ".join(SOURCE_TYPES) + "."
    )  # type: ignore[valid-type]
    uri: str | None = Field(
        None,
        description="Where to fetch it: a local path, http(s)://, s3://bucket/prefix or "
        "hf://datasets/OWNER/NAME[@REVISION][/SUBDIR]. Archives (.zip, .tar[.gz|.bz2|.xz]) are "
        "unpacked. Not used by 'synthetic'.",
    )
    sha256: str | None = Field(
        None, description="Expected SHA-256 of a downloaded file (http/s3 archives)."
    )
    annotation: str | None = Field(
        None, description="Annotation file (or folder, for got10k) inside the fetched data."
    )
    video_dir: str = Field("videos", description="Folder of the videos inside the fetched data.")
    video_ext: str = Field(".mp4", description="File extension of the videos.")
    split: Literal["train", "val", "test"] | None = Field(
        None,
        description="Force every sample of this source into one split; null: build_dataset "
        "splits it.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Source-specific options (synthetic: generator settings; got10k: fps, "
        "max_sequences).",
    )

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, name: str) -> str:
        # The name becomes a folder under paths.raw: "../x" or "/x" would write outside it.
        if not SOURCE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} must be a plain folder name: letters, digits, '.', '_' "
                             "and '-', starting with a letter or digit")
        return name


class S3Params(_Section):
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint (MinIO, SeaweedFS, ...); credentials come from the "
        "usual AWS environment variables or profile, never from this file.",
    )
    anon: bool = Field(False, description="Anonymous access to public buckets.")


class DownloadParams(_Section):
    """Stage `download`: fetch every source and convert it to canonical records."""

    sources: list[SourceParams] = Field(description="The datasets of this run.")
    on_invalid: Literal["error", "skip"] = Field(
        "error",
        description="A malformed record stops the stage, naming its file and id ('error'), or "
        "is left out and listed in reports/rejects.json ('skip').",
    )
    duration_tolerance_s: float = Field(
        0.0, ge=0, description="Spans may end this many seconds past the stated video duration."
    )
    http_timeout_s: float = Field(60.0, gt=0, description="Socket timeout of http(s) downloads.")
    max_unpacked_gb: float = Field(
        500.0, gt=0, description="An archive that would unpack to more than this many GB (10^9 "
        "bytes) is refused before anything is written."
    )
    max_compression_ratio: float = Field(
        100.0, gt=0, description="An archive that would unpack to more than this many times its "
        "own size is refused (zip bombs; video archives unpack at about 1:1)."
    )
    s3: S3Params = Field(default_factory=S3Params)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceParams]) -> list[SourceParams]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {', '.join(dupes)}")
        if not sources:
            raise ValueError("at least one source is needed")
        return sources


class ExtractFramesParams(_Section):
    """Stage `extract_frames`: Qwen2.5-VL frame sampling, done once, stored for training."""

    fps: float = Field(2.0, gt=0, description="Sampling rate in frames per second (Qwen2.5-VL: 2).")
    min_frames: int = Field(
        4, ge=2, description="At least this many frames per video (rounded up to even)."
    )
    max_frames: int = Field(
        768, ge=2, description="At most this many frames per video (rounded down to even)."
    )
    min_pixels: int = Field(
        16 * 28 * 28, gt=0, description="Per-frame pixel floor (paper: 16*28*28)."
    )
    max_pixels: int = Field(
        768 * 28 * 28, gt=0, description="Per-frame pixel cap (Qwen2.5-VL: 768*28*28)."
    )
    total_pixels: int = Field(
        3584 * 28 * 28,
        gt=0,
        description="Visual budget per video; per-frame cap = total/frames*2 (paper: 3584*28*28).",
    )
    patch_factor: int = Field(
        28, gt=0, description="Frame sides are multiples of this (patch 14 x merge 2)."
    )
    backend: Literal["pyav", "decord"] = Field(
        "pyav", description="Decoder: PyAV (default) or decord."
    )
    workers: int = Field(2, ge=1, description="Worker processes decoding videos in parallel.")
    executor: Literal["local", "dask"] = Field(
        "local",
        description="local: a process pool of `workers`; dask: fan the videos out over a Dask "
        "cluster (`dask_address`, or a local cluster of `workers` processes when null).",
    )
    dask_address: str | None = Field(
        None, description="Scheduler address of a running Dask cluster, e.g. tcp://host:8786."
    )
    timeout_s: float = Field(
        120.0, gt=0, description="A video taking longer than this is quarantined."
    )
    max_quarantine_fraction: float = Field(
        0.05, ge=0, le=1, description="Fail the stage when more than this share of videos is bad."
    )

    @model_validator(mode="after")
    def _ranges(self) -> ExtractFramesParams:
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames ({self.min_frames}) must not exceed max_frames "
                             f"({self.max_frames})")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels "
                             f"({self.max_pixels})")
        return self


def _registered_task(name: str) -> str:
    """A task name the video-task registry holds: a new task is its module and registry line,
    with no list to edit here."""
    get_task(name)  # UnknownTaskError (a ValueError) names the known tasks
    return name


#: A video task's name, checked against the registry (:mod:`videorft.video_tasks`).
Task = Annotated[str, AfterValidator(_registered_task)]


class BuildDatasetParams(_Section):
    """Stage `build_dataset`: prompts and train/val split."""

    tasks: list[Task] = Field(
        default_factory=lambda: list(CANONICAL_TASKS),
        description="Tasks kept in the dataset.",
    )
    thinking: bool = Field(
        True, description="Ask for <think> reasoning (VideoChat-R1-thinking) or answers only."
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of videos held out for validation."
    )
    seed: int = Field(
        0, description="Seed of the train/val split (split by video, never by query)."
    )
    max_samples_per_task: int | None = Field(
        None, ge=1, description="Cap per task and split (null: all)."
    )


class TinyModelParams(_Section):
    """The embedded default model: a randomly initialised, tiny Qwen2.5-VL built offline. The
    sizes default to :class:`~videorft.model.tiny_spec.TinyModelSpec`'s (256 K parameters)."""

    seed: int = Field(0, description="Seed of the random weights (the build is deterministic).")
    hidden_size: int = Field(TinyModelSpec.hidden_size, gt=0, description="Language-model "
                             "width (also the vision merger's output).")
    num_hidden_layers: int = Field(TinyModelSpec.num_hidden_layers, gt=0,
                                   description="Language-model layers.")
    num_attention_heads: int = Field(TinyModelSpec.num_attention_heads, gt=0,
                                     description="Attention heads (hidden_size divisible by it).")
    num_key_value_heads: int = Field(TinyModelSpec.num_key_value_heads, gt=0,
                                     description="Key/value heads (grouped-query attention).")
    intermediate_size: int = Field(TinyModelSpec.intermediate_size, gt=0,
                                   description="MLP width of the language model.")
    mrope_section: list[int] = Field(
        default_factory=lambda: list(TinyModelSpec.mrope_section),
        description="Multimodal RoPE split (time, height, width) of head_dim / 2.",
    )
    rope_theta: float = Field(
        TinyModelSpec.rope_theta, gt=1,
        description="Base of the language model's rotary frequencies. At head_dim 16 the "
        "default (Qwen2.5-VL's 1e6) leaves the height and width sections turning under 0.04 "
        "radians per merged patch, so a frame's rows and columns barely differ in position.",
    )
    vision_depth: int = Field(TinyModelSpec.vision_depth, gt=0,
                              description="Vision-tower blocks.")
    vision_hidden_size: int = Field(TinyModelSpec.vision_hidden_size, gt=0,
                                    description="Vision-tower width.")
    vision_intermediate_size: int = Field(TinyModelSpec.vision_intermediate_size, gt=0,
                                          description="Vision-tower MLP width.")
    vision_num_heads: int = Field(TinyModelSpec.vision_num_heads, gt=0,
                                  description="Vision-tower attention heads.")

    @model_validator(mode="after")
    def _buildable(self) -> TinyModelParams:
        self.spec()  # the spec's own checks (divisibility, RoPE split), at params time
        return self

    def spec(self) -> TinyModelSpec:
        """The sizes as the builder takes them."""
        sizes = self.model_dump(exclude={"seed"})
        sizes["mrope_section"] = tuple(sizes["mrope_section"])
        return TinyModelSpec(**sizes)


class ModelParams(_Section):
    """The policy to fine-tune: what stage base_model provides to warm_start/train/evaluate."""

    name_or_path: str = Field(
        "tiny",
        description="'tiny': build the embedded random Qwen2.5-VL (offline); otherwise a hub id "
        "(Qwen/Qwen2.5-VL-7B-Instruct) or a local checkpoint folder, loaded via Auto classes.",
    )
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) to pin; null: the default branch."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "bfloat16", description="Weight dtype when loading (paper: bfloat16)."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; null: transformers' default (sdpa)."
    )
    tiny: TinyModelParams = Field(default_factory=TinyModelParams)


class LoraParams(_Section):
    """Optional LoRA adapters (peft) instead of full-parameter training."""

    enabled: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    r: int = Field(16, gt=0, description="Adapter rank.")
    alpha: int = Field(32, gt=0, description="Adapter scaling (lora_alpha).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names (language model) that get adapters.",
    )


class WarmStartPhase(_Section):
    """One phase of a warm-start curriculum: some tasks' rows only, for its own steps."""

    tasks: list[Task] = Field(min_length=1, description="Train on these tasks' rows only.")
    max_steps: int = Field(gt=0, description="Optimiser steps of this phase.")


class WarmStartParams(_Section):
    """Stage `warm_start`: a few steps of SFT on the training answers, so a random (tiny) model
    answers in the reward's format before GRPO. Off in the paper (GRPO from the instruct
    model); on in tiny-cpu."""

    enabled: bool = Field(False, description="Run the SFT warm start (else pass the base on).")
    max_steps: int = Field(100, gt=0, description="Optimiser steps.")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate (AdamW).")
    per_device_train_batch_size: int = Field(4, gt=0, description="Samples per device and step.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    lr_scheduler_type: str = Field(
        "cosine", description="HF scheduler name (the toy data, 200 steps at lr 1e-2: format 0.92 "
        "after cosine, 0.71 after linear decay)."
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps warming up.")
    seed: int = Field(0, description="Seed of data order and dropout.")
    sources: list[str] | None = Field(
        None, min_length=1, description="Train on the train split of these sources only "
        "(download.sources names); null: all. E.g. a pretraining source that GRPO never sees."
    )
    loss_average: Literal["tokens", "rows"] = Field(
        "tokens", description="tokens: the mean over every answer token of the batch (HF's "
        "causal-LM loss), so a task with long answers (tracking: ~200 tokens) outweighs one "
        "with short ones (temporal grounding: 16); rows: each row's mean over its own answer "
        "tokens, then the mean over rows, so tasks weigh by their rows."
    )
    curriculum: list[WarmStartPhase] = Field(
        default_factory=list, description="Phases run in order before the main one (max_steps "
        "on every row), each with its own warm-up and schedule and the same optimiser settings; "
        "e.g. [{tasks: [temporal_grounding], max_steps: 1000}] learns to place spans before "
        "the other tasks join. []: the main phase only."
    )


class TrainParams(_Section):
    """Stage `train`: GRPO with rule-based rewards (VideoGRPOTrainer). Field names follow TRL's
    GRPOConfig where one exists."""

    num_generations: int = Field(8, ge=2, description="Completions per prompt: the group G.")
    learning_rate: float = Field(1e-6, gt=0, description="Peak learning rate (paper: 1e-6).")
    optim: Literal["adamw_torch_fused", "adamw_torch", "sgd"] = Field(
        "adamw_torch_fused",
        description="Optimizer, by its HF TrainingArguments name (paper: AdamW). "
        "`adamw_torch_fused` is HF's default and the warm start's, and the default recipe's "
        "results were measured with it; `adamw_torch` is the same maths with other round-off, "
        "which changes a tiny model's results (docs/research/rft-miniature.md, g3-g5). AdamW moves "
        "every weight about one learning rate per step however small its gradient, so where "
        "a few tokens of long answers carry the reward (tracking on the tiny model) its steps "
        "are mostly noise; `sgd` (no momentum) moves weights in proportion to their gradient "
        "(docs/research/rft-miniature.md, r156-r177). Its learning rate is on another scale "
        "(tracking on the tiny model: 5e-3).",
    )
    lr_scheduler_type: str = Field("constant", description="HF scheduler name.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps warming up.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (decoupled with AdamW).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    beta: float = Field(
        0.04, ge=0,
        description="KL coefficient against the reference model, k3 estimator (paper: 0.04; "
        "0 skips the reference model).",
    )
    epsilon: float = Field(0.2, gt=0, description="PPO clip range of the importance ratio.")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "grpo",
        description="Loss normalisation. grpo: per-sequence token mean, then batch mean (paper).",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Advantage = (r - group mean) / std; std per group (paper)."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (paper: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    max_completion_length: int = Field(
        1024, gt=0, description="Completion tokens at most (paper: 1024)."
    )
    num_iterations: int = Field(
        1, ge=1, description="Optimisation passes per generation batch (paper: 1, no clipping)."
    )
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs (paper: 1).")
    max_steps: int = Field(-1, description="Optimiser steps; -1: run num_train_epochs.")
    per_device_train_batch_size: int = Field(
        8, gt=0,
        description="Completions per device and micro-batch (8 = one prompt's group, paper).",
    )
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per step.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations (paper: on).")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "bf16", description="Autocast precision of the Trainer (paper: bf16)."
    )
    freeze_vision: bool = Field(False, description="Keep the vision tower's weights fixed.")
    shared_prompt: bool = Field(
        True,
        description="Run each group's prompt (video) once per log-prob pass and share its KV "
        "cache across the G completions; false: TRL's plain per-completion passes.",
    )
    cache_implementation: Literal["dynamic", "static"] = Field(
        "dynamic",
        description="KV cache of generation. static: preallocated to prompt + "
        "max_completion_length, which compile_generation needs.",
    )
    compile_generation: bool = Field(
        False,
        description="Compile generation's decoding step with CUDA graphs (torch.compile, "
        "reduce-overhead; GPU only, needs cache_implementation: static). TRL turns it off; "
        "each new prompt length compiles again, so it pays when prompts share a length.",
    )
    sources: list[str] | None = Field(
        None, min_length=1, description="Train on the train split of these sources only "
        "(download.sources names); null: all."
    )
    lora: LoraParams = Field(default_factory=LoraParams)
    reward_weights: dict[Task, dict[str, float]] = Field(
        default_factory=dict,
        description="Per-task weight of each reward component (format, iou, accuracy); "
        "missing: 1.0.",
    )
    save_steps: int = Field(100, gt=0, description="Checkpoint every this many steps.")
    save_total_limit: int | None = Field(
        2, ge=1, description="Checkpoints kept (oldest deleted); null: all."
    )
    logging_steps: int = Field(1, gt=0, description="Log metrics every this many steps.")
    shuffle_dataset: bool = Field(
        True, description="Shuffle the train prompts (TRL's `shuffle_dataset`); false: take "
        "them in the dataset's order (by id), e.g. so mirrored samples share a step.",
    )
    seed: int = Field(42, description="Seed of sampling, data order and initialisation.")
    num_processes: int = Field(
        1, ge=1, description="Training processes (GPUs); >1 launches via `accelerate launch`."
    )
    accelerate_config: str | None = Field(
        None,
        description="accelerate config file for multi-process runs, e.g. "
        "configs/accelerate/zero3_offload.yaml (DeepSpeed ZeRO-3 + CPU offload, paper).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be positive, or -1 to run num_train_epochs "
                             f"(got {self.max_steps})")
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a "
                f"multiple of num_generations ({self.num_generations}), so that every prompt's "
                "group of completions lies whole on one device")
        if self.compile_generation and self.cache_implementation != "static":
            raise ValueError("compile_generation needs cache_implementation: static (a dynamic "
                             "cache grows every step, so its graph cannot be captured)")
        return self


ModelName = Literal["base", "warm_start", "trained"]


class BootstrapParams(_Section):
    """The paired bootstrap behind every interval of the evaluation (metrics.json, table.md,
    the plot, the publish gate): items are resampled, the same draws for every model."""

    samples: int = Field(
        2000, ge=100, description="Bootstrap replicates (item resamples) per interval."
    )
    confidence: float = Field(
        0.95, gt=0, lt=1, description="Coverage of the percentile intervals (0.95: 2.5-97.5%)."
    )
    seed: int = Field(
        0, ge=0, description="Seed of the item resampling: the same seed, the same intervals."
    )


class EvaluateParams(_Section):
    """Stage `evaluate`: greedy answers of each model on the held-out split, scored by the
    training rewards' rules, compared base -> trained (the paper's Table 1)."""

    models: list[ModelName] = Field(
        default_factory=lambda: ["base", "trained"],
        description="Models to evaluate, in table order: base, warm_start, trained.",
    )
    baseline: ModelName = Field(
        "base", description="The model the deltas (and the publish gate) compare trained with."
    )
    split: Literal["auto", "val", "test"] = Field(
        "auto", description="Held-out split; auto: test when build_dataset wrote one, else val."
    )
    max_new_tokens: int = Field(1024, gt=0, description="Generation budget (paper: 1024).")
    batch_size: int = Field(8, gt=0, description="Rows per generate() call.")
    max_samples_per_source: int | None = Field(
        None, gt=0, description="Evaluate at most this many items per source (null: all)."
    )
    blind_control: bool = Field(
        True,
        description="Also answer every item with blank (all-zero) frames of the same shape, "
        "count and fps, to measure how much of each score needs the video (reliance = score "
        "with video - blind score); predictions/<model>-blind.jsonl.",
    )
    bootstrap: BootstrapParams = Field(
        default_factory=BootstrapParams,
        description="Paired bootstrap over items for the intervals of metrics, deltas and "
        "video reliance.",
    )

    @field_validator("models")
    @classmethod
    def _models(cls, models: list[str]) -> list[str]:
        if "trained" not in models or len(set(models)) != len(models):
            raise ValueError("models must list 'trained' and no model twice")
        return models


class GateParams(_Section):
    """When a trained model may be published."""

    enabled: bool = Field(True, description="Check the gate (false: publish whatever trained).")
    max_regression: float = Field(
        0.05, ge=0,
        description="No metric of trained may fall below the baseline's by more than this "
        "(metrics are fractions in [0, 1]).",
    )
    min: dict[str, float] = Field(
        default_factory=dict,
        description="Minimum values, keyed 'task.metric' (every source with that task) or "
        "'source.task.metric', e.g. {temporal_grounding.miou: 0.3}.",
    )
    fail_on_significant_regression: bool = Field(
        True,
        description="Fail when any delta trained - baseline has its paired bootstrap interval "
        "(evaluate.bootstrap) wholly below 0.",
    )


class PublishTarget(_Section):
    """One place the package goes."""

    type: Literal["local", "s3", "hub"] = Field(description="local folder | s3:// | HF Hub.")
    uri: str = Field(
        description="local: a registry folder (relative to the project or absolute); s3: "
        "s3://bucket/prefix; hub: the repo id (owner/name)."
    )
    endpoint_url: str | None = Field(
        None, description="s3: S3-compatible endpoint; credentials from the AWS environment."
    )
    private: bool = Field(True, description="hub: create the repository private.")
    token_env: str = Field(
        "HF_TOKEN", description="hub: environment variable holding the token (never logged)."
    )


class PublishParams(_Section):
    """Stage `publish`: gate, package with lineage, upload to every target."""

    enabled: bool = Field(True, description="Run publishing (false: the stage records a skip).")
    name: str = Field("videorft-model", description="Model name in registries and the card.")
    gate: GateParams = Field(default_factory=GateParams)
    targets: list[PublishTarget] = Field(
        default_factory=list, description="Where to publish; empty: build the package only."
    )


class RemoteParams(_Section):
    """A DVC remote for stage outputs, so another machine pulls instead of recomputing."""

    url: str | None = Field(
        None,
        description="s3://bucket/prefix (dvc-s3) or a folder; null: the local DVC cache only.",
    )
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint; credentials from the AWS environment only."
    )
    push: bool = Field(True, description="Push each stage's outputs after it runs.")
    pull: bool = Field(
        True, description="Before rerunning a stage, pull its outputs if the remote has them."
    )


class OrchestrationParams(_Section):
    """How the pipeline runs (not what it computes: no stage depends on this section)."""

    remote: RemoteParams = Field(default_factory=RemoteParams)
    train_deployment: str | None = Field(
        None,
        description="Prefect deployment that runs training on a GPU work pool, e.g. "
        "'videorft-train/gpu' (prefect.yaml); null: train in the pipeline's own process.",
    )
    deployment_timeout_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="How long the pipeline waits for that deployment."
    )


class Params(_Section):
    """Everything in params.yaml."""

    preset: str | None = Field(None, description="Name of the preset last applied.")
    paths: PathsParams = Field(default_factory=PathsParams)
    download: DownloadParams
    extract_frames: ExtractFramesParams = Field(default_factory=ExtractFramesParams)
    build_dataset: BuildDatasetParams = Field(default_factory=BuildDatasetParams)
    model: ModelParams = Field(default_factory=ModelParams)
    warm_start: WarmStartParams = Field(default_factory=WarmStartParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    publish: PublishParams = Field(default_factory=PublishParams)
    orchestration: OrchestrationParams = Field(default_factory=OrchestrationParams)


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(float, _represent_float)
    return yaml


def _represent_float(representer: Any, value: float) -> Any:
    """A new float in a form every YAML reader takes as a float: ruamel writes 5e-5 as
    ``5e-05``, which YAML 1.1 readers (PyYAML's ``safe_load``) read as a string."""
    text = repr(value)
    mantissa, sep, exponent = text.partition("e")
    if sep and "." not in mantissa and mantissa.lstrip("-").isdigit():
        text = f"{mantissa}.0e{exponent}"
    if not sep and not text.lstrip("-").replace(".", "").isdigit():  # inf, nan
        return representer.represent_float(value)
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def _styled(value: Any, old: Any = None) -> Any:
    """``value`` as ruamel nodes laid out the way a person writes params.yaml: a list or
    mapping keeps the style (flow ``[a, b]`` or block) of the node it replaces (``[]`` and
    ``{}`` are flow); a new one is flow when it holds scalars only, block when it nests.
    Written plainly, every new list would come out in block style, one item per line."""
    if isinstance(value, dict):
        node = CommentedMap()
        for key, item in value.items():
            node[key] = _styled(item, old.get(key) if isinstance(old, dict) else None)
    elif isinstance(value, list):
        node = CommentedSeq(
            _styled(item, old[i] if isinstance(old, list) and i < len(old) else None)
            for i, item in enumerate(value))
    else:
        return value
    was_flow = None
    if isinstance(old, (CommentedMap, CommentedSeq)):
        # ruamel records no style for an empty `[]` or `{}`, which can only be written flow.
        was_flow = old.fa.flow_style() if old else True
    if not value:  # `{}` and `[]` have no block form
        flow = True
    elif was_flow is not None:
        flow = bool(was_flow)
    else:
        flow = not any(isinstance(item, (dict, list))
                       for item in (value.values() if isinstance(value, dict) else value))
    if flow:
        node.fa.set_flow_style()
    else:
        node.fa.set_block_style()
    return node


def _dump(doc: Any, path: Path) -> str:
    """``doc`` as YAML text, without the trailing blanks ruamel leaves where it wraps a long
    flow list. The text must read back as ``doc``'s values, else nothing is written: a
    layout ruamel cannot emit must never corrupt a project's params.yaml."""
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    text = buffer.getvalue()
    expected = to_plain(doc)
    for candidate in (re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE), text):
        try:
            if to_plain(_yaml().load(candidate)) == expected:
                return candidate
        except Exception:  # ruamel raises many error types for bad YAML
            continue
    raise ConfigError(f"{path}: the edit would not read back as written; nothing was changed")


def to_plain(node: Any) -> Any:
    """ruamel's commented containers to plain dicts/lists (for pydantic and hashing)."""
    if isinstance(node, dict):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    return node


def _validate(raw: dict[str, Any], where: str) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None


def load_raw(path: str | Path = PARAMS_FILE) -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found (run videorft from the project root)")
    try:
        return _yaml().load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # ruamel raises many error types for bad YAML
        raise ConfigError(f"{path}: not valid YAML ({one_line(exc)})") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    raw = to_plain(load_raw(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if "presets" in raw:
        raise ConfigError(f"{path}: a 'presets' section is no longer read; each preset is a "
                          f"file now, {PRESETS_DIR.as_posix()}/<name>.yaml")
    return _validate(raw, str(path))


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Return base with overlay's values written in, as `params apply` writes a preset:
    mappings merged key by key, an empty mapping or anything else replaces."""
    merged = copy.deepcopy(base)
    _merge_into(merged, overlay)
    return merged


def _set_in(doc: Any, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = doc
    for i, key in enumerate(keys):
        if isinstance(node, list) and key.isdigit() and int(key) >= len(node):
            where = ".".join(keys[:i])
            raise ConfigError(f"{dotted!r}: {where} has {len(node)} entries (0 to "
                              f"{len(node) - 1}); there is no entry {key}")
        if i == len(keys) - 1:
            break
        if isinstance(node, list) and key.isdigit():
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise ConfigError(f"unknown parameter {'.'.join(keys[: i + 1])!r} in {dotted!r}")
    last = keys[-1]
    if isinstance(node, list) and last.isdigit():
        node[int(last)] = _styled(value, node[int(last)])
    elif isinstance(node, dict) and last in node:
        node[last] = _styled(value, node[last])
    else:
        raise ConfigError(f"unknown parameter {dotted!r}")


def _merge_into(doc: Any, overlay: dict[str, Any]) -> None:
    """Overlay ``overlay`` onto ``doc`` key by key; an empty mapping replaces (``{}`` = none)."""
    for key, value in overlay.items():
        if isinstance(value, dict) and value and isinstance(doc.get(key), dict):
            _merge_into(doc[key], value)
        elif isinstance(doc, (CommentedMap, CommentedSeq)):  # a params.yaml being edited
            doc[key] = _styled(copy.deepcopy(value), doc.get(key))
        else:
            doc[key] = copy.deepcopy(value)


def parse_override(text: str) -> tuple[str, Any]:
    """`key.sub=value` with the value parsed as YAML (so 1 is an int, [a, b] a list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), YAML(typ="safe").load(value) if value.strip() else None
    except Exception as exc:  # ruamel raises many error types for bad YAML
        raise ConfigError(f"override {text!r}: the value is not valid YAML "
                          f"({one_line(exc)})") from None


def update_params(
    path: str | Path = PARAMS_FILE, *, preset: str | None = None, overrides: list[str] = ()
) -> Params:
    """Apply a preset and/or `key=value` overrides to params.yaml in place (comments kept).

    Nothing is written unless the result validates; a file whose values do not change is not
    rewritten (byte for byte the same), so DVC and file watchers see no change.
    """
    path = Path(path)
    doc = load_raw(path)
    before = to_plain(doc)
    if preset is not None:
        overlay, _ = _apply_preset(before, path, preset)
        _merge_into(doc, overlay)
        doc["preset"] = preset
    for text in overrides:
        key, value = parse_override(text)
        _set_in(doc, key, value)
    after = to_plain(doc)
    _validate(after, str(path))
    if after == before:
        # Nothing changed in value: keep the file byte for byte (a preset's lists and maps
        # would otherwise come back in another YAML layout, and DVC would see a change).
        return load_params(path)
    atomic_write_text(path, _dump(doc, path))
    return load_params(path)


def preset_names(params_path: str | Path = PARAMS_FILE) -> list[str]:
    """The named presets of the project whose params.yaml is ``params_path``, sorted."""
    folder = Path(params_path).parent / PRESETS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in PRESET_SUFFIXES)


def preset_file(params_path: str | Path, name: str) -> Path:
    """The file of preset ``name``: ``configs/presets/<name>.yaml`` beside params.yaml, or
    ``name`` itself when it is a path to a YAML file (relative to the working directory)."""
    if name.endswith(PRESET_SUFFIXES):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"{path}: preset file not found")
        return path
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise ConfigError(f"{name!r}: a preset is a name from {PRESETS_DIR.as_posix()} or a "
                          "path ending in .yaml")
    for suffix in PRESET_SUFFIXES:
        path = Path(params_path).parent / PRESETS_DIR / f"{name}{suffix}"
        if path.is_file():
            return path
    names = preset_names(params_path)
    raise ConfigError(f"unknown preset {name!r} (available: {', '.join(names) or 'none'}; "
                      f"presets are files in {PRESETS_DIR.as_posix()})")


def preset_overlay(params_path: str | Path, name: str) -> dict[str, Any]:
    """Preset ``name``'s overlay as plain data (see :func:`preset_file` for where it is read)."""
    return _read_overlay(preset_file(params_path, name))


def _read_overlay(file: Path) -> dict[str, Any]:
    overlay = to_plain(load_raw(file))
    if not isinstance(overlay, dict):
        raise ConfigError(f"{file}: a preset must be a mapping of stage sections")
    return overlay


def _apply_preset(
    raw: dict[str, Any], params_path: str | Path, name: str
) -> tuple[dict[str, Any], Params]:
    """Preset ``name``'s overlay and the params it gives over ``raw``; a preset that does not
    validate is reported as the preset's fault (its file and name), not params.yaml's."""
    file = preset_file(params_path, name)
    overlay = _read_overlay(file)
    params = _validate({**deep_merge(raw, overlay), "preset": name}, f"{file}: preset {name!r}")
    return overlay, params


def preset_params(path: str | Path, name: str) -> Params:
    """The parameters `params apply NAME` would give, without writing anything."""
    return _apply_preset(to_plain(load_raw(path)), path, name)[1]


def value_at(params: BaseModel, dotted: str) -> Any:
    """The value of a `describe` row's parameter in ``params`` (models dumped to plain data)."""
    value: Any = params
    for key in dotted.split("."):
        value = getattr(value, key)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    return value


def describe(model: type[BaseModel] = Params, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) of every documented field, for `videorft params`."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        dotted = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe(annotation, dotted + "."))
            continue
        default = (
            "required"
            if field.is_required()
            else repr(field.get_default(call_default_factory=True))
        )
        rows.append((dotted, default, field.description or ""))
    return rows
