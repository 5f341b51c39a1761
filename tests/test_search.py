import copy
import math
from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from bench.search_task import TaskSearch
from bench.tasks import get_task
from bench.training import load_task_data, make_optimizer
from grafs.cell import SearchCell
from grafs.errors import UserError
from grafs.genotype import Genotype
from grafs.search import BilevelSearch, SearchConfig, search, shrink_schedule

TEST_VECTOR = {
    2: 19,
    3: 11,
    4: 7,
    5: 6,
    6: 5,
    7: 4,
    8: 4,
    9: 3,
    10: 3,
    11: 2,
    12: 3,
    13: 2,
    14: 2,
    15: 2,
    16: 1,
    17: 2,
    18: 1,
    19: 2,
    20: 1,
    21: 2,
}
TEST_VECTOR.update({epoch: 1 for epoch in range(22, 34)})
TEST_VECTOR.update({epoch: 1 for epoch in (35, 36, 37, 39, 40, 42, 43, 45, 47, 48)})


def test_shrinking_schedule_equals_the_reference_test_vector():
    schedule = shrink_schedule(50, 2, 110)
    assert schedule == TEST_VECTOR
    assert sum(schedule.values()) == 104


def test_drops_follow_the_schedule_to_nine_ops_per_slot_in_epoch_8_and_one_at_48():
    cell = SearchCell()
    schedule = shrink_schedule(50, 2, 110)
    for epoch in range(0, 9):
        for _ in range(schedule.get(epoch, 0)):
            cell.drop()
    assert cell.active_counts() == [9] * 6
    for epoch in range(9, 49):
        for _ in range(schedule.get(epoch, 0)):
            cell.drop()
    assert cell.active_counts() == [1] * 6


def test_a_drop_takes_the_fullest_slot_and_its_smallest_alpha():
    cell = SearchCell()
    with torch.no_grad():
        for index in range(6):
            cell.alphas[index].copy_(torch.linspace(1, 2, len(cell.alphas[index])))
        cell.alphas[1][5] = -1.0
    cell.drop()  # u0 and u1 tie at 23 ops; the first in slot order is u0, its smallest alpha is op 0
    assert cell.active_counts() == [22, 23, 9, 23, 23, 9]
    assert "identity" not in cell.active_ops(0)
    cell.drop()
    assert cell.active_counts() == [22, 22, 9, 23, 23, 9]
    assert "sqrt" not in cell.active_ops(1) and "identity" in cell.active_ops(1)


# ----------------------------------------------------------------------------------------------
# A toy task: a small MLP on a fixed random regression-as-classification problem
# ----------------------------------------------------------------------------------------------
@dataclass
class ToyBatch:
    inputs: torch.Tensor
    targets: torch.Tensor

    @property
    def size(self) -> int:
        return len(self.targets)


class ToyTask:
    name = "toy"
    maximize = True
    validate_every = 1
    accumulation = 1
    grad_clip = None

    def __init__(self, rounds=4, batches_per_round=4, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(256, 8, generator=generator)
        self.y = (self.x[:, 0] * self.x[:, 1] > 0).long()
        self.rounds = rounds
        self.batches_per_round = batches_per_round
        self.arch_generator = torch.Generator().manual_seed(seed + 1)
        self.default_calls = 0
        self.arch_override = None

    def build_model(self, make_site):
        return nn.Sequential(
            nn.Linear(8, 16), make_site(self.default_activation()), nn.Linear(16, 16),
            make_site(self.default_activation()), nn.Linear(16, 2),
        )

    def default_activation(self):
        task = self

        class CountingReLU(nn.ReLU):
            def forward(self, x):
                task.default_calls += 1
                return super().forward(x)

        return CountingReLU()

    def weight_optimizer(self, parameters, total_steps):
        optimizer = torch.optim.SGD(parameters, lr=0.05, momentum=0.9)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def steps_per_round(self):
        return self.batches_per_round

    def round_batches(self, round_index):
        for index in range(self.batches_per_round):
            rows = slice(index * 32, index * 32 + 32)
            yield ToyBatch(self.x[rows], self.y[rows])

    def arch_batch(self):
        if self.arch_override is not None:
            return self.arch_override
        rows = torch.randint(128, 256, (32,), generator=self.arch_generator)
        return ToyBatch(self.x[rows], self.y[rows])

    def loss(self, model, batch):
        return nn.functional.cross_entropy(model(batch.inputs), batch.targets)

    def validate(self, model):
        with torch.no_grad():
            accuracy = (model(self.x[128:]).argmax(-1) == self.y[128:]).float().mean()
        return float(accuracy), 128


def test_a_small_search_returns_a_loadable_genotype(tmp_path):
    task = ToyTask(rounds=5)
    result = search(task, seed=0, config=SearchConfig(shrinking=False))
    assert result.status == "ok"
    path = result.genotype.save(tmp_path / "genotype.json")
    assert Genotype.load(path) == result.genotype
    assert len(result.history) == 5 and result.best_round >= 0
    assert result.cost.train_samples == 5 * 4 * 32 * 2
    record = result.history[-1]
    assert set(record["alphas"]) == {"u0", "u1", "b0", "u2", "u3", "b1"}
    assert math.isclose(sum(record["alphas"]["u0"].values()), 1.0, rel_tol=1e-5)


def test_search_with_shrinking_ends_when_one_op_is_left_per_slot():
    task = ToyTask(rounds=8, batches_per_round=1)
    result = search(task, seed=0, config=SearchConfig(start_shrinking=2))
    assert result.history[-1]["active_counts"] == [1] * 6 or len(result.history) < 8
    assert result.status == "ok"


def test_warmstart_weight_steps_use_the_default_activation():
    task = ToyTask(rounds=2)
    run = BilevelSearch(task, SearchConfig(shrinking=False, warmstart_rounds=1), torch.device("cpu"))
    batch = next(task.round_batches(0))
    task.default_calls = 0
    run.arch_backward()
    assert task.default_calls == 0  # the architecture step runs through the mixture
    run.weight_backward(batch, warm=True)
    assert task.default_calls == 2  # both sites used the default activation
    run.weight_backward(batch, warm=False)
    assert task.default_calls == 2


@pytest.mark.parametrize("mode, depends", [("fixed", False), ("reference", True)])
def test_weight_update_depends_on_the_validation_batch_only_in_reference_mode(mode, depends):
    def weights_after_one_step(arch_seed):
        torch.manual_seed(0)
        task = ToyTask()
        # With a zero architecture learning rate the cell is the same in both runs, so any
        # difference in the weights comes from the validation batch leaking into the weight step.
        config = SearchConfig(mode=mode, shrinking=False, warmstart=False, arch_lr=0.0)
        run = BilevelSearch(task, config, torch.device("cpu"))
        generator = torch.Generator().manual_seed(arch_seed)
        rows = torch.randint(128, 256, (32,), generator=generator)
        task.arch_override = ToyBatch(task.x[rows], task.y[rows])
        torch.manual_seed(1)  # the same Dirichlet samples in both runs
        run.arch_backward()
        run.arch_update()
        torch.manual_seed(2)
        run.weight_backward(next(task.round_batches(0)), warm=False)
        run.weight_update()
        return torch.cat([p.detach().flatten() for p in run.weights])

    different = not torch.allclose(weights_after_one_step(10), weights_after_one_step(11))
    assert different == depends


def test_non_finite_values_are_repaired_counted_and_never_crash():
    task = ToyTask(rounds=3)
    run = BilevelSearch(task, SearchConfig(shrinking=False), torch.device("cpu"))
    with torch.no_grad():
        run.cell.alphas[0][0] = float("nan")
        run.cell.alphas[2][1] = float("inf")
    original_loss = task.loss
    calls = {"n": 0}

    def sometimes_nan(model, batch):
        calls["n"] += 1
        loss = original_loss(model, batch)
        return loss * float("nan") if calls["n"] % 5 == 0 else loss

    task.loss = sometimes_nan
    result = run.run()
    assert result.status == "ok"
    assert result.nonfinite["cell_repairs"] > 0
    assert sum(v for k, v in result.nonfinite.items() if k != "cell_repairs") > 0
    assert Genotype.from_dict(result.genotype.to_dict()) == result.genotype


def test_a_search_that_cannot_recover_ends_as_diverged():
    task = ToyTask(rounds=3)
    task.loss = lambda model, batch: model(batch.inputs).sum() * float("nan")
    result = search(task, seed=0, config=SearchConfig(shrinking=False, max_consecutive_skips=5))
    assert result.status == "diverged" and "non-finite" in result.message


# ----------------------------------------------------------------------------------------------
# Scoring and selection in fixed mode
# ----------------------------------------------------------------------------------------------
class BatchNormToyTask(ToyTask):
    """The toy task on a network with BatchNorm, and fixed training batches for recalibration."""

    def build_model(self, make_site):
        return nn.Sequential(
            nn.Linear(8, 16), nn.BatchNorm1d(16), make_site(self.default_activation()), nn.Linear(16, 16),
            nn.BatchNorm1d(16), make_site(self.default_activation()), nn.Linear(16, 2),
        )

    def calibration_batches(self, count):
        for index in range(count):
            start = index * 16 % 128
            rows = slice(start, start + 16)
            yield ToyBatch(self.x[rows], self.y[rows])

    def validate(self, model):
        was_training = model.training
        model.eval()
        try:
            return super().validate(model)
        finally:
            model.train(was_training)


def trained_search(task, steps=6, **config):
    """A search after a few architecture and weight steps, so optimizers and BN statistics have state."""
    torch.manual_seed(0)
    run = BilevelSearch(task, SearchConfig(shrinking=False, **config), torch.device("cpu"))
    for _, batch in zip(range(steps), task.round_batches(0), strict=False):
        run.arch_backward()
        run.arch_update()
        run.weight_backward(batch, warm=False)
        run.weight_update()
    return run


def search_state(run):
    """Everything a scoring call could disturb, copied."""
    return {
        "model": copy.deepcopy(run.model.state_dict()),
        "cell": copy.deepcopy(run.cell.state_dict()),
        "weight_optimizer": copy.deepcopy(run.weight_step.optimizer.state_dict()),
        "arch_optimizer": copy.deepcopy(run.arch_step.optimizer.state_dict()),
        "momenta": [m.momentum for m in run.model.modules() if isinstance(m, nn.BatchNorm1d)],
        "training": run.model.training,
        "rng": torch.get_rng_state(),
        "arch_stream": run.task.arch_generator.get_state(),
    }


def assert_identical(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_identical(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_identical(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


def test_scoring_with_batch_norm_recalibration_leaves_the_search_state_bit_identical():
    run = trained_search(BatchNormToyTask())
    before = search_state(run)
    assert before["model"]["1.num_batches_tracked"] > 0
    score, scored = run.validation_score(warm=False)
    assert "BatchNorm recalibrated on 20 training batches (320 samples)" in scored
    assert_identical(search_state(run), before)
    assert run.cost.eval_samples == 128 + 320  # validation plus the recalibration passes


def test_the_recalibrated_score_is_that_of_a_fresh_network_with_the_genotype_and_the_same_weights():
    task = BatchNormToyTask()
    run = trained_search(task)
    score, _ = run.validation_score(warm=False)
    genotype = run.cell.discretize()
    fresh = task.build_model(genotype.to_module)
    weights = {k: v for k, v in run.model.state_dict().items() if "running" not in k and "num_batches" not in k}
    fresh.load_state_dict(weights, strict=False)  # BatchNorm statistics start fresh
    with torch.no_grad():
        for norm in (m for m in fresh.modules() if isinstance(m, nn.BatchNorm1d)):
            norm.momentum = None
        fresh.train()
        for batch in task.calibration_batches(20):
            fresh(batch.inputs)
    fresh.eval()
    assert score == task.validate(fresh)[0]
    # Without recalibration the mixture's statistics would score the cell differently.
    stale = task.build_model(genotype.to_module)
    stale.load_state_dict(run.model.state_dict(), strict=False)
    stale.eval()
    with torch.no_grad():
        assert not torch.equal(stale(task.x[128:]), fresh(task.x[128:]))


def test_an_extra_scoring_call_does_not_change_the_search_trajectory():
    def history(extra_scoring):
        torch.manual_seed(0)
        run = BilevelSearch(BatchNormToyTask(rounds=4), SearchConfig(shrinking=False), torch.device("cpu"))
        result = run.run(progress=(lambda record: run.validation_score(False)) if extra_scoring else None)
        return [{k: r[k] for k in ("val_score", "alphas", "genotype", "train_loss")} for r in result.history], (
            run.model.state_dict()
        )

    plain, plain_state = history(False)
    scored, scored_state = history(True)
    assert plain == scored
    assert_identical(plain_state, scored_state)


def test_networks_without_batch_norm_are_scored_without_recalibration():
    run = trained_search(ToyTask())
    _, scored = run.validation_score(warm=False)
    assert scored == "discretized cell (no BatchNorm)"
    assert run.cost.eval_samples == 128


class DecliningScoreTask(ToyTask):
    """Validation scores fall round after round, so the warmstart round scores best."""

    def __init__(self):
        super().__init__(rounds=4)
        self.validations = 0

    def validate(self, model):
        self.validations += 1
        return 1.0 - 0.1 * self.validations, 128


@pytest.mark.parametrize("mode, best_round", [("fixed", 1), ("reference", 0)])
def test_warmstart_rounds_are_never_selected_in_fixed_mode(mode, best_round):
    result = search(DecliningScoreTask(), seed=0, config=SearchConfig(mode=mode, shrinking=False, warmstart_rounds=1))
    assert result.best_round == best_round
    assert [r["selectable"] for r in result.history] == [mode == "reference", True, True, True]
    assert result.history[0]["scored"] == ("default activation (warmstart)" if mode == "reference" else
                                           "discretized cell (no BatchNorm)")


def test_a_fixed_mode_search_with_only_warmstart_rounds_is_refused():
    with pytest.raises(UserError, match="all warmstart rounds"):
        search(ToyTask(rounds=1), seed=0, config=SearchConfig(shrinking=False, warmstart_rounds=1))


def test_the_history_shows_the_leading_expected_weight_against_uniform():
    result = search(ToyTask(rounds=3), seed=0, config=SearchConfig(shrinking=False, arch_lr=0.05))
    leading = result.history[-1]["leading"]
    assert leading["u0"]["uniform"] == round(1 / 23, 6) and leading["b0"]["uniform"] == round(1 / 9, 6)
    alphas = result.history[-1]["alphas"]["u0"]
    assert leading["u0"]["weight"] == max(alphas.values()) and alphas[leading["u0"]["op"]] == leading["u0"]["weight"]


# ----------------------------------------------------------------------------------------------
# Gradient accumulation
# ----------------------------------------------------------------------------------------------
class AccumulatingToyTask(ToyTask):
    accumulation = 2


def test_architecture_steps_follow_the_accumulation_rule():
    task = AccumulatingToyTask(rounds=3, batches_per_round=5)
    run = BilevelSearch(task, SearchConfig(shrinking=False, warmstart=False), torch.device("cpu"))
    adam_steps = []
    run.arch_step.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: adam_steps.append(1))
    result = run.run()
    # ceil(5 / 2) = 3 steps per round: two full groups and the round's last micro-batch.
    assert [r["arch_steps"] for r in result.history] == [3, 6, 9]
    assert len(adam_steps) == 9
    assert run.weight_step.scheduler.last_epoch == 9  # as many weight steps
    assert result.cost.train_samples == 3 * 5 * 32 * 2  # one architecture micro-batch per weight micro-batch


def test_accumulated_architecture_gradient_is_the_mean_over_its_micro_batches():
    def gradient(micro_batches):
        torch.manual_seed(0)
        task = AccumulatingToyTask()
        task.accumulation = len(micro_batches)
        run = BilevelSearch(task, SearchConfig(shrinking=False, warmstart=False), torch.device("cpu"))
        with torch.no_grad():
            for parameter in run.arch_params:
                parameter.fill_(0.5)
        total = []
        for batch in micro_batches:
            task.arch_override = batch
            torch.manual_seed(3)  # the same Dirichlet sample for every micro-batch
            run.arch_backward()
        total = torch.cat([p.grad.flatten() for p in run.arch_params])
        return total

    task = ToyTask()
    first, second = ToyBatch(task.x[128:160], task.y[128:160]), ToyBatch(task.x[160:192], task.y[160:192])
    torch.testing.assert_close(gradient([first, second]), (gradient([first]) + gradient([second])) / 2)


# ----------------------------------------------------------------------------------------------
# The tasks' search settings
# ----------------------------------------------------------------------------------------------
def test_the_gpt_paper_recipes_hold_640_sequences_per_step_with_the_reference_adamw_betas():
    task = get_task("tinystories-gpt-mini")
    for recipe in (task.search, task.recipe):
        assert recipe.batch_size * recipe.accumulation == 640
        optimizer = make_optimizer(nn.Linear(2, 2).parameters(), recipe)
        assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.99)
    assert task.search.warmup_iterations == 0 and task.recipe.warmup_iterations == 100


def test_an_iterative_search_round_is_one_step_over_the_recipe_accumulation():
    task = get_task("pydoc-gpt")
    task = replace(task, search=replace(task.search, accumulation=3))
    adapted = TaskSearch(task, load_task_data(task), seed=0, device=torch.device("cpu"))
    assert adapted.steps_per_round() == 1 and len(list(adapted.round_batches(0))) == 3


# cpu task -> paper counterpart, and the images the paper's search splits 75 / 25 (CIFAR: 50,000)
COUNTERPARTS = {
    "mnist1d-resnet1d": "cifar10-resnet20",
    "digits-vit": "cifar10-vit-tiny",
    "pydoc-gpt": "tinystories-gpt-mini",
}
PAPER_SEARCH_IMAGES = 37_500


def architecture_movement(task, steps_per_round: int) -> float:
    """arch_lr x architecture steps of a search that runs until the last drop."""
    trained_rounds = max(shrink_schedule(task.search.length, task.grafs.start_shrinking))
    return task.grafs.arch_lr * trained_rounds * steps_per_round


@pytest.mark.parametrize("name", sorted(COUNTERPARTS))
def test_cpu_searches_keep_their_paper_counterparts_architecture_movement_and_shape(name):
    task, paper = get_task(name), get_task(COUNTERPARTS[name])
    steps = TaskSearch(task, load_task_data(task), seed=0, device=torch.device("cpu")).steps_per_round()
    if paper.search.is_iterative:
        paper_steps = 1
    else:
        paper_steps = math.ceil(math.ceil(PAPER_SEARCH_IMAGES / paper.search.batch_size) / paper.search.accumulation)
    assert architecture_movement(task, steps) == pytest.approx(architecture_movement(paper, paper_steps), rel=0.01)
    share = task.search.length / paper.search.length
    assert task.grafs.start_shrinking == round(paper.grafs.start_shrinking * share)
    assert abs(task.grafs.warmstart - paper.grafs.warmstart * share) <= 1
