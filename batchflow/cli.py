"""The `batchflow` command: parsing and printing only; the work is in the library."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from . import __version__
from .errors import BatchflowError, SpecErrors

if TYPE_CHECKING:  # the commands import what they use: `--version` and `--help` start fast
    from .settings import Settings
    from .spec.models import LoadedPipeline

app = typer.Typer(
    name="batchflow",
    help="Run Gemini API Batch Mode workloads as declarative pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# No markup: paths, keys and messages are printed as they are, brackets and all.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

Paths = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Spec files or folders (default: the project's pipelines, else pipelines/).", show_default=False
    ),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        help="State store: a folder or a gs:// or s3:// URL (env: BATCHFLOW_STATE; default: the project's, "
        "state: in batchflow.yaml, else .batchflow/ beside the spec).",
        show_default=False,
    ),
]


# Exit codes, as documented in the README (Commands): terraform's, plus one for failed requests.
EXIT_ERROR = 1
EXIT_CHANGES = 2  # plan --detailed-exitcode: changes are pending
EXIT_FAILED_REQUESTS = 3  # apply finished, but more requests failed than the errors policy tolerates

AllowShrink = Annotated[
    bool,
    typer.Option(
        "--allow-shrink", help="Rewrite outputs even if the source lost more records than output.max_shrink."
    ),
]
RetryErrors = Annotated[
    bool,
    typer.Option(
        "--retry-errors",
        help="Send the requests that failed for good again, each with a new set of retry.attempts.",
    ),
]
Targets = Annotated[
    list[str] | None,
    typer.Option("--target", "-t", help="Only this pipeline (by name); repeatable.", show_default=False),
]
LockTimeout = Annotated[
    str | None,
    typer.Option(
        "--lock-timeout",
        help="Wait this long (e.g. 30s, 5m) for a lock another apply holds (env: BATCHFLOW_LOCK_TIMEOUT; "
        "default: do not wait).",
        show_default=False,
    ),
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _confirm(yes: bool, what: str, question: str) -> None:
    """Ask before something that cannot be undone; in scripts (no terminal) --yes must say so."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise BatchflowError(f"{what}: add --yes to confirm when not at a terminal")
    typer.confirm(question, abort=True)


class Terminated(BaseException):
    """SIGTERM (a CI job cancelled, a pod stopped), raised as SIGINT raises KeyboardInterrupt."""


_MAIN_PID = os.getpid()
_RECEIVED: list[int] = []  # the signals this process was sent


def _on_signal(signum, frame) -> None:
    if os.getpid() != _MAIN_PID:  # a forked worker: ended as it would be without the handler
        if signum == signal.SIGINT:
            signal.default_int_handler(signum, frame)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    _RECEIVED.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated


def _interrupted(fn, sigterm: bool) -> NoReturn:
    signal_name = "SIGTERM" if sigterm else "SIGINT"
    err.print(f"interrupted ({signal_name}): {_INTERRUPTED.get(fn.__name__, 'nothing was lost')}")
    raise typer.Exit(143 if sigterm else 130)


# What an interrupted command leaves, for its user: a stopped apply's jobs go on being paid for.
_INTERRUPTED = {
    "apply_cmd": "the jobs created so far keep running on the service, and are paid for; every step "
    "done is saved: run `batchflow apply` again to resume, or `batchflow cancel` to stop them",
}


def command(name: str | None = None):
    """Register a command; the one place where batchflow errors become a message and exit 1."""

    def register(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (KeyboardInterrupt, Terminated) as exc:
                _interrupted(fn, sigterm=isinstance(exc, Terminated))
            except Exception as exc:
                if _RECEIVED:  # the interrupt came out wrapped in a library's own error (pydantic's)
                    _interrupted(fn, sigterm=_RECEIVED[-1] == signal.SIGTERM)
                if isinstance(exc, SpecErrors):
                    for e in exc.errors:
                        err.print(str(e))
                elif isinstance(exc, BatchflowError | OSError):  # OSError: a file not to be read or written
                    err.print(f"error: {exc}")
                else:
                    raise
            raise typer.Exit(EXIT_ERROR)

        app.command(name)(wrapper)
        return fn

    return register


def _settings(state: str | None = None, **flags) -> Settings:
    from .settings import Settings

    given = {k: v for k, v in {"state": state, **flags}.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else "settings"
        if field in flags and flags[field] is not None:
            name = f"--{field.replace('_', '-')}"
        else:
            name = field if field.isupper() else f"BATCHFLOW_{field.upper()}"
        raise BatchflowError(f"{name}: {problem['msg'].removeprefix('Value error, ')}") from None


def _project(paths: list[Path] | None, targets: list[str] | None, settings: Settings):
    """The pipelines plan and apply work on: every one that loads (the problems of the others
    are printed, and the run goes on without them), or only the `--target` ones."""
    from .api import load

    project = load(paths, targets=targets, settings=settings)
    for problem in project.problems:
        err.print(problem)
    return project


def _pipeline_error(pipeline: LoadedPipeline, message: str) -> None:
    where = "" if str(pipeline.path) in message else f" ({pipeline.path})"  # named once
    err.print(f"{pipeline.name}: error: {message}{where}")


def _version(value: bool) -> None:
    if value:
        out.print(f"batchflow {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Run Gemini API Batch Mode workloads as declarative pipelines."""


@command()
def validate(
    paths: Paths = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print diagnostics as JSON.")] = False,
) -> None:
    """Check specs, templates and schemas, and render the records of local sources; no network."""
    from .api import load

    settings = _settings()
    try:
        project = load(paths, settings=settings, strict=True)
        checked = project.validate()
    except SpecErrors as exc:
        if not as_json:
            raise
        problems = [
            {"file": e.file, "line": e.line, "column": e.column, "field": e.field, "message": e.message}
            for e in exc.errors
        ]
        typer.echo(json.dumps({"valid": False, "pipelines": [], "problems": problems}, indent=2))
        raise typer.Exit(EXIT_ERROR) from None
    pipelines = project.pipelines
    if as_json:
        found = [
            {
                "name": p.name,
                "file": str(p.path),
                "records_checked": checked[p.name].records,
                "all_records_checked": checked[p.name].complete,
            }
            for p in pipelines
        ]
        typer.echo(json.dumps({"valid": True, "pipelines": found, "problems": []}, indent=2))
        return
    for p in pipelines:
        c = checked[p.name]
        if c.skipped:
            note = c.skipped
        elif c.complete:
            note = f"all {c.records:,} records rendered"
        else:
            note = (
                f"the first {c.records:,} records rendered; the source is over "
                f"BATCHFLOW_VALIDATE_MAX_BYTES ({settings.validate_max_bytes:,} bytes), plan reads the rest"
            )
        out.print(f"{p.path}: {p.name}: valid ({note})")
        _warn_model(p)


def _warn_model(p: LoadedPipeline) -> None:
    """A model that is deprecated, routed to another, or unknown (likely a typo; a model newer
    than the catalog is not refused): one warning line. A shut-down one is a spec error."""
    from .spec.catalog import load_catalog, model_warning

    if warning := model_warning(load_catalog(), p.spec.model):
        err.print(f"{p.path}: warning: model: {warning}")


MaxUsd = Annotated[
    float | None,
    typer.Option(
        "--max-usd",
        min=0,
        help="Refuse to send requests whose estimated cost is over this many US dollars "
        "(overrides budget.max_usd).",
        show_default=False,
    ),
]


MaxConcurrentJobs = Annotated[
    int | None,
    typer.Option(
        "--max-concurrent-jobs",
        min=1,
        help="Jobs per pipeline at work at once, overriding batch.max_concurrent_jobs.",
        show_default=False,
    ),
]


@command("plan")
def plan_cmd(
    paths: Paths = None,
    state: StateOpt = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 0 when nothing is to do, 2 when changes are pending."),
    ] = False,
    allow_shrink: AllowShrink = False,
    retry_errors: RetryErrors = False,
    target: Targets = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan as JSON (same as --format json).")
    ] = False,
    fmt: Annotated[
        str, typer.Option("--format", help="text, json, or markdown (for a pull-request comment).")
    ] = "text",
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Also save the plan to FILE, for `apply FILE`.", show_default=False),
    ] = None,
    count_tokens: Annotated[
        bool,
        typer.Option("--count-tokens", help="Estimate input tokens with the API's countTokens on a sample."),
    ] = False,
    max_usd: MaxUsd = None,
    max_concurrent_jobs: MaxConcurrentJobs = None,
) -> None:
    """Show the actions apply would take now, what they send, and what that costs."""
    from .run import review

    fmt = "json" if as_json else fmt
    if fmt not in ("text", "json", "markdown"):
        raise typer.BadParameter("use text, json or markdown", param_hint="--format")
    project = _project(paths, target, _settings(state))
    the_plan = project.plan(
        allow_shrink=allow_shrink,
        retry_errors=retry_errors,
        max_usd=max_usd,
        max_concurrent_jobs=max_concurrent_jobs,
        count_tokens=count_tokens,
        on_error=_pipeline_error,
    )
    broken = len(the_plan.unloaded) + sum(1 for pp in the_plan.pipelines if pp.error)
    if out_file is not None:
        review.save(the_plan, out_file)
    if fmt == "json":
        typer.echo(the_plan.model_dump_json(indent=2))
    elif fmt == "markdown":
        typer.echo(review.markdown(the_plan), nl=False)
    else:
        for pp in the_plan.pipelines:
            for line in review.text_lines(pp):
                out.print(line)
        out.print(review.summary_line(the_plan))
        if out_file is not None:
            out.print(f"Saved the plan to {out_file}; `batchflow apply {out_file}` applies exactly it.")
    _step_summary(review.markdown(the_plan))
    if broken:
        raise typer.Exit(EXIT_ERROR)
    if the_plan.changes and detailed_exitcode:
        raise typer.Exit(EXIT_CHANGES)


def _step_summary(markdown: str) -> None:
    """In GitHub Actions, append to the job's summary page."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown + "\n")


@command("apply")
def apply_cmd(
    paths: Paths = None,
    state: StateOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Repeat until every pipeline is done.")] = False,
    allow_shrink: AllowShrink = False,
    retry_errors: RetryErrors = False,
    target: Targets = None,
    lock_timeout: LockTimeout = None,
    max_concurrent_jobs: MaxConcurrentJobs = None,
    max_usd: MaxUsd = None,
) -> None:
    """Take every action that can be taken now; with --wait, until done. Given a plan saved by
    `plan --out FILE`, apply exactly that plan, refusing if anything changed since."""
    from .api import Project, check_saved_plan
    from .run.progress import reporter_for
    from .run.reconcile import Action

    settings = _settings(state, lock_timeout=lock_timeout)
    saved = _saved_plan(paths)
    if saved is not None:
        given = {
            "--target": target,
            "--allow-shrink": allow_shrink,
            "--retry-errors": retry_errors,
            "--max-usd": max_usd is not None,
            "--max-concurrent-jobs": max_concurrent_jobs is not None,
        }
        if flags := [name for name, value in given.items() if value]:
            raise BatchflowError(
                f"{', '.join(flags)}: a saved plan is applied with the options it was made with; "
                "give them to `plan --out` instead"
            )
        project = Project(check_saved_plan(saved, settings), [], settings)
        options = saved.options
        allow_shrink, retry_errors = options.allow_shrink, options.retry_errors
        max_usd, max_concurrent_jobs = options.max_usd, options.max_concurrent_jobs
        if not project.pipelines:
            out.print("The saved plan has no changes: nothing to do.")
            return
    else:
        project = _project(paths, target, settings)

    def report(pipeline: str, action: Action, message: str) -> None:
        out.print(
            f"{pipeline}: {action.symbol} {action.kind}"
            + (f" {action.shard[:8]}" if action.shard else "")
            + f": {message}"
        )

    def warn(pipeline: str, message: str) -> None:
        err.print(f"{pipeline}: warning: {message}")

    progress = reporter_for(out, jobs=wait)

    def pause(seconds: float, outcomes) -> None:
        jobs = sum(len(o.waiting) for o in outcomes if not o.done)
        if not out.is_terminal or progress.active:  # one live display at a time
            time.sleep(seconds)
            return
        with out.status(f"waiting for {jobs} job(s); next check in {seconds:.0f} s"):
            time.sleep(seconds)

    applied = project.apply(
        wait=wait,
        allow_shrink=allow_shrink,
        retry_errors=retry_errors,
        max_concurrent_jobs=max_concurrent_jobs,
        max_usd=max_usd,
        report=report,
        warn=warn,
        progress=progress,
        pause=pause,
    )
    outcomes = applied.outcomes
    progress.close()
    by_name = {p.name: p for p in project.pipelines}
    rows = ["### batchflow apply", "", "| pipeline | result |", "|---|---|"]
    for o in outcomes:
        if o.error:
            _pipeline_error(by_name[o.pipeline], o.error)
            result = f"**error:** {o.error}"
        elif o.blocked:
            result = o.blocked
        elif o.actions == 0:
            result = "up to date, nothing to do"
        elif o.done:
            result = "done"
        else:
            result = f"waiting for {len(o.waiting)} job(s); run apply again later"
        if not o.error:
            out.print(f"{o.pipeline}: {result}")
        if o.failed:
            result += f"; **failed requests:** {o.failed}"
        rows.append(f"| `{o.pipeline}` | {result} |")
    _step_summary("\n".join(rows) + "\n")
    failed = [o for o in outcomes if o.failed]
    for o in failed:
        err.print(f"{o.pipeline}: error: {o.failed}")
    if applied.problems or applied.errors:
        raise typer.Exit(EXIT_ERROR)
    if failed:
        raise typer.Exit(EXIT_FAILED_REQUESTS)


def _saved_plan(paths: list[Path] | None):
    """The plan `apply FILE` was given, if its one argument is a file that is not a spec."""
    from .run import review
    from .spec.models import SPEC_SUFFIXES

    if not paths or len(paths) != 1 or not paths[0].is_file() or paths[0].suffix in SPEC_SUFFIXES:
        return None
    return review.load(paths[0])


@command()
def cancel(paths: Paths = None, state: StateOpt = None) -> None:
    """Cancel the running jobs of the pipelines; a later apply sends what they did not finish."""
    from .api import load

    count = load(paths, settings=_settings(state), strict=True).cancel(_say)
    out.print(f"{count} job(s) cancelled" if count else "no running jobs")


@command()
def destroy(
    paths: Paths = None,
    state: StateOpt = None,
    yes: Yes = False,
) -> None:
    """Delete the jobs, files and caches the pipelines made, and their state (outputs are kept)."""
    from .api import load

    project = load(paths, settings=_settings(state), strict=True)
    names = ", ".join(p.name for p in project.pipelines)
    _confirm(yes, f"destroy {names}", f"Delete the jobs, files, caches and state of {names}?")
    project.destroy(_say)


@command()
def unlock(
    paths: Paths = None,
    state: StateOpt = None,
    yes: Yes = False,
) -> None:
    """Remove the pipelines' locks, left by an apply that was killed on another machine."""
    from .api import load

    project = load(paths, settings=_settings(state), strict=True)
    _confirm(yes, "unlock", "Remove the locks? Only if no apply of these pipelines is running.")
    for name, removed in project.unlock().items():
        _say(name, "lock removed" if removed else "not locked")


def _say(pipeline: str, message: str) -> None:
    out.print(f"{pipeline}: {message}")


@command()
def status(
    paths: Paths = None,
    state: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show each pipeline's shards, jobs, tokens, cost and output, from the state store."""
    from .api import load
    from .spec.pricing import usd

    report = load(paths, settings=_settings(state), strict=True).status()
    rows = [
        "### batchflow status",
        "",
        "| pipeline | records | shards | tokens | cost | output |",
        "|---|---|---|---|---|---|",
    ]
    for r in report:
        o, t = r["output"], r["tokens"]
        written = f"{o['records']} records, {o['errors']} errors" if o else "not written yet"
        rows.append(
            f"| `{r['pipeline']}` | {r['records'] or 0:,} | "
            + (", ".join(f"{n} {k}" for k, n in r["shards"].items()) or "none")
            + f" | {t['prompt']:,} in, {t['output']:,} out | ~{usd(r['cost_usd'])} | {written} |"
        )
    _step_summary("\n".join(rows) + "\n")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for r in report:
        shards = ", ".join(f"{n} {k}" for k, n in r["shards"].items()) or "none"
        records = f"{r['records']:,} records; " if r["records"] is not None else ""
        if "variants" in r:  # a matrix or scored spec: its members are above
            judges = f" and {len(r['judges'])} judges" if r["judges"] else ""
            out.print(
                f"{r['pipeline']}: {len(r['variants'])} variants{judges}; {r['requests']:,} requests sent"
            )
        else:
            out.print(f"{r['pipeline']}: {records}{r['requests']:,} requests sent; shards: {shards}")
        if r["calls"]:
            c = r["calls"]
            out.print(f"  flex calls: {c['answered']:,} of {c['requests']:,} answered; apply sends the rest")
        if r["waiting_for_quota"]:
            out.print(
                f"  {r['waiting_for_quota']} shard(s) waiting for quota "
                "(the service answered 429 RESOURCE_EXHAUSTED); apply creates them as running jobs finish"
            )
        if r["labels"]:
            out.print("  labels: " + ", ".join(f"{k}={v}" for k, v in r["labels"].items()))
        t = r["tokens"]
        if any(t.values()):
            out.print(
                f"  tokens: {t['prompt']:,} prompt ({t['cached']:,} cached), {t['output']:,} output; "
                f"cost ~{usd(r['cost_usd'])}"
            )
        for j in r["jobs"]:
            why = f": {j['error']['message']}" if j["error"] and j["error"]["message"] else ""
            out.print(
                f"  {j['name']}  {(j['state'] or '').removeprefix('JOB_STATE_').lower()}"
                f"  (shard {j['shard'][:8]}, attempt {j['attempt']}){why}"
            )
        o = r["output"]
        if o is None:
            out.print("  output: not written yet")
            continue
        out.print(f"  output: {o['records']} records, {o['errors']} errors, written {o['written_at']}")
        if o["errors"]:
            rest = o["errors"] - len(o["failed_keys"])
            more = f" and {rest} more" if rest else ""
            keys = ", ".join(o["failed_keys"])
            out.print(f"  failed keys: {keys}{more} (error rows in {r['errors_uri']})")
        if r["policy"]:
            out.print(f"  ! more requests failed than the errors policy tolerates ({r['policy']}): exit 3")


@command()
def report(
    paths: Paths = None,
    state: StateOpt = None,
    target: Targets = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="markdown (for a pull request or the CI step summary), json, or html."),
    ] = "markdown",
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Write the report to FILE (html needs one).", show_default=False),
    ] = None,
) -> None:
    """Compare the variants of matrix and scored specs: answers, errors, mean score with its 95%
    interval, tokens, cost, cost per correct answer, and which no other beats on both."""
    from .api import load
    from .output.report import dumps
    from .state.atomic import write_atomic

    if fmt not in ("markdown", "json", "html"):
        raise typer.BadParameter("use markdown, json or html", param_hint="--format")
    if fmt == "html" and out_file is None:
        raise typer.BadParameter("html is a page: say where with --out FILE", param_hint="--format")
    text = dumps(load(paths, targets=target, settings=_settings(state), strict=True).report(), fmt)
    if fmt == "markdown":
        _step_summary(text)
    if out_file is None:
        typer.echo(text, nl=False)
        return
    write_atomic(out_file, text.encode())
    out.print(f"wrote {out_file}")


@command()
def schema(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the schema.")] = Path(
        "schemas/pipeline.schema.json"
    ),
) -> None:
    """Write the JSON Schema of the pipeline spec (for editors and CI)."""
    from .state.atomic import write_atomic

    write_atomic(output, schema_text().encode())
    out.print(f"wrote {output}")


def schema_text() -> str:
    from .spec.models import Pipeline

    doc = Pipeline.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "batchflow pipeline"
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


@command("models")
def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalog as data.")] = False,
) -> None:
    """List the models batchflow knows (its catalog, BATCHFLOW_MODELS on top): what each is today,
    its limits, the thinking it takes and its price."""
    from .spec.catalog import load_catalog, today

    catalog, now = load_catalog(), today()
    rows: list[dict[str, Any]] = []
    for name, model in catalog.models.items():
        status, price = catalog.status(name, now), catalog.price(name, now)
        thinking = model.thinking
        rows.append(
            {
                "model": name,
                "status": status.kind,
                "answered_by": status.target if status.kind == "routed" else None,
                "replacement": status.target if status.kind in ("shut down", "deprecated") else None,
                "shutdown": str(model.shutdown) if model.shutdown else None,
                "input_tokens": model.input_tokens,
                "output_tokens": model.output_tokens,
                "thinking_levels": list(thinking.levels) if thinking else [],
                "thinking_budget": list(thinking.budget) if thinking and thinking.budget else None,
                "usd_per_1m": price.model_dump(mode="json", exclude_none=True) if price else None,
            }
        )
    if as_json:
        doc = {"checked": str(catalog.checked), "source": catalog.source, "models": rows}
        typer.echo(json.dumps(doc, indent=2))
        return
    out.print(f"Models as of {now} (catalog checked {catalog.checked}; standard prices, Batch Mode: half):")
    for r in rows:
        usd = r["usd_per_1m"]
        cost = f"${usd['input']:g} / ${usd['output']:g} per 1M" if usd else "unpriced"
        what = r["status"] + (f" -> {r['answered_by']}" if r["answered_by"] else "")
        what += f" (use {r['replacement']})" if r["replacement"] else ""
        levels = ", ".join(r["thinking_levels"]) or (
            f"budget {r['thinking_budget'][0]}-{r['thinking_budget'][1]}" if r["thinking_budget"] else "-"
        )
        limits = f"{r['input_tokens'] or '?'} in / {r['output_tokens'] or '?'} out"
        out.print(f"  {r['model']:<24} {what:<40} {limits:<22} {levels:<28} {cost}")


@command()
def init(
    folder: Annotated[Path, typer.Argument(help="Where to write the repository (default: here).")] = Path(
        "."
    ),
) -> None:
    """Scaffold a pipeline repository: an example pipeline, a Makefile, GitHub Actions and GitLab CI
    recipes, .gitignore and .env.example. Existing files are left as they are."""
    from .spec.scaffold import scaffold

    written = scaffold(folder, schema_text(), out.print)
    if written:
        out.print(
            f"Next: edit {folder / 'pipelines/example.yaml'}, then `make validate plan` "
            "(try it offline: `batchflow emulator` and BATCHFLOW_API_BASE_URL=http://127.0.0.1:8765)."
        )


@command()
def emulator(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 8765,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="BATCHFLOW_EMULATOR_API_KEY",
            show_envvar=True,
            help="The one key accepted; unset, any non-empty key is.",
        ),
    ] = None,
    speed: Annotated[float, typer.Option(min=0.001, help="Clock speed: N times real time.")] = 1.0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep files, jobs and caches here, across restarts (default: none).")
    ] = None,
    faults: Annotated[
        str,
        typer.Option(help="Injected faults, e.g. 'line_error_rate=0.1,job_fail_rate=0.2,seed=7'."),
    ] = "",
    gcs_endpoint: Annotated[
        str | None,
        typer.Option(
            envvar="STORAGE_EMULATOR_HOST",
            help="Cloud Storage the Vertex AI batch jobs read and write, e.g. a fake-gcs-server URL.",
        ),
    ] = None,
    models: Annotated[
        Path | None,
        typer.Option(
            "--models",
            envvar="BATCHFLOW_MODELS",
            help="A model catalog file (YAML or JSON, as batchflow's) whose models are served too, "
            "e.g. one released after this batchflow.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the local Gemini API emulator (prints `listening on URL` when ready)."""
    from .emulator import Faults, serve
    from .spec.catalog import load_catalog

    if models is not None:
        load_catalog(models)  # a bad file is one line now, not a 500 at the first call
        os.environ["BATCHFLOW_MODELS"] = str(models.resolve())

    try:
        parsed = Faults.parse(faults)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    serve(
        host=host,
        port=port,
        api_key=api_key,
        speed=speed,
        data_dir=data_dir,
        faults=parsed,
        gcs_endpoint=gcs_endpoint,
    )


def run(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (tests call this in-process)."""
    try:
        app(args=argv, prog_name="batchflow")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def main() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sys.exit(run())
