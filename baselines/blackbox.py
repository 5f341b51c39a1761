"""Black-box baselines: Optuna samplers proposing GRAFS cells, each scored by a proxy training.

One ask-and-tell loop serves every sampler: random search (``RandomSampler``), evolution
(``NSGAIISampler`` used single-objective: uniform crossover, resampling mutation), TPE
(``TPESampler``) and regularized evolution (:mod:`baselines.regularized_evolution`). Per
candidate: ask, build the genotype, look up its functional fingerprint, train it only if the
function is new, tell the score. A diverged candidate is told the metric's worst value. The same
loop runs PANGAEA-style evolution (:mod:`baselines.pangaea`, a sampler) and searches that choose
their candidates themselves through a :class:`Proposer` (the AQuaSurF-style surrogate,
:mod:`baselines.surrogate`), whose choice is enqueued in the study and asked back.

Multi-fidelity searches (:mod:`baselines.multifidelity`) run in the same loop with a pruner:
each candidate reports its score at every checkpoint of its training (``trial.report``) and is
stopped when ``trial.should_prune()`` says so; a pruned candidate is stored as
``TrialState.PRUNED`` and charged what it ran.

The Optuna study in ``<out>/study.db`` is the whole state: trace, spending, incumbent and the
fingerprint cache are rebuilt from its trials, so a killed search resumes where it stopped, and
the study can be opened with Optuna's own tools (``optuna.load_study``, optuna-dashboard). A
running candidate stores what it has spent at each checkpoint, so the candidate a kill
interrupts is charged the work it had done up to its last checkpoint: a resumed search neither
refunds it nor counts it twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import optuna
from optuna.pruners import BasePruner, NopPruner
from optuna.samplers import BaseSampler, NSGAIISampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from baselines.options import BlackBoxOptions, EvolutionOptions, MultiFidelityOptions
from baselines.proxy import Checkpoint, Evaluation, ProxyEvaluator
from baselines.space import BETA_POLICIES, suggest_genotype
from bench.budget import Budget
from bench.data.base import Dataset
from bench.searchers import Searcher, SearchOutcome, improves, spending, trace_row
from bench.tasks import Task
from bench.training import StopTraining
from grafs.cost import Cost
from grafs.errors import UserError
from grafs.genotype import Genotype

STUDY_FILE = "study.db"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
PARTIAL_COST = "partial_cost"
"""The user attribute in which a running candidate keeps what it has spent up to its last checkpoint."""
MAX_DUPLICATE_STREAK = 200
"""A sampler that proposes only known functions this many times in a row has converged: stop."""

class Evaluator(Protocol):
    """Scores one genotype; ``description`` names its settings (stored with the study).

    ``on_checkpoint`` receives the running candidate's score and cost at each checkpoint of its
    training and may raise :class:`bench.training.StopTraining` to stop it (status ``pruned``)."""

    description: dict

    def __call__(
        self, genotype: Genotype, on_checkpoint: Callable[[Checkpoint], None] | None = None
    ) -> Evaluation: ...


@dataclass(frozen=True)
class Proposal:
    """A candidate a searcher chose itself instead of asking its sampler (a model-based search).

    ``params`` are the trial parameters (:func:`baselines.space.genotype_params`), ``attrs`` are
    stored with the trial (a ``predicted_score`` enters the trace), and ``cost`` is what choosing
    it spent (computing features, fitting a model): it is added to the candidate's own cost.
    """

    params: dict
    attrs: dict = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)


class NothingToPropose(Exception):
    """A proposer has no candidate left; its message says why, and the search stops there."""


class Proposer(Protocol):
    def __call__(self, study: optuna.Study, ledger: Ledger) -> Proposal: ...


SamplerFactory = Callable[[int], BaseSampler]
"""Builds a search's Optuna sampler from the run's seed."""

ProposerFactory = Callable[[Task, Dataset, int, object], Proposer]
"""Builds a model-based search's proposer from the task, its data, the seed and the device."""

PrunerFactory = Callable[[Task], BasePruner]
"""Builds a multi-fidelity search's Optuna pruner for the task."""


class BlackBoxSearcher(Searcher):
    """A sampler (or a proposer) choosing cells, a proxy training scoring them, a budget stopping them.

    Every black-box method is this one loop with its own sampler: the methods differ only in
    how they choose the next candidate (see the ``*_search`` builders of each module).
    ``learnable_betas``: candidates train their betas per activation site (PANGAEA). With a
    ``pruner`` (multi-fidelity searches) candidates report every checkpoint and may be stopped;
    ``describe`` adds method-specific details to the result.
    """

    def __init__(
        self, method: str, options: BlackBoxOptions | MultiFidelityOptions, sampler: SamplerFactory,
        proposer: ProposerFactory | None = None, learnable_betas: bool = False, pruner: PrunerFactory | None = None,
        describe: Callable[[Task], dict] | None = None,
    ):
        self.method, self.options, self.sampler = method, options, sampler
        self.proposer, self.learnable_betas = proposer, learnable_betas
        self.pruner, self.describe = pruner, describe

    @property
    def config(self) -> dict:
        return {"sampler": self.method, **asdict(self.options)}

    @property
    def prunes(self) -> bool:
        """Whether candidates report their checkpoints to the study's pruner, which may stop them."""
        return self.pruner is not None

    def make_pruner(self, task: Task) -> BasePruner:
        return self.pruner(task) if self.pruner else NopPruner()  # without one every candidate trains to its end

    def search(self, task, seed, budget, *, data, out, device="cpu", progress=None) -> SearchOutcome:
        evaluate = ProxyEvaluator(task, data, seed, self.options.proxy, device, learnable_betas=self.learnable_betas)
        proposer = self.proposer(task, data, seed, device) if self.proposer else None
        samples_per_epoch = data.samples_per_epoch(task.block_size)
        return self.run(task, seed, budget, evaluate, Path(out), samples_per_epoch, progress, proposer)

    def run(
        self, task: Task, seed: int, budget: Budget | None, evaluate: Evaluator, out: Path, samples_per_epoch: int,
        progress: Callable[[dict], None] | None = None, proposer: Proposer | None = None,
    ) -> SearchOutcome:
        """The search loop, with any evaluator (``search`` uses the proxy training). Candidates come from
        the sampler, or from ``proposer`` when one is given."""
        if budget is None:
            raise UserError(f"the {self.method} search needs a budget: a multiple of GRAFS's cost or seconds")
        out.mkdir(parents=True, exist_ok=True)
        with _exclusive(out / f".{STUDY_FILE}.lock", out):
            study = self.open_study(out, task, seed, evaluate.description)
            ledger = Ledger(task, samples_per_epoch)
            for trial in study.get_trials(deepcopy=False, states=FINISHED):
                ledger.add(trial)
            stop = "the budget is spent"
            while not budget.exhausted(ledger.spent):
                if ledger.duplicate_streak >= MAX_DUPLICATE_STREAK:
                    stop = f"the sampler proposed {MAX_DUPLICATE_STREAK} known functions in a row"
                    break
                try:
                    proposal = proposer(study, ledger) if proposer else None
                except NothingToPropose as reason:
                    stop = str(reason)
                    break
                row = ledger.add(self._candidate(study, evaluate, ledger, proposal))
                if progress and row:
                    progress(row)
        return ledger.outcome(self, budget, stop, study.study_name)

    def open_study(self, out: Path, task: Task, seed: int, evaluator: dict) -> optuna.Study:
        """The run's study, created or resumed; a study made with other settings is refused."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        name = f"{self.method}-{task.name}-s{seed}"
        study = optuna.create_study(
            storage=study_storage(out / STUDY_FILE), sampler=self.sampler(seed), pruner=self.make_pruner(task),
            study_name=name, direction="maximize" if task.metric.direction == "max" else "minimize",
            load_if_exists=True,
        )
        settings = json.loads(json.dumps({**self.config, "task": task.name, "seed": seed, "evaluator": evaluator}))
        stored = study.user_attrs.get("settings")
        if stored is None:
            study.set_user_attr("settings", settings)
        elif stored != settings:
            changed = sorted(key for key in settings.keys() | stored.keys() if settings.get(key) != stored.get(key))
            raise UserError(
                f"{out / STUDY_FILE} holds study {name!r} made with other settings ({', '.join(changed)}); "
                "resume it with the same options or choose another --out"
            )
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)  # killed mid-candidate: its work is lost
        continue_random_sequence(study)
        return study

    def _candidate(
        self, study: optuna.Study, evaluate: Evaluator, ledger: Ledger, proposal: Proposal | None = None
    ) -> FrozenTrial:
        started = time.perf_counter()
        if proposal is not None:
            study.enqueue_trial(proposal.params, user_attrs=proposal.attrs)
        chosen = proposal.cost if proposal else Cost()
        trial = study.ask()

        def checkpoint(point: Checkpoint) -> None:
            # Stored as it goes, in one write: a kill leaves the work done so far on the trial.
            spent = Cost(time.perf_counter() - started, point.cost.train_samples, point.cost.eval_samples) + chosen
            trial.set_user_attr(PARTIAL_COST, asdict(spent))
            if self.prunes:
                trial.report(point.score, point.resource)
                if not point.final and trial.should_prune():
                    raise StopTraining(f"pruned after {point.resource} checkpoints")

        try:
            genotype = suggest_genotype(trial, self.options.space, self.options.tune_betas)
            fingerprint = genotype.fingerprint()
            trial.set_user_attr("genotype", genotype.to_dict())
            trial.set_user_attr("formula", genotype.formula())
            trial.set_user_attr("fingerprint", fingerprint)
            known = ledger.cache.get(fingerprint)
            if known is not None:
                # A function already evaluated is not trained again: it costs no training. A pruned one
                # is not given a second chance either; its partial scores stand.
                value, status, cost = known.value, "duplicate", Cost()
                trial.set_user_attr("duplicate_of", known.number)
                for step, score in known.intermediate_values.items():
                    trial.report(score, step)
            else:
                evaluation = evaluate(genotype, checkpoint)
                value, status, cost = evaluation.score, evaluation.status, evaluation.cost
                if evaluation.message:
                    trial.set_user_attr("message", evaluation.message)
                if self.prunes:
                    trial.set_user_attr("resource", evaluation.resource)
            trial.set_user_attr("status", status)
            trial.set_user_attr("wall_seconds", time.perf_counter() - started + chosen.wall_seconds)
            trial.set_user_attr("train_samples", cost.train_samples + chosen.train_samples)
            trial.set_user_attr("eval_samples", cost.eval_samples + chosen.eval_samples)
            if status == "pruned" or (known is not None and known.state == TrialState.PRUNED):
                return study.tell(trial, state=TrialState.PRUNED)
            return study.tell(trial, value)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise


class Ledger:
    """A study's trials folded, in order, into the anytime trace, the spending, the incumbent and the cache.

    A pruned candidate costs what it ran, enters the cache (a function proposed again is not
    retrained: its partial score stands) and never becomes the incumbent, since its score comes
    from a shorter training than the others'. A candidate a kill interrupted (``FAIL``) costs what
    it had stored at its last checkpoint (:data:`PARTIAL_COST`) and adds no trace row.

    A trial that carries a ``predicted_score`` (a model-based search's prediction, made before it
    was trained) adds it to its trace row, with the Spearman rank correlation of the predicted and
    measured scores of every such trial so far: the surrogate's own quality as evaluations accumulate.
    """

    def __init__(self, task: Task, samples_per_epoch: int):
        self.task, self.samples_per_epoch = task, samples_per_epoch
        self.cost = Cost()
        self.trace: list[dict] = []
        self.trials: list[FrozenTrial] = []  # the completed and pruned ones, in order
        self.cache: dict[str, FrozenTrial] = {}
        self.predictions: list[tuple[float, float]] = []
        self.best: FrozenTrial | None = None
        self.counts = {"candidates": 0, "trained": 0, "duplicates": 0, "diverged": 0, "pruned": 0, "interrupted": 0}
        self.pruned_at: dict[str, int] = {}  # pruned candidates by the checkpoints they ran
        self.duplicate_streak = 0

    @property
    def spent(self) -> dict[str, float]:
        return spending(self.cost, self.samples_per_epoch)

    def add(self, trial: FrozenTrial) -> dict | None:
        """Account for a stored trial; its trace row, or None for a candidate a kill interrupted
        (counted, but not part of the trace: a resumed search must trace as an uninterrupted one)."""
        attrs = trial.user_attrs
        if trial.state == TrialState.FAIL:
            self.cost += Cost(**attrs.get(PARTIAL_COST, {}))
            self.counts["interrupted"] += 1
            return None
        status = attrs["status"]
        self.trials.append(trial)
        self.cost += Cost(attrs["wall_seconds"], attrs["train_samples"], attrs["eval_samples"])
        self.counts["candidates"] += 1
        if status == "duplicate":
            self.counts["duplicates"] += 1
            self.duplicate_streak += 1
        else:
            self.counts["trained"] += 1
            self.counts["diverged"] += status == "diverged"
            self.cache[attrs["fingerprint"]] = trial
            self.duplicate_streak = 0
            if status == "ok" and improves(self.task.metric, trial.value, self.best.value if self.best else None):
                self.best = trial
        if status == "pruned":
            self.counts["pruned"] += 1
            self.pruned_at[str(attrs["resource"])] = self.pruned_at.get(str(attrs["resource"]), 0) + 1
        score = None if status == "diverged" else trial.value
        extra = {"trial": trial.number, "fingerprint": attrs.get("fingerprint")}
        if "resource" in attrs:
            extra["resource"] = attrs["resource"]
        if "duplicate_of" in attrs:
            extra["duplicate_of"] = attrs["duplicate_of"]
        if attrs.get("predicted_score") is not None:
            extra.update(self._prediction(attrs["predicted_score"], score))
        row = trace_row(
            len(self.trace), status, score, self.best.value if self.best else None, self.spent, attrs.get("formula"),
            **extra,
        )
        self.trace.append(row)
        return row

    def _prediction(self, predicted: float, measured: float | None) -> dict:
        if measured is not None:
            self.predictions.append((predicted, measured))
        correlation = None
        if len(self.predictions) >= 3:
            from scipy.stats import spearmanr  # half a second to import, and only the surrogate needs it

            value = spearmanr(*zip(*self.predictions, strict=True)).statistic
            correlation = float(value) if value == value else None  # constant scores: undefined
        return {"predicted_score": predicted, "surrogate_spearman": correlation}

    def outcome(self, searcher: BlackBoxSearcher, budget: Budget, stop: str, study_name: str) -> SearchOutcome:
        counts = self.counts
        pruned = f", {counts['pruned']} pruned" if searcher.prunes else ""
        summary = (
            f"stopped as {stop}: {counts['candidates']} candidates, {counts['trained']} distinct functions trained "
            f"({counts['diverged']} diverged{pruned}), {counts['duplicates']} duplicates"
        )
        best = self.best
        return SearchOutcome(
            method=searcher.method,
            genotype=Genotype.from_dict(best.user_attrs["genotype"]) if best else None,
            status="ok" if best else "diverged",
            message=summary if best else f"no candidate trained without diverging; {summary}",
            best_score=best.value if best else self.task.metric.worst,
            betas=BETA_POLICIES[searcher.options.tune_betas],
            trace=self.trace,
            cost=Cost(self.cost.wall_seconds, self.cost.train_samples, self.cost.eval_samples),
            budget=budget,
            config=searcher.config,
            details={
                "best_trial": best.number if best else None,
                "evaluations": {**counts, **({"pruned_at": dict(self.pruned_at)} if searcher.prunes else {})},
                "study": {"storage": STUDY_FILE, "name": study_name},
                "per_layer": searcher.learnable_betas,
                **(searcher.describe(self.task) if searcher.describe else {}),
            },
            scored_on="last 25 % of the training split, after the proxy training",
        )


def continue_random_sequence(study: optuna.Study) -> None:
    """Put a reopened study's ``RandomSampler`` where an uninterrupted search's stands.

    Optuna's random sampler restarts its sequence when a study is reopened (a resumed search, or a
    larger budget continuing a smaller one's study), so it would propose the study's first
    candidates again. Drawing once more for every finished candidate it proposed (enqueued proposals
    excepted) replays its state: the next candidate is the one an uninterrupted search would draw.
    """
    sampler = study.sampler
    if not isinstance(sampler, RandomSampler):
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if "fixed_params" in trial.system_attrs:
            continue
        for name, distribution in trial.distributions.items():
            sampler.sample_independent(study, trial, name, distribution)


def study_storage(path: Path) -> optuna.storages.RDBStorage:
    """The study's SQLite file, written without fsync: a killed search loses no finished trial (the
    operating system holds the writes), and the measured seconds carry no disk waits (5x the
    storage time otherwise). Only a crash of the machine itself could lose the last trials."""
    path = path.resolve()

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, check_same_thread=False)
        connection.execute("PRAGMA synchronous=OFF")
        return connection

    return optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"creator": connect})


@contextlib.contextmanager
def _exclusive(lock: Path, out: Path) -> Iterator[None]:
    """One process per run folder: a second one would fail the first one's running trial."""
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another process is searching in {out}; wait for it or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def random_search(method: str, options: BlackBoxOptions) -> BlackBoxSearcher:
    return BlackBoxSearcher(method, options, lambda seed: RandomSampler(seed=seed))


def tpe_search(method: str, options: BlackBoxOptions) -> BlackBoxSearcher:
    return BlackBoxSearcher(method, options, lambda seed: TPESampler(seed=seed))


def evolution_search(method: str, options: EvolutionOptions) -> BlackBoxSearcher:
    """NSGA-II as a single-objective genetic algorithm: uniform crossover, resampling mutation."""
    return BlackBoxSearcher(method, options, lambda seed: NSGAIISampler(population_size=options.population, seed=seed))
