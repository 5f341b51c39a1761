"""Adapts a benchmark task to the GRAFS search protocol (``grafs.search.SearchTask``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from baselines.fixed import FIXED_ACTIVATIONS
from bench.data.base import Dataset, LanguageData
from bench.tasks import Task
from bench.training import (
    Batch,
    BatchStream,
    Cost,
    batch_loss,
    build_model,
    evaluate,
    lr_factor,
    make_optimizer,
    metric_value,
)
from grafs.search import SearchConfig

ARCH_SHARE = 0.25


def split_for_search(data: Dataset) -> tuple[object, object]:
    """The first 75 % of the training split (by index) trains weights, the last 25 % alpha and beta."""
    size = len(data.train) if isinstance(data, LanguageData) else len(data.train_y)
    boundary = int(round(size * (1 - ARCH_SHARE)))
    if isinstance(data, LanguageData):
        return slice(0, boundary), slice(boundary, size)
    return torch.arange(boundary), torch.arange(boundary, size)


class TaskSearch:
    """A task seen by the bilevel search: 75/25 split, the task's search recipe, its val metric."""

    def __init__(self, task: Task, data: Dataset, seed: int, device: torch.device):
        self.task, self.data, self.device = task, data, device
        self.recipe = task.search
        self.name = task.name
        self.maximize = task.metric.direction == "max"
        self.accumulation = self.recipe.accumulation
        self.grad_clip = self.recipe.grad_clip
        self.weight_part, arch_part = split_for_search(data)
        augment = self.recipe.augment
        self.weight_stream = BatchStream(task, data, self.recipe.batch_size, seed, device, self.weight_part, augment)
        self.calibration_seed = seed + 2
        self.arch_stream = BatchStream(task, data, self.recipe.batch_size, seed + 1, device, arch_part, augment)
        if self.recipe.is_iterative:
            self.rounds = self.recipe.iterations
            self.validate_every = self.recipe.eval_interval or self.recipe.iterations
        else:
            self.rounds = self.recipe.epochs
            self.validate_every = 1

    def build_model(self, activation: Callable[[], nn.Module]) -> nn.Module:
        return build_model(self.task, self.data, activation)

    def default_activation(self) -> nn.Module:
        return FIXED_ACTIVATIONS[self.task.default_activation]()

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


def search_config(task: Task, **overrides) -> SearchConfig:
    """The task's GRAFS settings as a search configuration, with switches overridden."""
    settings = task.grafs
    return SearchConfig(
        arch_lr=settings.arch_lr,
        start_shrinking=settings.start_shrinking,
        warmstart_rounds=settings.warmstart,
        **overrides,
    )
