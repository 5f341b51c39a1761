"""Checks that need a CUDA device (``pytest -m gpu``); skipped where there is none."""

import pytest
import torch
from torch import nn

from bench.data import load_dataset
from bench.tasks import get_task
from bench.training import train
from grafs.cell import SearchCell

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_fast_cell_equals_plain_cell_on_cuda():
    torch.manual_seed(0)
    cell = SearchCell().cuda()
    with torch.no_grad():
        for parameter in cell.arch_parameters():
            parameter.normal_(0.0, 0.7)
    x = torch.randn(4, 16, 32, 32, device="cuda")
    results = []
    for fast in (False, True):
        cell.fast = fast
        cell.zero_grad(set_to_none=True)
        inputs = x.clone().requires_grad_()
        torch.manual_seed(1)
        weights, betas, _ = cell.sample()
        output = cell.mixture(inputs, weights, betas)
        output.square().mean().backward()
        results.append([output.detach(), inputs.grad, *(p.grad for p in cell.arch_parameters())])
    for fast, plain in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_training_runs_on_cuda():
    from dataclasses import replace

    task = get_task("digits-vit")
    task = replace(task, recipe=replace(task.recipe, epochs=1))
    result = train(task, nn.GELU, seed=0, device="cuda", data=load_dataset(task.dataset))
    assert result.status == "ok" and result.metrics["test_accuracy"] > 0.2
