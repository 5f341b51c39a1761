"""The options of every black-box search, declared once and importable without torch or Optuna.

Each method's options are one frozen dataclass: the command line's flags, campaign validation,
the defaults and the ``config`` of a search's result record all derive from it (through
:mod:`bench.options`). A field's ``help`` metadata is its documentation on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bench.activations import FIXED_ACTIVATIONS
from grafs.config import SPACES
from grafs.errors import UserError, unknown_name

if TYPE_CHECKING:
    from bench.tasks import Recipe, Task

DEFAULT_PROXY_FRACTION = 0.2
DEFAULT_REDUCTION_FACTOR = 2
FISHER_BATCH = 32
SELECTIONS = ("rank", "tournament")
EMBEDDINGS = ("umap", "pca")


@dataclass(frozen=True)
class ProxyConfig:
    """How long a candidate trains: ``fraction`` of the task's search recipe, unless a length is given."""

    fraction: float = DEFAULT_PROXY_FRACTION
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
            return proxy_recipe(search, self.iterations or max(1, round(self.fraction * search.iterations)))
        return proxy_recipe(search, self.epochs or max(1, round(self.fraction * search.epochs)))


def proxy_recipe(search: Recipe, length: int, eval_interval: int = 0) -> Recipe:
    """The search recipe cut to ``length`` epochs (or iterations), its schedule scaled with it."""
    if search.is_iterative:
        warmup = round(search.warmup_iterations * length / search.iterations)
        return replace(search, iterations=length, warmup_iterations=warmup, eval_interval=eval_interval)
    milestones = tuple(sorted({m * length // search.epochs for m in search.milestones} - {0}))
    return replace(search, epochs=length, milestones=milestones)


@dataclass(frozen=True)
class CellOptions:
    """What every black-box search has: how its candidates' betas are set, and the operation space."""

    tune_betas: bool = field(
        default=False, metadata={"help": "tune betas instead of fixing them at their initial means"}
    )
    space: str = field(default="standard", metadata={"help": "operation space", "choices": SPACES})

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise unknown_name("operation space", self.space, SPACES)


@dataclass(frozen=True)
class BlackBoxOptions(CellOptions):
    """A black-box search whose candidates are scored by a plain proxy training of a fixed length."""

    proxy_fraction: float = field(
        default=DEFAULT_PROXY_FRACTION,
        metadata={"help": "proxy training length as a fraction of the task's search recipe"},
    )
    proxy_epochs: int | None = field(default=None, metadata={"help": "proxy training epochs (instead of the fraction)"})
    proxy_iterations: int | None = field(
        default=None, metadata={"help": "proxy training iterations (instead of the fraction)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.proxy  # noqa: B018 - validates the proxy length

    @property
    def proxy(self) -> ProxyConfig:
        return ProxyConfig(self.proxy_fraction, self.proxy_epochs, self.proxy_iterations)


def _at_least(owner: str, name: str, value: int, least: int) -> None:
    if value < least:
        raise UserError(f"the {owner}'s {name} must be at least {least}, got {value}")


@dataclass(frozen=True)
class EvolutionOptions(BlackBoxOptions):
    population: int = field(default=20, metadata={"help": "population size"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("evolution", "population", self.population, 2)


@dataclass(frozen=True)
class RegularizedEvolutionOptions(EvolutionOptions):
    sample_size: int = field(default=5, metadata={"help": "members drawn per tournament"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.sample_size <= self.population:
            raise UserError(
                f"the sample size must lie between 1 and the population size ({self.population}), "
                f"got {self.sample_size}"
            )


@dataclass(frozen=True)
class PangaeaOptions(EvolutionOptions):
    offspring: int = field(default=10, metadata={"help": "candidates per generation"})
    newcomer_share: float = field(default=0.2, metadata={"help": "share of random newcomers per generation"})
    selection: str = field(default="rank", metadata={"help": "parent selection", "choices": SELECTIONS})
    per_layer: bool = field(default=True, metadata={"help": "betas learned per activation site"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("generation", "offspring", self.offspring, 1)
        if not 0.0 <= self.newcomer_share <= 1.0:
            raise UserError(f"the newcomer share must lie in [0, 1], got {self.newcomer_share}")
        if self.selection not in SELECTIONS:
            raise unknown_name("selection", self.selection, SELECTIONS)


@dataclass(frozen=True)
class SurrogateOptions(BlackBoxOptions):
    pool_size: int = field(default=500, metadata={"help": "distinct functions in the pool"})
    neighbours: int = field(default=3, metadata={"help": "k of the k-NN regression"})
    dims: int = field(default=2, metadata={"help": "embedding dimensions"})
    embedding: str = field(default="umap", metadata={"help": "embedding method", "choices": EMBEDDINGS})
    fisher_batch: int = field(default=FISHER_BATCH, metadata={"help": "samples of the Fisher batch"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding not in EMBEDDINGS:
            raise unknown_name("embedding", self.embedding, EMBEDDINGS)
        _at_least("surrogate", "pool_size", self.pool_size, len(FIXED_ACTIVATIONS) + 2)
        for name in ("neighbours", "dims", "fisher_batch"):
            _at_least("surrogate", name, getattr(self, name), 1)


@dataclass(frozen=True)
class MultiFidelityOptions(CellOptions):
    """How long a multi-fidelity search (asha, bohb) trains a candidate, counted in checkpoints
    (resource units): epochs, or evaluation intervals of the search recipe on iteration-based tasks.

    Each candidate trains on the recipe of ``max_resource`` checkpoints and reports its score at
    every one; successive halving judges it first after ``min_resource`` and then after every
    ``reduction_factor`` times as many, keeping about 1 / ``reduction_factor`` of the candidates
    at each rung. ``max_resource`` defaults to the plain proxy's length
    (:data:`DEFAULT_PROXY_FRACTION` of the search recipe), at least one rung above ``min_resource``:
    at matched budgets a longer maximum spends more per candidate than the plain proxy (README,
    "Multi-fidelity baselines").
    """

    min_resource: int = field(default=1, metadata={"help": "checkpoints (epochs or evaluation intervals) before "
                                                           "the first rung"})
    max_resource: int | None = field(default=None, metadata={
        "help": "checkpoints of a candidate never stopped (default: the plain proxy's length, at least one rung "
                "above the minimum)"})
    reduction_factor: int = field(default=DEFAULT_REDUCTION_FACTOR,
                                  metadata={"help": "1 / the share of candidates kept at each rung"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("multi-fidelity search", "min_resource", self.min_resource, 1)
        _at_least("multi-fidelity search", "reduction_factor", self.reduction_factor, 2)
        if self.max_resource is not None and self.max_resource <= self.min_resource:
            raise UserError(
                f"max_resource ({self.max_resource}) must exceed min_resource ({self.min_resource}): "
                "a candidate that cannot be stopped before its end is a plain proxy training"
            )

    @property
    def proxy(self) -> MultiFidelityOptions:
        """The training each candidate may run (this search's resources stand where a proxy's length does)."""
        return self

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
        return proxy_recipe(task.search, self.max_for(task) * interval, interval if task.search.is_iterative else 0)
