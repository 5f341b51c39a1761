"""The campaign runner: resumable, parallel, dependency-aware execution of units.

Units run in a campaign folder (:mod:`bench.folder`). A worker holds an exclusive lock on
``<unit>/.lock`` while it runs a unit, so two runners on the same folder never run a unit twice.
Only the coordinating process writes to MLflow, one unit at a time under a folder-wide lock, so
parallel workers never meet a locked database.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from bench.campaign import Campaign, Unit, expand, units_of_part
from bench.folder import DONE, FAILED, CampaignFolder, try_lock
from grafs.errors import UserError
from grafs.files import write_json_atomic

EXECUTORS = ("local", "submitit")


# ----------------------------------------------------------------------------------------------
# Executing one unit (in a worker process)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    unit_id: str
    state: str  # done | failed | busy (locked by another runner)
    message: str = ""


def execute_unit(unit: Unit, out: str, device: str = "auto", threads: int | None = None) -> Outcome:
    """Run one unit into its folder; safe to call from any process, any number of times.

    ``threads`` caps the unit's CPU threads, so parallel workers share the cores instead of
    fighting over them (oversubscribed OpenMP threads slow small models down by orders of magnitude).
    """
    import torch

    from bench.units import run_unit

    if threads:
        torch.set_num_threads(threads)
    folder = CampaignFolder(Path(out)).unit_dir(unit.id)
    with try_lock(folder / ".lock") as acquired:
        if not acquired:
            return Outcome(unit.id, "busy")
        if (folder / "done.json").exists():
            return Outcome(unit.id, DONE, "already finished")
        (folder / "failed.json").unlink(missing_ok=True)
        write_json_atomic(folder / "unit.json", unit.to_record())
        started = time.time()
        with open(folder / "attempts.jsonl", "a") as attempts:  # provenance: who ran this unit, when
            attempts.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started}) + "\n")
        try:
            summary = run_unit(unit, folder, Path(out), device)
        except Exception as error:  # a failing unit is recorded and must not stop the campaign
            write_json_atomic(
                folder / "failed.json",
                {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()},
            )
            return Outcome(unit.id, FAILED, f"{type(error).__name__}: {error}")
        write_json_atomic(
            folder / "done.json",
            {"id": unit.id, "kind": unit.kind, "started": started, "finished": time.time(), **summary},
        )
        return Outcome(unit.id, DONE)


# ----------------------------------------------------------------------------------------------
# Pools: local processes or submitit (Slurm job arrays, or its local executor)
# ----------------------------------------------------------------------------------------------
def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _worker_setup(coordinator: int) -> None:
    """A local worker ends with its coordinator: killed with it (even by SIGKILL, which the coordinator
    cannot pass on), stopped cleanly by SIGTERM (temporary files removed), deaf to the terminal's Ctrl-C,
    which the coordinator handles for all."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != coordinator:  # it died before the line above took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


class LocalPool:
    def __init__(self, workers: int):
        self.executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_setup,
            initargs=(os.getpid(),),
        )
        self.threads = threads_per_worker(workers)

    def submit(self, units: list[Unit], out: Path, device: str) -> list:
        return [self.executor.submit(execute_unit, unit, str(out), device, self.threads) for unit in units]

    def wait_any(self, futures: list) -> None:
        wait(futures, timeout=5.0, return_when=FIRST_COMPLETED)

    def stop(self) -> None:
        """Interrupted: the running units stop now (each removes its temporary files and is pending again)."""
        for process in list(self.executor._processes.values()):  # the executor offers no public handle
            if process.is_alive():
                process.terminate()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class SubmititPool:
    """Each wave of ready units goes out as one job array."""

    def __init__(self, workers: int, folder: Path, cluster: str | None = None):
        import submitit

        self.executor = submitit.AutoExecutor(folder=folder / "submitit" / "%j", cluster=cluster)
        self.executor.update_parameters(timeout_min=24 * 60, slurm_array_parallelism=workers)
        # On a cluster every job has its own node share; the local stand-in shares this machine.
        self.threads = threads_per_worker(workers) if cluster == "local" else None
        self.jobs: list = []

    def submit(self, units: list[Unit], out: Path, device: str) -> list:
        with self.executor.batch():
            jobs = [self.executor.submit(execute_unit, unit, str(out), device, self.threads) for unit in units]
        self.jobs += jobs
        return jobs

    def wait_any(self, jobs: list) -> None:
        deadline = time.time() + 5.0
        while time.time() < deadline and not any(job.done() for job in jobs):
            time.sleep(0.2)

    def stop(self) -> None:
        """Interrupted: cancel the unfinished jobs (their units are pending again)."""
        for job in self.jobs:
            if not job.done():
                job.cancel(check=False)

    def close(self) -> None:
        pass


def default_workers(device: str) -> int:
    """One worker per CPU core on CPU campaigns; one on a GPU, whose memory the units would share."""
    from bench.training import resolve_device

    return 1 if resolve_device(device).type == "cuda" else os.cpu_count() or 1


def make_pool(executor: str, workers: int, out: Path):
    if executor == "local":
        return LocalPool(workers)
    if executor == "submitit":
        return SubmititPool(workers, out, cluster=os.environ.get("GRAFS_BENCH_SUBMITIT_CLUSTER"))
    raise UserError(f"unknown executor {executor!r}; valid choices: {', '.join(EXECUTORS)}")


# ----------------------------------------------------------------------------------------------
# The coordinator
# ----------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    done: int
    failed: int
    blocked: int
    total: int


PROGRESS_EVERY = 30.0
"""Without a terminal, a progress line at a unit's end at most this often (seconds) ..."""
PROGRESS_HEARTBEAT = 300.0
"""... and at least this often while units run, so a log shows the run is alive."""


class ProgressLines:
    """Progress for a log file or a pipe, where a progress bar would be one line rewritten forever."""

    def __init__(self, name: str, total: int, done: int, every: float = PROGRESS_EVERY,
                 heartbeat: float = PROGRESS_HEARTBEAT):
        self.name, self.total, self.done_before = name, total, done
        self.every, self.heartbeat = every, heartbeat
        self.started = self.last = time.monotonic()
        self.printed = False
        self.unshown = False  # a unit finished since the last line

    def update(self, done: int, running: int, failed: int, blocked: int, unit_finished: bool) -> None:
        now = time.monotonic()
        since = now - self.last
        self.unshown |= unit_finished
        # The first finished unit is shown at once, later ones at most every ``every`` seconds: a finish held
        # back by that limit is shown at the first update after it, so that a burst of quick units does not
        # leave the log's last line stale until the heartbeat.
        if not ((self.unshown and (since >= self.every or not self.printed)) or since >= self.heartbeat):
            return
        self.last, self.printed, self.unshown = now, True, False
        finished_here = done + failed + blocked - self.done_before
        left = self.total - done - failed - blocked
        elapsed = now - self.started
        eta = f"about {_duration(elapsed / finished_here * left)} left" if finished_here > 0 else "time left unknown"
        print(f"campaign {self.name}: {done}/{self.total} units done, {running} running, {failed} failed, "
              f"{blocked} blocked; {eta} ({_duration(elapsed)} elapsed)", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def run_campaign(
    campaign: Campaign,
    out: Path,
    workers: int = 1,
    executor: str = "local",
    on_finished: Callable[[Unit, Outcome], None] | None = None,
    progress: bool | None = None,
    progress_every: float = PROGRESS_EVERY,
    part: str | None = None,
) -> RunSummary:
    """Run every unfinished unit of ``campaign`` (or of its ``part``) in ``out``; finished units are skipped.

    Progress goes to stderr: a bar on a terminal (``progress`` None: when stderr is one), else
    :class:`ProgressLines` at most every ``progress_every`` seconds. An interruption (Ctrl-C, or
    SIGTERM turned into KeyboardInterrupt by the command line) stops the running units too.
    """
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    units = expand(campaign) if part is None else units_of_part(campaign, part)
    by_id = {unit.id: unit for unit in units}
    folder = CampaignFolder(out)
    out.mkdir(parents=True, exist_ok=True)
    folder.write_record(campaign, units, part)
    states = {unit.id: folder.unit_state(unit.id) for unit in units}
    pending = [u for u in units if states[u.id] != DONE]
    failed: set[str] = set()
    blocked: set[str] = set()
    running: dict = {}
    terminal = progress if progress is not None else os.isatty(2)
    name = campaign.name if part is None else f"{campaign.name} part {part}"
    bar = tqdm(total=len(units), initial=len(units) - len(pending), desc=f"campaign {name}", unit="unit",
               disable=not terminal)
    lines = None if terminal else ProgressLines(name, len(units), len(units) - len(pending), progress_every)
    pool = make_pool(executor, workers, out)
    just_finished = False
    try:
        while pending or running:
            for unit in list(pending):
                if any(dep in failed or dep in blocked for dep in unit.depends_on):
                    blocked.add(unit.id)
                    pending.remove(unit)
            ready = [u for u in pending if all(states.get(dep) == DONE for dep in u.depends_on)]
            ready = ready[: max(0, workers - len(running))]
            if ready:
                for unit, future in zip(ready, pool.submit(ready, out, campaign.device), strict=False):
                    running[future] = unit
                    pending.remove(unit)
            if lines:  # after the refill, so that the line counts the units running now
                done = sum(state == DONE for state in states.values())
                lines.update(done, len(running), len(failed), len(blocked), unit_finished=just_finished)
                just_finished = False
            if not running:
                if pending:  # units waiting on work another runner holds: look again shortly
                    time.sleep(1.0)
                    states.update({u.id: folder.unit_state(u.id) for u in units if states[u.id] != DONE})
                    continue
                break
            pool.wait_any(list(running))
            bar.set_postfix_str(_running_progress(folder, running.values(), len(failed)), refresh=True)
            finished = [f for f in running if f.done()]
            for future in finished:
                unit = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as error:  # the worker process itself died
                    outcome = Outcome(unit.id, FAILED, f"worker died: {error}")
                    write_json_atomic(folder.unit_dir(unit.id) / "failed.json", {"error": outcome.message})
                if outcome.state == "busy":
                    pending.append(unit)
                    time.sleep(0.5)
                    continue
                states[unit.id] = outcome.state
                if outcome.state == FAILED:
                    failed.add(unit.id)
                    bar.write(f"failed: {unit.id}: {outcome.message}")
                bar.update()
                if on_finished:
                    on_finished(unit, outcome)
            just_finished = bool(finished)
    except BaseException:
        pool.stop()
        raise
    finally:
        pool.close()
        bar.close()
    done = sum(states[u.id] == DONE for u in by_id.values())
    return RunSummary(done=done, failed=len(failed), blocked=len(blocked), total=len(units))


def _running_progress(folder: CampaignFolder, units, failed: int) -> str:
    """Per-unit progress of the running units, e.g. ``search-grafs-digits-vit-s0 40%``."""
    parts = []
    for unit in units:
        try:
            fraction = json.loads((folder.unit_dir(unit.id) / "progress.json").read_text())["fraction"]
        except (OSError, ValueError, KeyError):
            fraction = 0.0
        parts.append(f"{unit.id.rsplit('-', 1)[0]} {100 * fraction:.0f}%")
    return " | ".join(parts) + (f" | {failed} failed" if failed else "")
