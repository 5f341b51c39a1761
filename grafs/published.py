"""Activations published by the GRAFS reference code's own searches, in this suite's genotype format.

They double as extra baselines and as test vectors for the formula printer.
"""

from __future__ import annotations

from grafs.genotype import Genotype

PUBLISHED_GENOTYPES: dict[str, Genotype] = {
    "grafs-vit-1": Genotype(
        ("square", "gelu", "beta_mix", "gelu", "silu", "beta_mix"), (None, None, -0.2358, None, None, -0.4082)
    ),
    "grafs-vit-2": Genotype(("silu", "square", "sig_mul", "silu", "silu", "beta_mix"), (None,) * 5 + (-0.2741,)),
    "grafs-vit-3": Genotype(("silu", "silu", "mul", "gelu", "silu", "sig_mul"), (None,) * 6),
    "grafs-gpt-0": Genotype(("relu", "gelu", "sig_mul", "silu", "silu", "mul"), (None,) * 6),
}
