"""MLflow tracking of a campaign, built from its unit folders.

The unit folders are the source of truth; MLflow is a view of them for browsing. Only the
coordinating process logs, one unit at a time under a folder-wide lock, so workers never contend
for the SQLite database, and a unit is logged at most once: a finished run tagged with the unit's
id is never logged again, and an unfinished one (from a killed runner) is replaced.
:class:`TrackingThread` does all of it in a thread of the coordinator, so the runner hands the
workers their next units without waiting for MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from bench.campaign import RetrainSpec, SearchSpec, Spec, Unit
from bench.folder import CampaignFolder, folder_lock

UNIT_TAG = "grafs_bench.unit_id"
PACKAGES = ("torch", "torchvision", "optuna", "mlflow", "numpy", "pandas")


def tracking_uri(out: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` when set (e.g. a shared server), else SQLite inside ``out``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{CampaignFolder(out).mlflow_db.resolve()}"


@lru_cache(maxsize=1)
def environment_tags() -> dict[str, str]:
    tags = {"suite_version": metadata.version("grafs-bench"), "python": platform.python_version()}
    for package in PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    tags["git_commit"] = git_commit()
    return tags


def machine_tags() -> dict[str, str]:
    """The machine a run ran on: platform, CPU model and core count."""
    cpu = platform.processor() or "unknown"
    try:
        names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": str(os.cpu_count())}


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
        return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _read(folder: Path, name: str):
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def _flatten(prefix: str, value, into: dict) -> dict:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, into)
    else:
        into[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return into


def _numbers(record: dict) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    }


class Tracker:
    """Logs finished units of one campaign (one MLflow experiment) from their folders."""

    def __init__(self, out: Path, campaign_name: str):
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        for logger in ("mlflow", "alembic"):  # their INFO lines (creating and migrating tables) are noise here
            logging.getLogger(logger).setLevel(logging.WARNING)
        self.out, self.folder = out, CampaignFolder(out)
        self.uri = tracking_uri(out)
        self.lock = self.folder.mlflow_lock
        with folder_lock(self.lock):
            # The first client on a new SQLite file creates its schema: one process at a time.
            self.client = MlflowClient(tracking_uri=self.uri)
            experiment = self.client.get_experiment_by_name(campaign_name)
            self.experiment_id = (
                experiment.experiment_id
                if experiment
                else self.client.create_experiment(campaign_name, artifact_location=self._artifact_root())
            )

    def _artifact_root(self) -> str | None:
        """Artifacts next to the SQLite store in the campaign folder (MLflow's default is ./mlruns)."""
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return None  # a tracking server decides where its artifacts go
        return (self.out / "mlartifacts").resolve().as_uri()

    def _existing(self, unit_id: str):
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{UNIT_TAG}` = '{unit_id}'", max_results=10
        )
        return runs

    def _delete_with_children(self, run_id: str) -> None:
        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=50_000
        )
        for child in children:
            self.client.delete_run(child.info.run_id)
        self.client.delete_run(run_id)

    def run_id_of(self, unit_id: str) -> str | None:
        for run in self._existing(unit_id):
            if run.info.status == "FINISHED":
                return run.info.run_id
        return None

    def log_unit(self, unit: Unit, device: str = "") -> str:
        """Log a finished unit once; returns its MLflow run id."""
        with folder_lock(self.lock):
            for run in self._existing(unit.id):
                if run.info.status == "FINISHED":
                    return run.info.run_id
                self._delete_with_children(run.info.run_id)  # left unfinished by a killed runner
            folder = self.folder.unit_dir(unit.id)
            if isinstance(unit.spec, SearchSpec):
                return self._log_search(unit.id, unit.spec, folder, device)
            return self._log_retrain(unit.id, unit.spec, folder, device)

    # ------------------------------------------------------------------------------------------
    def _tags(self, unit_id: str, kind: str, spec: Spec, device: str) -> dict[str, str]:
        search = isinstance(spec, SearchSpec)
        mode = spec.options.get("mode", "fixed") if search and spec.method == "grafs" else ""
        return {
            UNIT_TAG: unit_id,
            "kind": kind,
            "method": spec.method if search else spec.label,
            "label": spec.label,
            "task": spec.task,
            "seed": str(spec.seed),
            "budget_multiple": str(spec.budget_multiple),
            "mode": str(mode),
            "device": device,
            **environment_tags(),
        }

    def _start(self, unit_id: str, kind: str, spec: Spec, device: str, parent: str | None = None, name=None) -> str:
        tags = self._tags(unit_id, kind, spec, device)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name or unit_id, tags=tags)
        return run.info.run_id

    def _log_params(self, run_id: str, spec: Spec) -> None:
        from mlflow.entities import Param

        params = [Param(key, value[:6000]) for key, value in _flatten("", spec.to_dict(), {}).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start : start + 100])

    def _log_metrics(self, run_id: str, rows: list[dict], step_key: str) -> None:
        from mlflow.entities import Metric

        metrics = []
        for index, row in enumerate(rows):
            step = int(row.get(step_key, index) or index)
            metrics += [Metric(key, value, 0, step) for key, value in _numbers(row).items() if key != step_key]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])

    def _artifacts(self, run_id: str, folder: Path, names: tuple[str, ...]) -> None:
        for name in names:
            if (folder / name).exists():
                self.client.log_artifact(run_id, str(folder / name))

    def _log_search(self, unit_id: str, spec: SearchSpec, folder: Path, device: str) -> str:
        result = _read(folder, "result.json") or {}
        trace = _read(folder, "trace.json") or []
        parent = self._start(unit_id, "search", spec, device)
        self._log_params(parent, spec)
        summary = {"best_score": result.get("best_score"), **_numbers(result.get("cost", {}))}
        self._log_metrics(parent, [summary], "step")
        self._log_metrics(parent, trace, "step")
        child_kind = "epoch" if spec.method == "grafs" else "trial"
        for row in trace:
            child = self._start(
                unit_id + f"/{child_kind}-{row['step']}",
                f"search-{child_kind}",
                spec,
                device,
                parent=parent,
                name=f"{child_kind} {row['step']}",
            )
            self._log_metrics(child, [row], "step")
            self.client.set_terminated(child)
        self._artifacts(
            parent, folder, ("genotype.json", "activation.png", "history.json", "trace.json", "result.json")
        )
        self.client.set_terminated(parent)
        return parent

    def _log_retrain(self, unit_id: str, spec: RetrainSpec, folder: Path, device: str) -> str:
        metrics = _read(folder, "metrics.json") or {}
        history = _read(folder, "history.json") or []
        run_id = self._start(unit_id, "retrain", spec, device)
        source = spec.activation.search
        if source:
            search_run = self.run_id_of(source)
            if search_run:
                self.client.set_tag(run_id, "source_search_run_id", search_run)
            self.client.set_tag(run_id, "source_search_unit", source)
        self._log_params(run_id, spec)
        self._log_metrics(run_id, history, "step")
        self._log_metrics(run_id, [{**metrics.get("metrics", {}), **metrics.get("cost", {})}], "step")
        self.client.set_tag(run_id, "status", metrics.get("status", "unknown"))
        self._artifacts(run_id, folder, ("metrics.json", "history.json", "genotype.json"))
        self.client.set_terminated(run_id)
        return run_id


class TrackingThread:
    """A :class:`Tracker` living in a thread of its own: creating the store and logging a unit
    (seconds each, most of it SQLite and MLflow's Python) overlap the units that run meanwhile
    instead of holding the runner up. Its jobs run one at a time, in order; :meth:`close` waits
    for them and raises the first error, if any. Killed with the process, it leaves unlogged units
    that the next run logs (a unit folder, not MLflow, is the record).
    """

    def __init__(self, out: Path, campaign_name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self.busy_seconds = 0.0
        self._thread = threading.Thread(target=self._work, args=(out, campaign_name), name="mlflow", daemon=True)
        self._thread.start()

    def log_unit(self, unit: Unit, device: str = "") -> None:
        self.call(lambda tracker: tracker.log_unit(unit, device))

    def call(self, job: Callable[[Tracker], object]) -> None:
        """Run ``job(tracker)`` in the tracking thread after the jobs before it."""
        self._jobs.put(job)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _work(self, out: Path, campaign_name: str) -> None:
        started = time.perf_counter()
        try:
            tracker = Tracker(out, campaign_name)
            self.busy_seconds += time.perf_counter() - started
            while (job := self._jobs.get()) is not None:
                started = time.perf_counter()
                job(tracker)
                self.busy_seconds += time.perf_counter() - started
        except BaseException as error:  # raised again by close(), in the coordinating thread
            self._error = error
