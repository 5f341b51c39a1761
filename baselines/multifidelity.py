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
interval of the search recipe on iteration-based tasks (:class:`baselines.options.MultiFidelityOptions`).
"""

from __future__ import annotations

import math

from optuna.pruners import HyperbandPruner, SuccessiveHalvingPruner
from optuna.samplers import RandomSampler, TPESampler

from baselines.blackbox import BlackBoxSearcher
from baselines.options import MultiFidelityOptions
from bench.tasks import Task


def ladder(options: MultiFidelityOptions, task: Task, brackets: bool) -> dict:
    """The resources on ``task`` as they were used, for result.json (with Hyperband's bracket count)."""
    interval = options.interval(task)
    used = {
        "unit": f"evaluation intervals of {interval} iterations" if task.search.is_iterative else "epochs",
        "min_resource": options.min_resource,
        "max_resource": options.max_for(task),
        "reduction_factor": options.reduction_factor,
    }
    if brackets:
        ratio = used["max_resource"] / options.min_resource
        used["brackets"] = math.floor(math.log(ratio, options.reduction_factor)) + 1
    return used


def asha_search(method: str, options: MultiFidelityOptions) -> BlackBoxSearcher:
    """Random cells, stopped by successive halving."""
    return BlackBoxSearcher(
        method, options, lambda seed: RandomSampler(seed=seed),
        pruner=lambda task: SuccessiveHalvingPruner(options.min_resource, options.reduction_factor),
        describe=lambda task: {"fidelity": ladder(options, task, brackets=False)},
    )


def bohb_search(method: str, options: MultiFidelityOptions) -> BlackBoxSearcher:
    """TPE proposals, stopped by Hyperband's brackets of successive halving."""
    return BlackBoxSearcher(
        method, options, lambda seed: TPESampler(seed=seed),
        pruner=lambda task: HyperbandPruner(options.min_resource, options.max_for(task), options.reduction_factor),
        describe=lambda task: {"fidelity": ladder(options, task, brackets=True)},
    )
