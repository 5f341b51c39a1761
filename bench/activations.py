"""Everything a command or a campaign accepts as an activation: a fixed name, a published
genotype's name, or the path of a genotype JSON file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from baselines.fixed import FIXED_ACTIVATIONS
from baselines.published import PUBLISHED_GENOTYPES
from grafs.errors import UserError
from grafs.genotype import Genotype


@dataclass(frozen=True)
class Activation:
    """A named activation and the factory that builds it at each site of a model."""

    name: str
    factory: Callable[[], nn.Module]
    genotype: Genotype | None = None

    @property
    def formula(self) -> str:
        return self.genotype.formula() if self.genotype else self.name


def activation_names() -> list[str]:
    return [*FIXED_ACTIVATIONS, *PUBLISHED_GENOTYPES]


def resolve_activation(spec: str, learnable_betas: bool = False) -> Activation:
    """Turn a name or a genotype file path into an :class:`Activation`."""
    if spec in FIXED_ACTIVATIONS:
        return Activation(spec, FIXED_ACTIVATIONS[spec])
    if spec in PUBLISHED_GENOTYPES:
        return genotype_activation(spec, PUBLISHED_GENOTYPES[spec], learnable_betas)
    if spec.endswith(".json") or Path(spec).exists():
        genotype = Genotype.load(spec)
        return genotype_activation(Path(spec).stem, genotype, learnable_betas)
    valid = ", ".join(activation_names())
    raise UserError(f"unknown activation {spec!r}; use one of {valid}, or the path of a genotype .json file")


def genotype_activation(name: str, genotype: Genotype, learnable_betas: bool = False) -> Activation:
    return Activation(name, lambda: genotype.to_module(learnable_betas=learnable_betas), genotype)
