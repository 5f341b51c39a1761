"""One interface for every way of finding an activation: GRAFS, the black-box baselines, fixed activations.

A :class:`Searcher` takes a task, a seed and a :class:`~bench.budget.Budget` and returns a
:class:`SearchOutcome`: the best genotype, the anytime trace (after every candidate, or every
validated GRAFS round, the cumulative cost and the incumbent's validation score) and the cost
spent. The implementations live in ``bench.search_task`` (GRAFS) and ``baselines``; only the
method table (:mod:`bench.methods`) knows them all.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.budget import Budget
from bench.data.base import Dataset
from bench.tasks import Metric, Task
from grafs.cost import Cost

if TYPE_CHECKING:
    import torch

    from grafs.genotype import Genotype

Progress = Callable[[dict], None]


def spending(cost: Cost, samples_per_epoch: int) -> dict[str, float]:
    """A cost in every budget unit."""
    return {
        "seconds": cost.wall_seconds,
        "sample_passes": cost.sample_passes,
        "epoch_equivalents": cost.sample_passes / samples_per_epoch,
    }


# ----------------------------------------------------------------------------------------------
# Outcomes and the searcher interface
# ----------------------------------------------------------------------------------------------
def trace_row(step: int, status: str, score: float | None, incumbent: float | None, spent: Mapping[str, float],
              formula: str | None, **extra) -> dict:
    """One point of an anytime trace: what was just evaluated, the incumbent, the cumulative cost."""
    return {
        "step": step,
        "status": status,
        "score": score,
        "incumbent_score": incumbent,
        "wall_seconds": spent["seconds"],
        "sample_passes": spent["sample_passes"],
        "epoch_equivalents": spent["epoch_equivalents"],
        "formula": formula,
        **extra,
    }


def improves(metric: Metric, score: float, incumbent: float | None) -> bool:
    return math.isfinite(score) and (incumbent is None or metric.better(score, incumbent))


@dataclass
class SearchOutcome:
    """What any search returns. ``betas`` says how the genotype's betas were set:
    ``learned`` (by gradient, GRAFS), ``init-mean`` (fixed at their operations' initial means),
    ``tuned`` (by the black-box search) or ``none`` (a fixed activation). ``scored_on`` names the
    data behind ``best_score``: scores of different methods are comparable only after retraining."""

    method: str
    genotype: Genotype | None
    status: str  # ok | diverged
    message: str
    best_score: float
    betas: str
    trace: list[dict]
    cost: Cost
    budget: Budget | None = None
    config: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # method-specific fields of result.json
    history: list[dict] = field(default_factory=list)  # GRAFS: its per-round records
    scored_on: str = ""

    def summary(self, task: Task, data: Dataset, seed: int) -> dict:
        """The ``result.json`` record; GRAFS's keys, plus the method, the budget and its use."""
        per_epoch = data.samples_per_epoch(task.block_size)
        spent = spending(self.cost, per_epoch)
        cost = self.cost.to_dict()
        cost["epoch_equivalents"] = spent["epoch_equivalents"]
        cost["full_trainings"] = self.cost.train_samples / task.recipe.training_samples(per_epoch)
        return {
            "task": task.name,
            "seed": seed,
            "method": self.method,
            "genotype": self.genotype.to_dict() if self.genotype else None,
            "formula": self.genotype.formula() if self.genotype else None,
            "status": self.status,
            "message": self.message,
            "best_score": self.best_score,
            "scored_on": self.scored_on,
            "betas": self.betas,
            "cost": cost,
            "budget": self.budget.report(spent) if self.budget else None,
            "config": self.config,
            **self.details,
        }


class Searcher(ABC):
    """Finds an activation for a task within a budget."""

    method: str

    @abstractmethod
    def search(
        self,
        task: Task,
        seed: int,
        budget: Budget | None,
        *,
        data: Dataset,
        out: Path,
        device: str | torch.device = "cpu",
        progress: Progress | None = None,
    ) -> SearchOutcome:
        """Search on ``task`` with ``seed``; ``out`` is the run's folder (for state a search resumes from).

        ``progress`` receives every trace row as it is made.
        """
