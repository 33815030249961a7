"""extract_frames on a Dask cluster: the same store, quarantine and crash safety as the pool."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from PIL import Image

from tests.servers import free_port
from tests.test_extract import (
    CFG,
    code_frame,
    make_video,
    run,
    sequence_record,
    snapshot,
    video_records,
)
from videorft.errors import StageError
from videorft.video import dask_cluster
from videorft.video.extract import TEST_HOOK_ENV, items_from_records
from videorft.video.store import FrameStore

TIMEOUT_S = 3
N_CLIPS = 6
RECORDS = [*video_records(N_CLIPS), sequence_record()]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """Clips and a frame sequence named as tests.test_extract's records expect. Read-only."""
    root = tmp_path_factory.mktemp("library")
    for i in range(N_CLIPS):
        make_video(root / "videos" / f"clip{i:02d}.mp4", 20 + 7 * i)
    seq = root / "got10k" / "GOT-10k_Train_000001"
    seq.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(code_frame(i)).save(seq / f"{i + 1:08d}.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def reference(library, tmp_path_factory) -> dict[str, bytes]:
    """The local executor's store for RECORDS: what every Dask run must reproduce."""
    store = tmp_path_factory.mktemp("reference") / "store"
    run(RECORDS, library, store)
    return snapshot(store)


def bad_records(raw: Path) -> list[dict]:
    """A corrupt video (container header zeroed) and a missing one."""
    good = bytearray((raw / "videos" / "clip00.mp4").read_bytes())
    good[:64] = bytes(64)
    (raw / "videos" / "corrupt.mp4").write_bytes(bytes(good))
    return [{"id": "bad/corrupt", "video": "videos/corrupt.mp4", "nframes": None},
            {"id": "bad/missing", "video": "videos/missing.mp4", "nframes": None}]


def keys_of(records: list[dict]) -> dict[str, str]:
    return {it.video: it.key for it in items_from_records(records, CFG) if it.video}


def test_dask_quarantine_equals_local_quarantine(library, tmp_path, monkeypatch):
    """Items and quarantine (same reasons) are the same bytes as the pool's; a hung decode is
    killed on timeout and a crashing one reported, without hanging the stage; and too many bad
    videos fail the stage the same way (the manifest is compared in the tests below)."""
    raw = Path(shutil.copytree(library, tmp_path / "raw"))
    records = [*video_records(5), sequence_record(), *bad_records(raw)]
    keys = keys_of(records)
    hang, crash = keys["videos/clip03.mp4"], keys["videos/clip04.mp4"]
    monkeypatch.setenv(TEST_HOOK_ENV, f"hang={hang};crash={crash}")
    local, dask = tmp_path / "local", tmp_path / "dask"
    share = "4 of 8 videos quarantined (50.0%), more than max_quarantine_fraction=0.4"
    with pytest.raises(StageError, match=re.escape(share)):
        run(records, raw, local, timeout_s=TIMEOUT_S, max_quarantine_fraction=0.4)
    started = time.monotonic()
    with pytest.raises(StageError, match=re.escape(share)):
        run(records, raw, dask, timeout_s=TIMEOUT_S, max_quarantine_fraction=0.4,
            executor="dask")
    assert time.monotonic() - started < 30, "the hung decode held up the stage"
    assert snapshot(dask) == snapshot(local)
    assert len(list((dask / "items").glob("*.npy"))) == 4

    reasons = {q["key"]: q["reason"] for q in FrameStore(dask).quarantine()}
    assert len(reasons) == 4
    assert reasons[hang] == ("videos/clip03.mp4: timed out after 3 s (decoder hung or video too "
                             "slow); worker killed")
    assert reasons[crash] == "videos/clip04.mp4: decoder process died (exit code 3)"
    assert reasons[keys["videos/corrupt.mp4"]].startswith(
        "videos/corrupt.mp4: cannot open as a video")
    assert reasons[keys["videos/missing.mp4"]] == "videos/missing.mp4: file not found"
    assert not list(dask.rglob("*.tmp")), "no temp file or probe left behind"
    assert not dask_cluster._DECODERS, "the decoder processes were stopped after the stage"


KILL_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from videorft.params import ExtractFramesParams
    from videorft.video.extract import extract_frames, items_from_records
    from videorft.video.sampling import SamplingConfig

    raw, store, records = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    params = ExtractFramesParams(workers=2, timeout_s=60, max_quarantine_fraction=0.5,
                                 executor="dask")
    items = items_from_records(records, SamplingConfig.from_params(params))
    extract_frames(items, raw, store, params, progress=False)
""")


def test_killed_dask_run_leaves_no_decoder_and_resumes(library, reference, tmp_path):
    """SIGKILL to the stage process alone: its in-process cluster and decoders die with it,
    and a re-run finishes the store byte for byte."""
    records, raw, store = RECORDS, library, tmp_path / "store"
    script = tmp_path / "extract.py"
    script.write_text(KILL_SCRIPT)
    # Slow items (a window to kill in), and a hung one: only PR_SET_PDEATHSIG can end that one.
    hook = f"sleep=0.3;hang={keys_of(records)['videos/clip00.mp4']}"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(raw), str(store), json.dumps(records)],
        env={**os.environ, TEST_HOOK_ENV: hook}, start_new_session=True,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (store / "items").is_dir() and list((store / "items").glob("*.json")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"extraction ended before it could be killed: {proc.stderr}"
    os.kill(proc.pid, signal.SIGKILL)  # the stage only: the decoders must follow by themselves
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anything left in the stage's process group?
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("decoder processes outlived the killed stage")
    finished = len(list((store / "items").glob("*.json")))
    assert 1 <= finished < len(records) and not (store / "manifest.json").exists()

    report = run(records, raw, store, executor="dask")
    assert report.reused == finished and report.extracted == len(records) - finished
    assert snapshot(store) == reference


def test_explicit_scheduler_address(library, reference, tmp_path):
    """A cluster started elsewhere (here: in worker processes), addressed by dask_address."""
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None)
        as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        store = tmp_path / "store"
        report = run(RECORDS, library, store, executor="dask",
                     dask_address=cluster.scheduler_address)
        assert (report.extracted, report.quarantined) == (len(RECORDS), 0)
        assert snapshot(store) == reference
        assert list(client.run(dask_cluster._close_idle_decoders).values()) == [0], \
            "the workers' decoders were stopped after the stage"
        # What a worker without the project on shared storage answers (it fails the stage).
        elsewhere = tmp_path / "not-shared"
        problem = client.submit(dask_cluster._worker_problem, str(library), str(elsewhere),
                                str(elsewhere / ".probe.tmp"), pure=False).result()
        assert re.fullmatch(rf"extract_frames: Dask worker tcp://\S+ does not see the stage's "
                            rf"frame store {re.escape(str(elsewhere))}\. .*shared storage.*",
                            problem)
    assert len(FrameStore(store)) == len(RECORDS)


def test_unreachable_scheduler_is_a_clear_error(library, tmp_path, monkeypatch):
    monkeypatch.setattr(dask_cluster, "DASK_CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    store = tmp_path / "store"
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        run(video_records(2), library, store, executor="dask", dask_address=address)
    assert time.monotonic() - started < 15
    message = str(info.value)
    assert f"cannot reach the Dask scheduler at '{address}'" in message
    assert "extract_frames.dask_address" in message
    assert not (store / "manifest.json").exists() and not list(store.rglob("*.tmp"))
