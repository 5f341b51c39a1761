import json

import pytest
import torch

from grafs.errors import UserError
from grafs.genotype import Genotype
from grafs.published import PUBLISHED_GENOTYPES

VIT1 = PUBLISHED_GENOTYPES["grafs-vit-1"]


def test_json_round_trip(tmp_path):
    for genotype in [VIT1, Genotype.random(torch.Generator().manual_seed(3), bounded=False)]:
        path = genotype.save(tmp_path / "g.json")
        data = json.loads(path.read_text())
        assert data["format"] == "grafs-genotype/1" and len(data["ops"]) == 6 and len(data["betas"]) == 6
        assert Genotype.load(path) == genotype


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"format": "grafs-genotype/1", "ops": [], "betas": [], "bounded": true}', "exactly 6 ops"),
        (
            '{"format": "grafs-genotype/1", "ops": ["relu","relu","add","relu","relu","bogus"],'
            ' "betas": [null,null,null,null,null,null], "bounded": true}',
            "unknown operation 'bogus'",
        ),
        (
            '{"format": "grafs-genotype/1", "ops": ["relu","add","add","relu","relu","add"],'
            ' "betas": [null,null,null,null,null,null], "bounded": true}',
            "cannot stand in slot u1",
        ),
        (
            '{"format": "grafs-genotype/1", "ops": ["add_beta","relu","add","relu","relu","add"],'
            ' "betas": [null,null,null,null,null,null], "bounded": true}',
            "needs a beta value",
        ),
        (
            '{"format": "grafs-genotype/1", "ops": ["relu","relu","add","relu","relu","add"],'
            ' "betas": [1.0,null,null,null,null,null], "bounded": true}',
            "has no beta",
        ),
        ('{"format": "grafs-genotype/2", "ops": [], "betas": [], "bounded": true}', "not supported"),
        ('{"format": "grafs-genotype/1", "ops": [], "betas": []}', "missing keys"),
        ('{"format": "grafs-genotype/1", "ops": [], "betas": [], "bounded": 1}', "true or false"),
        ('{"format": "grafs-genotype/1", "ops": [], "betas": [], "bounded": true, "x": 1}', "unknown keys"),
    ],
)
def test_malformed_files_are_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as error:
        Genotype.load(path)
    assert "\n" not in str(error.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Genotype.load(tmp_path / "nope.json")


def test_module_computes_the_cell_composition():
    genotype = Genotype(("tanh", "relu", "add", "square", "identity", "sig_mul"), (None,) * 6, bounded=False)
    x = torch.linspace(-3, 3, 50)
    expected = torch.sigmoid((torch.tanh(x) + torch.relu(x)) ** 2) * x
    torch.testing.assert_close(genotype.to_module()(x), expected)


def test_bounds_are_on_by_default_and_can_be_lifted():
    genotype = Genotype.from_ops(("square", "identity", "left", "identity", "identity", "left"))
    x = torch.tensor([10.0])
    assert genotype.to_module()(x).item() == pytest.approx(10.0)
    assert genotype.with_bounds(False).to_module()(x).item() == pytest.approx(100.0)


def test_betas_are_frozen_buffers_or_learnable_parameters():
    genotype = Genotype(
        ("mul_beta", "relu", "beta_mix", "identity", "identity", "add"), (2.0, None, 0.5, None, None, None)
    )
    assert list(genotype.to_module().parameters()) == []
    module = genotype.to_module(learnable_betas=True)
    names = {name for name, _ in module.named_parameters()}
    assert names == {"beta_u0", "beta_b0"}
    module(torch.randn(8)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_formula_simplifies_and_shows_betas():
    assert VIT1.formula() == "0.3993 * GELU(0.4413 * min(x^2, 10) + 0.5587 * GELU(x)) + 0.6007 * SiLU(x)"
    gated = Genotype.from_ops(("gelu", "tanh", "left", "sigmoid", "gelu", "mul"), bounded=False)
    assert gated.formula() == "sigmoid(GELU(x)) * GELU(x)"
    shifted = Genotype(
        ("add_beta", "relu", "left", "identity", "identity", "right"), (-0.5, None, None, None, None, None)
    )
    assert shifted.formula() == "x"
    assert Genotype(("add_beta", "relu", "left", "identity", "identity", "left"), (-0.5,) + (None,) * 5).formula() == (
        "x - 0.5"
    )
    assert r"\mathrm{GELU}" in VIT1.latex() and r"\min" in VIT1.latex()


def test_fingerprint_identifies_functions():
    relu_a = Genotype.from_ops(("relu", "tanh", "left", "identity", "identity", "left"))
    relu_b = Genotype.from_ops(("identity", "identity", "max", "relu", "exp", "left"))  # relu(max(x, x))
    relu_c = Genotype.from_ops(("exp", "relu", "right", "identity", "identity", "left"))
    silu = Genotype.from_ops(("silu", "tanh", "left", "identity", "identity", "left"))
    gated = Genotype.from_ops(("identity", "identity", "left", "identity", "identity", "sig_mul"))  # sigmoid(x) * x
    assert relu_a.fingerprint() == relu_b.fingerprint() == relu_c.fingerprint()
    assert silu.fingerprint() == gated.fingerprint()
    assert relu_a.fingerprint() != silu.fingerprint()
    scaled = Genotype(("mul_beta", "relu", "left", "identity", "identity", "left"), (1.5,) + (None,) * 5)
    assert (
        scaled.fingerprint()
        != Genotype(("mul_beta", "relu", "left", "identity", "identity", "left"), (1.25,) + (None,) * 5).fingerprint()
    )


def test_random_genotypes_are_seeded():
    assert Genotype.random(torch.Generator().manual_seed(7)) == Genotype.random(torch.Generator().manual_seed(7))
