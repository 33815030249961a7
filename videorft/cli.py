"""The `videorft` command line.

Run the whole pipeline with `videorft run`; each stage alone with `videorft stage NAME` (what
dvc.yaml calls); inspect and change parameters with `videorft params`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from videorft import __version__
from videorft.errors import EXIT_TRANSIENT, VideoRFTError

if TYPE_CHECKING:
    from videorft.params import Params

app = typer.Typer(
    name="videorft",
    help="Reinforcement fine-tuning of video LLMs (VideoChat-R1), as a reproducible "
    "Prefect + DVC pipeline of the stages in dvc.yaml (`videorft status` lists them).",
    epilog=(
        "Examples:\n\n"
        "  videorft run                        # synthetic data, tiny-cpu preset\n\n"
        "  videorft run --preset videochat-r1  # the paper's recipe, on your data\n\n"
        "  videorft run --set extract_frames.fps=1  # reruns what depends on it\n\n"
        "  videorft run --from extract_frames  # force a stage and what follows\n\n"
        "  videorft status                     # up to date, or changed and why\n\n"
        "  videorft params describe            # every parameter and its meaning"
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
params_app = typer.Typer(help="Show, document and change params.yaml.", no_args_is_help=True)
app.add_typer(params_app, name="params")
model_app = typer.Typer(help="Build and inspect policy models.", no_args_is_help=True)
app.add_typer(model_app, name="model")
# Markup off everywhere: what we print is user text (file names, ids, task names, YAML), in
# which "[...]" must stay literal, not be read as rich markup (or crash it).
console = Console(stderr=True, markup=False)
stdout = Console(markup=False)

RootOption = Annotated[
    Path, typer.Option("--root", help="Project folder (holding dvc.yaml and params.yaml).")
]


def _fail(exc: Exception, log: Path | None = None) -> None:
    """One error line (pointing to the run's ``log`` if there is one); exit 1, or
    EXIT_TRANSIENT where another attempt may succeed (so the orchestrator retries a network
    failure, and not a bad file)."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # no repr quotes
    if log is not None:
        message = f"{message} (full output: {log})"
    console.print(Text.assemble(("error:", "bold red"), f" {message}"), highlight=False,
                  soft_wrap=True)
    raise typer.Exit(code=EXIT_TRANSIENT if getattr(exc, "transient", False) else 1)


def _root(root: Path) -> Path:
    from videorft.pipeline.command import find_root

    return find_root(root)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        print(__version__)
        raise typer.Exit()


@app.command()
def run(
    preset: Annotated[
        str | None,
        typer.Option(help="Apply a preset first: a name from configs/presets (e.g. "
                    "videochat-r1) or a path to a YAML overlay."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a parameter, KEY=VALUE (repeatable), e.g. extract_frames.fps=1."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Rerun every stage even if DVC says it is up to date.")
    ] = False,
    from_stage: Annotated[
        str | None, typer.Option("--from", help="Rerun this stage and every stage after it.")
    ] = None,
    to_stage: Annotated[
        str | None,
        typer.Option("--to", help="Stop after this stage (run it and what it depends on)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the stage outcomes as JSON instead of a table.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show Prefect's and DVC's logs here (they "
                           "always go to reports/run.log).")
    ] = False,
    root: RootOption = Path("."),
) -> None:
    """Run the pipeline as a Prefect flow; each stage runs through DVC only if it changed.

    With no options this runs the embedded default (synthetic videos, tiny-cpu preset). Preset
    and --set edit params.yaml in place, as `dvc exp run -S` does, so the change is recorded.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The temporary server (no PREFECT_API_URL) can need more than Prefect's default 20 s to
    # start on a busy 2-core laptop; waiting longer beats failing the run.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    if not verbose:  # Prefect's console handler: warnings and errors only (read at import)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    run_log: Path | None = None
    try:
        from videorft.params import update_params
        from videorft.pipeline.command import run_lock
        from videorft.pipeline.runner import nothing_to_do
        from videorft.pipeline.status import pipeline_status
        from videorft.stages import stages_to_force, stages_to_run

        project = _root(root)
        stages_to_force(project, force=force, from_stage=from_stage)  # a bad --from: refuse now
        selected = stages_to_run(project, to_stage)  # a bad --to: refuse now
        with run_lock(project), _importing_prefect_meanwhile():
            params = update_params(project / "params.yaml", preset=preset, overrides=set_ or [])
            # One `dvc status` for the whole run. Nothing changed: answer at once, like `dvc
            # repro`, instead of starting Prefect (a temporary server takes longer than the
            # check itself); else the flow skips the unchanged stages without asking again.
            status = pipeline_status(project, selected)
            idle = None if force or from_stage else nothing_to_do(project, selected, status)
            if idle is not None:
                outcomes = [o.to_dict() for o in idle]
                print("nothing to do: every stage is up to date (DVC); no Prefect flow run "
                      "was started", file=sys.stderr)
            else:
                if not os.environ.get("PREFECT_API_URL"):  # Prefect starts a temporary server
                    from videorft.pipeline.orphans import watch

                    watch(os.getpid(), TEMPORARY_SERVER)  # stopped even if this run is killed
                from flows.pipeline import pipeline  # Prefect: imported only when needed

                # After that import: it sets up Prefect's logging, which replaces root handlers.
                run_log = _log_run_to(project / params.paths.reports / RUN_LOG,
                                      verbose=verbose)
                with _stage_view(selected, live=sys.stderr.isatty() and not verbose):
                    outcomes = pipeline(root=str(project), force=force, from_stage=from_stage,
                                        to_stage=to_stage, known_status=status)
    except (VideoRFTError, KeyError) as exc:
        _fail(exc, log=run_log)
        return
    if as_json:
        json.dump(outcomes, sys.stdout, indent=2)
        print()
        return
    table = Table(title=f"videorft run ({params.preset or 'custom'} params)")
    for column in ("stage", "result", "why", "seconds"):
        table.add_column(column)
    for o in outcomes:
        table.add_row(
            o["stage"],
            "ran" if o["ran"] else "skipped (up to date)",
            "; ".join(o["reasons"]),
            f"{o['seconds']:.1f}",
        )
    stdout.print(table)
    _print_results(project, params)
    if run_log is not None:
        print(f"log:       {run_log}  (Prefect and DVC, in full)")


@contextmanager
def _importing_prefect_meanwhile() -> Iterator[None]:
    """Import the flow (Prefect: about 2 s of CPU) in a thread while the block runs: the run's
    `dvc status` waits on a subprocess meanwhile, so the second core does the import. A failed
    import is left for the block's own `from flows.pipeline import pipeline` to raise."""
    import threading

    def load() -> None:
        with suppress(Exception):  # the block's own import raises it, with its traceback
            import flows.pipeline  # noqa: F401

    loader = threading.Thread(target=load, name="import-prefect", daemon=True)
    loader.start()
    try:
        yield
    finally:
        loader.join()


RUN_LOG = "run.log"
#: What the command line of Prefect's temporary server holds (its uvicorn app factory).
TEMPORARY_SERVER = "prefect.server.api.server:create_app"


#: Prefect's records of a task or flow run that failed: ERROR, with the exception (and, for the
#: flow, its traceback); the CLI's last line says the same in one line.
RUN_FAILURE_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


def _not_a_run_failure(record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and record.name in RUN_FAILURE_LOGGERS)


def _log_run_to(path: Path, *, verbose: bool = False) -> Path:
    """Everything Prefect, DVC and the stages log goes to ``path`` (rewritten per run); the
    terminal gets one line per stage (``videorft.progress``) and, from the rest, warnings,
    except (unless ``verbose``) Prefect's failure records, tracebacks included: a failed run
    ends with one error line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not verbose:
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.addFilter(_not_a_run_failure)
    to_file = logging.FileHandler(path, mode="w", encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_file.setLevel(logging.INFO)
    logging.getLogger().addHandler(to_file)
    logging.getLogger("videorft").setLevel(logging.INFO)
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setFormatter(logging.Formatter("%(message)s"))
    progress = logging.getLogger("videorft.progress")
    progress.propagate = False  # not twice on the terminal under --verbose
    progress.handlers = [to_terminal, to_file]
    return path


@contextmanager
def _stage_view(stages: list[str], *, live: bool) -> Iterator[None]:
    """On a terminal: a live table of the stages (state, elapsed, progress bar, reward) in
    place of the progress lines, kept on screen at the end. Elsewhere: the lines."""
    if not live:
        yield
        return
    from videorft.console import live_board

    progress = logging.getLogger("videorft.progress")
    lines = [h for h in progress.handlers if not isinstance(h, logging.FileHandler)]
    with live_board(stages, Console(stderr=True, markup=False)) as board:
        progress.setLevel(logging.DEBUG)  # every update, for the table (the file keeps INFO)
        progress.handlers = [*(h for h in progress.handlers if h not in lines), board]
        try:
            yield
        finally:
            progress.handlers = [h for h in progress.handlers if h is not board] + lines
            progress.setLevel(logging.NOTSET)


def _print_results(project: Path, params: Params) -> None:
    """Where a run's results are: data, model, evaluation table, published package."""
    reports = project / params.paths.reports
    print(f"dataset:   {project / params.paths.dataset}  (stats: {reports / 'dataset.json'})")
    print(f"frames:    {project / params.paths.frames}")
    print(f"model:     {project / params.paths.trained}  (metrics: {reports / 'train'})")
    table = project / params.paths.evaluation / "table.md"
    if table.is_file():
        print(f"eval:      {table}")
    published = reports / "publish.json"
    if published.is_file():
        from videorft.io import read_json

        summary = read_json(published)
        for target in summary.get("targets") or []:
            print(f"published: {target['location']}  ({target['status']})")


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="A stage of dvc.yaml (`videorft status` lists "
                                              "them).")],
    root: RootOption = Path("."),
) -> None:
    """Run one stage's work directly (dvc.yaml calls this; no DVC bookkeeping)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from videorft.params import load_params
    from videorft.pipeline.runner import SUMMARY_PREFIX
    from videorft.stages import get_stage

    try:
        project = root.resolve()
        params = load_params(project / "params.yaml")
        summary = get_stage(name)(params, project)
    except (VideoRFTError, KeyError) as exc:
        if (verdict := getattr(exc, "summary", None)) is not None:  # e.g. the gate's verdict
            print(SUMMARY_PREFIX + json.dumps(verdict, sort_keys=True), flush=True)
        _fail(exc)
        return
    print(SUMMARY_PREFIX + json.dumps(summary, sort_keys=True), flush=True)
    if _started_for_one_stage():
        _exit_skipping_teardown()


def _started_for_one_stage() -> bool:
    """This process is `videorft stage ...` itself (the command DVC runs), not a program that
    calls the CLI in-process (a test, a notebook), which must not be ended."""
    argv = sys.argv
    program = Path(argv[0]).parts[-2:] if argv else ()
    return (len(argv) > 1 and argv[1] == "stage"
            and (program[-1:] == ("videorft",) or program == ("videorft", "__main__.py")))


def _exit_skipping_teardown() -> None:
    """Exit 0 now, without the interpreter's teardown: freeing a torch process's modules and
    objects one by one takes 1-2 s (1.8 s after `evaluate`, measured), paid by every stage of
    every run, where the OS frees the memory at once. What an exit must still do is done first:
    the exit handlers (logging's flush, temporary folders' cleanup) and the streams' flush.
    A process with work still running (a non-daemon thread, a child process) exits normally."""
    import atexit
    import multiprocessing
    import threading

    others = [thread for thread in threading.enumerate()
              if thread is not threading.main_thread() and not thread.daemon]
    if others or multiprocessing.active_children():
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def status(root: RootOption = Path(".")) -> None:
    """Show each stage: up to date, or changed and why (which dependency or parameter)."""
    from videorft.params import load_params
    from videorft.pipeline.status import pipeline_status
    from videorft.stages import stage_names

    try:
        project = _root(root)
        params = load_params(project / "params.yaml")  # missing or invalid: say so, not DVC
        table = Table(title="videorft stages")
        table.add_column("stage")
        table.add_column("state")
        for name, reasons in pipeline_status(project, stage_names(project)).items():
            if reasons == ["never run"]:
                state = "never run"
            else:
                state = "up to date" if not reasons else "changed: " + "; ".join(reasons)
            table.add_row(name, state)
    except VideoRFTError as exc:
        _fail(exc)
        return
    stdout.print(table)
    _print_lineage(project, params)


def _print_lineage(project: Path, params: Params) -> None:
    """The last published model and what it was built from (git commit, DVC hashes)."""
    from videorft.publish.lineage import published_lineage

    lineage = published_lineage(project, params)
    if lineage is None:
        print("published model: none yet (the publish stage has not published from here)")
        return
    git = lineage["git"] or {}
    commit = git.get("commit") or "(not in git)"
    print(f"published model: {lineage['name']} {lineage['version']}")
    for location in lineage["targets"]:
        print(f"  at          {location}")
    print(f"  git commit  {commit}{' (uncommitted changes)' if git.get('dirty') else ''}")
    base = lineage["base_model"] or {}
    print(f"  base model  {base.get('repo_id') or base.get('name_or_path')}"
          f"{' @ ' + base['commit'] if base.get('commit') else ''}")
    for name, md5 in lineage["dvc"].items():
        print(f"  {name:<11} {md5 or '(not tracked)'}")


@params_app.command("describe")
def params_describe(
    preset: Annotated[list[str] | None, typer.Option(
        "--preset", help="Also show this preset's value of each parameter (repeatable).")] = None,
    all_presets: Annotated[bool, typer.Option(
        "--all-presets", help="Also show every preset's value (one column per file in "
        "configs/presets).")] = False,
    in_use: Annotated[bool, typer.Option(
        "--in-use", help="Also show the value params.yaml holds now.")] = False,
    root: RootOption = Path("."),
) -> None:
    """Every parameter with its default and meaning; with --in-use / --preset NAME /
    --all-presets, also the value params.yaml holds and the value each preset would set."""
    from videorft.params import describe, load_params, preset_names, preset_params, value_at

    columns: list[tuple[str, Any]] = []
    try:
        path = _root(root) / "params.yaml" if in_use or preset or all_presets else None
        if in_use:
            columns.append(("in use", load_params(path)))
        names = list(preset or [])
        if all_presets:
            names += [name for name in preset_names(path) if name not in names]
        columns.extend((name, preset_params(path, name)) for name in names)
    except VideoRFTError as exc:
        _fail(exc)
        return
    table = Table(show_lines=False)
    table.add_column("parameter", no_wrap=True)
    table.add_column("default")
    for title, _ in columns:
        table.add_column(title)
    table.add_column("meaning")
    for name, default, text in describe():
        values = [repr(value_at(params, name)) for _, params in columns]
        # Markup off: values and descriptions are user text (brackets in lists, YAML).
        table.add_row(*(Text(cell) for cell in (name, default, *values, text)))
    stdout.print(table)


def _load_params(root: Path) -> Params:
    """The project's validated params, or a clean exit naming the problem."""
    from videorft.params import load_params

    try:
        return load_params(_root(root) / "params.yaml")
    except VideoRFTError as exc:
        _fail(exc)
        raise  # unreachable: _fail exits


@params_app.command("show")
def params_show(root: RootOption = Path(".")) -> None:
    """The effective parameters (validated) as JSON."""
    params = _load_params(root)
    json.dump(params.model_dump(), sys.stdout, indent=2)
    print()


@params_app.command("presets")
def params_presets(root: RootOption = Path(".")) -> None:
    """List the presets in configs/presets (* marks the one last applied), each checked: a
    preset that would not validate is listed with its problem, and the exit code is 1."""
    from videorft.params import preset_names, preset_params

    params = _load_params(root)
    path = _root(root) / "params.yaml"
    broken = False
    for name in preset_names(path):
        mark = "*" if name == params.preset else " "
        try:
            preset_params(path, name)
        except VideoRFTError as exc:
            broken = True
            print(f"{mark} {name}  (invalid: {exc})")
        else:
            print(f"{mark} {name}")
    if broken:
        raise typer.Exit(code=1)


@params_app.command("apply")
def params_apply(
    preset: Annotated[str | None, typer.Argument(
        help="Preset to apply: a name from configs/presets or a path to a YAML overlay.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE override.")] = None,
    root: RootOption = Path("."),
) -> None:
    """Write a preset and/or overrides into params.yaml (validated first; comments kept)."""
    from videorft.params import update_params

    try:
        params = update_params(_root(root) / "params.yaml", preset=preset, overrides=set_ or [])
    except VideoRFTError as exc:
        _fail(exc)
        return
    print(f"params.yaml updated (preset: {params.preset})")


@model_app.command("build-tiny")
def model_build_tiny(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the model into.")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build the embedded default policy: a small, randomly initialised Qwen2.5-VL with a
    locally trained tokenizer and Qwen's processors, saved with save_pretrained (offline)."""
    from videorft.model import build_tiny_model

    try:
        path = build_tiny_model(out_dir, seed=seed)
    except (FileExistsError, ValueError) as exc:
        _fail(exc)
        return
    print(f"tiny Qwen2.5-VL written to {path}")


@app.command("score")
def score_command(
    predictions: Annotated[
        Path, typer.Argument(help="Predictions JSONL: id, task, completion, solution per line.")
    ],
    out: Annotated[Path | None, typer.Option("--out", help="Write the metrics JSON here.")] = None,
    per_item: Annotated[
        Path | None,
        typer.Option("--per-item", help="Write one JSON line per item (format, iou, accuracy)."),
    ] = None,
    think: Annotated[
        bool,
        typer.Option(
            "--think/--no-think",
            help="Expect the <think>..</think><answer>..</answer> format (default), or the "
            "no-think format <answer>..</answer>.",
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics as JSON instead of a table.")
    ] = False,
) -> None:
    """Score model predictions with the training rewards: mIoU and R@k (temporal grounding),
    AO and SR@k (tracking), accuracy and glue mIoU (grounded QA), accuracy (multiple choice)."""
    from videorft.evaluation.scoring import METRICS, score_file

    try:
        metrics = score_file(predictions, thinking=think, out=out, per_item=per_item)
    except (VideoRFTError, OSError) as exc:
        _fail(exc)
        return
    if as_json:
        json.dump(metrics, sys.stdout, indent=2)
        print()
        return
    table = Table(title=f"videorft score ({'think' if think else 'no-think'} format, percent)")
    for column in ("task", "count", "in format", "metrics"):
        table.add_column(column)
    for task, values in metrics.items():
        shown = "  ".join(f"{name} {100 * values[name]:.1f}" for name in METRICS[task])
        table.add_row(task, str(values["count"]), f"{100 * values['format']:.1f}", shown)
    stdout.print(table)
