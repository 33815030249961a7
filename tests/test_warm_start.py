"""The supervised warm start (videorft.trainer.sft) and greedy generation (videorft.model.generate).

- ``reference_answer`` is the ideal completion: it scores full marks on every reward component
  for every row of the tiny project, with and without thinking (tests trainer/data.py against
  rewards.py, the one definition of the format).
- The collator labels exactly the answer and its ``<|im_end|>`` and carries the videos.
- A short warm start on the tiny project (6 training rows, 100 steps at lr 1e-2: ~20 s) drops the
  loss, makes the random model answer in the rewards' format, and installs a loadable model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from videorft.errors import ConfigError
from videorft.io import read_jsonl
from videorft.model.generate import generate_answers
from videorft.model.loading import load_model_and_processor
from videorft.rewards import score
from videorft.trainer.data import load_split, reference_answer, select_sources
from videorft.trainer.sft import (
    IGNORE_INDEX,
    SUMMARY_FILE,
    WarmStartCollator,
    curriculum_phases,
    spread_rows,
    target_text,
    warm_start,
)
from videorft.video.store import FrameStore

TASKS = {"temporal_grounding", "tracking", "grounded_qa", "mcq"}


def _all_rows(root: Path, params: Any) -> list[dict[str, Any]]:
    dataset = root / params.paths.dataset
    return [row for split in ("train", "val") for row in read_jsonl(dataset / f"{split}.jsonl")]


def _rounding_floor(boxes: list[list[float]]) -> float:
    """Mean over boxes of the worst IoU after moving every side by at most 0.005."""
    floors = []
    for x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        floors.append((w - 0.01) * (h - 0.01) / ((w + 0.01) * (h + 0.01)))
    return sum(floors) / len(floors) - 1e-9


@pytest.mark.parametrize("thinking", [False, True])
def test_reference_answer_scores_full_marks(tiny_project, thinking: bool) -> None:
    root, params = tiny_project
    rows = _all_rows(root, params)
    assert {row["task"] for row in rows} == TASKS
    for row in rows:
        answer = reference_answer(row["task"], row["solution"], thinking=thinking)
        components = score(answer, row["task"], row["solution"], thinking=thinking)
        assert components["format"] == 1.0, (row["id"], answer)
        assert components.get("accuracy", 1.0) == 1.0, (row["id"], answer)
        # Written with 2 decimals: spans of a second or more lose at most ~1% IoU; a box loses
        # what moving each side by up to 0.005 can cost (up to ~7% for the small synthetic
        # boxes), so its bound is computed from the true boxes.
        floor = _rounding_floor(row["solution"]) if row["task"] == "tracking" else 0.99
        assert components.get("iou", 1.0) >= floor, (row["id"], answer, components, floor)
        # The JSON-encoded solution of the trainer rows gives the same answer.
        assert reference_answer(row["task"], json.dumps(row["solution"]),
                                thinking=thinking) == answer
        # Control: the other mode's format fails, so the check above can fail.
        assert score(answer, row["task"], row["solution"], thinking=not thinking)["format"] == 0


@pytest.fixture(scope="module")
def processor(tiny_project):
    root, _ = tiny_project
    return load_model_and_processor(root / "tiny-model")[1]


def test_collator_labels_only_the_answer(tiny_project, processor) -> None:
    root, params = tiny_project
    store = FrameStore(root / params.paths.frames)
    rows = spread_rows(load_split(root / params.paths.dataset, "train"), 4)
    assert {row["task"] for row in rows} == TASKS
    batch = WarmStartCollator(processor, store)(rows)
    tokenizer = processor.tokenizer
    input_ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert labels.shape == input_ids.shape == mask.shape == batch["mm_token_type_ids"].shape
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    video_pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    merge = processor.video_processor.merge_size
    for i, row in enumerate(rows):
        labelled = labels[i] != IGNORE_INDEX
        positions = labelled.nonzero().flatten().tolist()
        # One contiguous run at the end (left padding), equal to the input ids there.
        assert positions == list(range(input_ids.shape[1] - len(positions), input_ids.shape[1]))
        assert torch.equal(labels[i][labelled], input_ids[i][labelled])
        assert tokenizer.decode(labels[i][labelled]) == target_text(row)
        assert target_text(row).endswith("<|im_end|>") and labels[i, -1] == im_end
        # Everything before it (system, user turn with the video, "assistant\n") is unlabelled.
        prompt = input_ids[i][mask[i].bool() & ~labelled]
        text = tokenizer.decode(prompt)
        assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
        assert row["prompt"] in text
        # Padding is unlabelled and masked.
        assert not labelled[~mask[i].bool()].any()
        # The video: grid from the stored frames (2 frames per temporal patch, 14 px patches),
        # its time spacing, and one <|video_pad|> per merged patch.
        frames = store.load(row["frames_key"])
        t, h, w = frames.shape[0] // 2, frames.shape[1] // 14, frames.shape[2] // 14
        assert batch["video_grid_thw"][i].tolist() == [t, h, w]
        assert math.isclose(float(batch["second_per_grid_ts"][i]), 2 / row["sample_fps"],
                            rel_tol=1e-5)
        video_tokens = int((input_ids[i] == video_pad).sum())
        marked = int((batch["mm_token_type_ids"][i] != 0).sum())  # 2: video (1: image)
        assert video_tokens == t * h * w // merge**2 == marked
        assert not labelled[input_ids[i] == video_pad].any()
    patches = int(batch["video_grid_thw"].prod(dim=1).sum())
    assert batch["pixel_values_videos"].shape == (patches, 3 * 2 * 14 * 14)


def test_collator_cache_gives_what_the_processor_gives_the_batch(tiny_project, processor) -> None:
    """A batch assembled from rows processed alone (and cached) equals the processor's batch:
    same tokens, left padding, labels, masks and patches; with or without the cache."""
    root, params = tiny_project
    store = FrameStore(root / params.paths.frames)
    rows = spread_rows(load_split(root / params.paths.dataset, "train"), 6)
    collator = WarmStartCollator(processor, store)
    reference = collator.process(rows)
    assert len({int(m.sum()) for m in reference["attention_mask"]}) > 1  # padding is exercised
    uncached = WarmStartCollator(processor, store, cache_bytes=0)
    for batch in (collator(rows), collator(rows), uncached(rows)):  # miss, hit, no cache
        assert batch.keys() == reference.keys()
        for name, value in reference.items():
            assert torch.equal(batch[name], value), name
    assert collator._cached_bytes > 0 and uncached._cached_bytes == 0
    # A row's cached item is reused as is in another batch.
    assert torch.equal(collator(rows[2:3])["input_ids"], collator.process(rows[2:3])["input_ids"])


@pytest.fixture(scope="module")
def warm(tiny_project, tmp_path_factory: pytest.TempPathFactory):
    """One short warm start on the tiny project: (summary, out_dir, params, root)."""
    root, params = tiny_project
    out_dir = tmp_path_factory.mktemp("warm") / "models" / "warm_start"
    out_dir.mkdir(parents=True)
    (out_dir / "model_info.json").write_text('{"source": "skipped"}')  # replaced, not refused
    ws = params.warm_start.model_copy(update={
        "max_steps": 100, "learning_rate": 1e-2, "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1, "seed": 0,
    })
    params = params.model_copy(update={"warm_start": ws})
    summary = warm_start(params, root, base_model=root / "tiny-model", out_dir=out_dir)
    return summary, out_dir, params, root


def test_warm_start_lowers_loss_and_installs_a_model(warm) -> None:
    summary, out_dir, params, _ = warm
    print({k: v for k, v in summary.items() if k not in ("loss_history", "before", "after")})
    assert summary["steps"] == params.warm_start.max_steps == len(summary["loss_history"])
    assert summary["loss_last"] < 0.25 * summary["loss_first"], summary["loss_history"]
    json.dumps(summary)  # JSON-able
    # The model folder's copy is the summary without the times (same inputs, same bytes).
    saved = json.loads((out_dir / SUMMARY_FILE).read_text())
    untimed = json.loads(json.dumps(summary))
    assert untimed.pop("train_seconds") > 0
    for when in ("before", "after"):
        assert untimed[when].pop("seconds") >= 0
    assert saved == untimed
    assert (out_dir / "model.safetensors").is_file() and (out_dir / "config.json").is_file()
    assert not (out_dir / "model_info.json").exists()  # the old marker was replaced
    leftovers = [p.name for p in out_dir.parent.iterdir() if p != out_dir]
    assert not leftovers, leftovers  # no temp, old or trainer scratch folders
    model, processor = load_model_and_processor(out_dir, dtype=params.model.dtype)
    assert processor.video_processor is not None and model.training is False


def test_warm_start_teaches_the_answer_format(warm) -> None:
    summary, *_ = warm
    before, after = summary["before"], summary["after"]
    print("format before", before["format"], "after", after["format"],
          {t: v["format"] for t, v in after["per_task"].items()}, after["examples"])
    assert before["format"] == 0.0  # a random model never answers in format
    assert set(after["per_task"]) == TASKS and after["rows"] == before["rows"] > 0
    assert after["format"] >= 0.75, after
    assert after["reward"] > before["reward"] + 1.0


def test_generate_answers_is_batch_invariant(warm) -> None:
    """Left-padded batches give the same greedy answers as one row at a time, and the trained
    model answers in format."""
    _, out_dir, params, root = warm
    model, processor = load_model_and_processor(out_dir, dtype=params.model.dtype)
    store = FrameStore(root / params.paths.frames)
    rows = spread_rows(load_split(root / params.paths.dataset, "train"), 4)
    batched = generate_answers(model, processor, rows, store, max_new_tokens=24, batch_size=4)
    single = generate_answers(model, processor, rows, store, max_new_tokens=24, batch_size=1)
    assert len(batched) == len(rows) and all(isinstance(a, str) for a in batched)
    assert batched == single
    mcq = [a for a, row in zip(batched, rows, strict=True) if row["task"] == "mcq"]
    assert all(a.startswith("<answer>") and "<|im_end|>" not in a for a in mcq), mcq


def test_warm_start_refuses_to_replace_a_foreign_folder(tiny_project, tmp_path: Path) -> None:
    root, params = tiny_project
    out_dir = tmp_path / "not-a-model"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not replacing"):
        warm_start(params, root, base_model=root / "tiny-model", out_dir=out_dir)
    assert (out_dir / "notes.txt").read_text() == "mine"


def test_select_sources_keeps_the_named_sources_and_refuses_unknown_names() -> None:
    rows = [{"id": f"{name}/{i}", "source": name} for name in ("pretrain", "target")
            for i in range(3)]
    assert select_sources(rows, None, key="k", file="f") == rows
    assert [r["id"] for r in select_sources(rows, ["target"], key="k", file="f")] == [
        "target/0", "target/1", "target/2"]
    with pytest.raises(ConfigError, match=r"warm_start.sources: 'charades' has no rows in "
                                          r"train.jsonl \(its sources: pretrain, target\)"):
        select_sources(rows, ["target", "charades"], key="warm_start.sources",
                       file="train.jsonl")


def test_warm_start_trains_on_its_sources_only(tiny_project, tmp_path: Path) -> None:
    """Rows of other sources never reach the trainer: with the project's rows split into two
    sources, a 1-step warm start on one of them sees (and evaluates) only that one."""
    root, params = tiny_project
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for split in ("train", "val"):
        rows = list(read_jsonl(root / params.paths.dataset / f"{split}.jsonl"))
        for i, row in enumerate(rows):
            row["source"] = "pretrain" if i % 2 else "target"
        (dataset / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = params.paths.model_copy(update={"dataset": str(dataset),
                                            "frames": str(root / params.paths.frames)})
    ws = params.warm_start.model_copy(update={"max_steps": 1, "sources": ["pretrain"]})
    selected = params.model_copy(update={"paths": paths, "warm_start": ws})
    summary = warm_start(selected, root, base_model=root / "tiny-model",
                         out_dir=tmp_path / "ws", eval_rows=100)
    pretrain = sum(1 for i, _ in enumerate(read_jsonl(dataset / "train.jsonl")) if i % 2)
    assert summary["after"]["rows"] == pretrain < len(list(read_jsonl(dataset / "train.jsonl")))
    other = params.warm_start.model_copy(update={"sources": ["nope"]})
    with pytest.raises(ConfigError, match=r"warm_start\.sources: 'nope'"):
        warm_start(params.model_copy(update={"paths": paths, "warm_start": other}), root,
                   base_model=root / "tiny-model", out_dir=tmp_path / "ws2")


def test_training_arguments_carry_every_warm_start_knob(tiny_project, tmp_path: Path) -> None:
    from videorft.trainer.sft import _training_args

    _, params = tiny_project
    ws = params.warm_start.model_copy(update={
        "max_steps": 7, "learning_rate": 3e-3, "per_device_train_batch_size": 5,
        "gradient_accumulation_steps": 2, "weight_decay": 0.1, "seed": 11})
    args = _training_args(params.model_copy(update={"warm_start": ws}), tmp_path,
                          dtype=torch.float32, max_steps=ws.max_steps)
    assert (args.max_steps, args.learning_rate, args.per_device_train_batch_size,
            args.gradient_accumulation_steps, args.weight_decay, args.seed, args.data_seed) == (
        7, 3e-3, 5, 2, 0.1, 11, 11)


def _with_warm_start(params: Any, **changes: Any) -> Any:
    """``params`` with ``changes`` in its warm_start section, validated as params.yaml is."""
    return params.model_validate(
        {**params.model_dump(), "warm_start": {**params.warm_start.model_dump(), **changes}})


def test_a_curriculum_trains_its_tasks_first_then_every_row(
    tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """warm_start.curriculum: the first phase's trainer gets temporal-grounding rows only, for
    its own steps; the main phase then gets every row; the loss history runs on across both,
    a step each, while the bar prints every PRINT_LOSS_EVERY-th loss and each phase's last."""
    from videorft.trainer import sft

    root, params = tiny_project
    seen: list[set[str]] = []

    class RecordingDataset(sft.RowDataset):
        def __init__(self, rows):
            seen.append({row["task"] for row in rows})
            super().__init__(rows)

    monkeypatch.setattr(sft, "RowDataset", RecordingDataset)
    monkeypatch.setattr(sft, "PRINT_LOSS_EVERY", 2)
    capsys.readouterr()
    staged = _with_warm_start(params, max_steps=2, per_device_train_batch_size=2,
                              curriculum=[{"tasks": ["temporal_grounding"], "max_steps": 3}])
    summary = warm_start(staged, root, base_model=root / "tiny-model", out_dir=tmp_path / "ws",
                         eval_rows=0)
    assert seen == [{"temporal_grounding"}, TASKS]
    train = list(read_jsonl(root / params.paths.dataset / "train.jsonl"))
    grounding = sum(row["task"] == "temporal_grounding" for row in train)
    assert [(p["tasks"], p["steps"], p["rows"]) for p in summary["phases"]] == [
        (["temporal_grounding"], 3, grounding), (None, 2, len(train))]
    assert summary["steps"] == 5
    assert [entry["step"] for entry in summary["loss_history"]] == [1, 2, 3, 4, 5]
    printed = [line for line in capsys.readouterr().out.splitlines() if "{'loss': " in line]
    assert len(printed) == 3, printed  # phase 1: steps 2 and 3 (its last); phase 2: step 2


def test_an_empty_train_split_is_refused_naming_the_file(tiny_project, tmp_path) -> None:
    """Every video held out leaves nothing to warm-start on: a one-line error naming the file,
    before the model loads and with nothing written."""
    _, params = tiny_project
    dataset = tmp_path / params.paths.dataset
    dataset.mkdir(parents=True)
    (dataset / "train.jsonl").write_text("")
    out_dir = tmp_path / "warm"
    with pytest.raises(ConfigError, match=r"train\.jsonl: no training row to warm-start on"):
        warm_start(params, tmp_path, base_model=tmp_path / "no-model", out_dir=out_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_curriculum_phase_without_rows_is_refused_naming_the_file(tiny_project) -> None:
    _, params = tiny_project
    staged = _with_warm_start(params, curriculum=[{"tasks": ["mcq"], "max_steps": 3}])
    rows = [{"task": "temporal_grounding", "id": "a"}]
    with pytest.raises(ConfigError, match=r"^train\.jsonl: warm_start\.curriculum\.0 trains on "
                                          r"mcq, which has no training row$"):
        curriculum_phases(staged, rows, file="train.jsonl")
    main = curriculum_phases(params, rows, file="train.jsonl")
    assert main == [(None, params.warm_start.max_steps, rows)]
