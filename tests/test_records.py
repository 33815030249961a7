"""The canonical record schema: valid records pass, every problem names its file and record."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from videorft.errors import DataValidationError, UnsafePathError
from videorft.io import safe_join
from videorft.records import make_record, validate_record, validate_records

FILE = "data/raw/src/annotations.json"


def tg() -> dict[str, Any]:
    return make_record(id="src/v1_0", task="temporal_grounding", source="src",
                       video="src/videos/v1.mp4", duration=30.0,
                       inputs={"query": "person opens a door"}, solution=[1.5, 7.25])


def tracking_frames() -> dict[str, Any]:
    return make_record(
        id="src/seq1", task="tracking", source="src", split="train",
        frames=[f"src/seq1/{i:08d}.jpg" for i in range(1, 9)],
        frame_times=[i / 10 for i in range(8)], duration=1.2,
        inputs={"object": "mountain skink"},
        solution=[[0.1, 0.2, 0.3, 0.4]] * 7 + [[0.0, 0.0, 1.0, 1.0]],
    )


def tracking_video() -> dict[str, Any]:
    return make_record(id="src/clip", task="tracking", source="src", video="src/videos/c.mp4",
                       nframes=8, inputs={"object": "car"},
                       solution=[[0.1, 0.2, 0.3, 0.4]] * 8)


def gqa() -> dict[str, Any]:
    return make_record(
        id="src/q1", task="grounded_qa", source="src", video="src/videos/v2.mp4",
        duration=20.0, split="val",
        inputs={"question": "why did the boy run?", "options": ["to hide", "to play", "to eat"]},
        solution={"answer": "C", "glue": [[0.0, 2.5], [10.0, 20.0]]},
        meta={"type": "CW"},
    )


def mcq() -> dict[str, Any]:
    return make_record(id="src/m1", task="mcq", source="src", video="src/videos/v3.mp4",
                       inputs={"question": "what colour?", "options": list("abcdefg")},
                       solution={"answer": "G"})


VALID = {"tg": tg, "tracking_frames": tracking_frames, "tracking_video": tracking_video,
         "gqa": gqa, "mcq": mcq}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_records_pass_unchanged(kind: str) -> None:
    record = VALID[kind]()
    before = copy.deepcopy(record)
    assert validate_record(record, file=FILE) is record
    assert record == before
    json.dumps(record)  # records are written as JSON lines


def test_validate_records_streams_every_task() -> None:
    records = [factory() for factory in VALID.values()]
    assert list(validate_records(records, file=FILE)) == records


def reject(record: Any, needle: str, *, exc: type[Exception] = DataValidationError,
           **kw: Any) -> str:
    """Assert the record is refused with a message naming the file, the record id and needle."""
    with pytest.raises(exc) as err:
        validate_record(record, file=FILE, **kw)
    message = str(err.value)
    assert needle in message
    assert message.startswith(FILE)
    if isinstance(record, dict) and isinstance(record.get("id"), str):
        assert f"record {record['id']!r}" in message
        assert err.value.record == record["id"]
    assert err.value.file == FILE
    return message


def changed(factory: Any, **fields: Any) -> dict[str, Any]:
    record = factory()
    record.update(fields)
    return record


@pytest.mark.parametrize("field", ["task", "source", "inputs", "solution"])
def test_missing_required_field(field: str) -> None:
    record = tg()
    del record[field]
    reject(record, f"missing required field(s): {field}")


def test_missing_id_still_names_the_file() -> None:
    record = tg()
    record["id"] = None
    message = reject(record, "missing required field(s): id")
    assert "record" not in message.split(":")[0]


def test_not_an_object() -> None:
    reject(["not", "a", "record"], "a record must be an object, got list")


def test_unknown_task_and_split() -> None:
    reject(changed(tg, task="captioning"), "unknown task 'captioning'")
    reject(changed(tg, split="dev"), "unknown split 'dev'")


def test_empty_query() -> None:
    reject(changed(tg, inputs={"query": "  "}), "inputs.query is missing or empty")


@pytest.mark.parametrize(
    ("solution", "needle"),
    [
        ([7.0, 1.5], "ends before it starts (end 1.5 <= start 7.0)"),
        ([3.0, 3.0], "ends before it starts"),
        ([-0.5, 3.0], "starts before 0 s"),
        ([1.0], "must be [start, end] in seconds"),
        (["1", "2"], "must be [start, end] in seconds"),
        ([1.0, float("nan")], "must be [start, end] in seconds"),
        ([1.0, True], "must be [start, end] in seconds"),
    ],
)
def test_bad_temporal_spans(solution: Any, needle: str) -> None:
    reject(changed(tg, solution=solution), needle)


def test_span_beyond_the_duration_and_tolerance() -> None:
    record = changed(tg, solution=[25.0, 30.4])
    reject(record, "goes beyond the video duration 30.0 s")
    assert validate_record(record, file=FILE, duration_tolerance=0.5) is record
    reject(record, "goes beyond", duration_tolerance=0.3)
    assert validate_record(changed(tg, solution=[25.0, 99.0], duration=None), file=FILE)


@pytest.mark.parametrize("duration", [0, -3.0, "30", float("inf")])
def test_bad_duration(duration: Any) -> None:
    reject(changed(tg, duration=duration), "duration must be a positive number")


@pytest.mark.parametrize(
    ("box", "needle"),
    [
        ([0.1, 0.2, 1.01, 0.4], "lies outside the frame"),
        ([-0.01, 0.2, 0.3, 0.4], "lies outside the frame"),
        ([0.1, 0.2, 0.3, 1.5], "lies outside the frame"),
        ([0.3, 0.2, 0.1, 0.4], "is empty"),
        ([0.1, 0.4, 0.3, 0.4], "is empty"),
        ([0.1, 0.2, 0.3], "must be [x0, y0, x1, y1]"),
    ],
)
def test_bad_boxes(box: list[float], needle: str) -> None:
    record = tracking_frames()
    record["solution"][3] = box
    reject(record, f"solution box 3 {box!r} {needle}" if "must" not in needle else needle)


@pytest.mark.parametrize("count", [0, 7, 9])
def test_wrong_box_count(count: int) -> None:
    reject(changed(tracking_frames, solution=[[0.1, 0.2, 0.3, 0.4]] * count),
           f"tracking solution must hold exactly 8 boxes, got {count}")
    reject(changed(tracking_frames, solution={"boxes": []}),
           "tracking solution must hold exactly 8 boxes, got dict")


def test_tracking_frame_count_and_video_nframes() -> None:
    record = tracking_frames()
    record["frames"] = record["frames"][:6]
    record["frame_times"] = record["frame_times"][:6]
    reject(record, "tracking needs 8 frames, one per box; got 6")
    reject(changed(tracking_video, nframes=None), "tracking on a video must set nframes=8")
    reject(changed(tracking_video, nframes=7), "nframes must be an even integer >= 2")
    reject(changed(tracking_video, inputs={}), "inputs.object is missing or empty")


def test_frame_times() -> None:
    reject(changed(tracking_frames, frame_times=None), "frame_times must give one time")
    reject(changed(tracking_frames, frame_times=[0.0] * 8), "frame_times must increase")
    reject(changed(tracking_frames, frame_times=[0.1 * i for i in range(7)]),
           "frame_times must give one time")
    reject(changed(tracking_frames, frames=["src/a.jpg"], frame_times=[0.0]),
           "frames must list at least 2 image paths")


def test_video_and_frames_exactly_one() -> None:
    reject(changed(tracking_frames, video="src/videos/x.mp4"),
           "exactly one of 'video' and 'frames' must be set")
    reject(changed(tg, video=None), "exactly one of 'video' and 'frames' must be set")


TRAVERSALS = [
    ("../x.mp4", "escapes the data root"),
    ("src/../../x.mp4", "escapes the data root"),
    ("/abs/x.mp4", "is absolute"),
    ("C:\\x.mp4", "is absolute"),
    ("C:/videos/x.mp4", "is absolute"),
    ("\\\\server\\share\\x.mp4", "is absolute"),
    ("..\\x.mp4", "escapes the data root"),
]


@pytest.mark.parametrize(("path", "needle"), TRAVERSALS)
def test_path_traversal_in_video(path: str, needle: str) -> None:
    reject(changed(tg, video=path), f"path {path!r} {needle}", exc=UnsafePathError)


@pytest.mark.parametrize(("path", "needle"), TRAVERSALS)
def test_path_traversal_in_frames(path: str, needle: str) -> None:
    record = tracking_frames()
    record["frames"][5] = path
    reject(record, needle, exc=UnsafePathError)


def test_empty_or_nul_paths() -> None:
    reject(changed(tg, video=""), "empty or non-string path")
    reject(changed(tg, video="src/a\x00.mp4"), "contains a NUL byte", exc=UnsafePathError)


def test_duplicate_ids() -> None:
    first, other = tg(), mcq()
    again = changed(tg, solution=[2.0, 3.0])
    stream = validate_records([first, other, again], file=FILE)
    assert next(stream) is first
    assert next(stream) is other
    with pytest.raises(DataValidationError) as err:
        next(stream)
    assert str(err.value) == f"{FILE}, record 'src/v1_0': duplicate id"


@pytest.mark.parametrize("answer", ["D", "H", "c", "AB", "", None, 2])
def test_answer_letter_out_of_range(answer: Any) -> None:
    reject(changed(gqa, solution={"answer": answer, "glue": [[0.0, 1.0]]}),
           "solution.answer must be one of A, B, C")


def test_mcq_answer_and_options() -> None:
    reject(changed(mcq, solution={"answer": "H"}), "must be one of A, B, C, D, E, F, G")
    reject(changed(mcq, solution="G"), "solution must be an object with 'answer'")
    reject(changed(mcq, inputs={"question": "q?", "options": ["only one"]}),
           "inputs.options must be 2 to 7 non-empty strings")
    reject(changed(mcq, inputs={"question": "q?", "options": list("abcdefgh")}),
           "inputs.options must be 2 to 7 non-empty strings")
    reject(changed(mcq, inputs={"question": "q?", "options": ["a", " "]}),
           "inputs.options must be 2 to 7 non-empty strings")
    reject(changed(mcq, inputs={"options": ["a", "b"]}), "inputs.question is missing or empty")


def test_grounded_qa_glue() -> None:
    reject(changed(gqa, solution={"answer": "A", "glue": []}), "solution.glue must list")
    reject(changed(gqa, solution={"answer": "A"}), "solution.glue must list")
    reject(changed(gqa, solution={"answer": "A", "glue": [[0.0, 1.0], [15.0, 20.5]]}),
           "solution.glue[1] [15.0, 20.5] goes beyond the video duration 20.0 s")
    reject(changed(gqa, solution={"answer": "A", "glue": [[4.0, 1.0]]}),
           "solution.glue[0] ends before it starts")


# ---------------------------------------------------------------------------------------------
# videorft.io.safe_join


def test_safe_join_plain_and_inside_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real")
    assert safe_join(root, "a/b.mp4") == (root / "a" / "b.mp4").resolve()
    assert safe_join(root, "alias/x.mp4") == (root / "real" / "x.mp4").resolve()


def test_safe_join_refuses_symlink_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"x")
    (root / "link").symlink_to(outside)
    (root / "file_link.mp4").symlink_to(outside / "secret.mp4")
    (root / "up").symlink_to("..")
    for rel in ("link/secret.mp4", "file_link.mp4", "up/outside/secret.mp4"):
        with pytest.raises(UnsafePathError, match="resolves outside the data root") as err:
            safe_join(root, rel, file=FILE, record="src/x")
        assert str(err.value).startswith(f"{FILE}, record 'src/x'")


def test_safe_join_refuses_dotdot_and_absolute(tmp_path: Path) -> None:
    for rel in ("../x.mp4", os.path.abspath("/etc/passwd")):
        with pytest.raises(UnsafePathError):
            safe_join(tmp_path, rel)
