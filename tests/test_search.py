import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from grafs.cell import SearchCell
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

    def build_model(self, activation):
        return nn.Sequential(nn.Linear(8, 16), activation(), nn.Linear(16, 16), activation(), nn.Linear(16, 2))

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
