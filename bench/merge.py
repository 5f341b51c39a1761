"""Merge: the gathered folders of a campaign's parts -> one folder whose report covers the whole study.

A campaign too long for one sitting runs in parts (``[[parts]]`` in its file, ``grafs-bench run --part``),
each in a folder of its own. :func:`merge_parts` writes into a folder ``out``:

``campaign.json``     the campaign (as ``source`` the parts' campaign files, joined by " | " where they lay
                      apart), every unit it declares (those of parts not merged too: the report counts them
                      as not gathered) and where each merged part came from (:class:`MergedPart`)
``tables/*.parquet``  the parts' gathered tables, concatenated
``environment.json``  if a part recorded one: per key the parts' value, or their distinct values joined by
                      " | " where they differ (a part without the file or the key counts as "not recorded")

It reads the parts' campaign.json and gathered tables only (and their units' done.json, for when each
part ran); nothing is run or gathered again. Every check comes before the first write, so a refused
merge writes nothing; each file is replaced atomically.

Parts only schedule a campaign: its units and their ids do not depend on them. So a campaign may be split
anew between the runs of its parts (say, when the parts still to run turn out too long), the parts already
run keeping their declaration. The merged campaign declares the split of the last given part whose record
declares every merged part as it ran; where no record does, the parts overlap and the merge is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.campaign import Campaign, expand, get_part, units_of_part
from bench.folder import DONE, CampaignFolder, CampaignRecord, MergedPart, joined_environment
from grafs.errors import UserError
from grafs.files import atomic_path, check_writable_folder, write_json_atomic

TABLE_ORDER = {"units": ["unit_id"], "trace": ["unit_id", "step"], "history": ["unit_id", "step"]}
CURVES = "activation_curves"


@dataclass(frozen=True)
class GatheredPart:
    folder: Path
    record: CampaignRecord
    tables: dict[str, pd.DataFrame]  # by name, as gather wrote them


def merge_parts(out: Path, folders: Sequence[Path]) -> CampaignRecord:
    """Merge the gathered part folders ``folders`` into ``out``; returns the record written there."""
    out = Path(out)
    for folder in folders:
        if Path(folder).resolve() == out.resolve():
            raise UserError(f"OUT {out} is one of the part folders to merge; pass a folder of its own for the merge")
    parts = [_read_part(Path(folder)) for folder in folders]
    first = parts[0]
    for part in parts[1:]:
        key = _differing_key(first.record.raw, part.record.raw)
        if key is not None:
            raise UserError(f"{part.folder} holds another campaign than {first.folder} ({key!r} differs); merge the "
                            "parts of one campaign")
    seen: dict[str, Path] = {}
    for part in parts:
        if part.record.part in seen:
            raise UserError(f"{part.folder} holds part {part.record.part!r}, as {seen[part.record.part]} does; "
                            "give each part once")
        seen[part.record.part] = part.folder
    sources = dict.fromkeys(part.record.campaign.source for part in parts)
    campaign = replace(_newest_split(parts), source=" | ".join(sources))
    _check_out(out, campaign.name)
    tables = _merged_tables(parts)
    environment = _environment(parts)
    merged = tuple(_provenance(part) for part in parts)

    folder = CampaignFolder(out)
    folder.tables_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        with atomic_path(folder.tables_dir / f"{name}.parquet") as temporary:
            table.to_parquet(temporary, index=False)
    if environment is None:
        folder.environment_path.unlink(missing_ok=True)  # an earlier one describes other runs
    else:
        write_json_atomic(folder.environment_path, environment)
    units = expand(campaign)
    folder.write_merged_record(campaign, units, merged)
    return CampaignRecord(campaign, units, campaign.to_record(), merged=merged)


def _read_part(folder: Path) -> GatheredPart:
    record = CampaignFolder(folder).read_record()
    if record.merged:
        raise UserError(f"{folder} is itself a merge of parts; pass the part folders it was merged from")
    if record.part is None:
        raise UserError(f"{folder} holds all of campaign {record.campaign.name!r}, not a part; merge the folders of "
                        "grafs-bench run --part")
    tables_dir = CampaignFolder(folder).tables_dir
    if not (tables_dir / "units.parquet").is_file():
        raise UserError(f"{folder} has no gathered tables (tables/units.parquet); run `grafs-bench gather {folder}` "
                        "first")
    declared = {unit.id for unit in record.units}
    if declared != {unit.id for unit in units_of_part(record.campaign, record.part)}:
        raise UserError(f"{folder}: its units are not those this version of grafs-bench expands for part "
                        f"{record.part!r}; run the part again with this version")
    tables = {}
    for name in (*TABLE_ORDER, CURVES):
        path = tables_dir / f"{name}.parquet"
        try:
            tables[name] = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise UserError(f"{path} is not a readable table ({type(error).__name__}); run `grafs-bench gather "
                            f"{folder}` again") from None
    if set(tables["units"].get("unit_id", ())) != declared:
        raise UserError(f"{folder}: tables/units.parquet does not list the units of its campaign.json; run "
                        f"`grafs-bench gather {folder}` again")
    return GatheredPart(folder, record, tables)


def _differing_key(first: dict, other: dict) -> str | None:
    """The first key whose value differs; ``source`` (where the campaign file lay) and ``parts`` (how its
    runs were split) are no part of the campaign."""
    for key in sorted((set(first) | set(other)) - {"source", "parts"}):
        if first.get(key) != other.get(key):
            return key
    return None


def _newest_split(parts: list[GatheredPart]) -> Campaign:
    """The campaign as the last part declares it whose record declares every merged part as it ran."""
    ran = {part.record.part: get_part(part.record.campaign, part.record.part) for part in parts}
    for part in reversed(parts):
        declared = {p.name: p for p in part.record.campaign.parts}
        if all(declared.get(name) == split for name, split in ran.items()):
            return part.record.campaign
    names = ", ".join(f"{name} (seeds {', '.join(map(str, split.seeds))} of {', '.join(split.tasks)})"
                      for name, split in ran.items())
    raise UserError(f"parts {names} ran under different [[parts]] splits of the campaign and no part's record "
                    "declares them all as they ran, so their units may overlap; merge the parts of one split")


def _check_out(out: Path, campaign: str) -> None:
    check_writable_folder(out, "OUT")
    folder = CampaignFolder(out)
    if folder.units_dir.exists():
        raise UserError(f"OUT {out} holds units (units/), so runs write into it; pass another folder for the merge")
    if folder.has_record():
        previous = folder.read_record()
        if previous.campaign.name != campaign:
            raise UserError(f"OUT {out} holds campaign {previous.campaign.name!r}, not {campaign!r}; pass another "
                            "folder for the merge")
        if previous.part is not None:
            raise UserError(f"OUT {out} holds part {previous.part!r}; pass another folder for the merge")


def _merged_tables(parts: list[GatheredPart]) -> dict[str, pd.DataFrame]:
    tables = {name: _concat([part.tables[name] for part in parts], order) for name, order in TABLE_ORDER.items()}
    ids = tables["units"]["unit_id"]
    if ids.duplicated().any():
        raise UserError(f"unit {ids[ids.duplicated()].iloc[0]} is in the tables of two part folders; run "
                        "`grafs-bench gather` on each part folder again")
    curves = [part.tables[CURVES] for part in parts if not part.tables[CURVES].empty]
    if curves:
        # Every part's curves hold the same comparison activations (no unit_id): they are kept once.
        comparison = curves[0][curves[0]["unit_id"].isna()]
        tables[CURVES] = _concat([comparison, *(frame[frame["unit_id"].notna()] for frame in curves)], [])
    else:
        tables[CURVES] = pd.DataFrame()
    return tables


def _concat(frames: list[pd.DataFrame], order: list[str]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(order, kind="stable").reset_index(drop=True) if order else frame


def _environment(parts: list[GatheredPart]) -> dict[str, str] | None:
    return joined_environment([CampaignFolder(part.folder).read_environment() for part in parts])


def _provenance(part: GatheredPart) -> MergedPart:
    units = part.tables["units"]
    finished = units.loc[units["state"] == DONE, "unit_id"].tolist()
    folder = CampaignFolder(part.folder)
    started, ended = [], []
    for unit_id in finished:
        try:
            done = json.loads((folder.unit_dir(unit_id) / "done.json").read_text())
            started.append(float(done["started"]))
            ended.append(float(done["finished"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # the times are provenance only; a part kept without its units/ has none
    return MergedPart(
        part=part.record.part, folder=str(part.folder), units=len(part.record.units), finished=len(finished),
        first_started=_time(min(started)) if started else None, last_finished=_time(max(ended)) if ended else None,
    )


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")
