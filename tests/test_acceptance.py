"""End-to-end acceptance runs of the offline defaults (``pytest -m slow``: minutes each)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.merge import CURVES, TABLE_ORDER
from grafs.genotype import Genotype

ROOT = Path(__file__).resolve().parents[1]
TABLES = tuple(f"{name}.parquet" for name in (*TABLE_ORDER, CURVES))
pytestmark = pytest.mark.slow


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=1800
    )


def test_grafs_search_on_the_cpu_resnet_task(tmp_path):
    result = cli("search", "--task", "mnist1d-resnet1d", "--seed", "0", "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    genotype = Genotype.load(tmp_path / "s" / "genotype.json")
    history = json.loads((tmp_path / "s" / "history.json").read_text())
    # Progressive shrinking leaves (almost) one op per slot by the last trained epoch, then stops.
    assert len(history) == 48 and sum(history[-1]["active_counts"]) <= 7
    assert genotype.formula()


def test_the_quick_campaign_ends_with_the_report(tmp_path):
    result = cli("run", "quick", "--out", str(tmp_path / "quick"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "quick"
    units = pd.read_parquet(out / "tables" / "units.parquet")
    assert (units["state"] == "done").all()
    report = (out / "report.md").read_text()
    assert "## Efficiency" in report and "## Transfer" in report
    assert report.index("## Findings") < report.index("## Completeness")
    for table in ("interval_estimates", "normalised_aggregate", "improvement_probability", "proxy_fidelity"):
        assert f"tables/{table}.csv" in report
    assert "figures/performance_profiles.png" in report and "figures/proxy_fidelity.png" in report
    assert (out / "report.html").stat().st_size > 50_000 and (out / "mlflow.db").exists()


def test_committed_results_are_the_report_the_code_builds(tmp_path):
    """results/ is the merge of its committed parts: merging them again and reporting with this code
    gives the committed tables, figures and report (the environment block names the building commit,
    so report.md is compared without it); every unit of every committed part finished, at the tasks'
    own recipes with at least three evaluation seeds."""
    committed = ROOT / "results"
    parts = sorted(path.parent.name for path in (committed / "parts").glob("*/campaign.json"))
    assert parts, "results/parts holds no part"
    rebuilt = tmp_path / "results"
    for part in parts:
        source, target = committed / "parts" / part, rebuilt / "parts" / part
        (target / "tables").mkdir(parents=True)
        for name in ("campaign.json", "environment.json", *(f"tables/{t}" for t in TABLES)):
            (target / name).write_bytes((source / name).read_bytes())
        units = pd.read_parquet(source / "tables" / "units.parquet")
        assert (units["state"] == "done").all() and (units["status"] == "ok").all(), part
        record = json.loads((source / "campaign.json").read_text())
        assert len(units) == len(record["units"]), part
    result = cli("merge", "results", *(f"results/parts/{part}" for part in parts), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    result = cli("report", "results", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("campaign.json", "environment.json", *(f"tables/{t}" for t in TABLES)):
        assert (rebuilt / name).read_bytes() == (committed / name).read_bytes(), name
    for pattern in ("tables/*.csv", "tables/*.tex", "figures/*.png", "figures/*.pdf"):
        names = sorted(p.relative_to(committed) for p in committed.glob(pattern))
        assert names == sorted(p.relative_to(rebuilt) for p in rebuilt.glob(pattern))
        for name in names:
            assert (rebuilt / name).read_bytes() == (committed / name).read_bytes(), name

    def without_environment(path: Path) -> str:
        return path.read_text().split("## Environment")[0]

    assert without_environment(rebuilt / "report.md") == without_environment(committed / "report.md")
    campaign = json.loads((committed / "campaign.json").read_text())["campaign"]
    assert not campaign["scale"] and len(campaign["evaluation_seeds"]) >= 3
