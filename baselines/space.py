"""The GRAFS cell as a black-box search space: one categorical parameter per slot, optional betas.

Parameters are named by slot (``u0`` ... ``b1``) and hold operation names; when betas are tuned,
a slot whose operation has a beta adds a float parameter ``beta_<slot>``. When they are not,
every beta sits at its operation's initial mean (``Genotype.from_ops``). Every sampler and every
baseline reads the space from here, so they all propose the same Genotypes.
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from grafs.genotype import Genotype
from grafs.ops import SLOTS, slot_candidates

BETA_RANGE = (-3.0, 3.0)
"""Where tuned betas live: wide enough for scales, shifts and mixing weights, around their 0 / 1 inits."""

BETA_POLICIES = {False: "init-mean", True: "tuned"}


def beta_param(slot: str) -> str:
    return f"beta_{slot}"


def op_distribution(slot: str, space: str = "standard") -> CategoricalDistribution:
    return CategoricalDistribution([op.name for op in slot_candidates(slot, space)])


def beta_distribution() -> FloatDistribution:
    return FloatDistribution(*BETA_RANGE)


def distributions(space: str = "standard", tune_betas: bool = False) -> dict[str, BaseDistribution]:
    """Every parameter a trial may suggest (beta parameters are conditional on their slot's op)."""
    result: dict[str, BaseDistribution] = {slot: op_distribution(slot, space) for slot in SLOTS}
    if tune_betas:
        result.update({beta_param(slot): beta_distribution() for slot in SLOTS})
    return result


def suggest_genotype(trial: optuna.Trial, space: str = "standard", tune_betas: bool = False) -> Genotype:
    """Ask the trial (and so its sampler) for one cell."""
    ops = [trial.suggest_categorical(slot, op_distribution(slot, space).choices) for slot in SLOTS]
    genotype = Genotype.from_ops(ops)
    if not tune_betas:
        return genotype
    low, high = BETA_RANGE
    betas = [
        None if beta is None else trial.suggest_float(beta_param(slot), low, high)
        for slot, beta in zip(SLOTS, genotype.betas, strict=True)
    ]
    return Genotype(genotype.ops, tuple(betas))


def genotype_params(genotype: Genotype, tune_betas: bool = False) -> dict[str, object]:
    """The trial parameters that make ``suggest_genotype`` return ``genotype``."""
    params: dict[str, object] = dict(zip(SLOTS, genotype.ops, strict=True))
    if tune_betas:
        betas = zip(SLOTS, genotype.betas, strict=True)
        params.update({beta_param(slot): beta for slot, beta in betas if beta is not None})
    return params


def genotype_from_params(params: Mapping[str, object], tune_betas: bool = False) -> Genotype:
    genotype = Genotype.from_ops([str(params[slot]) for slot in SLOTS])
    if not tune_betas:
        return genotype
    betas = [
        None if beta is None else float(params[beta_param(slot)])
        for slot, beta in zip(SLOTS, genotype.betas, strict=True)
    ]
    return Genotype(genotype.ops, tuple(betas))
