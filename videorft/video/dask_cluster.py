"""``extract_frames.executor: dask``: the items fan out over a Dask cluster, one task per item.

Workers read the videos and write the items themselves, so they must see the data and the
frame store at the same paths as the stage (a local cluster does; a remote one needs the
project on shared storage); every task checks this first. Dask cannot stop a running task,
so the decode never runs in the worker: each worker thread hands its items to a decoder
child process (``_Decoder``), which is killed when an item passes ``timeout_s``. The child
runs the very :func:`~videorft.video.worker.extract_one` of the local pool, so the files are
the same bytes (docs/dask.md tells it to operators).

``distributed`` is imported inside the functions that need it: the decoder child imports
this module for :func:`decoder_main` alone, and the local executor never needs Dask.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videorft.errors import StageError
from videorft.video import decode
from videorft.video.plan import ExtractionItem
from videorft.video.results import (
    Outcome,
    Results,
    collect_results,
    died_reason,
    timeout_reason,
    unexpected_reason,
)
from videorft.video.sampling import SamplingConfig
from videorft.video.worker import extract_one, worker_init

if TYPE_CHECKING:
    from videorft.params import ExtractFramesParams

# Connecting to ``dask_address`` gives up after this long (module attribute: tests lower it).
DASK_CONNECT_TIMEOUT_S = 30.0
# A decoder child must be ready (imports done) within this; its start is not item time.
DECODER_START_TIMEOUT_S = 120.0
# A decoder child left idle this long exits: a cluster keeps no decoders after a stage.
DECODER_IDLE_EXIT_S = 600.0
_PROBE_PREFIX = ".dask-probe."  # a .*.tmp name: extract_frames sweeps a leftover
_DECODER_MAIN = "import sys; from videorft.video.dask_cluster import decoder_main; " \
                "decoder_main(sys.argv[1:])"


def decoder_main(argv: list[str]) -> None:
    """Decoder child: ``extract_one`` for each request until EOF or idle timeout."""
    requests = Connection(int(argv[0]), writable=False)
    replies = Connection(int(argv[1]), readable=False)
    worker_init(int(argv[2]))
    replies.send("ready")
    while requests.poll(DECODER_IDLE_EXIT_S):
        try:
            args = requests.recv()
        except EOFError:  # the worker closed us (or died)
            return
        try:
            result = extract_one(*args)
        except Exception as exc:  # as the pool reports an exception raised in its worker
            result = {"error": unexpected_reason(args[0], exc)}
        replies.send(result)


class _Decoder:
    """A child process that runs ``extract_one`` for one Dask worker thread.

    Reused across items (its start, mostly imports, takes a second or two); killed when an
    item passes the timeout, and started afresh for the next one. A plain subprocess rather
    than multiprocessing: Dask worker processes are daemonic and may not have those.
    """

    def __init__(self, decode_threads: int):
        self.decode_threads = decode_threads
        self.lock = threading.Lock()  # held while an item runs (see _close_idle_decoders)
        self.proc: subprocess.Popen | None = None
        self.requests: Connection | None = None
        self.replies: Connection | None = None
        self.last_used = 0.0

    def _start(self) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self.requests = Connection(req_w, readable=False)
        self.replies = Connection(rep_r, writable=False)
        # The worker imported videorft; make sure the child finds the same one.
        package_parent = str(Path(__file__).resolve().parents[2])
        pythonpath = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _DECODER_MAIN, str(req_r), str(rep_w),
                 str(self.decode_threads)],
                pass_fds=(req_r, rep_w),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": pythonpath},
            )
        except BaseException:
            self.close()
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        ready = self.replies.poll(DECODER_START_TIMEOUT_S)
        try:
            if ready and self.replies.recv() == "ready":
                return
        except EOFError:
            pass
        code = self.close(kill=True)
        raise RuntimeError(
            f"could not start a decoder process ({sys.executable}) on this Dask worker: "
            + (f"it exited with code {code}" if ready else
               f"not ready after {DECODER_START_TIMEOUT_S:g} s")
            + "; see the worker's log"
        )

    def run(self, args: tuple, item: ExtractionItem, timeout_s: float) -> dict[str, Any]:
        """``extract_one(*args)`` in the child: its result, or the timeout/death reason."""
        stale = time.monotonic() - self.last_used > DECODER_IDLE_EXIT_S / 2  # may be exiting
        if self.proc is None or self.proc.poll() is not None or stale:
            self.close()
            self._start()
        assert self.requests is not None and self.replies is not None
        try:
            self.requests.send(args)
            if not self.replies.poll(timeout_s):
                self.close(kill=True)
                return {"error": timeout_reason(item, timeout_s)}
            return self.replies.recv()
        except (EOFError, OSError):  # the child died during the item
            code = self.close(kill=True)
            return {"error": died_reason(item, code)}
        finally:
            self.last_used = time.monotonic()

    def close(self, kill: bool = False) -> int | None:
        """Stop the child (an idle one exits on EOF; ``kill`` for a busy one); its exit code."""
        for conn in (self.requests, self.replies):
            if conn is not None:
                conn.close()
        self.requests = self.replies = None
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if kill and proc.poll() is None:
            proc.kill()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


_DECODERS: dict[int, _Decoder] = {}  # by worker thread id
_DECODERS_LOCK = threading.Lock()


@contextlib.contextmanager
def _thread_decoder(decode_threads: int) -> Iterator[_Decoder]:
    """This thread's decoder, held (locked) for one item."""
    with _DECODERS_LOCK:
        ident = threading.get_ident()
        decoder = _DECODERS.get(ident)
        if decoder is None or decoder.decode_threads != decode_threads:
            if decoder is not None:
                decoder.close()
            decoder = _DECODERS[ident] = _Decoder(decode_threads)
        decoder.lock.acquire()  # only _close_idle_decoders contends, and never waits
    try:
        yield decoder
    finally:
        decoder.lock.release()


def _close_idle_decoders() -> int:
    """Run on every worker after a stage: stop the decoders not busy with an item (another
    stage may share the cluster). Returns how many are left running."""
    with _DECODERS_LOCK:
        for ident, decoder in list(_DECODERS.items()):
            if decoder.lock.acquire(blocking=False):
                try:
                    decoder.close()
                    del _DECODERS[ident]
                finally:
                    decoder.lock.release()
        return len(_DECODERS)


def _worker_problem(raw_root: str, items_dir: str, probe: str) -> str | None:
    """Why this worker cannot work for the stage (it does not share its files), or None."""
    from distributed import get_worker

    where = f"Dask worker {get_worker().address}"
    hint = ("Dask workers read the videos and write the frame store themselves: run them where "
            "the project is at the same path (shared storage), or set "
            "extract_frames.dask_address: null for a local cluster")
    if not Path(raw_root).is_dir():
        return f"extract_frames: {where} cannot see the data folder {raw_root}. {hint}"
    if not Path(probe).is_file():
        return f"extract_frames: {where} does not see the stage's frame store {items_dir}. {hint}"
    if not os.access(items_dir, os.W_OK | os.X_OK):
        return f"extract_frames: {where} cannot write to the frame store {items_dir}"
    return None


def _dask_extract(
    item: ExtractionItem,
    raw_root: str,
    items_dir: str,
    probe: str,
    cfg_dict: dict[str, Any],
    backend: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Dask task: one item through this thread's decoder. Item outcomes (meta or quarantine
    reason) are returned; a raised exception means the worker cannot work (fails the stage)."""
    from distributed import get_worker

    problem = _worker_problem(raw_root, items_dir, probe)
    if problem:
        raise StageError(problem)
    # Share the worker's CPUs between its threads, as the pool shares them between processes.
    threads = max(1, decode.DECODE_THREADS // max(1, get_worker().state.nthreads))
    with _thread_decoder(threads) as decoder:
        return decoder.run((item, raw_root, items_dir, cfg_dict, backend), item, timeout_s)


def _check_scheduler(address: str) -> None:
    """Fail fast and clearly when ``dask_address`` cannot be reached (a bare Client would
    wait, then leave a half-made client that hangs again when collected)."""
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    async def probe() -> None:
        # TLS settings come from the Dask config, as they do for the Client.
        comm = await connect(address, timeout=DASK_CONNECT_TIMEOUT_S,
                             **Security().get_connection_args("client"))
        await comm.close()

    try:
        with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever the caller runs
            pool.submit(asyncio.run, probe()).result()
    except Exception as exc:
        raise StageError(
            f"extract_frames: cannot reach the Dask scheduler at {address!r} "
            f"(extract_frames.dask_address): {type(exc).__name__}: {exc}. Start the cluster "
            "first, or set extract_frames.dask_address: null for a local cluster."
        ) from exc


@contextlib.contextmanager
def _dask_client(params: ExtractFramesParams, tasks: int) -> Iterator[tuple[Any, str]]:
    """(client, a description of the cluster for messages)."""
    from distributed import Client, LocalCluster

    if params.dask_address is None:
        # In-process workers: the decoding already runs in child processes, and a killed
        # stage takes its workers and (by PR_SET_PDEATHSIG) their decoders with it.
        with (
            LocalCluster(n_workers=1, threads_per_worker=min(params.workers, tasks),
                         processes=False, dashboard_address=None) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            yield client, "a local Dask cluster"
        return
    _check_scheduler(params.dask_address)
    try:
        client = Client(params.dask_address, timeout=DASK_CONNECT_TIMEOUT_S,
                        set_as_default=False)
    except Exception as exc:
        raise StageError(f"extract_frames: cannot connect to the Dask scheduler at "
                         f"{params.dask_address!r}: {type(exc).__name__}: {exc}") from exc
    with client:
        yield client, f"the Dask cluster at {params.dask_address}"


def run_dask(
    todo: list[ExtractionItem],
    raw_root: Path,
    items_dir: Path,
    cfg: SamplingConfig,
    params: ExtractFramesParams,
    progress: bool,
) -> Results:
    """Like :func:`videorft.video.local_pool.run_pool`, on a Dask cluster (see the module
    docstring); a task that fails (rather than returning a quarantine reason) fails the stage."""
    if not todo:
        return {}, {}
    from distributed import as_completed as dask_as_completed

    raw_root, items_dir = raw_root.absolute(), items_dir.absolute()  # workers' cwd differs
    run_id = uuid.uuid4().hex
    probe = items_dir / f"{_PROBE_PREFIX}{run_id}.tmp"
    probe.write_bytes(b"")
    try:
        with _dask_client(params, len(todo)) as (client, cluster):

            def outcome(future: Any, item: ExtractionItem) -> Outcome:
                try:
                    return future.result()
                except StageError:
                    raise
                except Exception as exc:
                    hint = (" (is videorft installed where the workers run?)"
                            if isinstance(exc, ImportError) else "")
                    raise StageError(
                        f"extract_frames: the Dask task for {item.source} failed on "
                        f"{cluster}: {type(exc).__name__}: {exc}{hint}"
                    ) from exc

            futures = {
                client.submit(
                    _dask_extract, item, str(raw_root), str(items_dir), str(probe),
                    cfg.as_dict(), params.backend, params.timeout_s,
                    key=f"extract_frames-{item.key}-{run_id}", pure=False,
                ): item
                for item in todo
            }
            try:
                return collect_results(futures, dask_as_completed(futures, loop=client.loop),
                                       outcome, progress=progress)
            finally:
                client.cancel(list(futures))  # a no-op when all are done
                with contextlib.suppress(Exception):
                    client.run(_close_idle_decoders)
    finally:
        probe.unlink(missing_ok=True)
