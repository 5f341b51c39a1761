"""Multi-fidelity black-box baselines: weak candidates are stopped early by Optuna's pruners.

``asha`` is asynchronous successive halving (Li et al. 2020): random cells, each judged after
``min_resource`` checkpoints and then after every ``reduction_factor`` times as many, continuing
only while it is in the top 1 / ``reduction_factor`` of the candidates judged at that rung
(``RandomSampler`` + ``SuccessiveHalvingPruner``). ``bohb`` is BOHB-style (Falkner et al. 2018):
Hyperband's brackets of successive halving with different first rungs, the cells proposed by TPE
from the finished and pruned trials (``TPESampler`` + ``HyperbandPruner``; Optuna derives the
number of brackets, ``floor(log_reduction_factor(max_resource / min_resource)) + 1``, and assigns
each trial to one by a hash of the study name and trial number, so a resumed study keeps them).

Both run in :class:`baselines.blackbox.BlackBoxSearcher`'s loop: the same cell, proxy split,
fingerprint cache and budget as the other baselines. A checkpoint is an epoch, or an evaluation
interval of the search recipe on iteration-based tasks (:class:`baselines.proxy.FidelityConfig`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from pathlib import Path

from optuna.pruners import BasePruner, HyperbandPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, RandomSampler, TPESampler

from baselines.blackbox import COMMON_OPTIONS, BlackBoxSearcher
from baselines.proxy import FidelityConfig
from bench.searchers import Method, SearchOutcome, register
from bench.tasks import Task
from grafs.errors import unknown_name

OPTIONS: dict[str, type] = {
    **{resource.name: int for resource in fields(FidelityConfig)},  # declared, defaulted and checked there
    # the cell's options of every black-box search; the ladder takes the place of the proxy's length
    **{name: COMMON_OPTIONS[name] for name in ("tune_betas", "space")},
}
SUMMARIES = {
    "asha": "asynchronous successive halving over the cell (Optuna RandomSampler + SuccessiveHalvingPruner)",
    "bohb": "BOHB-style Hyperband with TPE proposals over the cell (Optuna TPESampler + HyperbandPruner)",
}


class MultiFidelitySearcher(BlackBoxSearcher):
    """A black-box search whose candidates report every checkpoint and are stopped when weak."""

    prunes = True

    def __init__(self, method: str, *, tune_betas: bool = False, space: str = "standard", **resources: int):
        if method not in SUMMARIES:
            raise unknown_name("multi-fidelity method", method, SUMMARIES)
        self.fidelity = FidelityConfig(**resources)
        self.configure(method, self.fidelity, tune_betas, space)

    @property
    def config(self) -> dict:
        pruner = "successive-halving" if self.method == "asha" else "hyperband"
        return {"sampler": self.method, "pruner": pruner, "tune_betas": self.tune_betas, "space": self.space,
                "fidelity": asdict(self.fidelity)}

    def make_sampler(self, seed: int) -> BaseSampler:
        return RandomSampler(seed=seed) if self.method == "asha" else TPESampler(seed=seed)

    def make_pruner(self, task: Task) -> BasePruner:
        fidelity = self.fidelity
        if self.method == "asha":
            return SuccessiveHalvingPruner(fidelity.min_resource, fidelity.reduction_factor)
        return HyperbandPruner(fidelity.min_resource, fidelity.max_for(task), fidelity.reduction_factor)

    def ladder(self, task: Task) -> dict:
        """The resources on ``task`` as they were used, for result.json."""
        fidelity = self.fidelity
        interval = fidelity.interval(task)
        ladder = {
            "unit": f"evaluation intervals of {interval} iterations" if task.search.is_iterative else "epochs",
            "min_resource": fidelity.min_resource,
            "max_resource": fidelity.max_for(task),
            "reduction_factor": fidelity.reduction_factor,
        }
        if self.method == "bohb":
            ratio = ladder["max_resource"] / fidelity.min_resource
            ladder["brackets"] = math.floor(math.log(ratio, fidelity.reduction_factor)) + 1
        return ladder

    def run(self, task: Task, seed: int, budget, evaluate, out: Path, samples_per_epoch: int, progress=None,
            proposer=None) -> SearchOutcome:
        outcome = super().run(task, seed, budget, evaluate, out, samples_per_epoch, progress, proposer)
        outcome.details["fidelity"] = self.ladder(task)
        return outcome


for _method, _summary in SUMMARIES.items():
    register(Method(_method, _summary, lambda m=_method, **options: MultiFidelitySearcher(m, **options), OPTIONS))
