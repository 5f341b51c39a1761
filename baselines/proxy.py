"""Scoring a candidate activation by a short proxy training, on the split GRAFS searches on.

The task's search model trains with the candidate on the first 75 % of the training split and is
scored on the last 25 % (the part GRAFS's architecture steps see), with the task's search recipe
shortened to a fraction of its length. The validation and test splits stay untouched, so the
found activation is judged on them later exactly as GRAFS's is.

A multi-fidelity search (:class:`baselines.options.MultiFidelityOptions`) trains each candidate up to a maximum length
and may stop it at any of its checkpoints (after every epoch, or every evaluation interval of
the search recipe on iteration-based tasks); the evaluator hands each checkpoint to the search,
which stops a weak candidate by raising :class:`bench.training.StopTraining`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from baselines.options import MultiFidelityOptions, ProxyConfig
from bench.data.base import Dataset
from bench.search_task import ARCH_SHARE
from bench.tasks import Task
from bench.training import train
from grafs.cost import Cost
from grafs.genotype import Genotype


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

    def __init__(self, task: Task, data: Dataset, seed: int, config: ProxyConfig | MultiFidelityOptions,
                 device: str | torch.device = "cpu", learnable_betas: bool = False):
        self.task, self.data, self.seed, self.device = task, data, seed, device
        self.learnable_betas = learnable_betas
        self.recipe = config.recipe(task)
        self.weight_part, self.score_part = data.search_split(ARCH_SHARE)
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
            if on_checkpoint:
                cost = Cost(record["wall_seconds"], record["train_samples"], record["eval_samples"])
                on_checkpoint(Checkpoint(len(reached), record[key], cost, self.recipe.progress(record) >= 1))

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
