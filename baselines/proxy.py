"""Scoring a candidate activation by a short proxy training, on the split GRAFS searches on.

The task's search model trains with the candidate on the first 75 % of the training split and is
scored on the last 25 % (the part GRAFS's architecture steps see), with the task's search recipe
shortened to a fraction of its length. The validation and test splits stay untouched, so the
found activation is judged on them later exactly as GRAFS's is.

A multi-fidelity search (:class:`FidelityConfig`) trains each candidate up to a maximum length
and may stop it at any of its checkpoints (after every epoch, or every evaluation interval of
the search recipe on iteration-based tasks); the evaluator hands each checkpoint to the search,
which stops a weak candidate by raising :class:`bench.training.StopTraining`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch

from bench.data.base import Dataset
from bench.search_task import split_for_search
from bench.tasks import Recipe, Task
from bench.training import Cost, train
from grafs.errors import UserError
from grafs.genotype import Genotype

DEFAULT_FRACTION = 0.2
DEFAULT_REDUCTION_FACTOR = 2


def shortened(search: Recipe, length: int, eval_interval: int = 0) -> Recipe:
    """The search recipe cut to ``length`` epochs (or iterations), its schedule scaled with it."""
    if search.is_iterative:
        warmup = round(search.warmup_iterations * length / search.iterations)
        return replace(search, iterations=length, warmup_iterations=warmup, eval_interval=eval_interval)
    milestones = tuple(sorted({m * length // search.epochs for m in search.milestones} - {0}))
    return replace(search, epochs=length, milestones=milestones)


@dataclass(frozen=True)
class ProxyConfig:
    """How long a candidate trains: ``fraction`` of the task's search recipe, unless a length is given."""

    fraction: float = DEFAULT_FRACTION
    epochs: int | None = None
    iterations: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise UserError(f"the proxy fraction must lie in (0, 1], got {self.fraction}")
        for name in ("epochs", "iterations"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"proxy {name} must be a positive integer, got {value!r}")

    def recipe(self, task: Task) -> Recipe:
        search = task.search
        if search.is_iterative:
            # Only the final score matters: no intermediate evaluations.
            return shortened(search, self.iterations or max(1, round(self.fraction * search.iterations)))
        return shortened(search, self.epochs or max(1, round(self.fraction * search.epochs)))


@dataclass(frozen=True)
class FidelityConfig:
    """How long a multi-fidelity search trains a candidate, counted in checkpoints (resource units):
    epochs, or evaluation intervals of the search recipe on iteration-based tasks.

    Each candidate trains on the recipe of ``max_resource`` checkpoints and reports its score at
    every one; successive halving judges it first after ``min_resource`` and then after every
    ``reduction_factor`` times as many, keeping about 1 / ``reduction_factor`` of the candidates
    at each rung. ``max_resource`` defaults to the plain proxy's length (:data:`DEFAULT_FRACTION`
    of the search recipe), at least one rung above ``min_resource``: at matched budgets a longer
    maximum spends more per candidate than the plain proxy (README, "Multi-fidelity baselines").
    """

    min_resource: int = 1
    max_resource: int | None = None
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR

    def __post_init__(self) -> None:
        for name in ("min_resource", "max_resource", "reduction_factor"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if self.reduction_factor < 2:
            raise UserError(f"reduction_factor must be at least 2, got {self.reduction_factor}")
        if self.max_resource is not None and self.max_resource <= self.min_resource:
            raise UserError(
                f"max_resource ({self.max_resource}) must exceed min_resource ({self.min_resource}): "
                "a candidate that cannot be stopped before its end is a plain proxy training"
            )

    @staticmethod
    def interval(task: Task) -> int:
        """Iterations per checkpoint (the search recipe's evaluation interval); 1 epoch on epoch-based tasks."""
        if not task.search.is_iterative:
            return 1
        if not task.search.eval_interval:
            raise UserError(
                f"task {task.name}'s search recipe sets no evaluation interval, so its trainings have no checkpoint "
                "to stop at; use a black-box method without pruning (random, tpe)"
            )
        return task.search.eval_interval

    def max_for(self, task: Task) -> int:
        """The maximum resource on ``task``, in checkpoints."""
        if self.max_resource is not None:
            return self.max_resource
        plain = max(1, round(ProxyConfig().recipe(task).length / self.interval(task)))
        return max(plain, self.min_resource * self.reduction_factor)

    def recipe(self, task: Task) -> Recipe:
        interval = self.interval(task)
        return shortened(task.search, self.max_for(task) * interval, interval if task.search.is_iterative else 0)


@dataclass(frozen=True)
class Checkpoint:
    """A running candidate's score at its ``resource``-th checkpoint, with what it has cost so far."""

    resource: int
    score: float
    cost: Cost
    final: bool


@dataclass(frozen=True)
class Evaluation:
    """A candidate's proxy score; a diverged candidate carries the metric's worst value, a pruned one
    (stopped early by its search) the score of its last checkpoint. ``resource``: checkpoints it ran."""

    score: float
    status: str  # ok | diverged | pruned
    cost: Cost
    message: str = ""
    resource: int = 0


class ProxyEvaluator:
    """Trains and scores one genotype at a time; every candidate sees the same seed and batches.

    With ``learnable_betas`` each activation site of the model gets its own betas, trained with the
    weights (PANGAEA's per-layer parameters); otherwise betas stay at the genotype's values."""

    def __init__(self, task: Task, data: Dataset, seed: int, config: ProxyConfig | FidelityConfig,
                 device: str | torch.device = "cpu", learnable_betas: bool = False):
        self.task, self.data, self.seed, self.device = task, data, seed, device
        self.learnable_betas = learnable_betas
        self.recipe = config.recipe(task)
        self.weight_part, self.score_part = split_for_search(data)
        self.description = {"recipe": asdict(self.recipe), "config": asdict(config), "split": "75/25 of train"}
        if learnable_betas:
            self.description["betas"] = "learned per activation site"

    def __call__(self, genotype: Genotype, on_checkpoint: Callable[[Checkpoint], None] | None = None) -> Evaluation:
        """Train and score ``genotype``; ``on_checkpoint`` sees every checkpoint and may raise
        :class:`bench.training.StopTraining` to stop the training there (the candidate is pruned)."""
        key = f"val_{self.task.metric.name}"
        reached: list[dict] = []

        def checkpoint(record: dict) -> None:
            reached.append(record)
            done = record["step"] if self.recipe.is_iterative else record["epoch"]
            if on_checkpoint:
                cost = Cost(record["wall_seconds"], record["train_samples"], record["eval_samples"])
                on_checkpoint(Checkpoint(len(reached), record[key], cost, done == self.recipe.length))

        result = train(
            self.task,
            lambda: genotype.to_module(learnable_betas=self.learnable_betas),
            self.seed, activation_name=genotype.formula(), recipe=self.recipe,
            device=self.device, data=self.data, progress=False, train_indices=self.weight_part,
            val_indices=self.score_part, on_epoch=checkpoint,
        )
        score = result.metrics["val_metric"]
        if result.status == "diverged" or not math.isfinite(score):
            message = result.message if result.status == "diverged" else "non-finite validation score"
            return Evaluation(self.task.metric.worst, "diverged", result.cost, message, len(reached))
        status = "pruned" if result.status == "stopped" else "ok"
        return Evaluation(score, status, result.cost, result.message, len(reached))
