"""The report, built from a small synthetic gathered campaign (no training runs here)."""

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.campaign import expand, parse_campaign
from bench.cli import main
from bench.folder import CampaignFolder
from bench.gather import activation_curves
from bench.report import build_report
from bench.report.figures import DPI, MAX_WIDTH
from bench.report.intervals import bootstrap, pooled_iqm, profile_band
from bench.report.stats import holm, summary
from bench.report.tables import named_columns, normalised_transfer, search_details
from bench.tasks import get_task
from grafs.errors import UserError
from grafs.genotype import Genotype

CAMPAIGN = {
    "name": "tiny-report",
    "description": "a synthetic two-task campaign for the report tests",
    "tasks": ["digits-vit", "pydoc-gpt"],
    "seeds": [0, 1, 2],
    "budget_multiples": [1, 2],
    "budget_unit": "seconds",
    "methods": ["grafs", {"method": "grafs", "label": "grafs-reference", "mode": "reference"}, "random"],
    "fixed": ["relu", "gelu", "silu"],
    "evaluation": {"seeds": [0], "targets": ["digits-vit-mini", "stdlib-gpt"], "top_k": 3},
    "scale": {"search_epochs": 2, "retrain_epochs": 2},
}
# One searched method and two fixed activations: too few blocks for Friedman, no black-box method.
SMALL = {
    "name": "small-report", "description": "GRAFS against two fixed activations", "tasks": ["digits-vit"],
    "seeds": [0, 1], "methods": ["grafs"], "fixed": ["relu", "gelu"],
    "evaluation": {"seeds": [0], "targets": ["digits-vit-mini"]}, "scale": {"search_epochs": 2, "retrain_epochs": 2},
}
EFFECT = {"grafs": 0.010, "grafs-reference": 0.004, "random": -0.004, "relu": 0.0, "gelu": 0.003, "silu": 0.006}
BASE = {"digits-vit": 0.90, "digits-vit-mini": 0.93, "pydoc-gpt": 1.80, "stdlib-gpt": 1.95}


def _noise(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def _metric(task: str, label: str, budget: float | None, key: str) -> float:
    gain = EFFECT[label] + (0.002 * budget if budget else 0.0) + _noise(key).normal(0, 0.003)
    return BASE[task] + gain if get_task(task).metric.direction == "max" else BASE[task] - 5 * gain


def _search_row(unit, spec: dict) -> tuple[dict, list[dict]]:
    budget = spec["budget_multiple"]
    genotype = Genotype.random(torch.Generator().manual_seed(zlib.crc32(unit.id.encode())))
    seconds = 40.0 * (budget or 1.0) * (1.0 + 0.1 * spec["seed"])
    points = 6 if budget is None else int(8 * budget)
    trace = []
    for step in range(points):
        score = 0.5 + 0.4 * (step + 1) / points + _noise(f"{unit.id}{step}").normal(0, 0.01)
        best = max([score] + [p["incumbent_score"] for p in trace])
        trace.append({
            "unit_id": unit.id, "label": spec["label"], "task": spec["task"], "seed": spec["seed"],
            "budget_multiple": budget, "step": step, "status": "duplicate" if step == 3 and budget else "ok",
            "score": score, "incumbent_score": best, "wall_seconds": seconds * (step + 1) / points,
            "sample_passes": 1000 * (step + 1), "epoch_equivalents": 0.5 * (step + 1),
            "formula": genotype.formula() if step == points - 1 else f"candidate {step}", "trial": step,
        })
    row = {
        "status": "ok", "best_score": trace[-1]["incumbent_score"], "formula": genotype.formula(),
        "genotype": json.dumps(genotype.to_dict()), "betas": "learned" if budget is None else "init-mean",
        "cost_wall_seconds": seconds, "cost_sample_passes": 1000.0 * points,
        "cost_epoch_equivalents": 0.5 * points, "cost_full_trainings": 0.25 * points,
        "budget_unit": spec["budget_unit"], "budget_limit_seconds": None if budget is None else 40.0 * budget,
        "budget_limit_sample_passes": None, "candidates": None,
        "budget_spent_share": None if budget is None else seconds / (40.0 * budget),
    }
    return row, trace


def _retrain_row(unit, spec: dict) -> dict:
    rank = spec["activation"].get("rank", 1)
    metric = _metric(spec["task"], spec["label"], spec["budget_multiple"], unit.id) - 0.004 * (rank - 1)
    accuracy = get_task(spec["task"]).metric.name == "accuracy"
    proxy = {}
    if spec["budget_multiple"] is not None and spec["task"] == spec["search_task"]:  # a black-box candidate
        proxy = {"candidate_rank": rank, "proxy_score": metric - 0.3 + _noise(f"proxy{unit.id}").normal(0, 0.001)}
    return {**proxy,
        "status": "ok", "activation": spec["label"], "genotype": None, "val_metric": metric - 0.01,
        "test_metric": metric, "val_loss": 0.3 if accuracy else metric - 0.01, "test_loss": 0.3 if accuracy else metric,
        "val_accuracy": metric - 0.01 if accuracy else None, "test_accuracy": metric if accuracy else None,
        "cost_wall_seconds": 30.0, "cost_sample_passes": 50_000.0,
    }


def write_fixture(out: Path, spec: dict = CAMPAIGN) -> dict:
    """campaign.json as the runner writes it, and the three gathered tables with gather's columns."""
    campaign = parse_campaign(spec, source="test")
    units = expand(campaign)
    out.mkdir(parents=True, exist_ok=True)
    CampaignFolder(out).write_record(campaign, units)
    rows, traces, history = [], [], []
    for unit in units:
        spec = unit.spec.to_dict()
        row = {
            "unit_id": unit.id, "kind": unit.kind, "state": "done", "label": spec["label"],
            "method": spec.get("method", "retrain"), "task": spec["task"], "seed": spec["seed"],
            "budget_multiple": spec.get("budget_multiple"), "search_task": spec.get("search_task", spec["task"]),
            "search_seed": spec.get("search_seed", spec["seed"]),
            "source": json.dumps(spec["activation"]) if "activation" in spec else None,
            "options": json.dumps(spec.get("options", {}), sort_keys=True), "error": None,
        }
        if unit.kind == "search":
            result, trace = _search_row(unit, spec)
            traces += trace
        else:
            result = _retrain_row(unit, spec)
            history.append({"unit_id": unit.id, "label": spec["label"], "task": spec["task"], "seed": spec["seed"],
                            "budget_multiple": spec.get("budget_multiple"), "search_task": spec["search_task"],
                            "step": 1, "val_metric": result["val_metric"]})
        rows.append({**row, **result})
    tables = out / "tables"
    tables.mkdir()
    activation_curves(rows).to_parquet(tables / "activation_curves.parquet", index=False)
    frame = pd.DataFrame(rows).sort_values("unit_id", kind="stable").reset_index(drop=True)
    frame.to_parquet(tables / "units.parquet", index=False)
    pd.DataFrame(traces).to_parquet(tables / "trace.parquet", index=False)
    pd.DataFrame(history).to_parquet(tables / "history.parquet", index=False)
    return {unit.id: unit for unit in units}


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    out = tmp_path_factory.mktemp("complete")
    write_fixture(out)
    build_report(out)
    return out


def read_csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "tables" / f"{name}.csv")


def test_report_files(complete):
    for name in ("efficiency", "time_to_target", "transfer", "transfer_normalised", "wilcoxon", "friedman",
                 "found_activations", "interval_estimates", "normalised_aggregate", "improvement_probability",
                 "rank_by_budget", "proxy_fidelity"):
        assert (complete / "tables" / f"{name}.csv").is_file() and (complete / "tables" / f"{name}.tex").is_file()
    figures = ("performance_profiles", "proxy_fidelity", "critical_difference", "anytime", "cost_vs_metric",
               "activations_digits-vit", "activations_pydoc-gpt", "transfer_heatmap")
    for name in figures:
        assert (complete / "figures" / f"{name}.png").stat().st_size > 5_000
        assert Image.open(complete / "figures" / f"{name}.png").width <= MAX_WIDTH * DPI  # shown unshrunk in HTML
        assert (complete / "figures" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    html = (complete / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures) and "<img" in html and 'src="figures/' not in html
    assert "<b>Figure 8.</b>" in html and "Table 1. " in html and "td { white-space: nowrap; }" in html
    text = (complete / "report.md").read_text()
    sections = ["## Findings", "## Completeness", "## Interval estimates", "## Efficiency", "## Transfer",
                "## Proxy fidelity", "## Statistics", "## Figures", "## Campaign", "## Environment"]
    assert [text.index(section) for section in sections] == sorted(text.index(section) for section in sections)
    assert "All 96 declared units finished with status ok." in text
    assert "git_commit" in text and '"name": "tiny-report"' in text


def test_efficiency_table(complete):
    table = read_csv(complete, "efficiency")
    methods = ["grafs", "grafs-reference", "random (1x)", "random (2x)", "relu", "gelu", "silu"]
    assert table["search_task"].tolist() == ["digits-vit"] * 7 + ["pydoc-gpt"] * 7
    assert table["method"].tolist() == methods * 2
    for column in ("seconds_mean", "epoch_equivalents_mean", "full_trainings_mean", "candidates", "test_metric_mean",
                   "test_metric_std", "rank"):
        assert column in table
    vit = table[table["search_task"] == "digits-vit"].set_index("method")
    assert vit.loc["grafs", "rank"] == 1 and vit.loc["grafs", "test_n"] == vit.loc["grafs", "test_expected"] == 3
    assert vit.loc["grafs", "seconds_mean"] == pytest.approx(44.0)
    assert vit.loc["random (2x)", "candidates"] == 15  # 16 trials, one duplicate
    assert vit.loc["relu", "seconds_mean"] == 0
    assert vit.loc["random (2x)", "budget_used"] == pytest.approx(1.1)  # seeds spend 1.0, 1.1, 1.2 x the budget
    assert np.isnan(vit.loc["grafs", "budget_used"])  # GRAFS sets the budgets, it has none
    gpt = table[table["search_task"] == "pydoc-gpt"].set_index("method")
    assert gpt.loc["grafs", "test_metric_mean"] < gpt.loc["relu", "test_metric_mean"]  # a loss: lower is better
    assert gpt.loc["grafs", "rank"] == 1
    latex = (complete / "tables" / "efficiency.tex").read_text()
    assert r"\toprule" in latex and r"$\pm$" in latex and r"\textbf{" in latex
    target = read_csv(complete, "time_to_target")
    assert target[["search_task", "method"]].values.tolist() == [["digits-vit", "random"], ["pydoc-gpt", "random"]]
    assert target["needed_multiple"].isna().all()
    assert "> 2x" in (complete / "report.md").read_text()


def test_transfer_table(complete):
    table = read_csv(complete, "transfer")
    assert table["activation"].tolist() == [
        "relu", "gelu", "silu", "grafs", "grafs-reference", "random (1x)", "random (2x)"]
    for column in ("digits-vit", "digits-vit-mini", "pydoc-gpt", "stdlib-gpt"):
        assert {f"{column} mean", f"{column} std", f"{column} n"} <= set(table.columns)
    assert "average_rank" in table
    assert table.set_index("activation")["average_rank"].idxmin() == "grafs"
    normalised = read_csv(complete, "transfer_normalised").set_index("activation")
    assert list(normalised.columns) == ["digits-vit", "digits-vit-mini", "pydoc-gpt", "stdlib-gpt", "Mean"]
    assert (normalised.loc["relu"].iloc[:4] == 0).all()
    assert normalised.iloc[:, :4].max().tolist() == [1.0, 1.0, 1.0, 1.0]
    text = (complete / "report.md").read_text()
    assert "| relu |" in text and "n=" not in text.split("## Statistics")[0]


def test_normalisation_names_the_columns_where_relu_is_best():
    campaign = parse_campaign(CAMPAIGN, source="test")
    names = [name for _, _, name in named_columns(campaign)]
    order = ["relu", "gelu", "grafs"]
    means = pd.DataFrame({name: [0.9, 0.8, 0.95] for name in names}, index=order)
    means["digits-vit-mini"] = [0.9, 0.8, 0.85]  # ReLU best: nothing to normalise against
    incomplete = pd.DataFrame(False, index=order, columns=names)
    table = normalised_transfer(means, incomplete, campaign, order)
    values = table.data.set_index("activation")
    assert values["digits-vit"].tolist() == pytest.approx([0.0, -2.0, 1.0])
    assert values["digits-vit-mini"].isna().all()
    assert values["Mean"].notna().all()  # the empty column stays out of the mean
    shown = table.display.set_index("Activation")
    assert shown.loc["gelu", "digits-vit"] == "< -1"  # the CSV keeps -2; the mean counts it as -1
    assert values.loc["gelu", "Mean"] == pytest.approx(values.loc["gelu"].drop("Mean").clip(lower=-1).mean())
    assert any("ReLU is the best activation on digits-vit-mini" in note for note in table.notes)


def test_transfer_table_keeps_the_budgets_retrained_on_the_targets(tmp_path):
    write_fixture(tmp_path, {**CAMPAIGN, "evaluation": {**CAMPAIGN["evaluation"], "transfer_multiples": [2]}})
    build_report(tmp_path)
    assert read_csv(tmp_path, "transfer")["activation"].tolist() == [
        "relu", "gelu", "silu", "grafs", "grafs-reference", "random (2x)"]
    assert {"random (1x)", "random (2x)"} <= set(read_csv(tmp_path, "efficiency")["method"])
    text = (tmp_path / "report.md").read_text()
    assert "finds at the budgets retrained on the transfer targets (2x)" in text
    assert "n=" not in text.split("## Statistics")[0] and "(incomplete)" not in text


def test_statistics(complete):
    tests = read_csv(complete, "wilcoxon")
    assert tests["reference"].unique().tolist() == ["grafs"]
    assert tests["other"].tolist() == ["grafs-reference", "random (1x)", "random (2x)", "relu", "gelu", "silu"]
    assert (tests["blocks"] == 12).all() and (tests["p_holm"] >= tests["p"]).all()
    text = (complete / "report.md").read_text()
    assert "The Friedman test finds" in text and "critical_difference.png" in text
    assert "a block is one search task, evaluated task and search seed" in text
    assert holm([0.01, 0.04, float("nan"), 0.03]) == pytest.approx([0.03, 0.06, float("nan"), 0.06], nan_ok=True)


def test_summary_names_grafs_whichever_way_a_difference_goes():
    tests = pd.DataFrame({"other": ["relu", "gelu", "silu"], "wins": [1, 9, 4], "losses": [9, 1, 5],
                          "p": [0.001, 0.002, 0.4], "significant": [True, True, False]})
    table = pd.DataFrame({"grafs": [1.0, 2.0], "relu": [1.0, 2.0]})
    assert summary(tests, None, "grafs", table)[2] == (
        "grafs is significantly better than gelu; significantly worse than relu (Holm-adjusted p < 0.05); "
        "every other difference is not significant.")
    only_worse = tests.assign(significant=[True, False, False])
    assert summary(only_worse, None, "grafs", table)[2].startswith("grafs is significantly worse than relu")


def test_report_is_identical_when_built_twice(complete, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(complete, again, ignore=shutil.ignore_patterns("report.*", "figures", "*.csv", "*.tex"))
    assert main(["report", str(again)]) == 0
    for path in sorted(complete.rglob("*")):
        if path.is_file():
            relative = path.relative_to(complete)
            assert (again / relative).read_bytes() == path.read_bytes(), relative
    assert sorted(p.relative_to(again) for p in again.rglob("*")) == sorted(p.relative_to(complete)
                                                                            for p in complete.rglob("*"))


def test_missing_and_failed_units_are_named_not_averaged(tmp_path):
    out = tmp_path / "partial"
    units = write_fixture(out)
    frame = pd.read_parquet(out / "tables" / "units.parquet")
    failed = next(u for u in units.values() if u.kind == "search" and u.spec.label == "grafs"
                  and u.spec.task == "digits-vit" and u.spec.seed == 1)
    blocked = {failed.id}
    for unit in units.values():  # expansion order: a unit comes after everything it depends on
        if blocked & set(unit.depends_on):
            blocked.add(unit.id)
    blocked = sorted(blocked - {failed.id})
    fixed = next(u for u in units.values() if u.spec.label == "gelu" and u.spec.task == "digits-vit-mini")
    dropped = next(u for u in units.values() if u.spec.label == "random" and u.kind == "retrain"
                   and u.spec.task == "stdlib-gpt" and u.spec.budget_multiple == 1.0)
    is_failed = frame["unit_id"] == failed.id
    frame.loc[is_failed, "state"] = "failed"
    frame.loc[is_failed, "error"] = "RuntimeError: out of memory"
    result_columns = ["status", "formula", "genotype", "test_metric", "val_metric", "cost_wall_seconds"]
    frame.loc[is_failed | frame["unit_id"].isin(blocked), result_columns] = None
    frame.loc[frame["unit_id"].isin(blocked), "state"] = "pending"
    frame.loc[frame["unit_id"] == fixed.id, ["state", "test_metric"]] = ["running", None]
    frame = frame[frame["unit_id"] != dropped.id]
    frame.to_parquet(out / "tables" / "units.parquet", index=False)

    text = build_report(out).read_text()
    completeness = text.split("## Efficiency")[0]
    # the two random searches budgeted by the failed one, every retraining of their finds, the 2x runners-up
    assert len(blocked) == 2 + 2 * 3 + 2
    assert f"{3 + len(blocked)} of 96 declared units are missing from the results (1 failed, 1 running, " \
        f"{len(blocked)} pending, 1 not gathered)" in completeness
    for unit_id in (failed.id, *blocked, fixed.id, dropped.id):
        assert unit_id in completeness
    assert "RuntimeError: out of memory" in completeness and f"blocked: unit {failed.id} failed" in completeness
    efficiency = read_csv(out, "efficiency").set_index(["search_task", "method"])
    grafs = efficiency.loc[("digits-vit", "grafs")]
    assert (grafs["searches"], grafs["searches_expected"], grafs["test_n"], grafs["test_expected"]) == (2, 3, 2, 3)
    assert "(n=2/3)" in text.split("## Transfer")[0]
    transfer = text.split("## Transfer")[1].split("## Statistics")[0]
    row = next(line for line in transfer.splitlines() if line.startswith("| gelu |"))
    assert "– (n=0/1)" in row
    row = next(line for line in transfer.splitlines() if line.startswith("| random (1x) |"))
    assert row.count("(n=2/3)") == 3 and "(incomplete)" in row  # seed 1 blocked on digits-vit, one unit lost
    assert read_csv(out, "found_activations").set_index("unit_id").loc[failed.id, "state"] == "failed"


def test_bad_folders_are_one_line_user_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="no campaign.json"):
        build_report(tmp_path)
    (tmp_path / "campaign.json").write_text("{}")
    with pytest.raises(UserError, match="is not a grafs-bench campaign record"):
        build_report(tmp_path)
    campaign = parse_campaign(CAMPAIGN, source="test")
    with pytest.raises(UserError, match="is not a grafs-bench campaign record"):  # nor is it overwritten
        CampaignFolder(tmp_path).write_record(campaign, expand(campaign))
    (tmp_path / "campaign.json").unlink()
    CampaignFolder(tmp_path).write_record(campaign, expand(campaign))
    with pytest.raises(UserError, match="grafs-bench gather"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no campaign.json" in capsys.readouterr().err


def test_bootstrap_intervals_cover_a_known_mean():
    rng = np.random.default_rng(7)
    repeats, covered = 400, 0
    for repeat in range(repeats):
        strata = [rng.normal(3.0, 1.0, size=20), rng.normal(3.0, 2.0, size=20)]  # symmetric: IQM estimates the mean
        interval = bootstrap(pooled_iqm, strata, f"coverage/{repeat}")
        covered += interval.low <= 3.0 <= interval.high
    assert covered >= 0.9 * repeats


def test_performance_profiles_are_monotone_within_their_bands():
    rng = np.random.default_rng(3)
    band = profile_band([rng.uniform(-0.9, 1.0, size=5), rng.uniform(0.5, 1.0, size=5)], "profile/test")
    assert (np.diff(band["share"]) <= 0).all() and (np.diff(band["low"]) <= 0).all()
    assert (band["low"] <= band["share"]).all() and (band["share"] <= band["high"]).all()
    assert band["share"].iloc[0] == 1.0 and band["share"].iloc[-1] == 0.0


def test_findings_and_intervals(complete):
    text = (complete / "report.md").read_text()
    findings = text.split("## Findings")[1].split("## Completeness")[0]
    assert "On digits-vit (test accuracy in %, higher is better), grafs scores " in findings
    assert "On pydoc-gpt (test loss, lower is better), grafs scores 1.755 [1.749, 1.759] (mean of 3 runs, 95 % " \
        "bootstrap interval): it beats grafs-reference (1.787 [1.786, 1.788])" in findings
    assert "it ties with silu (91.29)" in findings and "On digits-vit, ReLU is not the best" in findings
    assert "Proxy fidelity on digits-vit: over 9 retrained candidates (random), Spearman" in findings
    estimates = read_csv(complete, "interval_estimates").set_index(["entry", "search_task"])
    grafs = estimates.loc[("grafs", "pydoc-gpt")]
    assert grafs["estimator"] == "mean" and grafs["runs"] == 3 and grafs["low"] <= grafs["estimate"] <= grafs["high"]
    assert estimates.loc[("relu", "digits-vit"), "runs"] == 1  # one evaluation seed: no interval
    improvement = read_csv(complete, "improvement_probability")
    assert improvement[["first", "second"]].values.tolist()[:2] == [["grafs", "grafs-reference"],
                                                                    ["grafs", "random (1x)"]]
    relu = improvement[improvement["second"] == "relu"].set_index("first")
    assert relu.loc["grafs", "probability"] == 1.0 and relu.loc["grafs", "reading"] == "better"
    ranks = read_csv(complete, "rank_by_budget").set_index("method")
    assert list(ranks.columns) == ["1x", "2x"] and ranks.idxmin().tolist() == ["grafs", "grafs"]
    fidelity = read_csv(complete, "proxy_fidelity")
    pooled = fidelity.set_index("search_task")  # one black-box method: no pooled row besides its own
    assert pooled["points"].tolist() == [9, 9]  # 3 seeds x the top 3 of each 2x random search
    assert (pooled["spearman"] > 0.5).all() and (pooled["spearman_low"] <= pooled["spearman"]).all()


def test_runners_up_retrain_only_at_the_largest_budget_and_keep_the_other_unit_ids():
    units = expand(parse_campaign(CAMPAIGN, source="test"))
    ranked = [u for u in units if u.kind == "retrain" and u.spec.activation.rank is not None]
    assert {(u.spec.label, u.spec.budget_multiple, u.spec.task) for u in ranked} == {
        ("random", 2.0, "digits-vit"), ("random", 2.0, "pydoc-gpt")}
    assert sorted({u.spec.activation.rank for u in ranked}) == [2, 3]
    top_one = {**CAMPAIGN, "evaluation": {**CAMPAIGN["evaluation"], "top_k": 1}}
    without = {u.id for u in expand(parse_campaign(top_one, source="test"))}
    assert without == {u.id for u in units} - {u.id for u in ranked}
    default = {**CAMPAIGN, "evaluation": {k: v for k, v in CAMPAIGN["evaluation"].items() if k != "top_k"}}
    assert {u.id for u in expand(parse_campaign(default, source="test"))} == without
    with pytest.raises(UserError, match="evaluation.top_k"):
        parse_campaign({**CAMPAIGN, "evaluation": {"top_k": 0}}, source="test")


def test_a_small_campaign_reports_why_it_skips_friedman(tmp_path):
    write_fixture(tmp_path, SMALL)
    text = build_report(tmp_path).read_text()
    assert "## Findings" in text and "On digits-vit (test accuracy in %, higher is better), grafs scores" in text
    assert "No Friedman test and no critical-difference diagram: they need at least 3 activations and 10 blocks" \
        in text and "this campaign has 3 activations and 4 such blocks" in text
    assert "(mean of 2 runs, 95 % bootstrap interval): it is not judged against relu (90.08), gelu (90.57)." in text
    assert "fewer than 3 runs (other than a fixed activation's single run) gives no verdict" in text
    assert "No proxy-fidelity points" in text
    assert not (tmp_path / "figures" / "critical_difference.png").exists()
    assert (tmp_path / "figures" / "performance_profiles.png").is_file()


def test_a_single_search_seed_is_stated_as_a_point_estimate(tmp_path):
    write_fixture(tmp_path, {**SMALL, "seeds": [0]})
    text = build_report(tmp_path).read_text()
    assert "(one run, a point estimate): it is not judged against relu" in text
    assert "1 runs" not in text


def test_search_details_count_generations_incumbent_origins_and_stopped_candidates():
    units = pd.DataFrame({
        "unit_id": ["evolution-0", "evolution-1", "pangaea-0", "asha-0"], "kind": "search", "state": "done",
        "method": ["evolution", "evolution", "pangaea", "asha"], "config_population": [4.0, 4.0, 4.0, None],
        "config_offspring": [None, None, 2.0, None], "incumbent_step": [2.0, 9.0, 7.0, 1.0],
    })
    trace = pd.DataFrame({
        "unit_id": ["evolution-0"] * 10 + ["evolution-1"] * 10 + ["pangaea-0"] * 9 + ["asha-0"] * 5,
        "status": ["ok"] * 29 + ["pruned", "pruned", "ok", "pruned", "ok"],
        "resource": [None] * 29 + [0.0, 0.0, 1.0, 1.0, 1.0],
    })
    details = search_details(units, trace)
    assert details["generations"].tolist()[:3] == [2.0, 2.0, 3.0]  # 10 // 4; PANGAEA: 1 + (9 - 4) // 2
    assert details["from_initial_sample"].tolist()[:3] == [True, False, False]
    assert np.isnan(details.loc["asha-0", "generations"])
    assert details.loc["asha-0", ["stopped_rung_0", "stopped_rung_1"]].tolist() == [2.0, 1.0]


def test_proxy_fidelity_counts_the_candidates_the_proxy_scored_not_retraining_variants(tmp_path):
    # PANGAEA's finds are also retrained with per-layer betas: another model than the one its proxy
    # scored, so those retrainings are no proxy-fidelity points (and the figure has no colour for them).
    out = tmp_path / "with-pangaea"
    with pytest.MonkeyPatch.context() as patch:  # the synthetic metrics need an effect per label
        patch.setitem(EFFECT, "pangaea", -0.002)
        patch.setitem(EFFECT, "pangaea-per-layer", -0.001)
        write_fixture(out, {**CAMPAIGN, "methods": [*CAMPAIGN["methods"], "pangaea"]})
    build_report(out)
    fidelity = read_csv(out, "proxy_fidelity")
    assert "pangaea-per-layer" not in set(fidelity["methods"]) and "pangaea" in set(fidelity["methods"])
    assert (fidelity[fidelity["methods"] == "pangaea"]["points"] == 9).all()  # 3 seeds x its top 3
    assert (out / "figures" / "proxy_fidelity.png").is_file()
