"""The ``grafs-bench`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafs.errors import UserError

LIST_TOPICS = ("tasks", "ops", "activations")


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grafs-bench", description="Activation-function search: GRAFS, baselines and benchmarks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    listing = commands.add_parser("list", help="list tasks, operations or activations")
    listing.add_argument("topic", choices=LIST_TOPICS)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    training = commands.add_parser("train", help="train a task's model with one activation and evaluate it")
    training.add_argument("--task", required=True)
    training.add_argument("--activation", required=True, help="a fixed name, a published genotype or a .json file")
    training.add_argument("--seed", type=_non_negative_int, default=0)
    training.add_argument("--out", type=Path, help="folder for metrics.json and history.json")
    training.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    training.add_argument("--data-dir", type=Path, help="where the real datasets live (default: $GRAFS_BENCH_DATA)")
    training.add_argument("--learnable-betas", action="store_true", help="train a genotype's betas with the weights")

    showing = commands.add_parser("show", help="print a genotype's formula and LaTeX, and plot it")
    showing.add_argument("genotype", help="a genotype .json file or a published genotype's name")
    showing.add_argument("--plot", type=Path, help="write a PNG of the function next to ReLU, GELU and SiLU")

    preparing = commands.add_parser("prepare", help="download and tokenize a dataset (needs a network)")
    preparing.add_argument("dataset", choices=("tinystories",))
    preparing.add_argument("--data-dir", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"grafs-bench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grafs-bench: interrupted", file=sys.stderr)
        return 130


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
    from baselines.fixed import FIXED_ACTIVATIONS
    from baselines.published import PUBLISHED_GENOTYPES

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
    from bench.runs import save_train_result
    from bench.tasks import get_task
    from bench.training import load_task_data, resolve_device, train

    task = get_task(args.task)
    activation = resolve_activation(args.activation, learnable_betas=args.learnable_betas)
    device = resolve_device(args.device)
    data = load_task_data(task, args.data_dir)
    out = args.out or Path("runs") / "train" / f"{task.name}-{activation.name}-s{args.seed}"
    print(f"training {task.name} ({task.description}) with {activation.formula}, seed {args.seed}, on {device}")
    result = train(task, activation.factory, args.seed, activation_name=activation.name, device=device, data=data)
    save_train_result(result, out, activation.genotype)
    metrics = ", ".join(f"{key}={value:.4f}" for key, value in result.metrics.items())
    print(f"status={result.status} {metrics}")
    print(f"cost: {result.cost.wall_seconds:.1f} s, {result.cost.sample_passes} sample passes; saved to {out}")
    return 0 if result.status == "ok" else 1


def _command_show(args) -> int:
    from bench.activations import resolve_activation

    activation = resolve_activation(args.genotype)
    if activation.genotype is None:
        raise UserError(f"{args.genotype!r} is a fixed activation, not a genotype; pass a genotype .json file")
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


def _command_prepare(args) -> int:
    from bench.data import default_data_dir
    from bench.data.tinystories import prepare_tinystories

    path = prepare_tinystories(args.data_dir or default_data_dir())
    print(f"TinyStories tokens written to {path}")
    return 0


COMMANDS = {"list": _command_list, "train": _command_train, "show": _command_show, "prepare": _command_prepare}

if __name__ == "__main__":
    raise SystemExit(main())
