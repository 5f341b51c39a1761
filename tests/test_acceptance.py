"""End-to-end acceptance runs of the offline defaults (``pytest -m slow``: minutes each)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from grafs.genotype import Genotype

ROOT = Path(__file__).resolve().parents[1]
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
    assert len(history) < 12 and sum(history[-1]["active_counts"]) <= 7
    assert genotype.formula()


def test_the_quick_campaign_ends_with_the_report(tmp_path):
    result = cli("run", "quick", "--out", str(tmp_path / "quick"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "quick"
    units = pd.read_parquet(out / "tables" / "units.parquet")
    assert (units["state"] == "done").all()
    report = (out / "report.md").read_text()
    assert "## Efficiency" in report and "## Transfer" in report
    assert (out / "report.html").stat().st_size > 50_000 and (out / "mlflow.db").exists()
