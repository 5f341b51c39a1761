from dataclasses import replace

import pytest
import torch
from torch import nn

from bench.data import load_dataset
from bench.tasks import get_task
from bench.training import train

QUICK = {
    "mnist1d-resnet1d": dict(epochs=1),
    "digits-vit": dict(epochs=1),
    "pydoc-gpt": dict(iterations=8, eval_batches=2, eval_interval=4, warmup_iterations=2),
}


def quick_task(name: str):
    task = get_task(name)
    return replace(task, recipe=replace(task.recipe, **QUICK[name]))


@pytest.mark.parametrize("name", sorted(QUICK))
def test_same_seed_gives_identical_metrics(name):
    task = quick_task(name)
    data = load_dataset(task.dataset)
    first = train(task, nn.SiLU, seed=3, data=data)
    second = train(task, nn.SiLU, seed=3, data=data)
    assert first.status == second.status == "ok"
    assert first.metrics == second.metrics
    assert first.cost.train_samples == second.cost.train_samples > 0
    assert 0.0 <= first.metrics["test_accuracy"] <= 1.0
    other = train(task, nn.SiLU, seed=4, data=data)
    assert other.metrics != first.metrics


class Explodes(nn.Module):
    def forward(self, x):
        return x * float("nan")


def test_non_finite_loss_ends_the_run_as_diverged():
    task = quick_task("mnist1d-resnet1d")
    result = train(task, Explodes, seed=0)
    assert result.status == "diverged" and "non-finite" in result.message
    assert all(value != value for value in result.metrics.values())  # NaN, never a fake number


def test_cost_counts_every_training_sample():
    task = quick_task("mnist1d-resnet1d")
    data = load_dataset(task.dataset)
    result = train(task, nn.ReLU, seed=0, data=data)
    assert result.cost.train_samples == len(data.train_y) * task.recipe.epochs
    assert result.cost.eval_samples == len(data.val_y) + len(data.test_y)
    assert result.cost.wall_seconds > 0


@pytest.mark.slow
def test_relu_resnet1d_reaches_85_percent_on_mnist1d():
    task = get_task("mnist1d-resnet1d")
    result = train(task, nn.ReLU, seed=0)
    assert result.metrics["test_accuracy"] >= 0.85, result.metrics


def test_every_registered_task_resolves(tmp_path):
    from bench.tasks import TASKS

    for name in TASKS:
        task = get_task(name)
        assert task.metric.direction in ("max", "min")
        for target in task.transfer:
            assert get_task(target).family == task.family
    torch.manual_seed(0)
