"""The fixed activations (ReLU, GELU, SiLU, ELU, LeakyReLU) as the degenerate search: found at zero cost."""

from __future__ import annotations

from bench.activations import FIXED_ACTIVATIONS
from bench.options import NoOptions
from bench.searchers import Searcher, SearchOutcome
from grafs.cost import Cost
from grafs.errors import unknown_name
from grafs.genotype import Genotype


def fixed_genotype(name: str) -> Genotype:
    """A fixed activation as a cell: ``f(x) = left(identity(left(name(x), .)), .) = name(x)``."""
    if name not in FIXED_ACTIVATIONS:
        raise unknown_name("fixed activation", name, FIXED_ACTIVATIONS)
    return Genotype.from_ops((name, "identity", "left", "identity", "identity", "left"))


class FixedSearcher(Searcher):
    """A fixed activation behind the search interface, so campaigns treat it like any found one."""

    def __init__(self, name: str, options: NoOptions | None = None):
        self.genotype = fixed_genotype(name)
        self.method = name

    def search(self, task, seed, budget, *, data, out, device="cpu", progress=None) -> SearchOutcome:
        return SearchOutcome(
            method=self.method, genotype=self.genotype, status="ok", message="a fixed activation: nothing to search",
            best_score=float("nan"), betas="none", trace=[], cost=Cost(),
        )
