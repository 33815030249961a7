"""Dataset sources: small fixtures in each dataset's real native format -> exact records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from videorft.errors import ConfigError, DataValidationError, UnsafePathError
from videorft.params import SourceParams
from videorft.sources import activitynet, charades_sta, get_parser, got10k, mcq, nextgqa

# ---------------------------------------------------------------------------------------------
# helpers


def make_source(type_: str, name: str, **fields: Any) -> SourceParams:
    return SourceParams(name=name, type=type_, **fields)


def layout(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(raw_root, folder): the source's files live in raw_root/name, as the download stage does."""
    raw_root = tmp_path / "raw"
    folder = raw_root / name
    folder.mkdir(parents=True)
    return raw_root, folder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, data: Any) -> Path:
    return write(path, json.dumps(data, indent=2))


def run(module: Any, config: SourceParams, folder: Path, raw_root: Path, **kw: Any) -> list[dict]:
    return list(module.parse(config, folder, raw_root, **kw))


def by_id(records: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in records}


def test_every_source_type_has_a_parser() -> None:
    for source_type in ("charades_sta", "activitynet", "got10k", "nextgqa", "mcq"):
        assert callable(get_parser(source_type))


# ---------------------------------------------------------------------------------------------
# Charades-STA

CHARADES_TXT = (
    "3MSZA 24.3 30.4##person turn a light on.\n"
    "3MSZA 0.0 6.9##person opening a door .\n"
    "\n"
    "AO8RW 0 6.7##a person is putting a book on a shelf.\n"
)


def test_charades_text_format(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "charades")
    write(folder / "charades_sta_train.txt", CHARADES_TXT)
    records = run(charades_sta, make_source("charades_sta", "charades", split="train"),
                  folder, raw_root)
    assert [r["id"] for r in records] == ["charades/3MSZA_0", "charades/3MSZA_1",
                                          "charades/AO8RW_0"]
    assert records[0] == {
        "id": "charades/3MSZA_0",
        "task": "temporal_grounding",
        "source": "charades",
        "split": "train",
        "video": "charades/videos/3MSZA.mp4",
        "frames": None,
        "frame_times": None,
        "nframes": None,
        "duration": None,
        "inputs": {"query": "person turn a light on"},
        "solution": [24.3, 30.4],
        "meta": {"video_id": "3MSZA", "sentence_index": 0, "line": 1},
    }
    assert records[1]["inputs"] == {"query": "person opening a door"}
    assert records[1]["solution"] == [0.0, 6.9]
    assert records[2]["video"] == "charades/videos/AO8RW.mp4"
    assert records[2]["meta"]["line"] == 4


def test_charades_text_with_durations_csv(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "charades")
    write(folder / "anno" / "train.txt", CHARADES_TXT)
    write(folder / "Charades_v1_train.csv",
          "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
          '3MSZA,HR43,Kitchen,6,7,Yes,"A person turns on a light, then opens a door.",light;door,'
          '"multi\nline",c151 0.00 6.90,31.00\n'
          "AO8RW,XX12,Bedroom,5,6,Yes,script,book,desc,c000 0.0 6.7,7.50\n")
    config = make_source("charades_sta", "charades", annotation="anno/train.txt",
                         video_dir="Charades_v1_480",
                         options={"durations": "Charades_v1_train.csv"})
    records = by_id(run(charades_sta, config, folder, raw_root))
    assert records["charades/3MSZA_0"]["duration"] == 31.0
    assert records["charades/AO8RW_0"]["duration"] == 7.5
    assert records["charades/AO8RW_0"]["video"] == "charades/Charades_v1_480/AO8RW.mp4"


def test_charades_json_form(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "cha")
    write_json(folder / "charades_train.json", {
        "3MSZA": {"duration": 30.96, "timestamps": [[24.3, 30.4], [0, 6.9]],
                  "sentences": ["person turn a light on.", " person opening a door. "]},
        "AO8RW": {"duration": 7.0, "timestamps": [[0.0, 6.7]],
                  "sentences": ["a person is putting a book on a shelf."]},
    })
    config = make_source("charades_sta", "cha", annotation="charades_train.json",
                         video_ext=".webm")
    records = run(charades_sta, config, folder, raw_root)
    assert [(r["id"], r["video"], r["duration"], r["solution"], r["inputs"]["query"])
            for r in records] == [
        ("cha/3MSZA_0", "cha/videos/3MSZA.webm", 30.96, [24.3, 30.4], "person turn a light on"),
        ("cha/3MSZA_1", "cha/videos/3MSZA.webm", 30.96, [0.0, 6.9], "person opening a door"),
        ("cha/AO8RW_0", "cha/videos/AO8RW.webm", 7.0, [0.0, 6.7],
         "a person is putting a book on a shelf"),
    ]
    assert records[0]["split"] is None
    assert records[1]["meta"] == {"video_id": "3MSZA", "sentence_index": 1}


def test_charades_json_detected_by_content_not_extension(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "cha")
    write_json(folder / "charades_sta_train.txt",
               {"V1": {"duration": 10, "timestamps": [[1, 2]], "sentences": ["x."]}})
    records = run(charades_sta, make_source("charades_sta", "cha"), folder, raw_root)
    assert [r["id"] for r in records] == ["cha/V1_0"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("3MSZA 24.3 30.4##ok.\n3MSZA 24.3 person turns##bad\n", "line 2"),
        ("3MSZA 24.3 30.4 no hashes\n", "line 1"),
        ("3MSZA abc 30.4##bad number\n", "line 1: start and end must be numbers"),
    ],
)
def test_charades_text_bad_line_names_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    raw_root, folder = layout(tmp_path, "charades")
    path = write(folder / "charades_sta_train.txt", text)
    with pytest.raises(DataValidationError) as err:
        run(charades_sta, make_source("charades_sta", "charades"), folder, raw_root)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_charades_end_before_start_names_record(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "charades")
    path = write(folder / "charades_sta_train.txt", "3MSZA 24.3 30.4##a.\n3MSZA 9.0 4.0##b.\n")
    with pytest.raises(DataValidationError, match="ends before it starts") as err:
        run(charades_sta, make_source("charades_sta", "charades"), folder, raw_root)
    assert str(path) in str(err.value) and "'charades/3MSZA_1'" in str(err.value)


def test_charades_video_id_escaping_the_root(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "charades")
    write(folder / "charades_sta_train.txt", "../../etc/passwd 1 2##sneaky.\n")
    with pytest.raises(UnsafePathError, match="escapes"):
        run(charades_sta, make_source("charades_sta", "charades"), folder, raw_root)


def test_charades_json_problems(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "cha")
    config = make_source("charades_sta", "cha", annotation="a.json")
    path = write(folder / "a.json", '{"3MSZA": {"duration": 30, ')
    with pytest.raises(DataValidationError, match="not valid JSON") as err:
        run(charades_sta, config, folder, raw_root)
    assert str(path) in str(err.value)

    write_json(path, {"3MSZA": {"duration": 30, "timestamps": [[1, 2], [3, 4]],
                                "sentences": ["one."]}})
    with pytest.raises(DataValidationError, match="2 timestamps but 1 sentences") as err:
        run(charades_sta, config, folder, raw_root)
    assert "record '3MSZA'" in str(err.value)

    write_json(path, {"3MSZA": {"duration": 30, "sentences": ["one."]}})
    with pytest.raises(DataValidationError, match=r"missing field\(s\): timestamps"):
        run(charades_sta, config, folder, raw_root)


def test_charades_span_beyond_duration_and_tolerance(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "cha")
    write_json(folder / "a.json",
               {"3MSZA": {"duration": 30.0, "timestamps": [[24.3, 30.4]], "sentences": ["x."]}})
    config = make_source("charades_sta", "cha", annotation="a.json")
    with pytest.raises(DataValidationError, match="beyond the video duration") as err:
        run(charades_sta, config, folder, raw_root)
    assert "'cha/3MSZA_0'" in str(err.value)
    assert len(run(charades_sta, config, folder, raw_root, duration_tolerance=0.5)) == 1


def test_charades_missing_annotation_and_empty_file(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "charades")
    with pytest.raises(DataValidationError, match="file not found") as err:
        run(charades_sta, make_source("charades_sta", "charades"), folder, raw_root)
    assert "charades_sta_train.txt" in str(err.value)
    write(folder / "charades_sta_train.txt", "\n\n")
    with pytest.raises(DataValidationError, match="no samples"):
        run(charades_sta, make_source("charades_sta", "charades"), folder, raw_root)


def test_on_invalid_reports_and_skips(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "charades")
    write(folder / "charades_sta_train.txt",
          "A 1 2##ok.\nbroken line\nB 5 3##backwards.\nC 0 1##fine.\n")
    rejected: list[DataValidationError] = []
    records = run(charades_sta, make_source("charades_sta", "charades"), folder, raw_root,
                  on_invalid=rejected.append)
    assert [r["id"] for r in records] == ["charades/A_0", "charades/C_0"]
    assert [e.record for e in rejected] == [None, "charades/B_0"]
    assert "line 2" in str(rejected[0])


# ---------------------------------------------------------------------------------------------
# ActivityNet Captions


def test_activitynet_json(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "anet")
    write_json(folder / "val_2.json", {
        "v_QOlSCBRmfWY": {
            "duration": 82.73,
            "timestamps": [[0.83, 19.86], [17.37, 60.81], [56.26, 79.42]],
            "sentences": [
                "A young woman is seen standing in a room and leads into her dancing.",
                " The girl dances around the room while the camera captures her movements.",
                " She continues dancing around the room and ends by laying on the floor.",
            ],
        }
    })
    records = run(activitynet, make_source("activitynet", "anet", split="test"), folder,
                  raw_root)
    assert [r["id"] for r in records] == [f"anet/v_QOlSCBRmfWY_{n}" for n in range(3)]
    assert {r["video"] for r in records} == {"anet/videos/v_QOlSCBRmfWY.mp4"}
    assert [r["solution"] for r in records] == [[0.83, 19.86], [17.37, 60.81], [56.26, 79.42]]
    assert records[1]["inputs"]["query"] == (
        "The girl dances around the room while the camera captures her movements"
    )
    assert all(r["duration"] == 82.73 and r["split"] == "test" for r in records)


def test_activitynet_needs_the_object_form(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "anet")
    path = write_json(folder / "val_2.json", [{"video": "v_x"}])
    with pytest.raises(DataValidationError, match="expected a JSON object") as err:
        run(activitynet, make_source("activitynet", "anet"), folder, raw_root)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------------------------------------
# GOT-10k

W, H = 64, 48
META_INFO = """[METAINFO]
url: https://youtu.be/iwLTaGD6dY8
begin_time: 00:00:02
end_time: 00:00:07
anno_fps: 10Hz
object_class: {cls}
motion_class: walking
major_class: lizard
root_class: animal
motion_adverb: slowly
resolution: (64, 48)
"""


def box_line(i: int) -> str:
    """Frame i's box in pixels, x,y,w,h: moves right and down one step per frame."""
    return f"{2 * i:.4f},{i:.4f},20.0000,10.0000"


def write_sequence(
    seq: Path,
    *,
    n: int = 12,
    absent: tuple[int, ...] = (3, 7),
    cls: str = "mountain_skink",
    boxes: dict[int, str] | None = None,
) -> Path:
    """A GOT-10k sequence folder: n real JPEG frames and the official label files."""
    seq.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (W, H), (i * 20, 100, 50)).save(seq / f"{i + 1:08d}.jpg", "JPEG")
    lines = [box_line(i) for i in range(n)]
    for i in absent:
        lines[i] = "0.0000,0.0000,0.0000,0.0000"  # never sampled, would be an empty box
    for i, line in (boxes or {}).items():
        lines[i] = line
    write(seq / "groundtruth.txt", "\n".join(lines) + "\n")
    write(seq / "absence.label", "".join("1\n" if i in absent else "0\n" for i in range(n)))
    write(seq / "cover.label", "".join("0\n" if i in absent else "8\n" for i in range(n)))
    write(seq / "meta_info.ini", META_INFO.format(cls=cls))
    return seq


def expected_box(i: int) -> list[float]:
    return [2 * i / W, i / H, (2 * i + 20) / W, (i + 10) / H]


# 12 frames, 3 and 7 absent -> present = [0,1,2,4,5,6,8,9,10,11];
# round(linspace(0, 9, 8)) = [0,1,3,4,5,6,8,9] -> frames [0,1,4,5,6,8,10,11]
PICKS = [0, 1, 4, 5, 6, 8, 10, 11]


def test_got10k_official_layout(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "got")
    split = folder / "train"
    write_sequence(split / "GOT-10k_Train_000001",
                   boxes={0: "-0.5000,0.0000,20.0000,10.0000",   # 0.5 px left of the frame
                          11: "44.5000,38.6000,20.0000,10.0000"})  # 0.5 px right, 0.6 px below
    write_sequence(split / "GOT-10k_Train_000002", cls="person", absent=())
    write(split / "list.txt", "GOT-10k_Train_000002\nGOT-10k_Train_000001\n")
    config = make_source("got10k", "got", annotation="train", split="train")
    records = run(got10k, config, folder, raw_root)
    assert [r["id"] for r in records] == ["got/GOT-10k_Train_000002", "got/GOT-10k_Train_000001"]

    record = records[1]
    seq = "got/train/GOT-10k_Train_000001"
    assert record["task"] == "tracking" and record["split"] == "train"
    assert record["video"] is None and record["nframes"] is None
    assert record["frames"] == [f"{seq}/{i + 1:08d}.jpg" for i in PICKS]
    assert record["frame_times"] == pytest.approx([i / 10 for i in PICKS])
    assert record["duration"] == pytest.approx(1.2)
    assert record["inputs"] == {"object": "mountain skink"}
    expected = [expected_box(i) for i in PICKS]
    expected[0] = [0.0, 0.0, 19.5 / W, 10 / H]  # clipped at the left edge
    expected[-1] = [44.5 / W, 38.6 / H, 1.0, 1.0]  # clipped at the right and bottom edges
    assert len(record["solution"]) == 8
    for got, want in zip(record["solution"], expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    assert record["meta"]["frame_indices"] == PICKS
    assert record["meta"]["image_size"] == [W, H]
    assert record["meta"]["meta_info"]["motion_class"] == "walking"

    # no absent frames: round(linspace(0, 11, 8)) = [0, 2, 3, 5, 6, 8, 9, 11]
    assert records[0]["meta"]["frame_indices"] == [0, 2, 3, 5, 6, 8, 9, 11]
    assert records[0]["inputs"] == {"object": "person"}
    json.dumps(records)  # plain Python types only (no numpy integers)
    assert all(type(i) is int for i in record["meta"]["frame_indices"])


def test_got10k_sorted_without_list_fps_and_max_sequences(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "got")
    write_sequence(folder / "GOT-10k_Val_000002", absent=())
    write_sequence(folder / "GOT-10k_Val_000001", absent=())
    (folder / "not_a_sequence").mkdir()
    config = make_source("got10k", "got", options={"fps": 5, "max_sequences": 1})
    records = run(got10k, config, folder, raw_root)
    assert [r["id"] for r in records] == ["got/GOT-10k_Val_000001"]
    assert records[0]["frames"][0] == "got/GOT-10k_Val_000001/00000001.jpg"
    assert records[0]["frame_times"] == pytest.approx([i / 5 for i in [0, 2, 3, 5, 6, 8, 9, 11]])
    assert records[0]["duration"] == pytest.approx(12 / 5)


def test_got10k_single_sequence_folder(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "got")
    write_sequence(folder / "GOT-10k_Train_000009")
    config = make_source("got10k", "got", annotation="GOT-10k_Train_000009")
    assert [r["id"] for r in run(got10k, config, folder, raw_root)] == [
        "got/GOT-10k_Train_000009"
    ]


def test_got10k_paper_json_form(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "got")
    write_sequence(folder / "GOT-10k" / "train" / "GOT-10k_Train_008002")
    gt = [[0.585, 0.504, 0.641, 0.601]] * 2 + [[0.1 * k, 0.1, 0.1 * k + 0.05, 0.2]
                                               for k in range(1, 7)]
    write_json(folder / "got_train.json", [
        {"path": "GOT-10k/train/GOT-10k_Train_008002", "object": "motorcycle wheel", "gt": gt},
    ])
    config = make_source("got10k", "got", annotation="got_train.json")
    (record,) = run(got10k, config, folder, raw_root)
    assert record["id"] == "got/GOT-10k_Train_008002"
    assert record["inputs"] == {"object": "motorcycle wheel"}
    assert record["solution"] == gt
    assert record["frames"] == [f"got/GOT-10k/train/GOT-10k_Train_008002/{i + 1:08d}.jpg"
                                for i in PICKS]
    assert record["meta"]["path"] == "GOT-10k/train/GOT-10k_Train_008002"


def test_got10k_json_form_errors(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "got")
    path = folder / "got.json"
    config = make_source("got10k", "got", annotation="got.json")
    box = [0.1, 0.1, 0.2, 0.2]
    write_json(path, [{"path": "../elsewhere/seq", "object": "cat", "gt": [box] * 8}])
    with pytest.raises(UnsafePathError) as err:
        run(got10k, config, folder, raw_root)
    assert str(path) in str(err.value) and "item 0" in str(err.value)

    write_sequence(folder / "seq")
    write_json(path, [{"path": "seq", "object": "cat", "gt": [box] * 7}])
    with pytest.raises(DataValidationError, match="exactly 8 boxes") as err:
        run(got10k, config, folder, raw_root)
    assert "'got/seq'" in str(err.value)

    write_json(path, [{"path": "seq", "object": "cat", "gt": [box] * 7 + [[0.5, 0.5, 1.2, 0.9]]}])
    with pytest.raises(DataValidationError, match="outside the frame"):
        run(got10k, config, folder, raw_root)


def test_got10k_symlink_escape_in_list(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "got")
    write_sequence(tmp_path / "outside" / "seq")
    (folder / "link").symlink_to(tmp_path / "outside" / "seq")
    write(folder / "list.txt", "link\n")
    with pytest.raises(UnsafePathError, match="resolves outside"):
        run(got10k, make_source("got10k", "got"), folder, raw_root)


@pytest.mark.parametrize(
    ("damage", "file_name", "needle"),
    [
        (lambda s: write_sequence(s, absent=(0, 2, 4, 6, 8)), "absence.label",
         "present in only 7 of 12 frames"),
        (lambda s: write(s / "groundtruth.txt", "\n".join(box_line(i) for i in range(11))),
         "groundtruth.txt", "11 lines for 12 frame images"),
        (lambda s: write(s / "absence.label", "0\n" * 13), "absence.label",
         "13 lines for 12 frame images"),
        (lambda s: write_sequence(s, boxes={5: "50.0000,5.0000,16.0000,10.0000"}),
         "groundtruth.txt", "line 6: box x,y,w,h=[50.0, 5.0, 16.0, 10.0] lies outside the 64x48"),
        (lambda s: write_sequence(s, boxes={4: "-1.5000,5.0000,16.0000,10.0000"}),
         "groundtruth.txt", "line 5"),
        (lambda s: write_sequence(s, boxes={0: "1,2,3"}), "groundtruth.txt",
         "line 1: expected 'x,y,w,h'"),
        (lambda s: write(s / "absence.label", "0\n" * 11 + "yes\n"), "absence.label",
         "line 12: expected 0 or 1"),
        (lambda s: write(s / "meta_info.ini", "[METAINFO]\nurl: x\n"), "meta_info.ini",
         "object_class"),
        (lambda s: [p.unlink() for p in s.glob("*.jpg")], "seq", "no frame images"),
        (lambda s: write(s / "00000001.jpg", "not a jpeg"), "00000001.jpg",
         "cannot read the image size"),
    ],
)
def test_got10k_broken_sequences(tmp_path: Path, damage: Any, file_name: str, needle: str) -> None:
    raw_root, folder = layout(tmp_path, "got")
    seq = write_sequence(folder / "seq")
    damage(seq)
    with pytest.raises(DataValidationError) as err:
        run(got10k, make_source("got10k", "got"), folder, raw_root)
    message = str(err.value)
    assert needle in message
    assert str(seq / file_name) in message if file_name != "seq" else str(seq) in message
    assert "'got/seq'" in message


def test_got10k_bad_options_and_missing_annotation(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "got")
    with pytest.raises(ConfigError, match="fps"):
        run(got10k, make_source("got10k", "got", options={"fps": 0}), folder, raw_root)
    with pytest.raises(ConfigError, match="max_sequences"):
        run(got10k, make_source("got10k", "got", options={"max_sequences": "all"}), folder,
            raw_root)
    with pytest.raises(DataValidationError, match="not found"):
        run(got10k, make_source("got10k", "got", annotation="train"), folder, raw_root)
    with pytest.raises(DataValidationError, match="no samples"):
        run(got10k, make_source("got10k", "got"), folder, raw_root)


# ---------------------------------------------------------------------------------------------
# NExT-GQA

NEXTGQA = [
    {
        "id": "4010069381_6",
        "video": "1164/4010069381",
        "question": "why did the boy pick up one present from the group of them?",
        "options": ["(A) to watch", "(B) to share with the girl", "(C) to open it",
                    "(D) to throw it", "(E) dancing"],
        "answer": "(C)",
        "glue": [[1.5, 4.0], [8, 10.2]],
        "duration": 30.0,
        "type": "CW",
    },
    {
        "id": 2525958730,
        "video": 2525958730,
        "question": "what does the man do after he stops?",
        "options": ["(A) walk", "(B) sit", "(C) run", "(D) jump", "(E) wave"],
        "answer": "B",
        "glue": [2, 5],
        "duration": 12.5,
        "type": "TN",
        "qid": 3,
    },
]


def test_nextgqa_paper_json(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "nextgqa")
    write_json(folder / "nextgqa_val.json", NEXTGQA)
    config = make_source("nextgqa", "nextgqa", video_dir="NExTVideo", split="train")
    first, second = run(nextgqa, config, folder, raw_root)
    assert first == {
        "id": "nextgqa/4010069381_6",
        "task": "grounded_qa",
        "source": "nextgqa",
        "split": "train",
        "video": "nextgqa/NExTVideo/1164/4010069381.mp4",
        "frames": None,
        "frame_times": None,
        "nframes": None,
        "duration": 30.0,
        "inputs": {
            "question": "why did the boy pick up one present from the group of them?",
            "options": ["to watch", "to share with the girl", "to open it", "to throw it",
                        "dancing"],
        },
        "solution": {"answer": "C", "glue": [[1.5, 4.0], [8.0, 10.2]]},
        "meta": {"native_id": "4010069381_6", "video_id": "1164/4010069381", "type": "CW"},
    }
    assert second["id"] == "nextgqa/2525958730"
    assert second["video"] == "nextgqa/NExTVideo/2525958730.mp4"
    assert second["solution"] == {"answer": "B", "glue": [[2.0, 5.0]]}
    assert second["meta"] == {"native_id": "2525958730", "video_id": "2525958730", "type": "TN",
                              "qid": 3}


@pytest.mark.parametrize(
    ("change", "needle", "record"),
    [
        ({"glue": [[1.5, 31.0]]}, "beyond the video duration", "'nextgqa/4010069381_6'"),
        ({"glue": [[5.0, 2.0]]}, "ends before it starts", "'nextgqa/4010069381_6'"),
        ({"answer": "(F)"}, "must be one of A, B, C, D, E", "'nextgqa/4010069381_6'"),
        ({"answer": "(Z) zebra"}, "must be one of A, B, C, D, E", "'nextgqa/4010069381_6'"),
        ({"answer": "a penguin"}, "neither an option letter", "'nextgqa/4010069381_6'"),
        ({"video": "/data/videos/x"}, "absolute", "'nextgqa/4010069381_6'"),
        ({"video": "..\\..\\x"}, "escapes", "'nextgqa/4010069381_6'"),
        ({"glue": None, "question": None}, "missing field(s): question, glue",
         "'4010069381_6'"),
    ],
)
def test_nextgqa_invalid_items(tmp_path: Path, change: dict, needle: str, record: str) -> None:
    raw_root, folder = layout(tmp_path, "nextgqa")
    item = {**NEXTGQA[0], **change}
    path = write_json(folder / "nextgqa_val.json", [item])
    with pytest.raises(DataValidationError) as err:
        run(nextgqa, make_source("nextgqa", "nextgqa"), folder, raw_root)
    assert needle in str(err.value)
    assert str(path) in str(err.value) and record in str(err.value)


def test_nextgqa_duplicate_ids_and_non_list(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "nextgqa")
    path = write_json(folder / "nextgqa_val.json", [NEXTGQA[0], NEXTGQA[1], NEXTGQA[0]])
    with pytest.raises(DataValidationError, match="duplicate id") as err:
        run(nextgqa, make_source("nextgqa", "nextgqa"), folder, raw_root)
    assert str(path) in str(err.value) and "'nextgqa/4010069381_6'" in str(err.value)

    write_json(path, {"4010069381_6": NEXTGQA[0]})
    with pytest.raises(DataValidationError, match="expected a JSON list"):
        run(nextgqa, make_source("nextgqa", "nextgqa"), folder, raw_root)


# ---------------------------------------------------------------------------------------------
# generic multiple choice

MCQ = [
    {   # VideoMME style: "A. " prefixes, letter answer, duration category, task type
        "id": "001-1", "video": "fFjv93ACGo8", "question": "When does the cat jump?",
        "options": ["A. At the start.", "B. In the middle.", "C. At the end.", "D. Never."],
        "answer": "B", "duration": "short", "task_type": "Temporal Perception",
    },
    {   # plain options, the answer given as the option's text, a duration in seconds
        "id": "002", "video": "clips/xyz.mkv", "question": "What is rolling?",
        "options": ["a blue cube", "a red ball", "A dog"], "answer": "a red ball",
        "duration": 16,
    },
    {   # "(A)" prefixes, "(C)" answer
        "id": "003", "video": "abc", "question": "Which way?",
        "options": ["(A) left", "(B) right", "(C) up"], "answer": "(C)",
    },
]


def test_mcq_json(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "videomme")
    write_json(folder / "mcq.json", MCQ)
    config = make_source("mcq", "videomme", video_dir="data", split="test")
    records = run(mcq, config, folder, raw_root)
    assert records[0] == {
        "id": "videomme/001-1",
        "task": "mcq",
        "source": "videomme",
        "split": "test",
        "video": "videomme/data/fFjv93ACGo8.mp4",
        "frames": None,
        "frame_times": None,
        "nframes": None,
        "duration": None,
        "inputs": {"question": "When does the cat jump?",
                   "options": ["At the start.", "In the middle.", "At the end.", "Never."]},
        "solution": {"answer": "B"},
        "meta": {"native_id": "001-1", "video_id": "fFjv93ACGo8", "duration": "short",
                 "task_type": "Temporal Perception"},
    }
    assert records[1]["inputs"]["options"] == ["a blue cube", "a red ball", "A dog"]
    assert records[1]["solution"] == {"answer": "B"}
    assert records[1]["duration"] == 16.0
    assert records[1]["video"] == "videomme/data/clips/xyz.mkv"  # no second extension
    assert records[2]["inputs"]["options"] == ["left", "right", "up"]
    assert records[2]["solution"] == {"answer": "C"}


@pytest.mark.parametrize(
    ("answer", "letter"),
    [("C", "C"), ("(C)", "C"), ("C.", "C"), (2, "C"), ("(C) At the end.", "C"),
     ("At the end", "C"), ("  at THE end. ", "C"), ("A. At the start.", "A")],
)
def test_mcq_answer_forms(tmp_path: Path, answer: Any, letter: str) -> None:
    raw_root, folder = layout(tmp_path, "m")
    write_json(folder / "mcq.json", [{**MCQ[0], "answer": answer}])
    (record,) = run(mcq, make_source("mcq", "m"), folder, raw_root)
    assert record["solution"] == {"answer": letter}


def test_mcq_prefixes_out_of_order_are_kept(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "m")
    options = ["B. Smith arrives", "A. Jones leaves"]
    write_json(folder / "mcq.json", [{**MCQ[0], "options": options, "answer": "A"}])
    (record,) = run(mcq, make_source("mcq", "m"), folder, raw_root)
    assert record["inputs"]["options"] == options


def test_mcq_jsonl_and_aliases(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "mvbench")
    rows = [
        {"video": "action_seq/v1.mp4", "question": "What happened first?",
         "candidates": ["Sat down.", "Stood up.", "Ran."], "answer": "Stood up."},
        {"question_id": "q7", "videoID": "v2", "question": "How many?",
         "options": ["one", "two"], "answer_id": 1, "area": "counting"},
    ]
    write(folder / "mvb.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    config = make_source("mcq", "mvbench", annotation="mvb.jsonl")
    first, second = run(mcq, config, folder, raw_root)
    assert first["id"] == "mvbench/0"
    assert first["video"] == "mvbench/videos/action_seq/v1.mp4"
    assert first["inputs"]["options"] == ["Sat down.", "Stood up.", "Ran."]
    assert first["solution"] == {"answer": "B"}
    assert second["id"] == "mvbench/q7"
    assert second["video"] == "mvbench/videos/v2.mp4"
    assert second["solution"] == {"answer": "B"}
    assert second["meta"] == {"native_id": "q7", "video_id": "v2", "area": "counting"}


def test_mcq_errors(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "m")
    config = make_source("mcq", "m")
    path = folder / "mcq.json"

    write_json(path, [{**MCQ[0], "answer": "E"}])
    with pytest.raises(DataValidationError, match="must be one of A, B, C, D") as err:
        run(mcq, config, folder, raw_root)
    assert str(path) in str(err.value) and "'m/001-1'" in str(err.value)

    write_json(path, [{"id": "x", "video": "v", "question": "q?"}])
    with pytest.raises(DataValidationError, match=r"missing field\(s\): options, answer") as err:
        run(mcq, config, folder, raw_root)
    assert "'m/x'" in str(err.value)

    write_json(path, [MCQ[0], MCQ[0]])
    with pytest.raises(DataValidationError, match="duplicate id"):
        run(mcq, config, folder, raw_root)

    write_json(path, [{**MCQ[0], "video": "C:\\videos\\x.mp4"}])
    with pytest.raises(UnsafePathError, match="absolute"):
        run(mcq, config, folder, raw_root)

    write(path, "[{]")
    with pytest.raises(DataValidationError, match="not valid JSON") as err:
        run(mcq, config, folder, raw_root)
    assert str(path) in str(err.value)

    jsonl = write(folder / "a.jsonl", json.dumps(MCQ[0]) + "\n{oops\n")
    with pytest.raises(DataValidationError, match="line 2") as err:
        run(mcq, make_source("mcq", "m", annotation="a.jsonl"), folder, raw_root)
    assert str(jsonl) in str(err.value)


def test_annotation_setting_cannot_escape_the_source_folder(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "m")
    with pytest.raises(UnsafePathError):
        run(mcq, make_source("mcq", "m", annotation="../other/mcq.json"), folder, raw_root)


def test_folder_outside_the_data_root(tmp_path: Path) -> None:
    raw_root, _ = layout(tmp_path, "m")
    elsewhere = tmp_path / "elsewhere"
    write_json(elsewhere / "mcq.json", MCQ)
    with pytest.raises(DataValidationError, match="not inside the data root"):
        run(mcq, make_source("mcq", "m"), elsewhere, raw_root)


def test_got10k_symlinked_sequence_outside_is_refused_without_list(tmp_path: Path) -> None:
    raw_root, folder = layout(tmp_path, "got")
    write_sequence(folder / "GOT-10k_Val_000001", absent=())
    write_sequence(tmp_path / "outside" / "seq")
    (folder / "GOT-10k_Val_000002").symlink_to(tmp_path / "outside" / "seq")
    rejected: list[DataValidationError] = []
    records = run(got10k, make_source("got10k", "got"), folder, raw_root,
                  on_invalid=rejected.append)
    assert [r["id"] for r in records] == ["got/GOT-10k_Val_000001"]
    assert len(rejected) == 1 and isinstance(rejected[0], UnsafePathError)
    assert "GOT-10k_Val_000002" in str(rejected[0])
