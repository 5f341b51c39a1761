"""A campaign in parts: two parts of a tiny campaign run in folders of their own, are merged, and the
merged folder reports as one campaign; a merge of some of the parts counts the others as missing."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import tomllib
from test_report import CAMPAIGN, write_fixture

from bench.campaign import expand, load_campaign, parse_campaign, units_of_part
from bench.cli import main
from bench.folder import CampaignFolder
from bench.gather import gather
from bench.report import build_report

TINY_PARTS = """
name = "tiny-parts"
description = "GRAFS and ReLU on digits, two seeds, one part per seed"
tasks = ["digits-vit"]
seeds = [0, 1]
methods = ["grafs"]
fixed = ["relu"]

[[parts]]
name = "first"
tasks = ["digits-vit"]
seeds = [0]

[[parts]]
name = "second"
tasks = ["digits-vit"]
seeds = [1]

[evaluation]
seeds = [0]
targets = []

[scale]
search_epochs = 2
retrain_epochs = 1
"""


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    """The two parts run: ``first`` in its default folder, ``second`` in one given by --out."""
    root = tmp_path_factory.mktemp("parts")
    campaign = root / "tiny-parts.toml"
    campaign.write_text(TINY_PARTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert main(["run", str(campaign), "--part", "first", "--no-tracking", "--workers", "1"]) == 0
    second = root / "elsewhere" / "second"
    assert main(["run", str(campaign), "--part", "second", "--out", str(second), "--no-tracking",
                 "--workers", "1"]) == 0
    return {"campaign": campaign, "first": root / "runs" / "tiny-parts" / "parts" / "first", "second": second}


def units_table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "tables" / "units.parquet")


def test_each_part_runs_its_own_units_in_its_own_folder(parts, capsys):
    campaign = load_campaign(str(parts["campaign"]))
    for name in ("first", "second"):
        record = CampaignFolder(parts[name]).read_record()
        assert record.part == name and record.campaign == campaign  # the whole campaign, its parts included
        assert [unit.id for unit in record.units] == [unit.id for unit in units_of_part(campaign, name)]
        assert sorted(path.name for path in (parts[name] / "units").iterdir()) == sorted(u.id for u in record.units)
        assert (units_table(parts[name])["state"] == "done").all()
        assert f"This folder holds part {name} of the campaign" in (parts[name] / "report.md").read_text()
        assert main(["status", str(parts[name]), "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)["done"]) == len(record.units)
    assert set(units_table(parts["first"])["label"]) == {"grafs", "relu"}  # the fixed activation: first seed's part
    assert set(units_table(parts["second"])["label"]) == {"grafs"}


def test_the_merged_parts_report_as_one_campaign(parts, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(out), str(parts["first"]), str(parts["second"])]) == 0
    assert "merged parts first, second of campaign tiny-parts" in capsys.readouterr().out
    record = CampaignFolder(out).read_record()
    campaign = load_campaign(str(parts["campaign"]))
    assert record.part is None and [unit.id for unit in record.units] == [unit.id for unit in expand(campaign)]
    assert [(p.part, p.folder, p.units, p.finished) for p in record.merged] == [
        ("first", str(parts["first"]), 3, 3), ("second", str(parts["second"]), 2, 2)]
    assert all(p.first_started <= p.last_finished for p in record.merged)
    for name in ("units", "trace", "history"):
        merged = pd.read_parquet(out / "tables" / f"{name}.parquet")
        each = [pd.read_parquet(parts[part] / "tables" / f"{name}.parquet") for part in ("first", "second")]
        assert len(merged) == sum(map(len, each)) > 0
        assert set(merged["unit_id"]) == set().union(*(set(table["unit_id"]) for table in each))
    curves = pd.read_parquet(out / "tables" / "activation_curves.parquet")
    one_part = pd.read_parquet(parts["second"] / "tables" / "activation_curves.parquet")
    assert curves["activation"].value_counts().to_dict() == one_part["activation"].value_counts().to_dict()
    assert set(curves["unit_id"].dropna()) == {u.id for u in record.units if u.kind == "search"}

    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Merged by `grafs-bench merge` from 2 of the campaign's 2 parts: first from" in report
    assert "not gathered" not in report and "5 declared units" in report
    before = {path.name: path.read_bytes() for path in (out / "tables").glob("*.parquet")}
    assert main(["merge", str(out), str(parts["first"]), str(parts["second"])]) == 0  # merging again: the same
    assert {path.name: path.read_bytes() for path in (out / "tables").glob("*.parquet")} == before


def test_a_merge_of_one_part_reports_the_other_as_missing(parts, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(out), str(parts["second"]), "--report"]) == 0
    assert "2/5 declared units finished; not merged: first" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    # (a tiny search may also end diverged: it is then missing from the means too)
    missing_count = re.search(r"([345]) of 5 declared units are missing from the results \(3 not gathered", report)
    assert missing_count
    assert "from 1 of the campaign's 2 parts: second from" in report and "Not merged yet: first." in report
    completeness = pd.read_csv(out / "tables" / "completeness.csv")
    missing = completeness[completeness["state"] == "not gathered"]
    unmerged = sorted(u.id for u in units_of_part(load_campaign(str(parts["campaign"])), "first"))
    assert sorted(missing["unit_id"]) == unmerged
    # The report's own table leaves the unmerged part's units to the file: a study in many parts would
    # otherwise list thousands of them.
    if missing_count.group(1) == "3":
        assert "All of them belong to the parts not merged yet; tables/completeness.csv lists them." in report
    else:
        assert "3 of them belong to the parts not merged yet: the table below lists only the others" in report
    assert not any(unit_id in report for unit_id in unmerged)


def test_a_run_records_its_build_and_machine_and_the_merge_joins_them(parts, tmp_path):
    for name in ("first", "second"):
        environment = CampaignFolder(parts[name]).read_environment()
        assert re.fullmatch(r"[0-9a-f]{40}|unknown", environment["git_commit"])
        assert environment["workers"] == "1" and int(environment["cpu_count"]) >= 1
        assert environment["version.torch"] and environment["cpu"] and environment["platform"]
    out = tmp_path / "merged"
    assert main(["merge", str(out), str(parts["first"]), str(parts["second"])]) == 0
    assert CampaignFolder(out).read_environment() == CampaignFolder(parts["first"]).read_environment()


def test_the_merged_environment_keeps_shared_values_and_joins_differing_ones(parts, tmp_path):
    copies = {name: tmp_path / name for name in ("first", "second")}
    for name, folder in copies.items():
        shutil.copytree(parts[name], folder, ignore=shutil.ignore_patterns("units", "figures", "report.*"))
    (copies["first"] / "environment.json").write_text(json.dumps({"device": "cpu", "git_commit": "abc"}))
    (copies["second"] / "environment.json").write_text(json.dumps({"device": "cpu", "git_commit": "def", "host": "b"}))
    out = tmp_path / "merged"
    assert main(["merge", str(out), str(copies["first"]), str(copies["second"])]) == 0
    environment = json.loads((out / "environment.json").read_text())
    assert environment == {"device": "cpu", "git_commit": "abc | def", "host": "not recorded | b"}
    record = CampaignFolder(out).read_record()
    assert [p.first_started for p in record.merged] == [None, None]  # copied without units/: no times


def synthetic_part(whole: Path, campaign, name: str, out: Path) -> Path:
    """The folder of part ``name`` of ``campaign`` as if run and gathered: its share of the synthetic
    tables of the whole campaign in ``whole`` (see test_report.write_fixture)."""
    folder = CampaignFolder(out)
    folder.root.mkdir()
    units = units_of_part(campaign, name)
    folder.write_record(campaign, units, name)
    folder.tables_dir.mkdir()
    ids = {unit.id for unit in units}
    for table in ("units", "trace", "history", "activation_curves"):
        frame = pd.read_parquet(whole / "tables" / f"{table}.parquet")
        keep = frame["unit_id"].isin(ids) | (frame["unit_id"].isna() if table == "activation_curves" else False)
        frame[keep].to_parquet(folder.tables_dir / f"{table}.parquet", index=False)
    return out


def test_a_campaign_split_anew_between_parts_merges_under_the_newest_split(tmp_path, capsys):
    """Part ``a`` ran under a split into a (seed 0) and b (seeds 1, 2); b then turned out too long and the
    campaign was split anew into a, b (seed 1) and c (seed 2). The parts run merge, under the new split."""
    spec = {**CAMPAIGN, "tasks": ["digits-vit"], "budget_multiples": [1], "fixed": ["relu"],
            "evaluation": {**CAMPAIGN["evaluation"], "targets": ["digits-vit-mini"]}}
    whole = tmp_path / "whole"
    write_fixture(whole, spec)
    split = [{"name": "a", "tasks": ["digits-vit"], "seeds": [0]}]
    old = parse_campaign({**spec, "parts": [*split, {"name": "b", "tasks": ["digits-vit"], "seeds": [1, 2]}]})
    new = parse_campaign({**spec, "parts": [*split, {"name": "b", "tasks": ["digits-vit"], "seeds": [1]},
                                            {"name": "c", "tasks": ["digits-vit"], "seeds": [2]}]})
    assert expand(old) == expand(new)  # the split changes no unit
    a = synthetic_part(whole, old, "a", tmp_path / "a")
    b = synthetic_part(whole, new, "b", tmp_path / "b")
    for order in ([a, b], [b, a]):
        merged = tmp_path / f"merged-{order[0].name}"
        assert main(["merge", str(merged), *map(str, order), "--report"]) == 0
        assert CampaignFolder(merged).read_record().campaign.parts == new.parts  # old does not declare b as it ran
        assert "from 2 of the campaign's 3 parts" in (merged / "report.md").read_text()
        assert "Not merged yet: c." in (merged / "report.md").read_text()
    # b as it ran under the old split (seeds 1 and 2) overlaps c of the new one: no record declares both.
    old_b = synthetic_part(whole, old, "b", tmp_path / "old-b")
    c = synthetic_part(whole, new, "c", tmp_path / "c")
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "refused"), str(old_b), str(c)]) == 2
    assert "ran under different [[parts]] splits" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_a_campaign_split_by_task_merges_to_the_whole_campaigns_report(tmp_path):
    """Synthetic gathered tables (no training): each part's folder holds its share of a whole campaign's."""
    spec = {**CAMPAIGN, "seeds": [0, 1], "budget_multiples": [1], "fixed": ["relu", "gelu"],
            "parts": [{"name": "vit", "tasks": ["digits-vit"], "seeds": [0, 1]},
                      {"name": "gpt", "tasks": ["pydoc-gpt"], "seeds": [0, 1]}]}
    whole = tmp_path / "whole"
    write_fixture(whole, spec)
    campaign = parse_campaign(spec, source="test")
    for name in ("vit", "gpt"):
        synthetic_part(whole, campaign, name, tmp_path / name)
    merged = tmp_path / "merged"
    assert main(["merge", str(merged), str(tmp_path / "vit"), str(tmp_path / "gpt"), "--report"]) == 0
    build_report(whole)
    for table in sorted((whole / "tables").glob("*.csv")):
        assert (merged / "tables" / table.name).read_text() == table.read_text(), table.name



def test_a_part_gathered_before_any_unit_finished_reports_them_all_missing(tmp_path):
    campaign = parse_campaign(tomllib.loads(TINY_PARTS))
    folder = CampaignFolder(tmp_path / "first")
    folder.root.mkdir()
    folder.write_record(campaign, units_of_part(campaign, "first"), "first")
    gather(folder.root)
    report = build_report(folder.root).read_text()
    assert "3 of 3 declared units are missing from the results (3 pending)" in report
