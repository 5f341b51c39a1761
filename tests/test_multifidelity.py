"""Multi-fidelity baselines (asha, bohb) and honest resumes, with real studies and real tiny trainings.

One checkpoint of the tiny signal task of ``test_baselines`` (one epoch on 150 training signals,
then scoring the 50 held-out ones) is exactly ``PER_CANDIDATE`` sample passes, so a candidate's
charge in sample passes says how many checkpoints it ran.
"""

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from test_baselines import PER_CANDIDATE, one_thread, sample_budget, tiny_data, tiny_task  # noqa: F401

from baselines.blackbox import PARTIAL_COST
from baselines.options import MultiFidelityOptions
from bench.budget import Budget
from bench.campaign import load_campaign
from bench.cli import main
from bench.methods import create_searcher
from bench.outputs import save_search_outcome
from bench.tasks import get_task
from bench.training import StopTraining, train
from grafs.cost import Cost
from grafs.errors import UserError
from grafs.genotype import Genotype
from grafs.ops import SLOTS

PER_CHECKPOINT = PER_CANDIDATE
MULTI_FIDELITY = ("asha", "bohb")
LONGEST = 4  # max_resource of the tests: candidates train up to 4 checkpoints


def search(method: str, out: Path, budget: Budget, seed: int = 0) -> dict:
    """The search's result.json, with its trace and its folder."""
    task, data = tiny_task(), tiny_data()
    options = {"max_resource": LONGEST} if method in MULTI_FIDELITY else {"proxy_epochs": LONGEST}
    outcome = create_searcher(method, **options).search(task, seed, budget, data=data, out=out)
    return {**save_search_outcome(outcome, out, task, data, seed), "trace": outcome.trace, "out": out}


def study_of(result: dict) -> optuna.Study:
    return optuna.load_study(study_name=result["study"]["name"], storage=f"sqlite:///{result['out'] / 'study.db'}")


def increments(trace: list[dict]) -> list[float]:
    """The sample passes each candidate added."""
    spent = [row["sample_passes"] for row in trace]
    return [after - before for before, after in zip([0, *spent[:-1]], spent, strict=True)]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> dict[str, dict]:
    """One asha and one bohb search of 10 checkpoints' worth of sample passes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("multifidelity")
    results = {method: search(method, folder / method, sample_budget(10)) for method in MULTI_FIDELITY}
    torch.set_num_threads(threads)
    return results


@pytest.mark.parametrize("method", MULTI_FIDELITY)
def test_weak_candidates_are_pruned_and_charged_only_for_what_they_ran(method, searched):
    result = searched[method]
    trace, evaluations = result["trace"], result["evaluations"]
    pruned = [row for row in trace if row["status"] == "pruned"]
    assert pruned, "no candidate was pruned"
    best = None
    for row, spent in zip(trace, increments(trace), strict=True):
        if row["status"] == "duplicate":
            assert spent == 0
            continue
        assert spent == row["resource"] * PER_CHECKPOINT  # every checkpoint it ran, and no more
        if row["status"] == "pruned":
            assert row["resource"] < LONGEST
        else:
            assert row["resource"] == LONGEST
            best = row["score"] if best is None else max(best, row["score"])
        assert row["incumbent_score"] == best  # a pruned candidate's shorter training never leads
    assert evaluations["pruned"] == len(pruned)
    resources = [row["resource"] for row in pruned]
    assert evaluations["pruned_at"] == {str(resource): resources.count(resource) for resource in set(resources)}
    assert result["fidelity"]["max_resource"] == LONGEST and result["fidelity"]["unit"] == "epochs"

    study = study_of(result)
    for row in trace:
        trial = study.trials[row["trial"]]
        if row["status"] == "pruned":
            assert trial.state == TrialState.PRUNED and trial.value == row["score"]
            assert max(trial.intermediate_values) == row["resource"]
        elif row["status"] == "ok":
            assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [1, 2, 3, 4]
    assert study.trials[result["best_trial"]].state == TrialState.COMPLETE


@pytest.mark.parametrize("method", MULTI_FIDELITY)
def test_the_budget_holds_up_to_one_candidate(method, searched, tmp_path):
    for result, unit, column in (
        (searched[method], "sample_passes", "sample_passes"),
        (search(method, tmp_path, Budget("seconds", seconds=1.5)), "seconds", "wall_seconds"),
    ):
        spent = [row[column] for row in result["trace"]]
        limit = result["budget"]["limit"]
        assert result["budget"]["unit"] == unit and spent[-1] >= limit > (spent[-2] if len(spent) > 1 else 0.0)


@pytest.mark.parametrize("method", MULTI_FIDELITY)
def test_the_same_seed_gives_the_same_sequence(method, searched, tmp_path):
    def sequence(result: dict) -> list[tuple]:
        return [(row["fingerprint"], row["status"], row.get("resource")) for row in result["trace"]]

    first = sequence(searched[method])
    again = sequence(search(method, tmp_path / "again", sample_budget(5)))  # a smaller budget: a prefix
    assert len(again) >= 2 and again == first[: len(again)]
    other = sequence(search(method, tmp_path / "other", sample_budget(3), seed=1))
    assert other != first[: len(other)]


def test_a_pruned_function_proposed_again_is_not_retrained(tmp_path):
    relu = ("relu", "identity", "left", "identity", "identity", "left")
    weak = ("beta", "identity", "left", "identity", "identity", "left")  # a constant: learns nothing
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="asha-tiny-resnet1d-s0",
                                direction="maximize")
    for ops in (relu, weak, weak):
        study.enqueue_trial(dict(zip(SLOTS, ops, strict=True)))
    trace = search("asha", tmp_path, sample_budget(6))["trace"]
    first, second, third = trace[:3]
    assert second["status"] == "pruned" and second["resource"] == 1  # worse than ReLU at the first rung
    assert third["status"] == "duplicate" and third["duplicate_of"] == second["trial"]
    assert third["score"] == second["score"] and third["sample_passes"] == second["sample_passes"]
    assert study.trials[third["trial"]].state == TrialState.PRUNED


def test_training_stops_cleanly_when_a_callback_says_so():
    task, data = tiny_task(), tiny_data()
    recipe = MultiFidelityOptions(max_resource=3).recipe(task)

    def stop_after_two(record: dict) -> None:
        if record["epoch"] == 2:
            raise StopTraining("enough")

    result = train(task, lambda: Genotype.from_ops(("relu", "identity", "left", "identity", "identity", "left"))
                   .to_module(), 0, recipe=recipe, data=data, on_epoch=stop_after_two)
    assert result.status == "stopped" and result.message == "enough" and len(result.history) == 2
    assert result.metrics["val_accuracy"] == result.history[-1]["val_accuracy"]
    assert result.cost.train_samples == 2 * len(data.train_y) and result.cost.wall_seconds > 0


def test_resources_default_to_the_plain_proxy_and_bad_ones_are_refused():
    resnet, gpt = get_task("mnist1d-resnet1d"), get_task("pydoc-gpt")
    assert MultiFidelityOptions().recipe(resnet).epochs == 10  # the plain proxy's 20 % of 50 epochs
    assert MultiFidelityOptions(max_resource=12).recipe(resnet).epochs == 12
    assert MultiFidelityOptions(min_resource=4, reduction_factor=3).max_for(resnet) == 12  # one rung above the first
    recipe = MultiFidelityOptions().recipe(gpt)  # 20 % of 300 iterations: about one interval of 50, so one rung above
    assert (recipe.iterations, recipe.eval_interval) == (100, 50)
    for options, message in (
        ({"max_resource": 1}, "must exceed min_resource"),
        ({"reduction_factor": 1}, "at least 2"),
        ({"min_resource": 0}, "at least 1"),
    ):
        with pytest.raises(UserError, match=message):
            MultiFidelityOptions(**options)


def test_command_line_and_campaigns_take_the_methods(capsys):
    assert {"asha", "bohb"} <= {method.method for method in load_campaign("cpu").methods}
    assert main(["list", "methods"]) == 0
    listed = capsys.readouterr().out
    assert "SuccessiveHalvingPruner" in listed and "HyperbandPruner" in listed
    status = main(["search", "--task", "mnist1d-resnet1d", "--method", "random", "--reduction-factor", "3",
                   "--budget-seconds", "5"])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and "'reduction_factor' does not apply" in error[0]


# ----------------------------------------------------------------------------------------------
# Honest resumes: a candidate killed mid-training is charged what it had run
# ----------------------------------------------------------------------------------------------
RESUME_BUDGET = 12  # checkpoints' worth of sample passes


@pytest.mark.parametrize("method", ["asha", "random"])
def test_a_search_killed_mid_candidate_is_charged_its_work_once_after_resuming(method, tmp_path):
    script = [sys.executable, __file__, method, str(tmp_path)]
    process = subprocess.Popen(script)
    interrupted = None
    deadline = time.monotonic() + 300
    while interrupted is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        if running_past_a_checkpoint(tmp_path / "study.db") is None:
            continue
        process.send_signal(signal.SIGSTOP)  # frozen, what it has stored can no longer change: look again
        interrupted = running_past_a_checkpoint(tmp_path / "study.db")
        process.send_signal(signal.SIGKILL if interrupted is not None else signal.SIGCONT)
    process.wait()
    assert interrupted is not None, "the search ended before a candidate could be killed mid-training"

    subprocess.run(script, check=True)
    result = json.loads((tmp_path / "result.json").read_text())
    study = optuna.load_study(study_name=f"{method}-tiny-resnet1d-s0", storage=f"sqlite:///{tmp_path / 'study.db'}")
    killed = study.trials[interrupted]
    assert killed.state == TrialState.FAIL and result["evaluations"]["interrupted"] == 1
    partial = Cost(**killed.user_attrs[PARTIAL_COST]).sample_passes
    assert 0 < partial < LONGEST * PER_CHECKPOINT and partial % PER_CHECKPOINT == 0  # whole checkpoints
    others = [trial for trial in study.trials if trial.number != interrupted]
    finished = [trial.user_attrs["train_samples"] + trial.user_attrs["eval_samples"] for trial in others]
    assert result["cost"]["sample_passes"] == sum(finished) + partial  # the killed candidate's part once, no refund
    limit = RESUME_BUDGET * PER_CHECKPOINT
    assert 0 <= result["cost"]["sample_passes"] - limit < LONGEST * PER_CHECKPOINT  # at most one candidate over


def running_past_a_checkpoint(path: Path) -> int | None:
    """The number of a running trial that has stored its spending at a checkpoint before its last, read without
    writing. A trial that has stored its last checkpoint is still running until the sampler is told its score;
    killed there it was charged a whole candidate, which is no partial charge to test."""
    if not path.exists():
        return None
    query = (
        "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        f"WHERE t.state = 'RUNNING' AND a.key = '{PARTIAL_COST}'"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            rows = connection.execute(query).fetchall()
    except sqlite3.OperationalError:  # the study's tables are still being created, or a write holds the lock
        return None
    return next((number for number, spent in rows
                 if Cost(**json.loads(spent)).sample_passes < LONGEST * PER_CHECKPOINT), None)


if __name__ == "__main__":  # the search the resume test kills, and then resumes
    torch.set_num_threads(1)
    search(sys.argv[1], Path(sys.argv[2]), sample_budget(RESUME_BUDGET))
