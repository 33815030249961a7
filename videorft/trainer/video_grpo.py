"""GRPO on pre-extracted videos: TRL's GRPOTrainer with the video carried into every forward.

Why this exists: TRL 1.16's ``GRPOTrainer`` only knows *images*. Its log-prob passes
(``_get_per_token_logps_and_entropies``: policy with grad, old policy, reference) accept
``pixel_values``/``image_grid_thw`` but no ``pixel_values_videos``/``video_grid_thw``/
``second_per_grid_ts``, and the dict that ``_generate_and_score_completions`` hands to
``_compute_loss`` drops them too. With a video prompt, the ``<|video_pad|>`` tokens then get
their plain token embedding instead of visual features: training silently becomes text-only
and the vision tower never receives a gradient. Its dataset path also has no way to take
frames that are already sampled and sized (it would let the processor load, re-sample to its
default fps and resize).

Data contract (one video per prompt):

* ``prompt``: a conversational prompt whose user message holds a ``{"type": "video"}`` part
  (where Qwen's chat template puts ``<|vision_start|><|video_pad|><|vision_end|>``);
* the frames and their real sampling rate, returned by ``video_loader(row)`` as
  ``(uint8 [T, H, W, 3], fps)``. The default loader reads the row's ``video`` and
  ``video_fps`` columns; pass a loader over the frame store for real data so rows stay small.

The frames are fed to the processor with ``do_sample_frames=False, do_resize=False`` and
metadata describing the frames themselves, so every stored frame is used as is and
``second_per_grid_ts = temporal_patch_size / fps`` (see :mod:`videorft.model.inputs` for why
the metadata matters).

Override surface, all calling ``super()`` for everything that is not video:

* ``_generate_and_score_completions``: loads and processes the videos of the generation batch,
  makes them the *active* video for the duration of the parent call (whose old-policy and
  reference passes then see it), and adds them, per sample, to the returned batch;
* ``_tokenize_prompts``: builds prompt ids and generation inputs with the processor;
* ``_compute_loss``: makes the batch's (shuffled, split) per-sample videos active, and where a
  generation batch's first loss pass runs before any update on it (TRL's default layout), keeps
  that pass's log-probs as the old policy's instead of TRL's separate old-policy pass;
* ``_get_per_token_logps_and_entropies``: while a video is active, the forward with the video
  tensors sliced to each micro-batch (with ``shared_prompt``: one prompt pass per group of rows
  with the same prompt and video, see :mod:`videorft.trainer.shared_prompt`); otherwise the
  parent's.
* ``_prepare_inputs`` (``shared_prompt`` only): shuffles the generation batch by whole groups,
  so micro-batches keep a group's rows together and the prompt pass is shared.
* ``_set_signature_columns_if_needed``: keeps the video columns if columns are pruned.

The "active video" is instance state set only inside a ``with`` block: the parent calls the
log-prob pass from deep inside ``_generate_and_score_completions`` with a locally built
``forward_kwargs`` that cannot be reached any other way short of copying that 600-line method.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel
from trl import GRPOTrainer
from trl.data_utils import is_conversational
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import pad

from videorft.io import atomic_write_text
from videorft.model.inputs import process_videos
from videorft.model.row_positions import RowPositions, find_rope_index
from videorft.model.vision_attention import batch_vision_windows
from videorft.trainer.shared_prompt import (
    plain_logps,
    prompt_group_ids,
    shared_prompt_generate,
    shared_prompt_logps,
)

VideoLoader = Callable[[dict[str, Any]], tuple[Any, float]]

# TRL 1.16 (pinned) reads `model.is_gradient_checkpointing` around every generation, which
# transformers 5 deprecates: a FutureWarning no user can act on, repeated in the run's console.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                        category=FutureWarning)

#: Keys of the per-sample video fields in the batch handed from generation to the loss.
VIDEO_KEYS: tuple[str, ...] = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
#: Key of the per-sample prompt group id (same prompt ids and same video) in that batch.
GROUP_KEY = "video_group_ids"


def row_video(row: dict[str, Any]) -> tuple[Any, float]:
    """Default :data:`VideoLoader`: frames in the row's ``video`` column, fps in ``video_fps``."""
    return row["video"], float(row["video_fps"])


@dataclass
class VideoBatch:
    """The videos of a batch, one per sample, so they can be shuffled and sliced with it.

    ``pixel_values_videos[i]`` holds sample i's ``prod(video_grid_thw[i])`` patch rows;
    ``group_ids[i]`` its prompt group (:func:`~videorft.trainer.shared_prompt.prompt_group_ids`),
    set at generation time so it travels with the sample through TRL's shuffle and split.
    """

    pixel_values_videos: list[torch.Tensor]
    video_grid_thw: torch.Tensor  # [B, 3]
    second_per_grid_ts: torch.Tensor  # [B]
    group_ids: torch.Tensor | None = None  # [B]

    def __len__(self) -> int:
        return len(self.pixel_values_videos)

    def as_dict(self) -> dict[str, Any]:
        """Fields for the generation-to-loss batch (lists/tensors indexed by sample)."""
        fields: dict[str, Any] = {
            "pixel_values_videos": self.pixel_values_videos,
            "video_grid_thw": self.video_grid_thw,
            "second_per_grid_ts": self.second_per_grid_ts,
        }
        if self.group_ids is not None:
            fields[GROUP_KEY] = self.group_ids
        return fields

    @classmethod
    def from_inputs(cls, inputs: dict[str, Any]) -> VideoBatch | None:
        """The batch's videos as :meth:`as_dict` stored them (after TRL's shuffle/split)."""
        if "pixel_values_videos" not in inputs:
            return None
        return cls(
            pixel_values_videos=list(inputs["pixel_values_videos"]),
            video_grid_thw=inputs["video_grid_thw"],
            second_per_grid_ts=inputs["second_per_grid_ts"],
            group_ids=inputs.get(GROUP_KEY),
        )

    def forward_kwargs(self, start: int, end: int) -> dict[str, torch.Tensor]:
        """Model kwargs for samples ``start:end``: their patch rows, grids and time spacing."""
        return {
            "pixel_values_videos": torch.cat(self.pixel_values_videos[start:end], dim=0),
            "video_grid_thw": self.video_grid_thw[start:end],
            "second_per_grid_ts": self.second_per_grid_ts[start:end],
        }


def distinct_inputs(texts: Sequence[str],
                    videos: Sequence[tuple[np.ndarray, float]]) -> tuple[list[int], list[int]]:
    """(index of each distinct (text, video) pair's first occurrence, position of every pair
    among them). Videos are compared by their frames and fps, so any video loader qualifies."""
    unique: list[int] = []
    where: list[int] = []
    by_text: dict[str, list[int]] = {}
    for index, (text, (frames, fps)) in enumerate(zip(texts, videos, strict=True)):
        same = by_text.setdefault(text, [])
        match = next((number for number in same
                      if videos[unique[number]][1] == fps
                      and np.array_equal(videos[unique[number]][0], frames)), None)
        if match is None:
            match = len(unique)
            same.append(match)
            unique.append(index)
        where.append(match)
    return unique, where


def repeat_rows(processed: dict[str, Any], where: Sequence[int]) -> dict[str, Any]:
    """Processor outputs of distinct rows expanded to the batch: row ``i`` is distinct row
    ``where[i]``. Per-row tensors are indexed; ``pixel_values_videos`` (the rows' patch rows,
    concatenated) is cut per video and reassembled in the new order."""
    index = torch.as_tensor(list(where), dtype=torch.long)
    count = len(processed["input_ids"])
    out: dict[str, Any] = {}
    for key, value in processed.items():
        if key == "pixel_values_videos":
            per_video = torch.split(value, processed["video_grid_thw"].prod(dim=-1).tolist())
            out[key] = torch.cat([per_video[i] for i in where], dim=0)
        elif isinstance(value, torch.Tensor) and value.dim() > 0 and value.size(0) == count:
            out[key] = value.index_select(0, index)
        elif isinstance(value, list) and len(value) == count:
            out[key] = [value[i] for i in where]
        else:
            raise ValueError(f"processor output {key!r} is not per row: cannot repeat rows")
    return out


def shuffle_by_group(batch: dict[str, Any], key: str = GROUP_KEY) -> dict[str, Any]:
    """TRL's ``shuffle_sequence_dict`` at group granularity, so ``split_tensor_dict`` hands out
    whole groups: TRL's random row order, then each row pulled up to its group's first row.

    Same random draw as TRL (``randperm`` over rows), so switching ``shared_prompt`` leaves the
    RNG stream, and hence later sampling, unchanged; a single group gets TRL's exact order.
    """
    order = torch.randperm(len(batch[key]))
    _, group = torch.unique(batch[key].cpu()[order], return_inverse=True)
    first_seen = torch.full((len(order),), len(order), dtype=torch.long)
    first_seen = first_seen.scatter_reduce(0, group, torch.arange(len(order)), reduce="amin")
    # Stable sort on the position where the row's group first shows up in TRL's order.
    permutation = order[torch.sort(first_seen[group], stable=True).indices]

    def permute(value: Any) -> Any:
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            return value
        if isinstance(value, torch.Tensor):
            return value[permutation.to(value.device)]
        return [value[i] for i in permutation.tolist()]

    return {name: permute(value) for name, value in batch.items()}


def _as_uint8(frames: Any, index: int) -> np.ndarray:
    """A loader's frames (array or tensor, any integer dtype) as a uint8 numpy array."""
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"row {index}: video frames must be uint8, got {array.dtype}")
        array = array.astype(np.uint8)
    return array


def _keep_one_input_grad_hook(model: PreTrainedModel) -> None:
    """Make ``model.enable_input_require_grads`` replace its hook instead of adding one more.

    Why: with gradient checkpointing, TRL turns checkpointing off and on around generation and
    around the log-prob passes without grad, and transformers 5.24 registers a new forward hook
    on the input embeddings at every enable (its disable removes them only under PEFT): two
    more hooks per step, all of which run in every forward, decoding steps included. They also
    change the module's hook count, which a compiled decoding step guards on, so it would
    compile again at every step. Instance attribute only: the class stays untouched.
    """
    enable = model.enable_input_require_grads

    def enable_once() -> None:
        model.disable_input_require_grads()  # removes the hooks of the previous enable
        enable()

    model.enable_input_require_grads = enable_once


def sort_card_tags(card: Path) -> None:
    """Rewrite the model card ``card`` (atomically) with its metadata's tags in sorted order."""
    from huggingface_hub import ModelCard

    loaded = ModelCard.load(card)
    if loaded.data.tags:
        loaded.data.tags = sorted(loaded.data.tags)
        atomic_write_text(card, str(loaded))


class VideoGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose generation and log-prob passes (policy, old, reference) see the video.

    Args are ``GRPOTrainer``'s plus ``video_loader`` (row -> (frames, fps); default
    :func:`row_video`) and ``shared_prompt`` (default True: log-prob passes run each group's
    prompt and video once, see :mod:`videorft.trainer.shared_prompt`; False: one full forward
    per sample) and ``compile_generation`` (default False: TRL's eager decoding; True: the
    decoding step is compiled with CUDA graphs, see :meth:`_enable_compiled_generation`). Only
    the local ``transformers.generate`` path is supported: vLLM, tools/environments,
    ``rollout_func`` and mixing images with videos raise.
    """

    def __init__(self, *args: Any, video_loader: VideoLoader = row_video,
                 shared_prompt: bool = True, compile_generation: bool = False,
                 **kwargs: Any) -> None:
        self.shared_prompt = shared_prompt
        super().__init__(*args, **kwargs)
        # transformers 5.24 reads the activation_* names (gradient_* are deprecated aliases).
        checkpointing = getattr(self.args, "activation_checkpointing",
                                self.args.gradient_checkpointing)
        gc_kwargs = getattr(self.args, "activation_checkpointing_kwargs",
                            self.args.gradient_checkpointing_kwargs) or {}
        if shared_prompt and checkpointing and gc_kwargs.get("use_reentrant"):
            raise ValueError("shared_prompt needs non-reentrant gradient checkpointing (reentrant "
                             "cuts the prompt's keys/values from the graph); set "
                             "gradient_checkpointing_kwargs={'use_reentrant': False}")
        if self.use_vllm or self.use_transformers_continuous_batching:
            raise NotImplementedError("VideoGRPOTrainer supports only transformers.generate")
        if self.tools or self.environment_factories is not None or self.rollout_func is not None:
            raise NotImplementedError(
                "VideoGRPOTrainer does not support tools, environments or rollout_func")
        if self._video_pad_token_id is None:
            raise ValueError("the processor's tokenizer has no <|video_pad|> token")
        self.video_loader = video_loader
        self._active_video: VideoBatch | None = None
        self._loss_logps: torch.Tensor | None = None  # the last loss pass's, see _compute_loss
        # Rope positions of the generation batch's rows, shared by its old-policy, reference
        # and loss passes (the reference is a copy of the policy's config: same positions).
        self._row_positions = RowPositions()
        self._pending_video_inputs: dict[str, Any] | None = None
        # A sampled <|video_pad|> in a completion would have no features: the forward would fail
        # ("video features and tokens do not match"). TRL suppresses only the image token.
        suppress = list(self.generation_config.suppress_tokens or [])
        if self._video_pad_token_id not in suppress:
            suppress.append(self._video_pad_token_id)
        self.generation_config.suppress_tokens = suppress
        self.generation_kwargs["suppress_tokens"] = suppress
        if compile_generation:
            self._enable_compiled_generation()
        for module in self.model.modules():
            if isinstance(module, PreTrainedModel):
                _keep_one_input_grad_hook(module)
        # The reference model TRL loads itself, and a policy not loaded by videorft.model.
        for model in (self.model, self.ref_model):
            if model is not None:
                batch_vision_windows(model)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """TRL's card for the checkpoints folder, its tags sorted: TRL lists them from a set, so
        their order changed with Python's hash seed, and with it the checkpoints' DVC hash and
        the published version's id, from one run to the same run."""
        super().create_model_card(*args, **kwargs)
        card = Path(self.args.output_dir) / "README.md"
        if self.is_world_process_zero() and card.is_file():
            sort_card_tags(card)

    def _enable_compiled_generation(self) -> None:
        """Undo TRL's ``disable_compile``: ``generate`` then compiles the decoding step.

        Why: on a GPU, eager decoding of a 7B model is bound by kernel launches and Python
        (~34 ms per token for 8 sequences on an H200, docs/research/gpu-step.md), not by the
        chip; a compiled step replayed as a CUDA graph removes most of that. transformers
        compiles only with a static cache (fixed shapes) and only on accelerators, so on CPU
        this changes nothing. Each new (batch, prompt length) shape compiles once more.
        """
        from transformers import CompileConfig

        if self.generation_config.cache_implementation != "static":
            raise ValueError("compile_generation needs a static cache: set GRPOConfig's "
                             "cache_implementation='static'")
        self.generation_config.disable_compile = False
        self.generation_config.compile_config = CompileConfig(mode="reduce-overhead")

    # ----------------------------------------------------------------------------- data

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the default loader's columns when ``remove_unused_columns`` prunes the dataset."""
        super()._set_signature_columns_if_needed()
        for column in ("video", "video_fps"):
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def _process_videos(
        self, prompts: Sequence[Any], rows: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        """Processor outputs for the prompts with their rows' videos, unsampled and unresized.

        TRL hands every prompt ``num_generations`` times; each distinct (prompt, video) pair is
        processed once and its outputs repeated (:func:`repeat_rows`: the same tensors, bit for
        bit), which saves about 6% of a CPU GRPO step at G = 8.
        """
        processor = self.processing_class
        videos = []
        for index, row in enumerate(rows):
            frames, fps = self.video_loader(row)
            videos.append((_as_uint8(frames, index), float(fps)))
        texts = processor.apply_chat_template(
            list(prompts),
            tools=None,
            chat_template=self.chat_template,
            add_generation_prompt=True,
            tokenize=False,
            **self.chat_template_kwargs,
        )
        unique, where = distinct_inputs(texts, videos)
        inputs = dict(process_videos(processor, [texts[i] for i in unique],
                                     [videos[i] for i in unique],
                                     names=[f"row {i}" for i in unique]))
        if "second_per_grid_ts" not in inputs:
            # Non-Qwen2.5 processors: no absolute time; the model ignores a None.
            inputs["second_per_grid_ts"] = torch.ones(len(unique))
        return repeat_rows(inputs, where) if len(unique) < len(rows) else inputs

    @staticmethod
    def _split_videos(inputs: dict[str, Any]) -> VideoBatch:
        """Per-sample view of flat processor video outputs (rows per video = prod(grid))."""
        grid = inputs["video_grid_thw"]
        rows = grid.prod(dim=-1).tolist()
        pixels = inputs["pixel_values_videos"]
        if sum(rows) != pixels.size(0):
            raise ValueError(f"video grids cover {sum(rows)} rows, "
                             f"pixel_values_videos has {pixels.size(0)}")
        return VideoBatch(
            pixel_values_videos=list(torch.split(pixels, rows, dim=0)),
            video_grid_thw=grid,
            second_per_grid_ts=torch.as_tensor(inputs["second_per_grid_ts"], dtype=torch.float32),
        )

    @contextlib.contextmanager
    def _video_active(self, video: VideoBatch | None) -> Iterator[None]:
        """Make ``video`` the one the log-prob passes use, for the duration of the block."""
        previous, self._active_video = self._active_video, video
        try:
            yield
        finally:
            self._active_video = previous

    # ----------------------------------------------------------------------- overrides

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Parent's rollout + scoring with this batch's videos in generation and old/ref passes."""
        prompts = [row["prompt"] for row in inputs]
        if not is_conversational({"prompt": prompts[0]}):
            raise ValueError(
                "VideoGRPOTrainer needs conversational prompts with a {'type': 'video'} part")
        if any("image" in row or "images" in row for row in inputs):
            raise NotImplementedError("VideoGRPOTrainer does not mix images with videos")
        self._row_positions.clear()
        processed = self._process_videos(prompts, inputs)
        video = self._split_videos(processed)
        device = self.accelerator.device
        video = VideoBatch(
            pixel_values_videos=[p.to(device) for p in video.pixel_values_videos],
            video_grid_thw=video.video_grid_thw.to(device),
            second_per_grid_ts=video.second_per_grid_ts.to(device),
        )
        if self.shared_prompt:
            video.group_ids = prompt_group_ids(
                processed["input_ids"].to(device), processed["attention_mask"].to(device),
                video.pixel_values_videos, video.video_grid_thw, video.second_per_grid_ts)
        self._pending_video_inputs = processed
        iterations = self.num_iterations
        try:
            with self._video_active(video):
                if self._first_loss_pass_is_old_policy():
                    # TRL runs its old-policy pass only for num_iterations > 1 (the only place
                    # it reads the field here); _compute_loss records the first pass instead.
                    self.num_iterations = 1
                output = super()._generate_and_score_completions(inputs)
        finally:
            self.num_iterations = iterations
            self._pending_video_inputs = None
        if len(video) != output["prompt_ids"].size(0):
            raise RuntimeError(f"{len(video)} videos for {output['prompt_ids'].size(0)} samples")
        output.update(video.as_dict())
        return output

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict[str, Any]]:
        """Prompt ids (video tokens expanded) and the video tensors ``generate`` needs."""
        processed = self._pending_video_inputs
        if processed is None:
            return super()._tokenize_prompts(prompts)
        if len(prompts) != processed["input_ids"].size(0):
            raise RuntimeError("prompts and processed videos are out of step")
        ids, mask = processed["input_ids"], processed["attention_mask"].bool()
        prompt_ids = [row[m].tolist() for row, m in zip(ids, mask, strict=True)]
        fields: dict[str, Any] = {k: processed[k] for k in VIDEO_KEYS}
        if "mm_token_type_ids" in processed:
            # A per-token list: _generate_single_turn left-pads it exactly like the input ids.
            mm = processed["mm_token_type_ids"]
            fields["mm_token_type_ids"] = [row[m].tolist() for row, m in zip(mm, mask, strict=True)]
        return prompt_ids, None, fields

    def _generate_single_turn(self, prompt_ids: list[list[int]], images: Any,
                              multimodal_fields: dict[str, Any], num_generations: int,
                              has_tool_images: bool = False) -> tuple[list[list[int]], None]:
        """Parent's local generation, but with ``shared_prompt`` each group's prompt and video
        are prefilled once (:func:`~videorft.trainer.shared_prompt.shared_prompt_generate`):
        the same completions, without G - 1 vision-tower runs and prefills per group.

        Outside a video batch the parent's path runs. Padding and the EOS cut mirror the
        parent's.
        """
        video = self._active_video
        if not self.shared_prompt or video is None or video.group_ids is None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                 num_generations, has_tool_images)
        device = self.accelerator.device

        def left_pad(rows: list[list[int]], value: int) -> torch.Tensor:
            return pad([torch.tensor(r) for r in rows], padding_value=value, padding_side="left",
                       pad_to_multiple_of=self.pad_to_multiple_of).to(device)

        input_ids = left_pad(prompt_ids, self._tokenizer.pad_token_id)
        attention_mask = left_pad([[1] * len(r) for r in prompt_ids], 0)
        token_types = multimodal_fields.get("mm_token_type_ids")
        with (
            unwrap_model_for_generation(
                self.model_wrapped, self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=self.generation_kwargs,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):  # shared_prompt_generate runs without grad itself
            output = shared_prompt_generate(
                unwrapped, input_ids, attention_mask, group_ids=video.group_ids,
                pixel_values_videos=video.pixel_values_videos,
                video_grid_thw=video.video_grid_thw,
                second_per_grid_ts=video.second_per_grid_ts,
                mm_token_type_ids=None if token_types is None else left_pad(token_types, 0),
                generation_config=self.generation_config,
            )
        completions = output[:, input_ids.size(1):].cpu()
        eos = torch.isin(completions, torch.tensor(self.eos_token_ids))
        lengths = torch.where(eos.any(dim=1), eos.int().argmax(dim=1) + 1, completions.size(1))
        cut = [row[:n].tolist() for row, n in zip(completions, lengths.tolist(), strict=True)]
        return cut, None

    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        """Parent's, but with ``shared_prompt`` the generation batch is shuffled by whole groups.

        TRL shuffles rows across the generation batch before splitting it into micro-batches,
        which scatters each group over several micro-batches (and the prompt pass is then run
        once per piece). Only that shuffle is swapped, for the duration of the call; a TRL
        that stops calling it makes this raise instead of silently losing the grouping.
        """
        if not self.shared_prompt:
            return super()._prepare_inputs(generation_batch)
        module = sys.modules[GRPOTrainer.__module__]
        original = module.shuffle_sequence_dict
        calls = 0

        def shuffle(batch: dict[str, Any]) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            return shuffle_by_group(batch) if GROUP_KEY in batch else original(batch)

        before = self._buffered_inputs
        module.shuffle_sequence_dict = shuffle
        try:
            inputs = super()._prepare_inputs(generation_batch)
        finally:
            module.shuffle_sequence_dict = original
        if self._buffered_inputs is not before and not calls:
            raise RuntimeError("TRL's _prepare_inputs no longer shuffles with "
                               "shuffle_sequence_dict; update VideoGRPOTrainer._prepare_inputs")
        return inputs

    def _first_loss_pass_is_old_policy(self) -> bool:
        """Whether a generation batch's first loss pass over each micro-batch comes before any
        optimizer step on that batch, so its log-probs are the old policy's.

        True with ``num_iterations`` > 1 and ``steps_per_generation`` equal to
        ``gradient_accumulation_steps`` (TRL's default): the batch's micro-batches make up the
        first optimizer step after generation, as TRL's own skip of the old-policy pass assumes
        for one iteration. Then TRL's separate old-policy pass (a forward over the whole
        generation batch, ~6% of a CPU step) is skipped and :meth:`_compute_loss` keeps the
        first pass's log-probs for the later iterations: the same numbers (bit for bit on CPU,
        ``tests/test_video_guard.py``), as TRL itself uses them for one iteration.
        """
        return (self.model.training and self.num_iterations > 1 and not self.use_vllm
                and self.args.steps_per_generation == self.args.gradient_accumulation_steps)

    def _compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """Parent's loss with the micro-batch's own (shuffled, split) videos active; the first
        pass over a micro-batch keeps its log-probs as the old policy's (see
        :meth:`_first_loss_pass_is_old_policy`)."""
        first = "old_per_token_logps" not in inputs and self._first_loss_pass_is_old_policy()
        self._loss_logps = None
        with self._video_active(VideoBatch.from_inputs(inputs)):
            loss = super()._compute_loss(model, inputs)
        logps, self._loss_logps = self._loss_logps, None  # keep no graph past this call
        if first:
            if logps is None:
                raise RuntimeError("the loss pass ran without the video: no old-policy "
                                   "log-probs to keep for the later iterations")
            # TRL hands the later iterations this same dict from its buffer.
            buffered = self._buffered_inputs[self._step % self.args.steps_per_generation]
            if buffered is not inputs:
                raise RuntimeError("TRL no longer hands the buffered micro-batch itself to the "
                                   "loss; update VideoGRPOTrainer._compute_loss")
            inputs["old_per_token_logps"] = logps.detach()
        return loss

    def _get_per_token_logps_and_entropies(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The parent's pass, plus the active video sliced to each chunk of samples.

        Mirrors the parent's loop (chunking, completion-only labels, fused lm head) because the
        parent builds ``model_inputs`` internally with no hook for extra fields. With
        ``shared_prompt`` and group ids, each chunk runs one prompt pass per group.
        """
        video = self._active_video
        if video is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **kwargs,
            )
        if kwargs.get("pixel_values") is not None:
            raise NotImplementedError("VideoGRPOTrainer does not mix images with videos")
        if len(video) != input_ids.size(0):
            raise RuntimeError(f"{len(video)} videos for {input_ids.size(0)} sequences")
        shared = self.shared_prompt and video.group_ids is not None
        if shared and compute_aux_loss:
            raise NotImplementedError("shared_prompt passes do not compute the MoE aux loss; "
                                      "use shared_prompt=False")
        # DDP must see one forward per backward: the prompt pass bypasses the wrapper; DDP's
        # unused-parameter search reaches it through the completion pass's keys/values.
        prefix_model = model.module if isinstance(model, DistributedDataParallel) else model
        batch_size = batch_size or input_ids.size(0)
        all_logps, all_entropies, all_aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids, mask = input_ids[start:end], attention_mask[start:end]
            with self.accelerator.autocast():
                if shared:
                    logps, entropy = shared_prompt_logps(
                        model, ids, mask, logits_to_keep,
                        group_ids=video.group_ids[start:end],
                        pixel_values_videos=video.pixel_values_videos[start:end],
                        video_grid_thw=video.video_grid_thw[start:end],
                        second_per_grid_ts=video.second_per_grid_ts[start:end],
                        video_token_id=self._video_pad_token_id,
                        compute_entropy=compute_entropy, prefix_model=prefix_model,
                        rope_index=self._row_positions.bind(find_rope_index(model)),
                    )
                    aux = None
                else:
                    logps, entropy, aux = plain_logps(
                        model, ids, mask, logits_to_keep, **video.forward_kwargs(start, end),
                        video_token_id=self._video_pad_token_id,
                        compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss,
                    )
            all_logps.append(logps)
            all_entropies.append(entropy)
            all_aux.append(aux)
        logps = torch.cat(all_logps, dim=0)
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        aux_loss = torch.stack(all_aux).mean() if compute_aux_loss else None
        if compute_entropy:  # the loss pass: _compute_loss may keep them as the old policy's
            self._loss_logps = logps
        return logps, entropies, aux_loss
