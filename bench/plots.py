"""Figures of activation functions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bench.activations import fixed_activation  # noqa: E402
from grafs.files import atomic_path  # noqa: E402
from grafs.genotype import Genotype  # noqa: E402

COMPARISON = ("relu", "gelu", "silu")


def activation_grid(x_range: float = 5.0) -> torch.Tensor:
    return torch.linspace(-x_range, x_range, 801)


def draw_comparison(axes, x: torch.Tensor) -> None:
    """ReLU, GELU and SiLU as dashed lines, and the axes through the origin."""
    with torch.no_grad():
        for name in COMPARISON:
            axes.plot(x, fixed_activation(name)(x), lw=1.2, ls="--", label=name)
    axes.axhline(0, color="grey", lw=0.5)
    axes.axvline(0, color="grey", lw=0.5)
    axes.set_xlabel("x")
    axes.set_ylabel("f(x)")


def activation_values(genotype: Genotype, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return genotype.to_module()(x)


def plot_activation(genotype: Genotype, path: str | Path, label: str = "found", x_range: float = 5.0) -> Path:
    """Plot a genotype's function next to ReLU, GELU and SiLU, with its formula as the title."""
    path = Path(path)
    x = activation_grid(x_range)
    figure, axes = plt.subplots(figsize=(6.0, 4.2))
    draw_comparison(axes, x)
    axes.plot(x, activation_values(genotype, x), lw=2.2, color="black", label=label)
    axes.set_title(genotype.formula(), fontsize=8, wrap=True)
    axes.legend(loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=path.suffix.lstrip(".") or "png", dpi=120)
    finally:
        plt.close(figure)
    return path
