"""Budgets: what a black-box search may spend, matched to the GRAFS search of the same task and seed.

By default a black-box search may spend ``k`` times what the GRAFS search of the same task and
seed spent, read from that search's ``result.json``. Every cost is kept in three units: measured
wall seconds (the default limit, since it is what a user pays), sample passes (forward or
forward + backward passes of one sample through the network) and epoch-equivalents (sample
passes divided by the samples in one epoch of the training split).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.tasks import Task
from grafs.errors import UserError, unknown_name

BUDGET_UNITS = ("seconds", "sample_passes", "epoch_equivalents")


@dataclass(frozen=True)
class Budget:
    """What a search may spend. The limit in ``unit`` stops it; limits in the other units are recorded.

    A search stops at the first candidate that brings its spending to the limit, so it overshoots
    by at most that one candidate; the overshoot is reported with the spending.
    """

    unit: str = "seconds"
    seconds: float | None = None
    sample_passes: float | None = None
    epoch_equivalents: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.unit not in BUDGET_UNITS:
            raise unknown_name("budget unit", self.unit, BUDGET_UNITS)
        for unit, limit in self.limits().items():
            if limit is not None and not (math.isfinite(limit) and limit > 0):
                raise UserError(f"a budget must be a positive number of {unit}, got {limit}")
        if self.limit is None:
            raise UserError(f"the budget is counted in {self.unit} but sets no limit in {self.unit}")

    @property
    def limit(self) -> float:
        return getattr(self, self.unit)

    def limits(self) -> dict[str, float | None]:
        return {unit: getattr(self, unit) for unit in BUDGET_UNITS}

    def exhausted(self, spent: Mapping[str, float]) -> bool:
        return spent[self.unit] >= self.limit

    def report(self, spent: Mapping[str, float]) -> dict:
        """The budget next to the spending: the overshoot in ``unit``, the spent share of every limit."""
        return {
            "unit": self.unit,
            "limit": self.limit,
            "limits": self.limits(),
            "source": self.source,
            "spent": dict(spent),
            "exhausted": self.exhausted(spent),
            "overshoot": spent[self.unit] - self.limit,
            "spent_share": {unit: spent[unit] / limit for unit, limit in self.limits().items() if limit is not None},
        }

    @classmethod
    def matched(
        cls, reference: Mapping[str, float], multiple: float, unit: str = "seconds", source: str = ""
    ) -> Budget:
        """``multiple`` times a reference spending (GRAFS's) in every unit."""
        if not (isinstance(multiple, (int, float)) and math.isfinite(multiple) and multiple > 0):
            raise UserError(f"the budget multiple must be a positive number, got {multiple}")
        return cls(unit, **{u: multiple * float(reference[u]) for u in BUDGET_UNITS}, source=source)


def default_grafs_result(task: str, seed: int) -> Path:
    """Where ``grafs-bench search --method grafs`` leaves its result by default."""
    return Path("runs") / "search" / f"{task}-grafs-fixed-s{seed}" / "result.json"


def grafs_spending(path: Path, task: Task) -> dict[str, float]:
    """The spending of the GRAFS search whose ``result.json`` is ``path``, in every unit."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cost = data["cost"]
        spent = {
            "seconds": float(cost["wall_seconds"]),
            "sample_passes": float(cost["sample_passes"]),
            "epoch_equivalents": float(cost["epoch_equivalents"]),
        }
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError, RecursionError):
        raise UserError(
            f"{path} is not the result.json of a GRAFS search (no cost.wall_seconds, cost.sample_passes, "
            "cost.epoch_equivalents); pass the one `grafs-bench search --method grafs` wrote"
        ) from None
    if data.get("method", "grafs") != "grafs" or data.get("task") != task.name:
        found = f"{data.get('method', 'grafs')} on {data.get('task')}"
        raise UserError(f"{path} is a {found} search, not GRAFS on {task.name}; pass a matching --grafs-result")
    return spent


def matched_budget(
    task: Task, seed: int, multiple: float = 1.0, unit: str = "seconds", grafs_result: str | Path | None = None
) -> Budget:
    """``multiple`` times the cost of the GRAFS search on the same task and seed (or of ``grafs_result``)."""
    if unit not in BUDGET_UNITS:
        raise unknown_name("budget unit", unit, BUDGET_UNITS)
    path = Path(grafs_result) if grafs_result is not None else default_grafs_result(task.name, seed)
    if not path.is_file():
        first = (
            "pass the result.json of a GRAFS search on this task"
            if grafs_result is not None
            else f"run `grafs-bench search --method grafs --task {task.name} --seed {seed}` first, pass --grafs-result"
        )
        raise UserError(f"no GRAFS search result at {path} to match the budget to; {first} or give --budget-seconds")
    source = f"{multiple:g} x the GRAFS search in {path}"
    return Budget.matched(grafs_spending(path, task), multiple, unit, source=source)
