"""The ``grafs-bench`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from bench.methods import METHODS
from bench.options import add_option_flags, given_options
from bench.runner import EXECUTORS, PROGRESS_EVERY
from bench.tasks import MAX_SEED
from grafs.errors import UserError
from grafs.files import check_writable_file, check_writable_folder

LIST_TOPICS = ("tasks", "ops", "activations", "campaigns", "methods")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _seed(text: str) -> int:
    value = _non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED}, got {value}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a positive integer, got 0")
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grafs-bench", description="Activation-function search: GRAFS, baselines and benchmarks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    listing = commands.add_parser("list", help="list tasks, operations or activations")
    listing.add_argument("topic", choices=LIST_TOPICS)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    training = commands.add_parser("train", help="train a task's model with one activation and evaluate it")
    training.add_argument("--task", required=True)
    training.add_argument("--activation", required=True, help="a fixed name, a published genotype or a .json file")
    training.add_argument("--seed", type=_seed, default=0)
    training.add_argument("--out", type=Path, help="folder for metrics.json and history.json")
    training.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    training.add_argument("--data-dir", type=Path, help="where the real datasets live (default: $GRAFS_BENCH_DATA)")
    training.add_argument("--download", action="store_true", help="fetch a missing dataset first (needs a network)")
    training.add_argument("--learnable-betas", action="store_true", help="train a genotype's betas with the weights")

    searching = commands.add_parser("search", help="search an activation for a task: GRAFS or a black-box baseline")
    searching.add_argument("--task", required=True)
    searching.add_argument("--seed", type=_seed, default=0)
    searching.add_argument(
        "--method",
        default="grafs",
        help=f"one of {', '.join(METHODS.names())}; a fixed activation's name is a search of zero cost "
        "(default grafs)",
    )
    budget = searching.add_mutually_exclusive_group()
    budget.add_argument("--budget-multiple", type=_positive_number, help="baselines: k x GRAFS's cost (default 1)")
    budget.add_argument("--budget-seconds", type=_positive_number, help="baselines: a limit in wall seconds")
    searching.add_argument(
        "--budget-unit", help="the unit a matched budget stops in: seconds (default), sample_passes, epoch_equivalents"
    )
    searching.add_argument(
        "--grafs-result",
        type=Path,
        help="the GRAFS result.json to match (default: runs/search/<task>-grafs-fixed-s<seed>/result.json)",
    )
    searching.add_argument("--out", type=Path, help="folder for genotype.json, trace, result.json, plot (and study.db)")
    searching.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    searching.add_argument("--data-dir", type=Path, help="where the real datasets live (default: $GRAFS_BENCH_DATA)")
    searching.add_argument("--download", action="store_true", help="fetch a missing dataset first (needs a network)")
    options = searching.add_argument_group(
        "method options", "each applies to the methods named in brackets; left out, the method's default applies"
    )
    owners = [(name, METHODS.get(name).options) for name in METHODS]
    searching.set_defaults(option_names=add_option_flags(options, owners))

    showing = commands.add_parser("show", help="print a genotype's formula and LaTeX, and plot it")
    showing.add_argument("genotype", help="a genotype .json file or a published genotype's name")
    showing.add_argument("--plot", type=Path, help="write a PNG of the function next to ReLU, GELU and SiLU")

    running = commands.add_parser("run", help="run (or resume) a campaign, then gather its tables")
    running.add_argument("campaign", nargs="?", default="quick", help="a built-in campaign name or a TOML file")
    running.add_argument(
        "--part", help="run only this part of the campaign's [[parts]] (then grafs-bench merge joins the parts)"
    )
    running.add_argument(
        "--out", type=Path, help="output folder (default: runs/<campaign>; with --part, runs/<campaign>/parts/<part>)"
    )
    running.add_argument(
        "--workers", type=_positive_int, help="units run in parallel (default: one per CPU core, one on a GPU)"
    )
    running.add_argument("--executor", choices=EXECUTORS, default="local", help="local processes or submitit (Slurm)")
    running.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    running.add_argument(
        "--progress-every", type=_positive_number, default=PROGRESS_EVERY, metavar="SECONDS",
        help=f"without a terminal, a progress line at most this often (default {PROGRESS_EVERY:g})",
    )

    status = commands.add_parser("status", help="done / running / failed / pending units of a campaign folder")
    status.add_argument("out", type=Path)
    status.add_argument("--json", action="store_true")

    ui = commands.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for a campaign folder")
    ui.add_argument("out", type=Path)
    ui.add_argument("--port", type=_port, default=5000)

    gathering = commands.add_parser("gather", help="rebuild the parquet tables of a campaign folder")
    gathering.add_argument("out", type=Path)

    reporting = commands.add_parser("report", help="write report.md / report.html, tables and figures of a campaign")
    reporting.add_argument("out", type=Path)

    merging = commands.add_parser(
        "merge", help="merge the gathered folders of a campaign's parts into OUT, to report on all of them"
    )
    merging.add_argument("out", type=Path, metavar="OUT", help="the merged folder (not one where units run)")
    merging.add_argument("parts", type=Path, nargs="+", metavar="PART_FOLDER", help="folders of grafs-bench run --part")
    merging.add_argument("--report", action="store_true", help="build OUT's report right after")

    preparing = commands.add_parser("prepare", help="download and tokenize a dataset (needs a network)")
    preparing.add_argument("dataset", choices=("tinystories",))
    preparing.add_argument("--data-dir", type=Path)
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, a scheduler's stop) ends a command as Ctrl-C does: what it started stops with it
    # and its temporary files are removed on the way out.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"grafs-bench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grafs-bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------------------------
def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


def _list_rows(topic: str) -> list[dict]:
    if topic == "tasks":
        from bench.tasks import TASKS, get_task

        return [
            {
                "name": task.name,
                "scale": task.scale,
                "model": task.model,
                "dataset": task.dataset,
                "metric": f"{task.metric.name} ({task.metric.direction})",
                "transfer": ",".join(task.transfer),
            }
            for task in map(get_task, TASKS)
        ]
    if topic == "ops":
        from grafs.ops import OPERATIONS

        return [
            {
                "name": op.name,
                "arity": "unary" if op.arity == 1 else "binary",
                "beta": op.beta_init or "",
                "space": "extended" if op.extended else "standard",
            }
            for op in OPERATIONS.values()
        ]
    if topic == "campaigns":
        from bench.campaign import builtin_campaigns, load_campaign

        return [{"name": name, "description": load_campaign(name).description} for name in builtin_campaigns()]
    if topic == "methods":
        return [{"name": name, "summary": METHODS.get(name).summary} for name in METHODS]
    from bench.activations import FIXED_ACTIVATIONS
    from grafs.published import PUBLISHED_GENOTYPES

    fixed = [{"name": name, "kind": "fixed", "formula": name} for name in FIXED_ACTIVATIONS]
    published = [
        {"name": name, "kind": "published genotype", "formula": genotype.formula()}
        for name, genotype in PUBLISHED_GENOTYPES.items()
    ]
    return fixed + published


def _command_list(args) -> int:
    rows = _list_rows(args.topic)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0


def _command_train(args) -> int:
    from bench.activations import resolve_activation
    from bench.outputs import save_train_result
    from bench.tasks import get_task
    from bench.training import load_task_data, resolve_device, train

    task = get_task(args.task)
    activation = resolve_activation(args.activation, learnable_betas=args.learnable_betas)
    device = resolve_device(args.device)
    out = args.out or Path("runs") / "train" / f"{task.name}-{activation.name}-s{args.seed}"
    check_writable_folder(out, "--out")
    data = load_task_data(task, args.data_dir, download=args.download)
    print(f"training {task.name} ({task.description}) with {activation.formula}, seed {args.seed}, on {device}")
    result = train(task, activation.factory, args.seed, activation_name=activation.name, device=device, data=data)
    save_train_result(result, out, activation.genotype)
    metrics = ", ".join(f"{key}={value:.4f}" for key, value in result.metrics.items())
    print(f"status={result.status} {metrics}")
    print(f"cost: {result.cost.wall_seconds:.1f} s, {result.cost.sample_passes} sample passes; saved to {out}")
    return 0 if result.status == "ok" else 1


def _search_budget(args, method, task):
    from bench.budget import Budget, matched_budget

    given = [
        flag
        for flag, value in (
            ("--budget-multiple", args.budget_multiple),
            ("--budget-seconds", args.budget_seconds),
            ("--budget-unit", args.budget_unit),
            ("--grafs-result", args.grafs_result),
        )
        if value is not None
    ]
    if not method.budgeted:
        if given:
            raise UserError(f"{given[0]} applies to black-box methods; GRAFS and fixed activations are not budgeted")
        return None
    if args.budget_seconds is not None:
        if args.budget_unit not in (None, "seconds") or args.grafs_result is not None:
            raise UserError("--budget-seconds sets seconds; --budget-unit and --grafs-result go with --budget-multiple")
        return Budget("seconds", seconds=args.budget_seconds, source="--budget-seconds")
    multiple, unit = args.budget_multiple or 1.0, args.budget_unit or "seconds"
    return matched_budget(task, args.seed, multiple, unit, args.grafs_result)


def _print_trace_row(row: dict) -> None:
    score = "-" if row["score"] is None else f"{row['score']:.4f}"
    best = "-" if row["incumbent_score"] is None else f"{row['incumbent_score']:.4f}"
    active = f"  active={row['active']}" if "active" in row else ""
    resource = f"  checkpoints={row['resource']}" if "resource" in row else ""
    print(
        f"  {row['step']:>4}  {row['status']:<11} val={score}  best={best}  {row['wall_seconds']:7.1f} s  "
        f"{row['epoch_equivalents']:6.1f} ep{active}{resource}  {row['formula']}"
    )


def _command_search(args) -> int:
    from bench.outputs import save_search_outcome
    from bench.tasks import get_task
    from bench.training import load_task_data, resolve_device

    task = get_task(args.task)
    method = METHODS.get(args.method)
    searcher = method.create(**given_options(args, args.option_names))
    budget = _search_budget(args, method, task)
    device = resolve_device(args.device)
    label = f"grafs-{args.mode or 'fixed'}" if method.name == "grafs" else method.name
    out = args.out or Path("runs") / "search" / f"{task.name}-{label}-s{args.seed}"
    check_writable_folder(out, "--out")
    data = load_task_data(task, args.data_dir, download=args.download)
    limit = f", budget {budget.limit:g} {budget.unit} ({budget.source})" if budget else ""
    print(f"{label} search on {task.name} ({task.description}), seed {args.seed}, on {device}{limit}")
    outcome = searcher.search(task, args.seed, budget, data=data, out=out, device=device, progress=_print_trace_row)
    summary = save_search_outcome(outcome, out, task, data, args.seed)
    print(f"status={outcome.status} {outcome.message}".rstrip())
    if outcome.genotype is not None:
        print(f"found (val {outcome.best_score:.4f}, betas {outcome.betas}): f(x) = {outcome.genotype.formula()}")
    cost = summary["cost"]
    print(
        f"cost: {cost['wall_seconds']:.1f} s, {cost['sample_passes']} sample passes, {cost['epoch_equivalents']:.1f} "
        f"epoch-equivalents, {cost['full_trainings']:.2f} full trainings; saved to {out}"
    )
    if budget:
        overshoot = summary["budget"]["overshoot"]
        print(f"budget: {budget.limit:g} {budget.unit}, overshoot {overshoot:+.4g} {budget.unit}")
    return 0 if outcome.status == "ok" else 1


def _command_show(args) -> int:
    from bench.activations import resolve_activation

    activation = resolve_activation(args.genotype)
    if activation.genotype is None:
        raise UserError(f"{args.genotype!r} is a fixed activation, not a genotype; pass a genotype .json file")
    if args.plot:
        check_writable_file(args.plot, "--plot")
    genotype = activation.genotype
    print(f"ops:     {', '.join(genotype.ops)}")
    print(f"betas:   {', '.join('-' if b is None else f'{b:.4g}' for b in genotype.betas)}")
    print(f"bounded: {genotype.bounded}")
    print(f"formula: f(x) = {genotype.formula()}")
    print(f"latex:   f(x) = {genotype.latex()}")
    print(f"fingerprint: {genotype.fingerprint()}")
    if args.plot:
        from bench.plots import plot_activation

        print(f"plot:    {plot_activation(genotype, args.plot, label=activation.name)}")
    return 0


def _command_run(args) -> int:
    from bench.campaign import get_part, load_campaign
    from bench.folder import CampaignFolder, folder_lock
    from bench.gather import gather
    from bench.report import build_report
    from bench.runner import default_workers, run_campaign
    from bench.training import resolve_device

    campaign = load_campaign(args.campaign)
    if args.part is None:
        out = args.out or Path("runs") / campaign.name
    else:
        get_part(campaign, args.part)
        out = args.out or Path("runs") / campaign.name / "parts" / args.part
    folder = CampaignFolder(out)
    folder.check_can_run(campaign, args.part)
    resolve_device(campaign.device)
    workers = args.workers or default_workers(campaign.device)
    # Only now, with the campaign, its device and its folder checked, is anything created.
    out.mkdir(parents=True, exist_ok=True)
    from bench.tracking import environment_tags, machine_tags

    folder.record_environment(
        {**environment_tags(), **machine_tags(), "device": campaign.device, "workers": str(workers)}
    )
    tracker = None
    if not args.no_tracking:
        from bench.tracking import TrackingThread

        tracker = TrackingThread(out, campaign.name)

    def finished(unit, outcome) -> None:
        if tracker and outcome.state == "done":
            tracker.log_unit(unit, campaign.device)

    name = campaign.name if args.part is None else f"{campaign.name} part {args.part}"
    print(f"campaign {name}: {campaign.description}", flush=True)  # before the progress lines in a log
    summary = run_campaign(campaign, out, workers=workers, executor=args.executor, on_finished=finished,
                           progress_every=args.progress_every, part=args.part)
    if tracker:
        tracker.call(lambda store: _log_unlogged(store, folder, campaign.device))
        tracker.close()
    with folder_lock(folder.report_lock):  # runners sharing the folder take turns
        tables = gather(out)
        report = build_report(out)
    print(
        f"{summary.done}/{summary.total} units done, {summary.failed} failed, {summary.blocked} blocked; "
        f"tables in {out / 'tables'} ({len(tables['units'])} units, {len(tables['trace'])} trace rows)"
    )
    print(f"report: {report} (and report.html, tables/, figures/)")
    return 0 if summary.failed == 0 and summary.blocked == 0 else 1


def _log_unlogged(tracker, folder, device: str) -> None:
    """Units finished by an earlier, interrupted run are logged now (each at most once)."""
    from bench.folder import DONE

    units = folder.read_record().units
    done = set(folder.status(units)[DONE])
    for unit in units:
        if unit.id in done and tracker.run_id_of(unit.id) is None:
            tracker.log_unit(unit, device)


def _command_status(args) -> int:
    from bench.folder import CampaignFolder

    folder = CampaignFolder(args.out)
    status = folder.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    total = sum(len(ids) for ids in status.values())
    for state, ids in status.items():
        print(f"{state:<8} {len(ids):>5} / {total}")
    for unit_id in status["failed"]:
        failed = json.loads((folder.unit_dir(unit_id) / "failed.json").read_text())
        print(f"  failed: {unit_id}: {failed['error']}")
    for unit_id in status["running"]:
        print(f"  running: {unit_id}")
    return 0


def _command_ui(args) -> int:
    import socket
    import subprocess

    from bench.folder import CampaignFolder
    from bench.tracking import tracking_uri

    if not CampaignFolder(args.out).mlflow_db.is_file() and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise UserError(f"{args.out} has no mlflow.db; pass the --out folder of a grafs-bench run")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError as error:
            message = f"port {args.port} on 127.0.0.1 is not free ({error.strerror}); pick another --port"
            raise UserError(message) from None
    uri = tracking_uri(args.out)
    print(f"MLflow UI for {uri} on http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    # A process group of its own: the server and the workers it starts are stopped together.
    server = subprocess.Popen([*command, "--port", str(args.port)], start_new_session=True)
    try:
        return server.wait()
    finally:
        _stop_process_group(server)


def _stop_process_group(leader, grace: float = 10.0) -> None:
    """SIGTERM to every process of ``leader``'s group, SIGKILL to those left after ``grace`` seconds."""
    import time

    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(leader.pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            leader.poll()  # reap the leader, so an empty group reads as gone
            try:
                os.killpg(leader.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _command_gather(args) -> int:
    from bench.folder import CampaignFolder
    from bench.gather import gather

    CampaignFolder(args.out).read_run_record()
    check_writable_folder(args.out, "the campaign folder")
    tables = gather(args.out)
    print(", ".join(f"{name}: {len(table)} rows" for name, table in tables.items()) + f" -> {args.out / 'tables'}")
    return 0


def _command_report(args) -> int:
    from bench.folder import CampaignFolder
    from bench.report import build_report

    CampaignFolder(args.out).read_record()
    check_writable_folder(args.out, "the campaign folder")
    print(f"report: {build_report(args.out)} (and report.html, tables/, figures/)")
    return 0


def _command_merge(args) -> int:
    from bench.merge import merge_parts

    record = merge_parts(args.out, args.parts)
    finished = sum(part.finished for part in record.merged)
    merged = [part.part for part in record.merged]
    left = [part.name for part in record.campaign.parts if part.name not in merged]
    print(f"merged parts {', '.join(merged)} of campaign {record.campaign.name} into {args.out}: {finished}/"
          f"{len(record.units)} declared units finished" + (f"; not merged: {', '.join(left)}" if left else ""))
    if not args.report:
        print(f"report: run `grafs-bench report {args.out}`")
        return 0
    from bench.report import build_report

    print(f"report: {build_report(args.out)} (and report.html, tables/, figures/)")
    return 0


def _command_prepare(args) -> int:
    from bench.data import default_data_dir
    from bench.data.tinystories import prepare_tinystories

    data_dir = args.data_dir or default_data_dir()
    check_writable_folder(data_dir, "--data-dir")
    path = prepare_tinystories(data_dir)
    print(f"TinyStories tokens written to {path}")
    return 0


COMMANDS = {
    "list": _command_list,
    "train": _command_train,
    "search": _command_search,
    "show": _command_show,
    "prepare": _command_prepare,
    "run": _command_run,
    "status": _command_status,
    "ui": _command_ui,
    "gather": _command_gather,
    "report": _command_report,
    "merge": _command_merge,
}

if __name__ == "__main__":
    raise SystemExit(main())
