import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.gather import deterministic_view

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
description = "GRAFS and random search on digits, with one fixed activation"
tasks = ["digits-vit"]
seeds = [0]
budget_multiples = [1]
budget_unit = "sample_passes"
methods = ["grafs", "random"]
fixed = ["relu"]

[evaluation]
seeds = [0]
targets = []
top_k = 2

[scale]
search_epochs = 3
retrain_epochs = 1
proxy_epochs = 1
"""
UNITS = 2 + 2 + 1 + 1  # two searches, their finds retrained, relu, and random's runner-up candidate (top_k = 2)


def write_campaign(folder: Path) -> Path:
    path = folder / "tiny.toml"
    path.write_text(TINY)
    return path


def run(campaign: Path, out: Path, *extra: str, wait: bool = True):
    command = [sys.executable, "-m", "bench.cli", "run", str(campaign), "--out", str(out), *extra]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    if wait:
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env, start_new_session=True
    )


def tables(out: Path) -> dict[str, pd.DataFrame]:
    return {
        name: deterministic_view(pd.read_parquet(out / "tables" / f"{name}.parquet")) for name in ("units", "trace")
    }


def finished_parent_runs(out: Path) -> dict[str, int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    counts: dict[str, int] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=10_000):
        if run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags:
            unit = run.data.tags["grafs_bench.unit_id"]
            counts[unit] = counts.get(unit, 0) + 1
    return counts


def attempts(out: Path) -> dict[str, int]:
    return {
        folder.name: len((folder / "attempts.jsonl").read_text().splitlines())
        for folder in (out / "units").iterdir()
        if (folder / "attempts.jsonl").exists()
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = run(write_campaign(folder), folder / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "out"


def test_a_campaign_runs_gathers_and_tracks(uninterrupted):
    units = pd.read_parquet(uninterrupted / "tables" / "units.parquet")
    assert (units["state"] == "done").all() and len(units) == UNITS
    assert set(units["label"]) == {"grafs", "random", "relu"}
    candidates = units[(units["label"] == "random") & (units["kind"] == "retrain")].sort_values("candidate_rank")
    assert candidates["candidate_rank"].tolist() == [1, 2]
    search = units[(units["label"] == "random") & (units["kind"] == "search")].iloc[0]
    assert candidates["proxy_score"].iloc[0] == search["best_score"] >= candidates["proxy_score"].iloc[1]
    assert candidates["genotype"].iloc[0] == search["genotype"] != candidates["genotype"].iloc[1]
    curves = pd.read_parquet(uninterrupted / "tables" / "activation_curves.parquet")
    assert set(curves["unit_id"].dropna()) == set(units.loc[units["kind"] == "search", "unit_id"])
    assert set(curves["activation"].dropna()) == {"relu", "gelu", "silu"}
    trace = pd.read_parquet(uninterrupted / "tables" / "trace.parquet")
    assert set(trace["label"]) == {"grafs", "random"}
    runs = finished_parent_runs(uninterrupted)
    assert len(runs) == len(units) and set(runs.values()) == {1}


def test_rerunning_a_finished_campaign_redoes_nothing(uninterrupted, tmp_path):
    before = attempts(uninterrupted)
    result = run(write_campaign(tmp_path), uninterrupted)
    assert result.returncode == 0, result.stderr[-2000:]
    assert attempts(uninterrupted) == before
    assert set(finished_parent_runs(uninterrupted).values()) == {1}


def test_a_killed_campaign_resumes_to_the_same_tables(uninterrupted, tmp_path):
    campaign, out = write_campaign(tmp_path), tmp_path / "out"
    process = run(campaign, out, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "units").glob("*/done.json"))) < 2:
        time.sleep(0.2)
    time.sleep(0.7)  # land somewhere inside the next unit
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    result = run(campaign, out)
    assert result.returncode == 0, result.stderr[-2000:]
    for name, table in tables(out).items():
        pd.testing.assert_frame_equal(table, tables(uninterrupted)[name], check_like=True)
    assert set(finished_parent_runs(out).values()) == {1}
    assert len(finished_parent_runs(out)) == UNITS


def test_two_runners_on_one_folder_run_each_unit_once(tmp_path):
    campaign, out = write_campaign(tmp_path), tmp_path / "out"
    first, second = run(campaign, out, wait=False), run(campaign, out, wait=False)
    assert first.wait(timeout=600) == 0 and second.wait(timeout=600) == 0
    assert set(attempts(out).values()) == {1} and len(attempts(out)) == UNITS
    assert set(finished_parent_runs(out).values()) == {1} and len(finished_parent_runs(out)) == UNITS


def test_status_reports_the_folder(uninterrupted):
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "status", str(uninterrupted), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    status = json.loads(result.stdout)
    assert len(status["done"]) == UNITS and not status["failed"] and not status["pending"]


def test_failing_units_are_recorded_and_the_rest_go_on(tmp_path):
    campaign = tmp_path / "mixed.toml"
    # CIFAR-10 is not in the (empty) data directory: its units fail, the digits units still run.
    campaign.write_text(
        TINY.replace('tasks = ["digits-vit"]', 'tasks = ["digits-vit", "cifar10-resnet20"]').replace(
            'fixed = ["relu"]', 'fixed = ["relu", "gelu"]'
        )
    )
    out = tmp_path / "out"
    env_data = tmp_path / "no-data"
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(campaign), "--out", str(out), "--no-tracking"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "GRAFS_BENCH_DATA": str(env_data)},
        timeout=600,
    )
    assert result.returncode == 1
    units = pd.read_parquet(out / "tables" / "units.parquet")
    digits = units[units["search_task"] == "digits-vit"]
    cifar = units[units["search_task"] == "cifar10-resnet20"]
    assert (digits["state"] == "done").all()
    assert (cifar["state"] != "done").all()
    failed = cifar[cifar["state"] == "failed"]
    assert len(failed) >= 2 and failed["error"].str.contains("CIFAR-10 not found").all()
    status = subprocess.run(
        [sys.executable, "-m", "bench.cli", "status", str(out)], capture_output=True, text=True, cwd=ROOT
    )
    assert "CIFAR-10 not found" in status.stdout


def test_the_submitit_executor_runs_a_campaign(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "run",
            str(write_campaign(tmp_path)),
            "--out",
            str(out),
            "--no-tracking",
            "--executor",
            "submitit",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "GRAFS_BENCH_SUBMITIT_CLUSTER": "local"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((out / "units").glob("*/done.json"))) == UNITS
    assert list((out / "submitit").iterdir())  # submitit's own job folders: logs and pickled results


def test_ui_serves_the_campaign_folder(uninterrupted):
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "ui", str(uninterrupted), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, healthy = time.time() + 90, False
        while time.time() < deadline and not healthy:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    healthy = response.status == 200
            except OSError:
                time.sleep(1)
        assert healthy
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_tracking_thread_runs_jobs_in_order_and_raises_a_failure_at_close(tmp_path):
    from bench.tracking import TrackingThread

    tracker = TrackingThread(tmp_path, "jobs")
    seen = []
    tracker.call(lambda store: seen.append(store.experiment_id))
    tracker.call(lambda store: seen.append(1 / 0))
    tracker.call(lambda store: seen.append("after the failure"))
    with pytest.raises(ZeroDivisionError):
        tracker.close()
    assert len(seen) == 1 and (tmp_path / "mlflow.db").exists()
