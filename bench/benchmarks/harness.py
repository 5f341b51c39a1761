"""What found activations and the campaign harness cost, in one run on one machine.

    python -m bench.benchmarks.harness [--steps N] [--tasks T ...] [--random-genotypes K] [--keep DIR]
                                       [--threads N] [--clock wall|cpu]

Found activations: on each task, the real trainer's optimizer step (``bench.training``, the task's
retraining recipe, its data) with ReLU and with each of a set of typical genotypes (the published
GRAFS finds and K seeded random cells of the standard space, built by ``Genotype.to_module`` as
retraining and every proxy build them). Steps of all activations take turns, so load from other
processes hits them alike; each activation's median step is divided by ReLU's, and the median of
these ratios over the genotypes is the task's figure. ``genotype_step_ratio`` is the larger of the
tasks' figures.

Harness: a real campaign at the task's own recipes (GRAFS and random search at 1x GRAFS's seconds
with two seeds, every find and two fixed activations retrained with two evaluation seeds: 16 units,
about four minutes) runs through the real runner with one worker, MLflow logging into a SQLite
store (in its own thread, as ``grafs-bench run`` logs) and the final gather, in a temporary
folder. ``harness_overhead`` is (campaign wall time - the units' own seconds) / the units' own
seconds, where a unit's own seconds are the training or search time it reports
(``cost.wall_seconds``); the rest is the harness: the worker process, per-unit set-up (data
loading, model building, writing results), MLflow and gathering. The table splits it up. About
four seconds of it are paid once per worker process whatever the campaign's length (starting
Python, importing torch, and torch importing its compiler when the first optimizer is built), so
the share shrinks with longer campaigns; this one is short next to any study and still many units
long, as studies are. The last line is ``genotype_step_ratio=<x> harness_overhead=<y>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Only light modules at the top: the runner's worker processes import this module again (it is
# their __main__, as bench.cli is under `grafs-bench run`), and heavy imports here would be counted
# as the harness's start-up. torch, pandas and the training code load inside the functions.
from bench.benchmarks.clocks import CLOCKS, load_average
from bench.campaign import parse_campaign
from bench.folder import CampaignFolder
from bench.runner import run_campaign
from bench.tracking import TrackingThread

TASKS = ("mnist1d-resnet1d", "digits-vit")
HARNESS_CAMPAIGN = {
    "name": "harness-benchmark",
    "description": "GRAFS and random search on the cpu ResNet task, their finds, ReLU and GELU retrained",
    "tasks": ["mnist1d-resnet1d"],
    "seeds": [0, 1],
    "budget_multiples": [1],
    "budget_unit": "seconds",
    "fixed": ["relu", "gelu"],
    "methods": ["grafs", "random"],
    "evaluation": {"seeds": [0, 1], "targets": []},
    # The task's own recipes, as a converged study runs them: the harness's share of such units.
}


# Found activations --------------------------------------------------------------------------------
def typical_genotypes(random_count: int) -> dict:
    """The published GRAFS finds and ``random_count`` seeded random cells, by name."""
    import torch

    from grafs.genotype import Genotype
    from grafs.published import PUBLISHED_GENOTYPES

    generator = torch.Generator().manual_seed(0)
    randoms = {f"random-{i}": Genotype.random(generator) for i in range(random_count)}
    return {**PUBLISHED_GENOTYPES, **randoms}


def step_ratios(task_name: str, genotypes: dict, steps: int, clock: str) -> dict[str, float]:
    """Median train-step seconds of each genotype over ReLU's, on the task's retraining recipe."""
    import torch

    from bench.tasks import get_task
    from bench.training import BatchStream, build_model, load_task_data, make_optimizer, optimizer_step
    from grafs.cost import Cost
    from grafs.steps import AccumulatedStep

    task = get_task(task_name)
    data = load_task_data(task)
    device = torch.device("cpu")
    factories = {"relu": torch.nn.ReLU, **{name: genotype.to_module for name, genotype in genotypes.items()}}
    closures = {}
    for name, factory in factories.items():
        torch.manual_seed(0)
        model = build_model(task, data, factory).to(device)
        optimizer = make_optimizer(model.parameters(), task.recipe)
        step = AccumulatedStep(list(model.parameters()), optimizer, None, task.recipe.accumulation,
                               task.recipe.grad_clip)
        stream = BatchStream(task, data, task.recipe.batch_size, 0, device, augment=task.recipe.augment)
        closures[name] = (model, step, stream, Cost())
        optimizer_step(model, step, stream, Cost())  # warm-up (compiles the kernel once)
    times: dict[str, list[float]] = {name: [] for name in closures}
    now = CLOCKS[clock]
    for _ in range(steps):
        for name, (model, step, stream, cost) in closures.items():
            start = now()
            optimizer_step(model, step, stream, cost)
            times[name].append(now() - start)
    relu = statistics.median(times["relu"])
    print(f"\n{task_name}: train step, batch {task.recipe.batch_size}, ReLU {1000 * relu:.1f} ms (median of {steps})")
    ratios = {}
    for name in genotypes:
        ratios[name] = statistics.median(times[name]) / relu
        print(f"  {name:<14}{1000 * statistics.median(times[name]):>9.1f} ms {ratios[name]:>6.2f}x  {genotypes[name]}")
    return ratios


# Harness ------------------------------------------------------------------------------------------
def harness_overhead(out: Path) -> float:
    """Run the benchmark campaign in ``out`` as ``grafs-bench run`` does (without the report)."""
    from bench.gather import gather

    campaign = parse_campaign(HARNESS_CAMPAIGN, source="harness benchmark")
    started = time.perf_counter()
    cpu_started = time.process_time()
    tracker = TrackingThread(out, campaign.name)

    def finished(unit, outcome) -> None:
        if outcome.state == "done":
            tracker.log_unit(unit, campaign.device)

    summary = run_campaign(campaign, out, workers=1, on_finished=finished, progress=False)
    closing = time.perf_counter()
    tracker.close()
    gather_started = time.perf_counter()
    tables = gather(out)
    finished_at = time.perf_counter()
    coordinator_cpu = time.process_time() - cpu_started
    if summary.done != summary.total:
        raise RuntimeError(f"the benchmark campaign did not finish: {summary}")
    wall = finished_at - started
    units = tables["units"]
    own = float(units["cost_wall_seconds"].sum())
    in_units = 0.0
    print(f"\nharness: {summary.total} units of campaign {campaign.name!r}, one worker")
    print(f"  {'unit':<48}{'own s':>8}{'in unit s':>11}")
    for row in units.itertuples():
        done = json.loads((CampaignFolder(out).unit_dir(row.unit_id) / "done.json").read_text())
        seconds = done["finished"] - done["started"]
        in_units += seconds
        print(f"  {row.unit_id:<48}{row.cost_wall_seconds:>8.1f}{seconds:>11.1f}")
    waiting, gather_seconds = gather_started - closing, finished_at - gather_started
    parts = {
        "units' own seconds (training, search)": own,
        "per-unit set-up and results (data, model, files)": in_units - own,
        "waiting for MLflow after the last unit": waiting,
        "gathering the tables": gather_seconds,
        "runner and worker process (start, imports)": wall - in_units - waiting - gather_seconds,
    }
    for name, seconds in parts.items():
        print(f"  {name:<56}{seconds:>8.1f} s {seconds / own:>7.1%}")
    print(f"  campaign wall time {wall:.1f} s")
    print(
        f"  MLflow's thread worked {tracker.busy_seconds:.1f} s while units ran; the coordinating process "
        f"used {coordinator_cpu:.1f} CPU s in all ({coordinator_cpu / own:.1%} of the units' seconds)"
    )
    return (wall - own) / own


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmarks.harness", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed train steps per activation (median reported)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="tasks of the train-step comparison")
    parser.add_argument("--random-genotypes", type=int, default=4, help="random cells besides the published finds")
    parser.add_argument("--keep", type=Path, help="run the campaign in this (new) folder and keep it")
    parser.add_argument("--threads", type=int, help="CPU threads of the train-step comparison (default: one per core)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall", help="train steps in wall or CPU seconds")
    args = parser.parse_args(argv)
    import torch

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.clock} clock, "
        f"load {load_average()}"
    )
    genotypes = typical_genotypes(args.random_genotypes)
    medians = {
        task: statistics.median(step_ratios(task, genotypes, args.steps, args.clock).values()) for task in args.tasks
    }
    torch.set_num_threads(threads)
    for task, ratio in medians.items():
        print(f"{task}: median genotype / ReLU train step {ratio:.2f}x")
    if args.keep:
        args.keep.mkdir(parents=True)
        overhead = harness_overhead(args.keep)
    else:
        folder = Path(tempfile.mkdtemp(prefix="grafs-harness-"))
        try:
            overhead = harness_overhead(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load at the end {load_average()}")
    print(f"genotype_step_ratio={max(medians.values()):.2f} harness_overhead={overhead:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
