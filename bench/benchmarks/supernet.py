"""What the GRAFS supernet costs: train-step time and peak memory against the plain network.

    python -m bench.benchmarks.supernet [--device cpu|cuda] [--steps N] [--skip-plain] [--threads N] [--clock wall|cpu]

In one run on one machine it trains ResNet20 (CIFAR shape, batch 128, ReLU) and the GPT search
model (``gpt_mini``, block 256, batch 16, GELU) on random data with SGD, once with the default
activation and once with the search cell at every activation site: the full 110-op cell and a
36-op cell (shrunk to 6 ops per slot), each with the fused fast path and the plain PyTorch path.
Memory is the peak increase during one train step over the memory held before it: on CUDA from
``torch.cuda.max_memory_allocated``, on CPU from the kernel's peak-RSS counter (reset through
``/proc/self/clear_refs``) in a fresh process per measurement, with glibc told to return large
blocks to the system at once. Timings interleave the variants' steps and report medians, so that
load from other processes hits all variants alike.

The plain path at full batch needs ~18 GB and minutes per step on a CPU, so on CPU it runs at a
smaller batch (``--plain-batch-divisor``) and is compared with the default activation at that
same batch; the table says so. The last line is
``supernet_time_ratio=<x> supernet_mem_ratio=<y>`` for ResNet20 with the full cell, fast path.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.benchmarks.clocks import CLOCKS, load_average
from bench.models import create_model
from grafs.cell import SearchCell

OPS_PER_SLOT_SHRUNK = 6


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    batch: int
    default: Callable[[], nn.Module]
    build: dict
    make_batch: Callable[[int, torch.device], tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resnet20() -> Workload:
    def make_batch(batch: int, device: torch.device):
        return torch.randn(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)

    return Workload(
        name="resnet20",
        model="resnet20",
        batch=128,
        default=nn.ReLU,
        build={"input_shape": (3, 32, 32), "num_classes": 10},
        make_batch=make_batch,
        loss=F.cross_entropy,
    )


def gpt_mini(vocab: int, block: int) -> Workload:
    def make_batch(batch: int, device: torch.device):
        tokens = torch.randint(0, vocab, (batch, block + 1), device=device)
        return tokens[:, :-1], tokens[:, 1:]

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    return Workload(
        name="gpt_mini",
        model="gpt_mini",
        batch=16,
        default=nn.GELU,
        build={"vocab_size": vocab, "block_size": block},
        make_batch=make_batch,
        loss=loss,
    )


# Memory ---------------------------------------------------------------------------------------
class PeakMemory:
    """Peak memory increase of a block of code on one device, in bytes."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.before = _status_kib("VmRSS") * 1024

    def stop(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.before
        return _status_kib("VmHWM") * 1024 - self.before


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


# Measurement ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    label: str
    batch: int
    step_seconds: float
    peak_bytes: int


def build_model(workload: Workload, variant: str, device: torch.device) -> tuple[nn.Module, SearchCell | None]:
    if variant == "default":
        return create_model(workload.model, workload.default, **workload.build).to(device), None
    size, path = variant.split("-")
    cell = SearchCell(fast=path == "fast").to(device)
    if size == "shrunk":
        for slot, count in enumerate(cell.active_counts()):
            for _ in range(count - OPS_PER_SLOT_SHRUNK):
                cell.drop(slot)
    model = create_model(workload.model, lambda: cell.site(workload.default()), **workload.build).to(device)
    return model, cell


def train_steps(workload: Workload, variant: str, batch: int, device: torch.device) -> Callable[[], None]:
    """A closure running one SGD train step of ``variant`` on a fixed random batch."""
    torch.manual_seed(0)
    model, cell = build_model(workload, variant, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs, targets = workload.make_batch(batch, device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)
        if cell is not None:
            cell.zero_grad(set_to_none=False)
        workload.loss(model(inputs), targets).backward()
        optimizer.step()
        _synchronize(device)

    step()  # warm-up: allocates gradients and optimizer state, compiles the kernel if needed
    return step


def step_times(
    workload: Workload, runs: list[tuple[str, int]], steps: int, device: torch.device, clock: str = "wall"
) -> dict:
    """Median train-step seconds of every run; the runs take turns, so load drift hits all alike.

    The ``cpu`` clock counts the process's CPU seconds: with one thread, a measure of the work that
    other processes on a busy machine barely disturb (they take turns on the cores, not work away).
    """
    closures = {run: train_steps(workload, *run, device) for run in runs}
    times: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    now = CLOCKS[clock]
    for _ in range(steps):
        for run, step in closures.items():
            start = now()
            step()
            times[run].append(now() - start)
    return {run: statistics.median(values) for run, values in times.items()}


def step_memory(workload: Workload, variant: str, batch: int, device: torch.device) -> int:
    step = train_steps(workload, variant, batch, device)
    memory = PeakMemory(device)
    memory.start()
    step()
    return memory.stop()


def step_memory_isolated(args: argparse.Namespace, workload: Workload, variant: str, batch: int) -> int:
    """CPU peak of one step, measured in a fresh process whose allocator returns freed blocks at once.

    In a process that has already trained, glibc serves new tensors from memory freed earlier
    (which the RSS still counts), and its adaptive mmap threshold would do the same within a
    process; a fixed threshold in a fresh process makes the RSS follow the live tensors.
    """
    command = [sys.executable, "-m", "bench.benchmarks.supernet", "--memory-of", workload.name, variant, str(batch)]
    command += ["--vocab", str(args.vocab), "--block", str(args.block)]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "MALLOC_TRIM_THRESHOLD_": str(128 * 1024)}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {workload.name} {variant} failed:\n{result.stderr}")
    return int(result.stdout.split()[-1])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runs_of(workload: Workload, args: argparse.Namespace, device: torch.device) -> list[tuple[str, int]]:
    """(variant, batch) pairs to measure; every batch size has its default-activation run."""
    plain_batch = workload.batch if device.type == "cuda" else max(1, workload.batch // args.plain_batch_divisor)
    runs = [("default", workload.batch), ("full-fast", workload.batch), ("shrunk-fast", workload.batch)]
    if not args.skip_plain:
        if plain_batch != workload.batch:
            runs.append(("default", plain_batch))
        runs += [("shrunk-plain", plain_batch), ("full-plain", plain_batch)]
    return runs


def report(workload: Workload, seconds: dict, peaks: dict, device: torch.device) -> dict[str, tuple[float, float]]:
    """Print the table of one workload; return (time, memory) ratios over the default activation."""
    print(f"\n{workload.name} on {device.type}, default activation {workload.default.__name__}")
    print(f"  {'variant':<14}{'batch':>6}{'step s':>10}{'peak MB':>10}{'time x':>9}{'memory x':>10}")
    ratios = {}
    for variant, batch in seconds:
        base = ("default", batch)
        row = f"  {variant:<14}{batch:>6}{seconds[variant, batch]:>10.3f}{peaks[variant, batch] / 2**20:>10.0f}"
        if variant != "default":
            ratios[variant] = (seconds[variant, batch] / seconds[base], peaks[variant, batch] / max(peaks[base], 1))
            row += f"{ratios[variant][0]:>9.2f}{ratios[variant][1]:>10.2f}"
        print(row)
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmarks.supernet", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed train steps per variant (median reported)")
    parser.add_argument("--skip-plain", action="store_true", help="measure only the fast path")
    parser.add_argument("--plain-batch-divisor", type=int, default=4, help="CPU only: plain path batch = batch / this")
    parser.add_argument("--skip-gpt", action="store_true", help="measure only ResNet20")
    parser.add_argument("--vocab", type=int, default=50257, help="GPT vocabulary size (GPT-2 BPE by default)")
    parser.add_argument("--block", type=int, default=256, help="GPT context length")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's, one per core)")
    parser.add_argument(
        "--clock", choices=tuple(CLOCKS), default="wall", help="step time: wall seconds, or process CPU seconds"
    )
    parser.add_argument("--memory-of", nargs=3, metavar=("WORKLOAD", "VARIANT", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available; use --device cpu", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    workloads = {w.name: w for w in (resnet20(), gpt_mini(args.vocab, args.block))}
    if args.memory_of:  # the child process of step_memory_isolated
        name, variant, batch = args.memory_of
        print(step_memory(workloads[name], variant, int(batch), torch.device("cpu")))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}, {args.clock} clock, "
        f"load {load_average()}",
        flush=True,
    )
    chosen = [workloads["resnet20"]] + ([] if args.skip_gpt else [workloads["gpt_mini"]])
    ratios = {}
    for workload in chosen:
        runs = runs_of(workload, args, device)
        seconds = step_times(workload, runs, args.steps, device, args.clock)
        if device.type == "cpu":
            peaks = {run: step_memory_isolated(args, workload, *run) for run in runs}
        else:
            peaks = {run: step_memory(workload, *run, device) for run in runs}
        ratios[workload.name] = report(workload, seconds, peaks, device)
    time_ratio, memory_ratio = ratios["resnet20"]["full-fast"]
    print(f"load at the end {load_average()}")
    print(f"supernet_time_ratio={time_ratio:.2f} supernet_mem_ratio={memory_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
