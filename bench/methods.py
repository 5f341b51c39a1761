"""The method table: every way of finding an activation, by the name commands and campaigns use.

This is the one module that knows every method. Each entry names its options class (the one
declaration of its options, see :mod:`bench.options`) and where its searcher is built; the
implementation is imported only when a searcher is built, so listing methods, checking a
campaign or printing ``--help`` loads neither torch nor Optuna.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from baselines.options import (
    BlackBoxOptions,
    EvolutionOptions,
    MultiFidelityOptions,
    PangaeaOptions,
    RegularizedEvolutionOptions,
    SurrogateOptions,
)
from bench.activations import FIXED_ACTIVATIONS
from bench.options import NoOptions, parse_options
from bench.registry import Registry
from grafs.config import SearchOptions

if TYPE_CHECKING:
    from bench.searchers import Searcher


@dataclass(frozen=True)
class Method:
    """A search method: its options class and the ``module:callable`` that builds its searcher
    as ``callable(name, options)``.

    ``budgeted`` methods need a :class:`~bench.budget.Budget`; the others spend what they spend.
    ``per_layer`` methods (PANGAEA) find activations whose betas are meant to be learned per
    activation site: campaigns retrain them that way too, next to the shared fixed betas, unless
    the search's ``per_layer`` option is off.
    """

    name: str
    summary: str
    options: type
    builder: str
    budgeted: bool = True
    per_layer: bool = False

    def parse_options(self, values: Mapping[str, object]) -> Any:
        """The method's options from ``values`` (names to values); anything invalid is one clear error."""
        return parse_options(self.options, values, f"method {self.name!r}")

    def create(self, **values: object) -> Searcher:
        options = self.parse_options(values)
        module, attribute = self.builder.split(":")
        return getattr(importlib.import_module(module), attribute)(self.name, options)

    def retrains_per_layer(self, values: Mapping[str, object]) -> bool:
        return self.per_layer and self.parse_options(values).per_layer


METHODS: Registry[Method] = Registry("search method")


def create_searcher(name: str, **options: object) -> Searcher:
    return METHODS.get(name).create(**options)


for _method in (
    Method("grafs", "GRAFS: gradient-based search of the cell (DrNAS relaxation, warmstart, bounds, shrinking)",
           SearchOptions, "bench.search_task:GrafsSearcher", budgeted=False),
    *(
        Method(name, f"the fixed activation {name} (zero search cost)", NoOptions, "baselines.fixed:FixedSearcher",
               budgeted=False)
        for name in FIXED_ACTIVATIONS
    ),
    Method("random", "random search over the cell (Optuna RandomSampler)", BlackBoxOptions,
           "baselines.blackbox:random_search"),
    Method("evolution", "genetic search over the cell (Optuna NSGAIISampler, single objective)", EvolutionOptions,
           "baselines.blackbox:evolution_search"),
    Method("regularized-evolution", "regularized (aging) evolution with PANGAEA-style mutations of the cell",
           RegularizedEvolutionOptions, "baselines.regularized_evolution:regularized_evolution_search"),
    Method("tpe", "Bayesian optimisation over the cell (Optuna TPESampler)", BlackBoxOptions,
           "baselines.blackbox:tpe_search"),
    Method("asha", "asynchronous successive halving over the cell (Optuna RandomSampler + SuccessiveHalvingPruner)",
           MultiFidelityOptions, "baselines.multifidelity:asha_search"),
    Method("bohb", "BOHB-style Hyperband with TPE proposals over the cell (Optuna TPESampler + HyperbandPruner)",
           MultiFidelityOptions, "baselines.multifidelity:bohb_search"),
    Method("pangaea",
           "PANGAEA-style evolution: change / regenerate / insert / remove mutations, newcomers, "
           "per-layer learned betas",
           PangaeaOptions, "baselines.pangaea:pangaea_search", per_layer=True),
    Method("surrogate",
           "AQuaSurF-style surrogate search: output and Fisher-spectrum features, UMAP embedding, k-NN regression",
           SurrogateOptions, "baselines.surrogate:surrogate_search"),
):
    METHODS.add(_method.name, _method)
