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
            iterations = self.iterations or max(1, round(self.fraction * search.iterations))
            warmup = round(search.warmup_iterations * iterations / search.iterations)
            # Only the final score matters: no intermediate evaluations.
            return replace(search, iterations=iterations, warmup_iterations=warmup, eval_interval=0)
        epochs = self.epochs or max(1, round(self.fraction * search.epochs))
        milestones = tuple(sorted({m * epochs // search.epochs for m in search.milestones} - {0}))
        return replace(search, epochs=epochs, milestones=milestones)


@dataclass(frozen=True)
class BlackBoxOptions:
    """What every black-box search has: the proxy training that scores a candidate, the betas, the space."""

    proxy_fraction: float = field(
        default=DEFAULT_PROXY_FRACTION,
        metadata={"help": "proxy training length as a fraction of the task's search recipe"},
    )
    proxy_epochs: int | None = field(default=None, metadata={"help": "proxy training epochs (instead of the fraction)"})
    proxy_iterations: int | None = field(
        default=None, metadata={"help": "proxy training iterations (instead of the fraction)"}
    )
    tune_betas: bool = field(
        default=False, metadata={"help": "tune betas instead of fixing them at their initial means"}
    )
    space: str = field(default="standard", metadata={"help": "operation space", "choices": SPACES})

    def __post_init__(self) -> None:
        self.proxy  # noqa: B018 - validates the proxy length
        if self.space not in SPACES:
            raise unknown_name("operation space", self.space, SPACES)

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
