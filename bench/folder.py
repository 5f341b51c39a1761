"""The layout of a campaign folder, and the one place that reads and writes its ``campaign.json``::

    OUT/campaign.json        the validated campaign and its expanded units (of one part, for a part's folder)
    OUT/units/<id>/          one folder per unit: its outputs, then done.json (or failed.json)
    OUT/mlflow.db            MLflow tracking store (unless MLFLOW_TRACKING_URI is set)
    OUT/tables/*.parquet     gathered tables
    OUT/report.md, report.html, figures/   the report

A unit counts as finished only when ``done.json`` exists; it is written last, atomically. A worker
holds an exclusive lock on ``<unit>/.lock`` while it runs a unit, so a unit folder that exists
with that lock free and no ``done.json`` is pending again (or failed, with ``failed.json``).

A merged folder (``grafs-bench merge``) holds a campaign.json that lists every unit of the campaign
and the part folders it was merged from, and their gathered tables, but no units: they ran in the
part folders, so nothing runs or is gathered in it.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.campaign import Campaign, Unit
from grafs.errors import UserError
from grafs.files import check_writable_folder, write_json_atomic

DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"
RECORD = "campaign.json"
ENVIRONMENT = "environment.json"
LAYOUT = (
    RECORD, ENVIRONMENT, "units", "tables", "mlflow.db", "mlartifacts", "report.md", "report.html", "figures",
    "submitit",
)
"""What a campaign folder holds besides hidden lock and temporary files and SQLite's journals of mlflow.db."""


def _in_layout(name: str) -> bool:
    return name in LAYOUT or name.startswith((".", "mlflow.db-"))


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock; yields False when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """A blocking exclusive lock (e.g. around MLflow writes shared by runners on one folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class MergedPart:
    """One part folder a merged folder's tables come from, as ``grafs-bench merge`` found it."""

    part: str
    folder: str  # as given to grafs-bench merge
    units: int  # declared by the part
    finished: int
    first_started: str | None  # ISO 8601 times from the units' done.json; None where the folder keeps no units/
    last_finished: str | None


@dataclass(frozen=True)
class CampaignRecord:
    """What ``campaign.json`` holds: the campaign as run and its units in order."""

    campaign: Campaign
    units: list[Unit]
    raw: dict  # the "campaign" object as written, for reports that quote it
    part: str | None = None  # the part of the campaign the folder runs (None: all of it)
    merged: tuple[MergedPart, ...] = ()  # a merged folder: the part folders its tables come from


NOT_RECORDED = "not recorded"


def joined_environment(records: list[dict | None]) -> dict[str, str] | None:
    """Several runs' environment values as one: per key the shared value, or the distinct values
    joined by " | " in order (a run that recorded no such key counts as "not recorded")."""
    if all(values is None for values in records):
        return None
    keys = dict.fromkeys(key for values in records if values for key in values)
    return {
        key: " | ".join(dict.fromkeys(str((values or {}).get(key, NOT_RECORDED)) for values in records))
        for key in keys
    }


@dataclass(frozen=True)
class CampaignFolder:
    root: Path

    @property
    def record_path(self) -> Path:
        return self.root / RECORD

    @property
    def units_dir(self) -> Path:
        return self.root / "units"

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_lock(self) -> Path:
        return self.root / ".mlflow.lock"

    @property
    def report_lock(self) -> Path:
        return self.root / ".report.lock"

    @property
    def environment_path(self) -> Path:
        return self.root / ENVIRONMENT

    def read_environment(self) -> dict | None:
        """The recorded ``environment.json``, or None; a damaged one is a one-line :class:`UserError`."""
        path = self.environment_path
        if not path.exists():
            return None
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            values = None
        if not isinstance(values, dict):
            raise UserError(f"{path} is not a JSON object of environment values; fix or remove it")
        return values

    def record_environment(self, values: dict[str, str]) -> None:
        """Record where a run of this folder ran; a resumed run on another build or machine adds its values."""
        recorded = self.read_environment()
        write_json_atomic(self.environment_path, values if recorded is None else joined_environment([recorded, values]))

    def unit_dir(self, unit_id: str) -> Path:
        return self.units_dir / unit_id

    # campaign.json ----------------------------------------------------------------------------
    def has_record(self) -> bool:
        return self.record_path.is_file()

    def read_record(self) -> CampaignRecord:
        """The folder's campaign record; a folder without one, or with a malformed one, is one clear error."""
        if not self.has_record():
            raise UserError(
                f"{self.root} holds no campaign (no {RECORD}); pass the --out folder of a grafs-bench run"
            )
        try:
            data = json.loads(self.record_path.read_text(encoding="utf-8"))
            return CampaignRecord(
                Campaign.from_record(data["campaign"]), [Unit.from_record(unit) for unit in data["units"]],
                data["campaign"], data.get("part"), tuple(MergedPart(**part) for part in data.get("merged", ())),
            )
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
            raise UserError(
                f"{self.record_path} is not a grafs-bench campaign record ({type(error).__name__}: {error}); "
                "pass the --out folder of a grafs-bench run"
            ) from None

    def read_run_record(self) -> CampaignRecord:
        """The record of a folder whose units ran in it; a merged folder, whose units ran elsewhere, is refused."""
        record = self.read_record()
        if record.merged:
            raise UserError(
                f"{self.root} holds parts merged by grafs-bench merge, whose units ran in the part folders its "
                f"{RECORD} lists; pass one of those, or merge again to refresh its tables"
            )
        return record

    def check_can_run(self, campaign: Campaign, part: str | None = None) -> None:
        """Refuse, before anything is created, a folder ``campaign`` (or its ``part``) cannot run in: a file,
        a place that cannot be written, a folder of another campaign or part, a merged folder, or a folder
        of unrelated files."""
        check_writable_folder(self.root, "--out")
        if self.has_record():
            self._check_same_campaign(campaign, part)
            return
        if not self.root.exists():
            return
        foreign = sorted(path.name for path in self.root.iterdir() if not _in_layout(path.name))
        if foreign:
            raise UserError(
                f"--out {self.root} holds other files ({foreign[0]!r}) and no {RECORD}, so it is not a campaign "
                f"folder; pass a new or empty folder, or the folder of an earlier run of {campaign.name!r}"
            )

    def _check_same_campaign(self, campaign: Campaign, part: str | None) -> None:
        previous = self.read_run_record()
        name = previous.campaign.name
        if name != campaign.name:
            raise UserError(f"{self.root} holds campaign {name!r}, not {campaign.name!r}; use another --out folder")
        if previous.part == part:
            return
        if part is None:
            raise UserError(f"{self.root} holds part {previous.part!r} of campaign {name!r}; pass --part "
                            f"{previous.part} to resume it, or use another --out folder")
        if previous.part is None:
            raise UserError(f"{self.root} holds all of campaign {name!r}, not part {part!r}; run it without --part, "
                            "or use another --out folder")
        raise UserError(f"{self.root} holds part {previous.part!r} of campaign {name!r}, not part {part!r}; pass "
                        f"--part {previous.part}, or use another --out folder")

    def write_record(self, campaign: Campaign, units: list[Unit], part: str | None = None) -> None:
        """Write the record of a folder that runs ``units`` (of ``part``, if given); a folder that holds
        another campaign or part is refused."""
        if self.has_record():
            self._check_same_campaign(campaign, part)
        record = {"campaign": campaign.to_record(), "units": [u.to_record() for u in units]}
        if part is not None:
            record["part"] = part
        write_json_atomic(self.record_path, record)

    def write_merged_record(self, campaign: Campaign, units: list[Unit], merged: tuple[MergedPart, ...]) -> None:
        """Write the record of a merged folder (``bench.merge`` checks the folder first)."""
        write_json_atomic(self.record_path, {"campaign": campaign.to_record(), "units": [u.to_record() for u in units],
                                             "merged": [asdict(part) for part in merged]})

    # unit states ------------------------------------------------------------------------------
    def unit_state(self, unit_id: str) -> str:
        folder = self.unit_dir(unit_id)
        if (folder / "done.json").exists():
            return DONE
        if folder.exists():
            with try_lock(folder / ".lock") as acquired:
                if not acquired:
                    return RUNNING
        if (folder / "failed.json").exists():
            return FAILED
        return PENDING

    def status(self, units: list[Unit] | None = None) -> dict[str, list[str]]:
        """done / running / failed / pending unit ids (of the record's units unless ``units`` are given)."""
        units = self.read_run_record().units if units is None else units
        status: dict[str, list[str]] = {DONE: [], RUNNING: [], FAILED: [], PENDING: []}
        for unit in units:
            status[self.unit_state(unit.id)].append(unit.id)
        return status
