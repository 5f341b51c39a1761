"""Processes end when they should: a killed coordinator's workers, a stopped UI's server, an
interrupted run's units (without leaving temporary files); and a run without a terminal reports progress."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_runner import ROOT, TINY, run, write_campaign

from bench.runner import ProgressLines

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads processes from /proc")


def children(pid: int) -> set[int]:
    """Every living descendant of ``pid``, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def group(pgid: int) -> set[int]:
    """The living processes of a process group, from /proc."""
    members = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                members.add(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return {pid for pid in members if alive(pid)}


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running and not a zombie waiting for a parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(condition, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def unit_running(out: Path) -> bool:
    return any((out / "units").glob("*/unit.json"))  # written by a worker as it starts a unit


def test_workers_die_with_a_killed_coordinator(tmp_path):
    out = tmp_path / "out"
    coordinator = run(write_campaign(tmp_path), out, "--no-tracking", "--workers", "2", wait=False)
    try:
        assert wait_until(lambda: unit_running(out), 300), "no unit started"
        workers = children(coordinator.pid)
        assert workers, "the coordinator has no worker processes"
        os.kill(coordinator.pid, signal.SIGKILL)  # the coordinator alone: its workers get no signal from us
        coordinator.wait(timeout=30)
        # Its session holds every process it started (workers started later included).
        assert wait_until(lambda: not group(coordinator.pid), 30), group(coordinator.pid)
    finally:
        kill_group(coordinator.pid)


@pytest.mark.slow
def test_sigterm_stops_a_run_cleanly(tmp_path):
    out = tmp_path / "out"
    coordinator = run(write_campaign(tmp_path), out, "--no-tracking", wait=False)
    try:
        assert wait_until(lambda: unit_running(out), 300), "no unit started"
        coordinator.send_signal(signal.SIGTERM)
        assert coordinator.wait(timeout=60) == 130
        assert wait_until(lambda: not group(coordinator.pid), 30), group(coordinator.pid)
        assert not [path for path in out.rglob("*") if ".tmp" in path.name]
    finally:
        kill_group(coordinator.pid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as client:
        client.settimeout(1)
        return client.connect_ex(("127.0.0.1", port)) == 0


def test_ui_stops_its_server_on_sigterm(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mlflow.db").write_bytes(b"")  # MLflow creates its tables in an empty store
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "ui", str(out), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    try:
        assert wait_until(lambda: listening(port), 120, every=0.5), "the MLflow server did not start"
        started = children(ui.pid)
        ui.send_signal(signal.SIGTERM)  # grafs-bench ui alone, as `kill` sends it
        ui.wait(timeout=60)
        assert wait_until(lambda: not listening(port), 30), "the MLflow server still listens"
        assert wait_until(lambda: not any(alive(pid) for pid in started), 30)
    finally:
        kill_group(ui.pid)


def test_a_run_without_a_terminal_prints_progress_lines(tmp_path):
    # Quick fixed-activation retrainings finish while the GRAFS search still runs: a search long enough
    # that, however the retrainings bunch up, its own end is still followed by its find's retraining.
    campaign = tmp_path / "tiny.toml"
    fixed = '["relu", "gelu", "silu"]'
    campaign.write_text(TINY.replace('["grafs", "random"]', '["grafs"]').replace('["relu"]', fixed)
                        .replace("search_epochs = 3", "search_epochs = 30"))
    out, log = tmp_path / "out", tmp_path / "run.log"
    command = [sys.executable, "-m", "bench.cli", "run", str(campaign), "--out", str(out), "--workers", "2",
               "--progress-every", "1"]
    with open(log, "w") as stream:
        process = subprocess.Popen(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT,
                                   env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
        try:
            line = re.compile(r"campaign tiny: (\d)/5 units done, (\d) running, 0 failed, 0 blocked; about \S+ left")
            seen = wait_until(lambda: len(line.findall(log.read_text())) >= 2, 300)
            assert seen and process.poll() is None, log.read_text()  # lines while the run works
            process.send_signal(signal.SIGTERM)  # two lines are enough
            assert process.wait(timeout=60) == 130
        finally:
            process.kill()
    counts = [(int(done), int(running)) for done, running in line.findall(log.read_text())]
    assert [done for done, _ in counts] == sorted(done for done, _ in counts)
    # The first finished unit's line comes after its worker took the next one: both workers busy.
    assert counts[0][1] == 2, counts
    text = log.read_text()
    assert "INFO" not in text  # MLflow's start-up chatter is silenced


def test_progress_lines_show_a_finish_held_back_by_the_interval_at_the_next_update(capsys):
    lines = ProgressLines("burst", total=4, done=0, every=0.2)
    lines.update(1, 2, 0, 0, unit_finished=True)  # the first finish: shown at once
    lines.update(2, 2, 0, 0, unit_finished=True)  # inside the interval: held back
    lines.update(2, 2, 0, 0, unit_finished=False)
    assert [line.split(";")[0] for line in capsys.readouterr().err.splitlines()] == [
        "campaign burst: 1/4 units done, 2 running, 0 failed, 0 blocked"]
    time.sleep(0.25)
    lines.update(3, 1, 0, 0, unit_finished=False)  # no new finish, but the held-back one is now due
    lines.update(3, 1, 0, 0, unit_finished=False)  # and shown once
    assert [line.split(";")[0] for line in capsys.readouterr().err.splitlines()] == [
        "campaign burst: 3/4 units done, 1 running, 0 failed, 0 blocked"]
