"""Model families: sizes, activation sites, and forward/backward with every kind of activation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.models import MODELS, create_model
from grafs.errors import UserError
from grafs.genotype import Genotype

# Per model: builder kwargs, a tiny input batch, the logits' shape and the expected activation sites.
IMAGE = {"input_shape": (3, 32, 32), "num_classes": 10}
DIGITS = {"input_shape": (1, 8, 8), "num_classes": 10}
SIGNAL = {"input_shape": (1, 40), "num_classes": 10}
TEXT = {"vocab_size": 64, "block_size": 16}
CASES = {
    "resnet20": (IMAGE, lambda: torch.randn(2, 3, 32, 32), (2, 10), 19),
    "resnet32": (DIGITS, lambda: torch.randn(2, 1, 8, 8), (2, 10), 31),
    "resnet44": (DIGITS, lambda: torch.randn(2, 1, 8, 8), (2, 10), 43),
    "resnet56": (DIGITS, lambda: torch.randn(2, 1, 8, 8), (2, 10), 55),
    "resnet1d_small": (SIGNAL, lambda: torch.randn(4, 1, 40), (4, 10), 5),
    "resnet1d_large": (SIGNAL, lambda: torch.randn(2, 1, 40), (2, 10), 13),
    "vit_tiny": (IMAGE, lambda: torch.randn(2, 3, 32, 32), (2, 10), 4),
    "vit_small": (IMAGE, lambda: torch.randn(2, 3, 32, 32), (2, 10), 6),
    "vit_micro": ({**DIGITS, "patch": (2, 2)}, lambda: torch.randn(4, 1, 8, 8), (4, 10), 2),
    "vit_mini": ({**DIGITS, "patch": (2, 2)}, lambda: torch.randn(4, 1, 8, 8), (4, 10), 4),
    "gpt_mini": (TEXT, lambda: torch.randint(64, (2, 16)), (2, 16, 64), 3),
    "gpt_tiny": (TEXT, lambda: torch.randint(64, (2, 8)), (2, 8, 64), 6),
    "gpt_small": (TEXT, lambda: torch.randint(64, (2, 8)), (2, 8, 64), 9),
    "gpt_nano": (TEXT, lambda: torch.randint(64, (4, 16)), (4, 16, 64), 2),
    "gpt_micro": (TEXT, lambda: torch.randint(64, (4, 16)), (4, 16, 64), 4),
}

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "random_genotype": Genotype.random(torch.Generator().manual_seed(0)).to_module,
}


class RecordingFactory:
    """An activation factory that keeps every module it hands out."""

    def __init__(self, factory=nn.ReLU):
        self.factory = factory
        self.made: list[nn.Module] = []

    def __call__(self) -> nn.Module:
        module = self.factory()
        self.made.append(module)
        return module


def test_every_registered_model_has_a_case():
    assert set(MODELS.names()) == set(CASES)


def test_cifar_resnets_have_the_standard_sizes():
    # Option-A shortcuts add no parameters; 1x1 projection shortcuts (option B) would give
    # ResNet20 272,474, i.e. 2,752 more.
    sizes = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018}
    for name, expected in sizes.items():
        assert sum(p.numel() for p in create_model(name, nn.ReLU, **IMAGE).parameters()) == expected
    assert abs(sizes["resnet20"] - 270_000) / 270_000 < 0.01


def test_resnet20_has_19_activation_sites():
    factory = RecordingFactory()
    create_model("resnet20", factory, **IMAGE)
    assert len(factory.made) == 19


@pytest.mark.parametrize("name", list(CASES))
def test_each_site_gets_its_own_module_and_runs_once_per_forward(name):
    kwargs, make_input, _, sites = CASES[name]
    factory = RecordingFactory()
    model = create_model(name, factory, **kwargs)
    assert len(factory.made) == sites
    assert len({id(module) for module in factory.made}) == sites
    owned = {id(module) for module in model.modules()}
    assert all(id(module) in owned for module in factory.made)
    calls = {id(module): 0 for module in factory.made}
    for module in factory.made:
        module.register_forward_hook(lambda m, args, out: calls.__setitem__(id(m), calls[id(m)] + 1))
    model(make_input())
    assert set(calls.values()) == {1}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_backward(name, activation):
    torch.manual_seed(0)
    kwargs, make_input, shape, _ = CASES[name]
    model = create_model(name, ACTIVATIONS[activation], **kwargs)
    out = model(make_input())
    assert out.shape == shape
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads
    assert all(torch.isfinite(g).all() for g in grads)


def test_resnet_takes_digits_and_vit_takes_signals():
    assert create_model("resnet20", nn.ReLU, **DIGITS)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    vit = create_model("vit_micro", nn.GELU, **SIGNAL, patch=(1, 4))
    assert vit(torch.randn(3, 1, 40)).shape == (3, 10)


def test_vit_patches_are_row_major_blocks():
    vit = create_model("vit_micro", nn.GELU, input_shape=(2, 4, 6), num_classes=3, patch=(2, 3))
    x = torch.arange(2 * 4 * 6.0).view(1, 2, 4, 6)
    patches = vit.patchify(x)
    assert patches.shape == (1, 4, 12)
    # Second patch: rows 0-1, columns 3-5, laid out (row, column, channel).
    expected = x[0, :, 0:2, 3:6].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[0, 1], expected)


def test_gpt_is_causal_and_ties_weights():
    model = create_model("gpt_nano", nn.GELU, **TEXT).eval()
    idx = torch.randint(64, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 64
    assert torch.allclose(model(idx)[0, :10], model(changed)[0, :10], atol=1e-6)
    assert model.wte.weight is model.lm_head.weight


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("resnet20", SIGNAL),
        ("resnet1d_small", IMAGE),
        ("vit_micro", {**DIGITS, "patch": (3, 3)}),
        ("vit_micro", {**DIGITS, "depthh": 3}),
        ("gpt_nano", {**TEXT, "layers": 3}),
    ],
)
def test_bad_options_fail_with_a_user_error(name, kwargs):
    with pytest.raises(UserError):
        create_model(name, nn.ReLU, **kwargs)
