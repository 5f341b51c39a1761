"""Black-box baselines, budgets and the common search interface.

Real proxy trainings run on a tiny synthetic signal task (200 training signals, one short epoch
per candidate); properties of the loop that do not need training use a deterministic fake score.
"""

import hashlib
import json
import math
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from baselines.fixed import fixed_genotype
from baselines.options import ProxyConfig
from baselines.proxy import Evaluation
from baselines.regularized_evolution import MUTATIONS, SUBTREES, mutate, random_genotype
from baselines.space import distributions, genotype_params
from bench.budget import Budget, matched_budget
from bench.cli import main
from bench.data.base import ClassificationData
from bench.methods import METHODS, create_searcher
from bench.outputs import save_search_outcome
from bench.tasks import get_task
from grafs.cost import Cost
from grafs.errors import UserError
from grafs.genotype import Genotype
from grafs.ops import SLOTS, slot_candidates

BLACK_BOX = ("random", "evolution", "regularized-evolution", "tpe")
SMALL_POPULATIONS = {"evolution": {"population": 6}, "regularized-evolution": {"population": 6, "sample_size": 3}}
PER_CANDIDATE = 200  # sample passes of one tiny proxy training: 150 training + 50 scoring signals


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest, and least disturbed by other processes, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_data() -> ClassificationData:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 1, 40, generator=generator)
    y = 2 * (x[:, 0, :20].sum(1) > 0).long() + (x[:, 0, 20:].abs().mean(1) > 0.8).long()
    train, val, test = ((x[part], y[part]) for part in (slice(0, 200), slice(200, 300), slice(300, 400)))
    return ClassificationData("tiny", *train, *val, *test, 4, (0.0,), (1.0,))


def tiny_task():
    task = get_task("mnist1d-resnet1d")
    return replace(task, name="tiny-resnet1d", search=replace(task.search, epochs=1, batch_size=50))


def sample_budget(candidates: float) -> Budget:
    return Budget("sample_passes", sample_passes=candidates * PER_CANDIDATE)


class FakeScore:
    """A deterministic score per function; every tenth function diverges. Counts its trainings.
    It has no checkpoints to report."""

    description = {"fake": True}

    def __init__(self):
        self.trained: list[str] = []

    def __call__(self, genotype: Genotype, on_checkpoint=None) -> Evaluation:
        fingerprint = genotype.fingerprint()
        self.trained.append(fingerprint)
        value = int(hashlib.sha256(fingerprint.encode()).hexdigest()[:8], 16) / 2**32
        if value < 0.1:
            return Evaluation(-math.inf, "diverged", Cost(0.0, 50, 0), "non-finite training loss")
        return Evaluation(value, "ok", Cost(0.0, 150, 50))


def searcher(method: str, **options):
    return create_searcher(method, **{"proxy_fraction": 1.0, **SMALL_POPULATIONS.get(method, {}), **options})


# ----------------------------------------------------------------------------------------------
# Proposals
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", BLACK_BOX)
def test_same_seed_proposes_the_same_sequence_of_genotypes(method, tmp_path):
    def proposals(seed: int, folder: str) -> list[str]:
        outcome = searcher(method).run(tiny_task(), seed, sample_budget(14), FakeScore(), tmp_path / folder, 200)
        return [row["fingerprint"] for row in outcome.trace]

    first = proposals(0, "a")
    assert len(first) >= 14
    assert proposals(0, "b") == first
    assert proposals(1, "c") != first


def test_a_reopened_random_study_continues_its_sequence(tmp_path):
    """A larger budget (or a resume) continuing a random search draws what one uninterrupted search draws,
    instead of proposing the study's first candidates again."""
    def fingerprints(budget: float, folder: str) -> list[str]:
        outcome = searcher("random").run(tiny_task(), 0, sample_budget(budget), FakeScore(), tmp_path / folder, 200)
        return [row["fingerprint"] for row in outcome.trace]

    whole = fingerprints(10, "whole")
    first = fingerprints(4, "parts")
    assert fingerprints(10, "parts") == whole and whole[: len(first)] == first


@pytest.mark.parametrize("tune_betas", [False, True])
def test_mutations_stay_in_the_space(tune_betas):
    space = distributions(tune_betas=tune_betas)
    rng = np.random.default_rng(0)
    for _ in range(200):
        parent = random_genotype(rng, tune_betas=tune_betas)
        for kind in (*MUTATIONS, None):
            child = mutate(parent, rng, tune_betas=tune_betas, kind=kind)
            for name, value in genotype_params(child, tune_betas).items():
                assert space[name]._contains(space[name].to_internal_repr(value)), (name, value)
            if not tune_betas:
                assert child == Genotype.from_ops(child.ops)  # betas stay at their initial means
            changed = [slot for slot, a, b in zip(SLOTS, parent.ops, child.ops, strict=True) if a != b]
            if kind in ("change", "neighbour"):
                assert len(changed) == 1
            if kind == "neighbour":
                names = [op.name for op in slot_candidates(changed[0])]
                index = SLOTS.index(changed[0])
                step = names.index(child.ops[index]) - names.index(parent.ops[index])
                assert step % len(names) in (1, len(names) - 1)
            if kind == "regenerate":
                assert any(set(changed) <= set(subtree) for subtree in SUBTREES.values())


def test_the_proxy_recipe_is_a_fifth_of_the_search_recipe():
    resnet, gpt = get_task("mnist1d-resnet1d"), get_task("pydoc-gpt")
    assert resnet.search.epochs == 50 and gpt.search.iterations == 300
    assert ProxyConfig().recipe(resnet) == replace(resnet.search, epochs=10)
    proxy = ProxyConfig().recipe(gpt)
    assert (proxy.iterations, proxy.warmup_iterations, proxy.eval_interval) == (60, 6, 0)
    assert ProxyConfig(epochs=1).recipe(resnet).epochs == 1
    with pytest.raises(UserError, match="fraction"):
        ProxyConfig(fraction=1.5)


# ----------------------------------------------------------------------------------------------
# Budgets, traces and deduplication with real proxy trainings
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [sample_budget(4.5), Budget("seconds", seconds=1.0)])
def test_budget_is_respected_up_to_one_candidate_and_the_trace_is_monotone(budget, tmp_path):
    task, data = tiny_task(), tiny_data()
    outcome = searcher("random").search(task, 0, budget, data=data, out=tmp_path)
    trace = outcome.trace
    unit = {"seconds": "wall_seconds", "sample_passes": "sample_passes"}[budget.unit]
    spent = [row[unit] for row in trace]
    assert spent[-1] >= budget.limit > (spent[-2] if len(spent) > 1 else 0.0)
    for column in ("wall_seconds", "sample_passes", "epoch_equivalents"):
        values = [row[column] for row in trace]
        assert values == sorted(values) and values[0] >= 0
    incumbents = [row["incumbent_score"] for row in trace if row["incumbent_score"] is not None]
    assert incumbents == sorted(incumbents) and incumbents[-1] == outcome.best_score
    if budget.unit == "sample_passes":
        assert [row["sample_passes"] for row in trace] == [PER_CANDIDATE * (i + 1) for i in range(5)]

    summary = save_search_outcome(outcome, tmp_path, task, data, 0)
    assert summary["budget"]["exhausted"] and 0 <= summary["budget"]["overshoot"] == spent[-1] - budget.limit
    assert summary["cost"]["sample_passes"] == trace[-1]["sample_passes"] and summary["betas"] == "init-mean"
    assert Genotype.load(tmp_path / "genotype.json") == outcome.genotype
    assert json.loads((tmp_path / "trace.json").read_text())[-1]["step"] == len(trace) - 1
    assert (tmp_path / "trace.csv").read_text().count("\n") == len(trace) + 1
    assert (tmp_path / "activation.png").stat().st_size > 0
    assert optuna.load_study(study_name="random-tiny-resnet1d-s0", storage=f"sqlite:///{tmp_path / 'study.db'}").trials


def test_a_duplicate_function_is_not_trained_twice(tmp_path):
    relu = ("relu", "identity", "left", "identity", "identity", "left")
    also_relu = ("identity", "relu", "right", "identity", "identity", "left")  # other cell, same function
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="random-tiny-resnet1d-s0", direction="maximize"
    )
    for ops in (relu, relu, also_relu):
        study.enqueue_trial(dict(zip(SLOTS, ops, strict=True)))
    score = FakeScore()
    outcome = searcher("random").run(tiny_task(), 0, sample_budget(3), score, tmp_path, 200)
    assert len(score.trained) == len(set(score.trained)) == 3
    first, second, third = outcome.trace[:3]
    assert first["status"] == "ok" and second["status"] == third["status"] == "duplicate"
    assert second["duplicate_of"] == third["duplicate_of"] == 0
    assert second["sample_passes"] == third["sample_passes"] == first["sample_passes"]
    assert outcome.details["evaluations"]["duplicates"] == 2


def test_a_killed_search_resumes_its_study_and_ends_like_an_uninterrupted_one(tmp_path):
    script = [sys.executable, __file__, str(tmp_path / "killed")]
    process = subprocess.Popen(script, stdout=subprocess.PIPE, text=True)
    for _ in range(4):  # four candidates stored, then the process dies mid-search
        assert process.stdout.readline()
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    partial = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'killed' / 'study.db'}")
    stored = len(partial.trials)
    assert 4 <= stored

    subprocess.run(script, check=True, capture_output=True)
    resumed = json.loads((tmp_path / "killed" / "result.json").read_text())
    uninterrupted = search_for_resume_test(tmp_path / "whole")
    assert resumed["evaluations"]["trained"] == uninterrupted["evaluations"]["trained"]
    assert resumed["genotype"] == uninterrupted["genotype"]
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'killed' / 'study.db'}")
    assert len(study.trials) > stored  # the same study went on


STUDY = "regularized-evolution-tiny-resnet1d-s0"


def search_for_resume_test(out: Path, progress=None) -> dict:
    task, data = tiny_task(), tiny_data()
    method = searcher("regularized-evolution", population=4, sample_size=2)
    outcome = method.search(task, 0, sample_budget(10), data=data, out=out, progress=progress)
    return save_search_outcome(outcome, out, task, data, 0)


# ----------------------------------------------------------------------------------------------
# GRAFS and fixed activations behind the same interface; budgets matched to GRAFS
# ----------------------------------------------------------------------------------------------
def test_grafs_behind_the_interface_sets_the_matched_budget(tmp_path):
    task, data = tiny_task(), tiny_data()
    task = replace(task, search=replace(task.search, epochs=3))
    outcome = create_searcher("grafs").search(task, 0, None, data=data, out=tmp_path)
    assert [row["step"] for row in outcome.trace] == [record["round"] for record in outcome.history]
    assert outcome.trace and outcome.betas == "learned"
    assert outcome.trace[-1]["sample_passes"] == outcome.cost.sample_passes
    summary = save_search_outcome(outcome, tmp_path, task, data, 0)
    assert {"best_round", "config", "nonfinite", "genotype", "cost"} <= set(summary)
    assert (tmp_path / "history.json").exists()

    budget = matched_budget(task, 0, 4, "epoch_equivalents", grafs_result=tmp_path / "result.json")
    assert budget.limit == pytest.approx(4 * summary["cost"]["epoch_equivalents"])
    assert budget.seconds == pytest.approx(4 * summary["cost"]["wall_seconds"])
    assert budget.sample_passes == 4 * summary["cost"]["sample_passes"]
    with pytest.raises(UserError, match="not GRAFS on mnist1d-resnet1d"):
        matched_budget(get_task("mnist1d-resnet1d"), 0, grafs_result=tmp_path / "result.json")


def test_a_missing_grafs_result_says_which_search_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="grafs-bench search --method grafs --task mnist1d-resnet1d --seed 3"):
        matched_budget(get_task("mnist1d-resnet1d"), 3)


def test_fixed_activations_are_searches_of_zero_cost(tmp_path):
    outcome = create_searcher("gelu").search(tiny_task(), 0, None, data=tiny_data(), out=tmp_path)
    assert outcome.cost.sample_passes == 0 and outcome.cost.wall_seconds == 0 and outcome.trace == []
    x = torch.linspace(-5, 5, 101)
    # The genotype module's fused kernel and PyTorch's GELU agree to float32 rounding.
    torch.testing.assert_close(outcome.genotype.to_module()(x), torch.nn.functional.gelu(x))
    assert fixed_genotype("relu").formula() == "ReLU(x)"
    assert {"grafs", "random", "evolution", "regularized-evolution", "tpe", "relu"} <= set(METHODS)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "random", "--population", "8", "--budget-seconds", "5"], "'population' does not apply"),
        (["--method", "grafs", "--budget-seconds", "5"], "GRAFS"),
        (["--method", "tpe", "--budget-seconds", "0"], "positive"),
        (["--method", "random", "--budget-seconds", "5", "--budget-unit", "sample_passes"], "--budget-seconds"),
        (["--method", "random", "--no-shrinking", "--budget-seconds", "5"], "'shrinking' does not apply"),
        (["--method", "annealing"], "unknown search method 'annealing'"),
        (["--method", "random", "--budget-unit", "furlongs"], "unknown budget unit 'furlongs'"),
    ],
)
def test_search_command_refuses_bad_combinations_in_one_line(args, message, capsys):
    try:
        status = main(["search", "--task", "mnist1d-resnet1d", *args])
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and message in error[0], error


if __name__ == "__main__":  # the process the resume test kills: one line per finished candidate
    torch.set_num_threads(1)  # as the fixture sets it for the tests
    search_for_resume_test(Path(sys.argv[1]), progress=lambda row: print(row["step"], flush=True))
