"""One interface for every way of finding an activation: GRAFS, the black-box baselines, fixed activations.

A :class:`Searcher` takes a task, a seed and a :class:`Budget` and returns a :class:`SearchOutcome`:
the best genotype, the anytime trace (after every candidate, or every validated GRAFS round, the
cumulative cost and the incumbent's validation score) and the cost spent. ``METHODS`` maps the
names the command line and campaigns use to searchers, so the harness treats them all alike.

Budgets are matched to GRAFS: by default a black-box search may spend ``k`` times what the GRAFS
search of the same task and seed spent, read from that search's ``result.json``. Every cost is
kept in three units: measured wall seconds (the default limit, since it is what a user pays),
sample passes (forward or forward + backward passes of one sample through the network) and
epoch-equivalents (sample passes divided by the samples in one epoch of the training split).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from baselines.fixed import FIXED_ACTIVATIONS
from bench.data.base import Dataset
from bench.registry import Registry
from bench.runs import epoch_samples, full_training_samples
from bench.tasks import Metric, Task
from bench.training import Cost
from grafs.errors import UserError, unknown_name
from grafs.genotype import Genotype

BUDGET_UNITS = ("seconds", "sample_passes", "epoch_equivalents")

Progress = Callable[[dict], None]


def spending(cost: Cost, samples_per_epoch: int) -> dict[str, float]:
    """A cost in every budget unit."""
    return {
        "seconds": cost.wall_seconds,
        "sample_passes": cost.sample_passes,
        "epoch_equivalents": cost.sample_passes / samples_per_epoch,
    }


# ----------------------------------------------------------------------------------------------
# Budgets
# ----------------------------------------------------------------------------------------------
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
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
        per_epoch = epoch_samples(task, data)
        spent = spending(self.cost, per_epoch)
        cost = self.cost.to_dict()
        cost["epoch_equivalents"] = spent["epoch_equivalents"]
        cost["full_trainings"] = self.cost.train_samples / full_training_samples(task, data)
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


# ----------------------------------------------------------------------------------------------
# GRAFS and the fixed activations behind the interface
# ----------------------------------------------------------------------------------------------
class GrafsSearcher(Searcher):
    """The GRAFS bilevel search; its cost is set by the task's search recipe, not by a budget."""

    method = "grafs"

    def __init__(self, mode: str = "fixed", warmstart: bool = True, bounded: bool = True, shrinking: bool = True,
                 shared_sample: bool = False, fast: bool = True):
        from grafs.search import MODES

        if mode not in MODES:
            raise unknown_name("search mode", mode, MODES)
        self.switches = dict(
            mode=mode, warmstart=warmstart, bounded=bounded, shrinking=shrinking, shared_sample=shared_sample, fast=fast
        )

    def search(self, task, seed, budget, *, data, out, device="cpu", progress=None) -> SearchOutcome:
        from bench.search_task import TaskSearch, search_config
        from grafs.search import search

        device = torch.device(device)
        per_epoch = epoch_samples(task, data)
        trace: list[dict] = []
        incumbent: list[float] = []

        def record(round_record: dict) -> None:
            score = round_record["val_score"]
            if improves(task.metric, score, incumbent[-1] if incumbent else None):
                incumbent.append(score)
            spent = {
                "seconds": round_record["wall_seconds"],
                "sample_passes": round_record["sample_passes"],
                "epoch_equivalents": round_record["sample_passes"] / per_epoch,
            }
            row = trace_row(
                round_record["round"], "ok", score, incumbent[-1] if incumbent else None, spent,
                round_record["formula"], active="/".join(map(str, round_record["active_counts"])),
            )
            trace.append(row)
            if progress:
                progress(row)

        config = search_config(task, **self.switches)
        result = search(TaskSearch(task, data, seed, device), seed, config, device, progress=record)
        return SearchOutcome(
            method=self.method,
            genotype=result.genotype,
            status=result.status,
            message=result.message,
            best_score=result.best_score,
            betas="learned",
            trace=trace,
            cost=Cost(result.cost.wall_seconds, result.cost.train_samples, result.cost.eval_samples),
            config=asdict(result.config),
            details={"best_round": result.best_round, "nonfinite": result.nonfinite},
            history=result.history,
            scored_on="validation split, network trained in the supernet",
        )


def fixed_genotype(name: str) -> Genotype:
    """A fixed activation as a cell: ``f(x) = left(identity(left(name(x), .)), .) = name(x)``."""
    if name not in FIXED_ACTIVATIONS:
        raise unknown_name("fixed activation", name, FIXED_ACTIVATIONS)
    return Genotype.from_ops((name, "identity", "left", "identity", "identity", "left"))


class FixedSearcher(Searcher):
    """The degenerate search: a fixed activation, found at zero cost."""

    def __init__(self, name: str):
        self.genotype = fixed_genotype(name)
        self.method = name

    def search(self, task, seed, budget, *, data, out, device="cpu", progress=None) -> SearchOutcome:
        return SearchOutcome(
            method=self.method, genotype=self.genotype, status="ok", message="a fixed activation: nothing to search",
            best_score=float("nan"), betas="none", trace=[], cost=Cost(),
        )


# ----------------------------------------------------------------------------------------------
# The method registry
# ----------------------------------------------------------------------------------------------
def _accepts(expected: type, value: object) -> bool:
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


@dataclass(frozen=True)
class Method:
    """A search method by name: how to build its searcher and which options (name -> type) it takes.

    ``budgeted`` methods need a :class:`Budget`; the others spend what they spend. ``per_layer``
    methods (PANGAEA) find activations whose betas are meant to be learned per activation site:
    campaigns retrain them that way too, next to the shared fixed betas, unless the search's
    ``per_layer`` option is off.
    """

    name: str
    summary: str
    build: Callable[..., Searcher]
    options: Mapping[str, type] = field(default_factory=dict)
    budgeted: bool = True
    per_layer: bool = False

    def retrains_per_layer(self, options: Mapping[str, object]) -> bool:
        return self.per_layer and options.get("per_layer", True) is not False

    def option_types(self) -> dict[str, type]:
        return dict(self.options)

    def create(self, **options: object) -> Searcher:
        """The searcher with ``options``; an option the method does not take is one clear error."""
        for name, value in options.items():
            if name not in self.options:
                valid = ", ".join(sorted(self.options)) or "none"
                raise UserError(f"option {name!r} does not apply to method {self.name!r}; its options: {valid}")
            expected = self.options[name]
            if not _accepts(expected, value):
                raise UserError(f"option {name!r} of method {self.name!r} must be a {expected.__name__}, got {value!r}")
        return self.build(**options)

    def validate_options(self, options: Mapping[str, object]) -> None:
        self.create(**options)


METHODS: Registry[Method] = Registry("search method")


def register(method: Method) -> Method:
    return METHODS.add(method.name, method)


def create_searcher(name: str, **options: object) -> Searcher:
    return METHODS.get(name).create(**options)


register(Method(
    "grafs", "GRAFS: gradient-based search of the cell (DrNAS relaxation, warmstart, bounds, shrinking)",
    GrafsSearcher,
    {"mode": str, "warmstart": bool, "bounded": bool, "shrinking": bool, "shared_sample": bool, "fast": bool},
    budgeted=False,
))
for _name in FIXED_ACTIVATIONS:
    register(Method(_name, f"the fixed activation {_name} (zero search cost)", lambda n=_name: FixedSearcher(n),
                    budgeted=False))

# Imported last, for their side effect of registering the black-box baselines.
from baselines import blackbox, multifidelity, pangaea, surrogate  # noqa: E402, F401
