"""The AQuaSurF-style surrogate search and PANGAEA-style evolution.

Proxy trainings and features run on the tiny synthetic signal task of ``test_baselines``.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_baselines import PER_CANDIDATE, one_thread, sample_budget, tiny_data, tiny_task  # noqa: F401

from baselines.features import QUANTILES, FeatureExtractor, output_features
from baselines.fixed import fixed_genotype
from baselines.options import ProxyConfig
from baselines.pangaea import MUTATIONS, PASS_THROUGH, mutate
from baselines.regularized_evolution import random_genotype
from baselines.surrogate import build_pool, knn_predict, regression_targets
from bench.campaign import ActivationSource, RetrainSpec, expand, parse_campaign
from bench.folder import CampaignFolder
from bench.methods import create_searcher
from bench.outputs import save_search_outcome
from bench.tasks import get_task
from bench.training import build_model
from bench.units import _activation_of
from grafs.genotype import Genotype, GenotypeActivation, fingerprint_points
from grafs.ops import SLOTS, operation

SITES = 5  # activation sites of resnet1d_small: the stem and two per block


def test_features_are_deterministic_for_a_seed():
    task, data = tiny_task(), tiny_data()
    genotypes = [fixed_genotype("relu"), Genotype.from_ops(("mul_beta", "gelu", "sig_mul", "identity", "tanh", "add"))]
    first = FeatureExtractor(task, data, seed=0, batch_size=16)(genotypes)
    again = FeatureExtractor(task, data, seed=0, batch_size=16)(genotypes)
    other = FeatureExtractor(task, data, seed=1, batch_size=16)(genotypes)
    assert np.array_equal(first.outputs, again.outputs) and np.array_equal(first.spectra, again.spectra)
    assert not np.array_equal(first.spectra, other.spectra)  # other initial weights, other batch
    assert first.spectra.shape == (2, 7 * len(QUANTILES))  # 6 convolutions and the head, fixed length
    assert np.all(np.diff(first.spectra.reshape(2, 7, -1), axis=-1) >= 0)  # quantiles, per layer
    assert not np.array_equal(first.spectra[0], first.spectra[1])
    relu = torch.relu(fingerprint_points()).numpy()
    assert np.array_equal(first.outputs[0], relu) and np.array_equal(output_features(genotypes[0]), relu)
    assert first.cost.train_samples == 2 * 16 and first.cost.wall_seconds > 0


def test_knn_prediction_ranks_a_trained_set_correctly():
    trained = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    scores = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    near = trained + np.array([0.1, 0.05])
    predicted = knn_predict(trained, scores, near, k=2)
    assert list(np.argsort(predicted)) == list(np.argsort(scores))
    assert np.allclose(knn_predict(trained, scores, trained, k=3), scores)  # a trained point predicts its score
    assert knn_predict(trained[:1], scores[:1], near, k=3).tolist() == [0.1] * 5  # fewer points than k
    accuracy, loss = get_task("mnist1d-resnet1d").metric, get_task("pydoc-gpt").metric
    assert regression_targets([0.5, -np.inf, 0.7], accuracy).tolist() == [0.5, 0.5, 0.7]
    assert regression_targets([2.0, np.inf, 3.0], loss).tolist() == [2.0, 3.0, 3.0]


def test_the_pool_is_distinct_and_starts_with_the_fixed_activations():
    pool = build_pool(40, seed=0)
    fingerprints = [genotype.fingerprint() for genotype in pool]
    assert len(pool) == 40 == len(set(fingerprints))
    assert pool[:5] == [fixed_genotype(name) for name in ("relu", "gelu", "silu", "elu", "leaky_relu")]
    assert build_pool(40, seed=0) == pool and build_pool(40, seed=1) != pool


def test_pangaea_mutations_insert_and_remove_parametric_operations():
    rng = np.random.default_rng(0)
    for _ in range(100):
        parent = random_genotype(rng)
        for kind in MUTATIONS:
            child = mutate(parent, rng, kind=kind)
            assert child == Genotype.from_ops(child.ops)  # in the space, betas at their initial means
            parametric = sum(beta is not None for beta in child.betas) - sum(beta is not None for beta in parent.betas)
            if kind == "insert" and any(beta is None for beta in parent.betas):
                assert parametric == 1
            if kind == "remove" and any(beta is not None for beta in parent.betas):
                assert parametric == -1
                removed = next(i for i, (a, b) in enumerate(zip(parent.ops, child.ops, strict=True)) if a != b)
                assert child.ops[removed] in PASS_THROUGH[operation(child.ops[removed]).arity]
    relu = fixed_genotype("relu")  # pass-through slots exist: insertion uses one of them
    inserted = mutate(relu, rng, kind="insert")
    changed = [i for i in range(len(SLOTS)) if inserted.ops[i] != relu.ops[i]]
    assert len(changed) == 1 and relu.ops[changed[0]] in ("identity", "left")


def test_the_per_layer_variant_has_one_parameter_set_per_activation_site(tmp_path):
    genotype = Genotype.from_ops(("mul_beta", "relu", "beta_mix", "add_beta", "identity", "add"))
    genotype.save(tmp_path / "units" / "search-x" / "genotype.json")
    spec = RetrainSpec("pangaea-per-layer", "tiny", 0, ActivationSource("search-x", learnable_betas=True),
                       "tiny", 0, 1.0, {})
    activation = _activation_of(spec, CampaignFolder(tmp_path))
    model = build_model(tiny_task(), tiny_data(), activation.factory)
    sites = [module for module in model.modules() if isinstance(module, GenotypeActivation)]
    assert len(sites) == SITES
    betas = [dict(site.named_parameters()) for site in sites]
    assert all(set(names) == {"beta_u0", "beta_b0", "beta_u2"} for names in betas)
    tensors = [tensor for names in betas for tensor in names.values()]
    assert len({tensor.data_ptr() for tensor in tensors}) == 3 * SITES  # nothing shared between sites
    shared = build_model(
        tiny_task(), tiny_data(),
        _activation_of(replace(spec, activation=ActivationSource("search-x")), CampaignFolder(tmp_path)).factory,
    )
    assert not any(isinstance(m, GenotypeActivation) and list(m.parameters()) for m in shared.modules())


def test_campaigns_retrain_pangaea_finds_also_with_per_layer_betas():
    data = {
        "name": "t",
        "tasks": ["mnist1d-resnet1d"],
        "seeds": [0],
        "fixed": [],
        "methods": ["grafs", "pangaea", "surrogate", {"method": "pangaea", "label": "shared", "per_layer": False}],
        "evaluation": {"seeds": [0], "targets": []},
    }
    retrains = [unit.spec for unit in expand(parse_campaign(data)) if unit.kind == "retrain"]
    by_label = {spec.label: spec.activation.to_dict() for spec in retrains}
    assert set(by_label) == {"grafs", "pangaea", "pangaea-per-layer", "surrogate", "shared"}
    assert by_label["pangaea-per-layer"] == {**by_label["pangaea"], "learnable_betas": True}
    assert "learnable_betas" not in by_label["pangaea"]
    with pytest.raises(Exception, match="labels must be unique"):
        parse_campaign({**data, "methods": ["grafs", "pangaea", {"method": "random", "label": "pangaea-per-layer"}]})


@pytest.mark.parametrize(
    "method, options",
    [
        ("surrogate", {"pool_size": 30, "fisher_batch": 8, "embedding": "umap"}),
        ("pangaea", {"population": 4, "offspring": 2, "newcomer_share": 0.25}),
    ],
)
def test_both_respect_the_budget_up_to_one_candidate_and_write_their_results(method, options, tmp_path):
    task, data = tiny_task(), tiny_data()
    budget = sample_budget(8.5)
    searcher = create_searcher(method, proxy_fraction=1.0, **options)
    outcome = searcher.search(task, 0, budget, data=data, out=tmp_path)
    trace = outcome.trace
    spent = [row["sample_passes"] for row in trace]
    assert spent[-1] >= budget.limit > spent[-2]
    summary = save_search_outcome(outcome, tmp_path, task, data, 0)
    assert summary["budget"]["exhausted"] and summary["cost"]["sample_passes"] == spent[-1]
    assert Genotype.load(tmp_path / "genotype.json") == outcome.genotype
    assert len(json.loads((tmp_path / "trace.json").read_text())) == len(trace)
    if method == "surrogate":
        assert all(row["status"] == "ok" for row in trace)  # no function proposed twice
        fixed = [fixed_genotype(name).formula() for name in ("relu", "gelu", "silu", "elu", "leaky_relu")]
        assert [row["formula"] for row in trace[:5]] == fixed
        features = 30 * 8  # the pool's features, charged to the first candidate the surrogate chose
        assert np.diff([0, *spent]).tolist() == [PER_CANDIDATE] * 5 + [PER_CANDIDATE + features] + [PER_CANDIDATE] * 2
        predicted = [row for row in trace if "predicted_score" in row]
        assert len(predicted) == len(trace) - 5 and predicted[-1]["surrogate_spearman"] is not None
    else:
        assert summary["per_layer"] is True and outcome.config["per_layer"] is True
        assert set(np.diff([0, *spent])) <= {0, PER_CANDIDATE}  # a duplicate costs no training


def test_per_layer_proxy_trainings_learn_betas_per_site(monkeypatch):
    from baselines import proxy

    built = []

    def spy(task, factory, *args, **kwargs):
        built.extend((factory(), factory()))
        return original(task, factory, *args, **kwargs)

    original = proxy.train
    monkeypatch.setattr(proxy, "train", spy)
    genotype = Genotype.from_ops(("mul_beta", "relu", "add", "identity", "identity", "left"))
    evaluate = proxy.ProxyEvaluator(tiny_task(), tiny_data(), 0, ProxyConfig(1.0), learnable_betas=True)
    assert evaluate(genotype).status == "ok"
    first, second = (dict(module.named_parameters()) for module in built)
    assert set(first) == {"beta_u0"} and first["beta_u0"] is not second["beta_u0"]
    assert create_searcher("pangaea").learnable_betas
    assert not create_searcher("pangaea", per_layer=False).learnable_betas
    assert not create_searcher("random").learnable_betas
