"""GRAFS in the harness: a benchmark task seen through the search protocol (``grafs.search.SearchTask``),
and the GRAFS search behind the :class:`~bench.searchers.Searcher` interface."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict

import torch
from torch import Tensor, nn

from bench.activations import fixed_activation
from bench.data.base import Dataset
from bench.searchers import Searcher, SearchOutcome, improves, spending, trace_row
from bench.tasks import Task
from bench.training import (
    BatchStream,
    batch_loss,
    build_model,
    evaluate,
    lr_factor,
    make_optimizer,
    metric_value,
)
from grafs.batch import Batch
from grafs.config import SearchConfig, SearchOptions
from grafs.cost import Cost

ARCH_SHARE = 0.25
"""The last quarter of the training split trains alpha and beta; the first three quarters the weights."""


class TaskSearch:
    """A task seen by the bilevel search: 75/25 split, the task's search recipe, its val metric."""

    def __init__(self, task: Task, data: Dataset, seed: int, device: torch.device):
        self.task, self.data, self.device = task, data, device
        self.recipe = task.search
        self.name = task.name
        self.maximize = task.metric.direction == "max"
        self.accumulation = self.recipe.accumulation
        self.grad_clip = self.recipe.grad_clip
        self.weight_part, arch_part = data.search_split(ARCH_SHARE)
        augment = self.recipe.augment
        self.weight_stream = BatchStream(task, data, self.recipe.batch_size, seed, device, self.weight_part, augment)
        self.calibration_seed = seed + 2
        self.arch_stream = BatchStream(task, data, self.recipe.batch_size, seed + 1, device, arch_part, augment)
        self.rounds = self.recipe.length
        self.validate_every = (self.recipe.eval_interval or self.recipe.iterations) if self.recipe.is_iterative else 1

    def build_model(self, make_site: Callable[[nn.Module], nn.Module]) -> nn.Module:
        return build_model(self.task, self.data, lambda: make_site(fixed_activation(self.task.default_activation)))

    def steps_per_round(self) -> int:
        if self.recipe.is_iterative:
            return 1
        return math.ceil(self.weight_stream.batches_per_epoch / self.accumulation)

    def weight_optimizer(self, parameters, total_steps: int):
        optimizer = make_optimizer(parameters, self.recipe)
        per_round = self.steps_per_round()
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(self.recipe, step, total_steps, per_round)
        )
        return optimizer, scheduler

    def round_batches(self, round_index: int) -> Iterator[Batch]:
        if self.recipe.is_iterative:
            for _ in range(self.accumulation):
                yield self.weight_stream.next_batch()
        else:
            yield from self.weight_stream.epoch_batches()

    def arch_batch(self) -> Batch:
        return self.arch_stream.next_batch()

    def calibration_batches(self, count: int) -> Iterator[Batch]:
        """The same ``count`` batches of the weights' split at every call, not augmented (they set
        BatchNorm statistics for scoring un-augmented validation data), from a stream of their own."""
        stream = BatchStream(self.task, self.data, self.recipe.batch_size, self.calibration_seed, self.device,
                             self.weight_part)
        for _ in range(count):
            yield stream.next_batch()

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return batch_loss(model, batch)[0]

    def validate(self, model: nn.Module) -> tuple[float, int]:
        cost = Cost()
        scores = evaluate(model, self.task, self.data, "val", self.recipe, self.device, cost)
        return metric_value(self.task, scores), cost.eval_samples


def search_config(task: Task, options: SearchOptions | None = None) -> SearchConfig:
    """The task's GRAFS settings with the search's switches."""
    settings = task.grafs
    return SearchConfig.of(
        options or SearchOptions(),
        arch_lr=settings.arch_lr,
        start_shrinking=settings.start_shrinking,
        warmstart_rounds=settings.warmstart,
    )


class GrafsSearcher(Searcher):
    """The GRAFS bilevel search; its cost is set by the task's search recipe, not by a budget."""

    method = "grafs"

    def __init__(self, method: str = "grafs", options: SearchOptions | None = None):
        self.method, self.options = method, options or SearchOptions()

    def search(self, task, seed, budget, *, data, out, device="cpu", progress=None) -> SearchOutcome:
        from grafs.search import search

        device = torch.device(device)
        per_epoch = data.samples_per_epoch(task.block_size)
        trace: list[dict] = []
        incumbent: list[float] = []

        def record(round_record: dict) -> None:
            score = round_record["val_score"]
            if improves(task.metric, score, incumbent[-1] if incumbent else None):
                incumbent.append(score)
            spent = spending(Cost(round_record["wall_seconds"], round_record["sample_passes"]), per_epoch)
            row = trace_row(
                round_record["round"], "ok", score, incumbent[-1] if incumbent else None, spent,
                round_record["formula"], active="/".join(map(str, round_record["active_counts"])),
            )
            trace.append(row)
            if progress:
                progress(row)

        config = search_config(task, self.options)
        result = search(TaskSearch(task, data, seed, device), seed, config, device, progress=record)
        return SearchOutcome(
            method=self.method,
            genotype=result.genotype,
            status=result.status,
            message=result.message,
            best_score=result.best_score,
            betas="learned",
            trace=trace,
            cost=result.cost,
            config=asdict(result.config),
            details={"best_round": result.best_round, "nonfinite": result.nonfinite},
            history=result.history,
            scored_on="validation split, network trained in the supernet",
        )
