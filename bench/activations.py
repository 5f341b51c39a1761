"""Everything a command or a campaign accepts as an activation: a fixed name, a published
genotype's name, or the path of a genotype JSON file.

The fixed activations' names are plain data (campaign validation reads them without torch);
modules and genotypes are built only when an activation is resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grafs.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from grafs.genotype import Genotype

FIXED_ACTIVATIONS: dict[str, tuple[str, dict[str, float]]] = {
    "relu": ("ReLU", {}),
    "gelu": ("GELU", {}),
    "silu": ("SiLU", {}),
    "elu": ("ELU", {"alpha": 1.0}),
    "leaky_relu": ("LeakyReLU", {"negative_slope": 0.01}),
}
"""The fixed activations every table compares against: name -> (``torch.nn`` class, its arguments)."""


def fixed_activation(name: str) -> nn.Module:
    """A new module of the fixed activation ``name``."""
    from torch import nn

    if name not in FIXED_ACTIVATIONS:
        raise UserError(f"unknown fixed activation {name!r}; valid choices: {', '.join(FIXED_ACTIVATIONS)}")
    module, arguments = FIXED_ACTIVATIONS[name]
    return getattr(nn, module)(**arguments)


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
    from grafs.published import PUBLISHED_GENOTYPES

    return [*FIXED_ACTIVATIONS, *PUBLISHED_GENOTYPES]


def resolve_activation(spec: str, learnable_betas: bool = False) -> Activation:
    """Turn a name or a genotype file path into an :class:`Activation`."""
    if spec in FIXED_ACTIVATIONS:
        return Activation(spec, lambda: fixed_activation(spec))
    from grafs.published import PUBLISHED_GENOTYPES

    if spec in PUBLISHED_GENOTYPES:
        return genotype_activation(spec, PUBLISHED_GENOTYPES[spec], learnable_betas)
    if spec.endswith(".json") or Path(spec).exists():
        from grafs.genotype import Genotype

        genotype = Genotype.load(spec)
        return genotype_activation(Path(spec).stem, genotype, learnable_betas)
    valid = ", ".join(activation_names())
    raise UserError(f"unknown activation {spec!r}; use one of {valid}, or the path of a genotype .json file")


def genotype_activation(name: str, genotype: Genotype, learnable_betas: bool = False) -> Activation:
    return Activation(name, lambda: genotype.to_module(learnable_betas=learnable_betas), genotype)
