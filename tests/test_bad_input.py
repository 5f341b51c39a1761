"""Every input a user can get wrong is refused the same way: exit status 2, one line on stderr that
names the problem and the fix, nothing on stdout, nothing written, before any work starts.

The battery covers each kind of input the suite reads: the command line of every command, genotype
files, campaign files, data directories, output folders, campaign folders (campaign.json), the part
folders a merge reads and the GRAFS result.json that --grafs-result matches a budget to. Commands run
in-process, in a scratch working directory (so default output folders would land there too) with an
empty data directory.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.campaign import expand, parse_campaign, units_of_part
from bench.cli import main
from bench.folder import CampaignFolder
from bench.gather import gather
from bench.merge import merge_parts
from grafs.published import PUBLISHED_GENOTYPES

TINY = {"tasks": ["digits-vit"], "seeds": [0], "methods": ["grafs"], "evaluation": {"targets": []}}
TWO_PARTS = [{"name": "a", "tasks": ["digits-vit"], "seeds": [0]}, {"name": "b", "tasks": ["digits-vit"], "seeds": [1]}]
GENOTYPE = PUBLISHED_GENOTYPES["grafs-vit-1"].to_dict()
GRAFS_RESULT = {"method": "grafs", "task": "digits-vit",
                "cost": {"wall_seconds": 10.0, "sample_passes": 1000, "epoch_equivalents": 2.0}}
READ_ONLY = "/proc/grafs-bench-refused"  # a read-only place even for root
ON_LINUX = sys.platform == "linux"


@dataclass
class Workspace:
    root: Path
    listener: socket.socket | None = None  # a port held busy until the case ends

    def file(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def folder(self, name: str) -> str:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return str(self.root / name)

    def genotype(self, data: object) -> str:
        return self.file("g.json", data if isinstance(data, (str, bytes)) else json.dumps(data))

    def campaign(self, text: str, name: str = "c.toml") -> str:
        return self.file(name, text)

    def campaign_folder(self, name: str = "done", campaign: str = "tiny") -> str:
        parsed = parse_campaign({**TINY, "name": campaign})
        CampaignFolder(self.root / name).root.mkdir()
        CampaignFolder(self.root / name).write_record(parsed, expand(parsed))
        return str(self.root / name)

    def part_folder(self, name: str, part: str, campaign: str = "tiny", gathered: bool = True,
                    parts: list = TWO_PARTS) -> str:
        """The folder of a part of a campaign split into ``parts`` (by default two), its units not run
        (pending), gathered or not."""
        parsed = parse_campaign({**TINY, "name": campaign, "seeds": [0, 1], "parts": parts})
        folder = CampaignFolder(self.root / name)
        folder.root.mkdir()
        folder.write_record(parsed, units_of_part(parsed, part), part)
        if gathered:
            gather(folder.root)
        return str(folder.root)

    def merged_folder(self) -> str:
        merge_parts(self.root / "merged", [Path(self.part_folder("pa", "a")), Path(self.part_folder("pb", "b"))])
        return str(self.root / "merged")

    def grafs_result(self, data: object) -> list[str]:
        path = self.file("result.json", data if isinstance(data, str) else json.dumps(data))
        return ["search", "--task", "digits-vit", "--method", "random", "--grafs-result", path]


def toml(**changes: str) -> str:
    """A valid tiny campaign file with some lines replaced or added (key -> TOML value)."""
    values = {"name": '"tiny"', "tasks": '["digits-vit"]', "seeds": "[0]", "methods": '["grafs", "random"]',
              "budget_multiples": "[1]"}
    values.update(changes)
    evaluation = values.pop("evaluation", "seeds = [0]\ntargets = []")
    return "\n".join(f"{key} = {value}" for key, value in values.items()) + f"\n[evaluation]\n{evaluation}\n"


def parts_toml() -> str:
    """The tiny campaign file with two seeds in two parts, a and b."""
    parts = [f'[[parts]]\nname = "{p["name"]}"\ntasks = ["digits-vit"]\nseeds = {p["seeds"]}\n' for p in TWO_PARTS]
    return toml(seeds="[0, 1]") + "".join(parts)


def part_default_out_is_file(w: Workspace) -> list[str]:
    w.file("runs/tiny/parts/a", "x")
    return ["run", w.campaign(parts_toml()), "--part", "a"]


def folder_with_units(w: Workspace) -> str:
    folder = w.campaign_folder()
    (Path(folder) / "units" / "some-unit").mkdir(parents=True)
    return folder


def run_campaign_file(text: str) -> Callable[[Workspace], list[str]]:
    return lambda w: ["run", w.campaign(text), "--out", str(w.root / "out")]


def train(*extra: str) -> list[str]:
    return ["train", "--task", "digits-vit", "--activation", "relu", *extra]


def deep(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def busy_port(w: Workspace) -> list[str]:
    w.listener = socket.socket()
    w.listener.bind(("127.0.0.1", 0))
    w.listener.listen()
    w.file("db/mlflow.db", b"")
    return ["ui", str(w.root / "db"), "--port", str(w.listener.getsockname()[1])]


def default_out_is_file(w: Workspace) -> list[str]:
    w.file("runs/tiny", "x")
    return ["run", w.campaign(toml())]


def svhn_garbage(w: Workspace) -> list[str]:
    w.file("data/svhn/train_32x32.mat", "not a mat file")
    return ["train", "--task", "svhn-resnet20", "--activation", "relu", "--data-dir", str(w.root / "data")]


def tinystories_odd_sized(w: Workspace) -> list[str]:
    w.file("data/tinystories/train.bin", b"\0\0\0")
    w.file("data/tinystories/val.bin", b"\0\0")
    return ["train", "--task", "tinystories-gpt-mini", "--activation", "relu", "--data-dir", str(w.root / "data")]


def in_folder(w: Workspace, name: str, content: str) -> str:
    """A folder holding one file (e.g. a campaign.json that is not a campaign record)."""
    return str(Path(w.file(f"x/{name}", content)).parent)


def cifar_files(w: Workspace, size: int) -> list[str]:
    folder = w.root / "data" / "cifar10" / "cifar-10-batches-bin"
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        w.file(str((folder / name).relative_to(w.root)), b"\0" * size)
    return ["train", "--task", "cifar10-resnet20", "--activation", "relu", "--data-dir", str(w.root / "data")]


# (id, argv from the workspace, expected fragment of the message)
CASES: list[tuple[str, Callable[[Workspace], list[str]], str]] = [
    # --- the command line of every command ------------------------------------------------
    ("no-command", lambda w: [], "required"),
    ("unknown-command", lambda w: ["fly"], "invalid choice"),
    ("list-topic", lambda w: ["list", "things"], "invalid choice"),
    ("train-no-task", lambda w: ["train", "--activation", "relu"], "--task"),
    ("train-task", lambda w: ["train", "--task", "nope", "--activation", "relu"], "unknown task 'nope'"),
    ("train-activation", lambda w: ["train", "--task", "digits-vit", "--activation", "swish"], "unknown activation"),
    ("train-seed-negative", lambda w: train("--seed", "-1"), "non-negative integer"),
    ("train-seed-text", lambda w: train("--seed", "one"), "non-negative integer"),
    ("train-seed-64-bits", lambda w: train("--seed", str(2**64)), "seed from 0 to 4294967295"),
    ("train-seed-32-bits", lambda w: train("--seed", str(2**32)), "seed from 0 to 4294967295"),
    ("train-device", lambda w: train("--device", "tpu"), "unknown device 'tpu'"),
    ("search-method", lambda w: ["search", "--task", "digits-vit", "--method", "annealing"], "unknown search method"),
    ("search-mode", lambda w: ["search", "--task", "digits-vit", "--mode", "sloppy"], "invalid choice"),
    ("search-option-type", lambda w: ["search", "--task", "digits-vit", "--method", "evolution",
                                      "--population", "many"], "expected an integer"),
    ("search-option-value", lambda w: ["search", "--task", "digits-vit", "--method", "evolution",
                                       "--population", "1"], "population"),
    ("search-option-of-another-method", lambda w: ["search", "--task", "digits-vit", "--method", "random",
                                                   "--population", "4"], "'population' does not apply"),
    ("search-option-nan", lambda w: ["search", "--task", "digits-vit", "--method", "random",
                                     "--proxy-fraction", "nan"], "finite number"),
    ("search-budget-nan", lambda w: ["search", "--task", "digits-vit", "--method", "random",
                                     "--budget-multiple", "nan"], "positive number"),
    ("search-budget-inf", lambda w: ["search", "--task", "digits-vit", "--method", "random",
                                     "--budget-seconds", "inf"], "positive number"),
    ("search-budget-zero", lambda w: ["search", "--task", "digits-vit", "--method", "random",
                                      "--budget-multiple", "0"], "positive number"),
    ("search-budget-unit", lambda w: ["search", "--task", "digits-vit", "--method", "random",
                                      "--budget-unit", "hours"], "unknown budget unit 'hours'"),
    ("search-budget-for-grafs", lambda w: ["search", "--task", "digits-vit", "--budget-multiple", "2"],
     "applies to black-box methods"),
    ("search-budget-seconds-with-unit", lambda w: ["search", "--task", "digits-vit", "--method", "random",
                                                   "--budget-seconds", "5", "--budget-unit", "sample_passes"],
     "--budget-seconds sets seconds"),
    ("search-no-grafs-result", lambda w: ["search", "--task", "digits-vit", "--method", "random"],
     "run `grafs-bench search --method grafs"),
    ("search-seed-64-bits", lambda w: ["search", "--task", "digits-vit", "--seed", str(2**64 + 1)], "seed from 0"),
    ("show-missing", lambda w: ["show", str(w.root / "none.json")], "does not exist"),
    ("show-fixed", lambda w: ["show", "relu"], "fixed activation, not a genotype"),
    ("run-workers", lambda w: ["run", "quick", "--workers", "0"], "positive integer"),
    ("run-executor", lambda w: ["run", "quick", "--executor", "slurm"], "invalid choice"),
    ("run-progress-every", lambda w: ["run", "quick", "--progress-every", "-5"], "positive number"),
    ("run-unknown-campaign", lambda w: ["run", "no-such-campaign"], "neither a built-in campaign"),
    ("ui-port-zero", lambda w: ["ui", w.folder("x"), "--port", "0"], "port from 1 to 65535"),
    ("ui-port-too-big", lambda w: ["ui", w.folder("x"), "--port", "70000"], "port from 1 to 65535"),
    ("ui-port-busy", busy_port, "is not free"),
    ("ui-no-store", lambda w: ["ui", w.folder("x")], "has no mlflow.db"),
    ("prepare-dataset", lambda w: ["prepare", "openwebtext"], "invalid choice"),
    # --- genotype files (train --activation, show) -----------------------------------------
    ("genotype-not-json", lambda w: ["show", w.genotype("{ops: relu")], "not valid JSON"),
    ("genotype-deep-nesting", lambda w: ["show", w.genotype(deep())], "not a genotype file"),
    ("genotype-long-number", lambda w: ["show", w.genotype('{"betas": [' + "7" * 5000 + "]}")],
     "not a genotype file"),
    ("genotype-list", lambda w: ["show", w.genotype([1, 2])], "expected a JSON object"),
    ("genotype-missing-key", lambda w: ["show", w.genotype({k: v for k, v in GENOTYPE.items() if k != "ops"})],
     "missing keys"),
    ("genotype-unknown-key", lambda w: ["show", w.genotype({**GENOTYPE, "colour": 1})], "unknown keys"),
    ("genotype-format", lambda w: ["show", w.genotype({**GENOTYPE, "format": "v0"})], "not supported"),
    ("genotype-op-count", lambda w: ["show", w.genotype({**GENOTYPE, "ops": GENOTYPE["ops"][:5]})], "exactly 6"),
    ("genotype-unknown-op", lambda w: ["show", w.genotype({**GENOTYPE, "ops": ["tanhh", *GENOTYPE["ops"][1:]]})],
     "tanhh"),
    ("genotype-ops-shape", lambda w: ["show", w.genotype({**GENOTYPE, "ops": "relu"})], "'ops' must be a list"),
    ("genotype-beta-nan", lambda w: ["show", w.genotype(json.dumps({**GENOTYPE, "betas": [None, None, float("nan"),
                                                                                           None, None, -0.4]}))],
     "finite numbers"),
    ("genotype-beta-not-allowed", lambda w: ["show", w.genotype({**GENOTYPE, "betas": [1.0] + GENOTYPE["betas"][1:]})],
     "has no beta"),
    ("genotype-bounded", lambda w: ["show", w.genotype({**GENOTYPE, "bounded": "yes"})], "true or false"),
    ("genotype-not-utf8", lambda w: ["show", w.genotype(b"\xff\xfe{")], "cannot be read"),
    ("genotype-folder", lambda w: ["show", w.folder("g.json")], "cannot be read"),
    ("genotype-for-train", lambda w: ["train", "--task", "digits-vit", "--activation", w.genotype(deep())],
     "not a genotype file"),
    # --- campaign files (run) -----------------------------------------------------------------
    ("campaign-toml-syntax", run_campaign_file("tasks = [\n"), "not valid TOML"),
    ("campaign-not-utf8", run_campaign_file(b"tasks = ['\xff']\n"), "cannot be read"),
    ("campaign-folder", lambda w: ["run", w.folder("c.toml")], "neither a built-in campaign"),
    ("campaign-unknown-key", run_campaign_file(toml(colour='"red"')), "key 'colour': unknown key"),
    ("campaign-missing-methods", run_campaign_file('tasks = ["digits-vit"]\nseeds = [0]\n'), "key 'methods'"),
    ("campaign-method-list", run_campaign_file(toml(methods='["grafs", ["random"]]')),
     "expected a method name or a table"),
    ("campaign-method-name-list", run_campaign_file(toml(methods='["grafs", {method = ["random"]}]')),
     "unknown method"),
    ("campaign-option-shape", run_campaign_file(toml(methods='[{method = "grafs", mode = ["fixed"]}]')),
     "must be a str"),
    ("campaign-label-path", run_campaign_file(toml(methods='["grafs", {method = "random", label = "../x"}]')),
     "letters, digits"),
    ("campaign-budget-nan", run_campaign_file(toml(budget_multiples="[1, nan]")), "positive finite numbers"),
    ("campaign-budget-inf", run_campaign_file(toml(budget_multiples="[inf]")), "positive finite numbers"),
    ("campaign-budget-negative", run_campaign_file(toml(budget_multiples="[-1]")), "positive finite numbers"),
    ("campaign-budget-duplicate", run_campaign_file(toml(budget_multiples="[1, 1.0]")), "more than once"),
    ("campaign-budget-shape", run_campaign_file(toml(budget_multiples='"2"')), "expected a list of numbers"),
    ("campaign-budget-unit", run_campaign_file(toml(budget_unit='"hours"')), "unknown unit 'hours'"),
    ("campaign-seed-negative", run_campaign_file(toml(seeds="[-1]")), "seeds must be integers from 0"),
    ("campaign-seed-too-big", run_campaign_file(toml(seeds=f"[{2**63 - 1}]")), "seeds must be integers from 0"),
    ("campaign-seed-duplicate", run_campaign_file(toml(seeds="[0, 1, 0]")), "more than once"),
    ("campaign-evaluation-seed-negative", run_campaign_file(toml(evaluation="seeds = [-3]")),
     "key 'evaluation.seeds'"),
    ("campaign-evaluation-seed-duplicate", run_campaign_file(toml(evaluation="seeds = [2, 2]")), "more than once"),
    ("campaign-evaluation-target", run_campaign_file(toml(evaluation='targets = ["pydoc-gpt-micro"]')),
     "not a transfer target"),
    ("campaign-evaluation-shape", run_campaign_file(toml(evaluation="seeds = 3")), "expected a list of ints"),
    ("campaign-transfer-multiple", run_campaign_file(toml(evaluation="transfer_multiples = [7]")),
     "not one of the budget"),
    ("campaign-task-unknown", run_campaign_file(toml(tasks='["nope"]')), "unknown task 'nope'"),
    ("campaign-task-duplicate", run_campaign_file(toml(tasks='["digits-vit", "digits-vit"]')), "more than once"),
    ("campaign-task-target", run_campaign_file(toml(tasks='["digits-vit-mini"]')), "transfer target"),
    ("campaign-fixed-duplicate", run_campaign_file(toml(fixed='["relu", "relu"]')), "more than once"),
    ("campaign-fixed-unknown", run_campaign_file(toml(fixed='["swish"]')), "unknown activation 'swish'"),
    ("campaign-name-parent", run_campaign_file(toml(name='"../escape"')), "key 'name'"),
    ("campaign-name-slash", run_campaign_file(toml(name='"a/b"')), "key 'name'"),
    ("campaign-name-dots", run_campaign_file(toml(name='".."')), "key 'name'"),
    ("campaign-name-shape", run_campaign_file(toml(name="[1]")), "key 'name'"),
    ("campaign-name-from-file", lambda w: ["run", w.campaign(toml().replace('name = "tiny"\n', ""), "a b!.toml")],
     "key 'name'"),
    ("campaign-description-shape", run_campaign_file(toml(description="[1]")), "key 'description'"),
    ("campaign-scale", run_campaign_file(toml(scale="{search_epochs = 0}")), "positive integer"),
    ("campaign-device", run_campaign_file(toml(device='"tpu"')), "unknown device 'tpu'"),
    # --- output folders ---------------------------------------------------------------------
    ("run-out-file", lambda w: ["run", w.campaign(toml()), "--out", w.file("o", "x")], "is a file, not a folder"),
    ("run-out-under-file", lambda w: ["run", w.campaign(toml()), "--out", w.file("o", "x") + "/sub"],
     "which is a file"),
    ("run-out-unrelated-files", lambda w: ["run", w.campaign(toml()), "--out", in_folder(w, "notes.txt", "x")],
     "not a campaign folder"),
    ("run-out-other-campaign", lambda w: ["run", w.campaign(toml()), "--out", w.campaign_folder(campaign="other")],
     "holds campaign 'other'"),
    ("run-out-default-is-file", default_out_is_file, "is a file, not a folder"),
    ("train-out-file", lambda w: train("--out", w.file("o", "x")), "is a file, not a folder"),
    ("train-out-under-file", lambda w: train("--out", w.file("o", "x") + "/deeper/still"), "which is a file"),
    ("search-out-file", lambda w: ["search", "--task", "digits-vit", "--out", w.file("o", "x")],
     "is a file, not a folder"),
    ("show-plot-folder", lambda w: ["show", "grafs-vit-1", "--plot", w.folder("plots")], "is a folder"),
    ("show-plot-under-file", lambda w: ["show", "grafs-vit-1", "--plot", w.file("p", "x") + "/f.png"],
     "which is a file"),
    ("prepare-data-dir-file", lambda w: ["prepare", "tinystories", "--data-dir", w.file("d", "x")],
     "is a file, not a folder"),
    # --- campaign folders (status, gather, report, run) -------------------------------------
    ("status-no-campaign", lambda w: ["status", w.folder("x")], "holds no campaign"),
    ("status-missing-folder", lambda w: ["status", str(w.root / "none")], "holds no campaign"),
    ("status-random-record", lambda w: ["status", in_folder(w, "campaign.json", '{"a": 1}')],
     "not a grafs-bench campaign record"),
    ("status-record-not-json", lambda w: ["status", in_folder(w, "campaign.json", "{")],
     "not a grafs-bench campaign record"),
    ("status-record-deep", lambda w: ["status", in_folder(w, "campaign.json", deep())],
     "not a grafs-bench campaign record"),
    ("status-record-long-number", lambda w: ["status", in_folder(w, "campaign.json", "9" * 5000)],
     "not a grafs-bench campaign record"),
    ("gather-random-record", lambda w: ["gather", in_folder(w, "campaign.json", "[]")],
     "not a grafs-bench campaign record"),
    ("gather-no-campaign", lambda w: ["gather", w.folder("x")], "holds no campaign"),
    ("gather-file", lambda w: ["gather", w.file("x", "y")], "holds no campaign"),
    ("report-random-record", lambda w: ["report", in_folder(w, "campaign.json", '{"campaign": 1}')],
     "not a grafs-bench campaign record"),
    ("report-not-gathered", lambda w: ["report", w.campaign_folder()], "no gathered tables"),
    ("run-random-record", lambda w: ["run", w.campaign(toml()), "--out",
                                     in_folder(w, "campaign.json", '{"units": []}')],
     "not a grafs-bench campaign record"),
    # --- campaigns in parts (run --part, merge) -------------------------------------------------
    ("campaign-parts-gap", run_campaign_file(parts_toml().rsplit("[[parts]]", 1)[0]),
     r"key 'parts': digits-vit with seed 1 is in no part"),
    ("campaign-parts-overlap", run_campaign_file(parts_toml().replace("seeds = [1]", "seeds = [0, 1]")),
     r"key 'parts': digits-vit with seed 0 is in parts 'a' and 'b'"),
    ("run-part-unknown", lambda w: ["run", w.campaign(parts_toml()), "--part", "c", "--out", str(w.root / "out")],
     "campaign 'tiny' has no part 'c'; valid choices: a, b"),
    ("run-part-without-parts", lambda w: ["run", w.campaign(toml()), "--part", "a"], "declares no parts"),
    ("run-part-default-out-is-file", part_default_out_is_file, "--out runs/tiny/parts/a is a file, not a folder"),
    ("run-part-in-other-part", lambda w: ["run", w.campaign(parts_toml()), "--part", "b", "--out",
                                          w.part_folder("p", "a", gathered=False)],
     "holds part 'a' of campaign 'tiny', not part 'b'; pass --part a"),
    ("run-part-folder-without-part", lambda w: ["run", w.campaign(parts_toml()), "--out",
                                                w.part_folder("p", "a", gathered=False)], "pass --part a to resume it"),
    ("run-part-in-whole-folder", lambda w: ["run", w.campaign(parts_toml()), "--part", "a", "--out",
                                            w.campaign_folder()], "holds all of campaign 'tiny', not part 'a'"),
    ("run-in-merged-folder", lambda w: ["run", w.campaign(parts_toml()), "--out", w.merged_folder()],
     "holds parts merged by grafs-bench merge"),
    ("status-merged-folder", lambda w: ["status", w.merged_folder()], "holds parts merged by grafs-bench merge"),
    ("gather-merged-folder", lambda w: ["gather", w.merged_folder()], "merge again to refresh its tables"),
    ("merge-no-part-folders", lambda w: ["merge", str(w.root / "m")], "required: PART_FOLDER"),
    ("merge-missing-folder", lambda w: ["merge", str(w.root / "m"), str(w.root / "none")], "holds no campaign"),
    ("merge-not-gathered", lambda w: ["merge", str(w.root / "m"), w.part_folder("p", "a"),
                                      w.part_folder("q", "b", gathered=False)], "run `grafs-bench gather .*q` first"),
    ("merge-other-campaigns", lambda w: ["merge", str(w.root / "m"), w.part_folder("p", "a"),
                                         w.part_folder("q", "b", campaign="other")],
     r"q holds another campaign than .*p \('name' differs\)"),
    ("merge-same-part-twice", lambda w: ["merge", str(w.root / "m"), w.part_folder("p", "a"), w.part_folder("q", "a")],
     "q holds part 'a', as .*p does; give each part once"),
    ("merge-overlapping-splits", lambda w: ["merge", str(w.root / "m"), w.part_folder("p", "b"), w.part_folder(
        "q", "a", parts=[{"name": "a", "tasks": ["digits-vit"], "seeds": [0, 1]}])],
     r"parts b \(seeds 1 of digits-vit\), a \(seeds 0, 1 of digits-vit\) ran under different \[\[parts\]\] splits"),
    ("merge-whole-campaign", lambda w: ["merge", str(w.root / "m"), w.campaign_folder()], "not a part"),
    ("merge-a-merge", lambda w: ["merge", str(w.root / "m"), w.merged_folder()], "itself a merge of parts"),
    ("merge-out-is-a-part", lambda w: ["merge", str(w.root / "p"), w.part_folder("p", "a"), w.part_folder("q", "b")],
     "is one of the part folders"),
    ("merge-out-holds-units", lambda w: ["merge", folder_with_units(w), w.part_folder("p", "a")], "holds units"),
    ("merge-out-other-campaign", lambda w: ["merge", w.campaign_folder(campaign="other"), w.part_folder("p", "a")],
     "holds campaign 'other', not 'tiny'"),
    ("merge-out-file", lambda w: ["merge", w.file("o", "x"), w.part_folder("p", "a")], "is a file, not a folder"),
    # --- data directories --------------------------------------------------------------------
    ("data-missing", lambda w: ["train", "--task", "cifar10-resnet20", "--activation", "relu"],
     "CIFAR-10 not found .* pass --download to grafs-bench train or search"),
    ("data-dir-missing", lambda w: ["train", "--task", "cifar10-resnet20", "--activation", "relu", "--data-dir",
                                    str(w.root / "nowhere")], "CIFAR-10 not found"),
    ("data-dir-file", lambda w: ["train", "--task", "svhn-resnet20", "--activation", "relu", "--data-dir",
                                 w.file("d", "x")], "SVHN not found"),
    ("data-cifar-truncated", lambda w: cifar_files(w, 7), "not a CIFAR-10 binary batch"),
    ("data-svhn-garbage", svhn_garbage, "not an SVHN .mat file"),
    ("data-tinystories-odd", tinystories_odd_sized, "not a file of uint16 tokens"),
    # --- the GRAFS result.json a budget is matched to (search --grafs-result) ------------------
    ("result-missing", lambda w: ["search", "--task", "digits-vit", "--method", "random", "--grafs-result",
                                  str(w.root / "none.json")], "no GRAFS search result"),
    ("result-folder", lambda w: ["search", "--task", "digits-vit", "--method", "random", "--grafs-result",
                                 w.folder("r")], "no GRAFS search result"),
    ("result-not-json", lambda w: w.grafs_result("{"), "not the result.json of a GRAFS search"),
    ("result-deep", lambda w: w.grafs_result(deep()), "not the result.json of a GRAFS search"),
    ("result-long-number", lambda w: w.grafs_result('{"cost": {"wall_seconds": ' + "9" * 5000 + "}}"),
     "not the result.json of a GRAFS search"),
    ("result-no-cost", lambda w: w.grafs_result({"method": "grafs", "task": "digits-vit"}),
     "not the result.json of a GRAFS search"),
    ("result-cost-shape", lambda w: w.grafs_result({**GRAFS_RESULT, "cost": [1, 2]}),
     "not the result.json of a GRAFS search"),
    ("result-cost-nan", lambda w: w.grafs_result(json.dumps({**GRAFS_RESULT, "cost": {
        **GRAFS_RESULT["cost"], "wall_seconds": float("nan")}})), "positive number of seconds"),
    ("result-cost-negative", lambda w: w.grafs_result({**GRAFS_RESULT, "cost": {
        **GRAFS_RESULT["cost"], "wall_seconds": -1}}), "positive number of seconds"),
    ("result-other-task", lambda w: w.grafs_result({**GRAFS_RESULT, "task": "mnist1d-resnet1d"}),
     "not GRAFS on digits-vit"),
    ("result-other-method", lambda w: w.grafs_result({**GRAFS_RESULT, "method": "random"}), "not GRAFS on"),
]

PLATFORM_CASES = [
    ("run-out-read-only", lambda w: ["run", w.campaign(toml()), "--out", READ_ONLY], "cannot create files"),
    ("train-out-read-only", lambda w: train("--out", READ_ONLY + "/x"), "cannot create files"),
    ("show-plot-read-only", lambda w: ["show", "grafs-vit-1", "--plot", READ_ONLY + ".png"], "cannot create files"),
]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if not p.is_dir()} | {str(p.relative_to(root)) + "/": (0, 0) for p in root.rglob("*") if p.is_dir()}


def refuses(argv: list[str], root: Path, capsys) -> tuple[int, list[str], str]:
    before = snapshot(root)
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's refusals
        status = exit_.code
    captured = capsys.readouterr()
    assert snapshot(root) == before, "a refused command wrote files"
    return status, captured.err.strip().splitlines(), captured.out


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    root = tmp_path / "w"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("GRAFS_BENCH_DATA", str(root / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = Workspace(root)
    yield workspace
    if workspace.listener:
        workspace.listener.close()


@pytest.mark.parametrize(
    "make_argv, message",
    [pytest.param(argv, message, id=name) for name, argv, message in CASES]
    + [pytest.param(argv, message, id=name, marks=pytest.mark.skipif(not ON_LINUX, reason="needs /proc"))
       for name, argv, message in PLATFORM_CASES],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(workspace, capsys, make_argv, message):
    argv = make_argv(workspace)
    status, lines, out = refuses(argv, workspace.root, capsys)
    assert status == 2, (status, lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith("grafs-bench") and "Traceback" not in lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert out == ""


@pytest.mark.skipif(os.geteuid() == 0 or not hasattr(os, "geteuid"), reason="root writes through permissions")
def test_a_folder_without_write_permission_is_refused(workspace, capsys):
    locked = Path(workspace.folder("locked"))
    locked.chmod(0o555)
    try:
        status, lines, _ = refuses(train("--out", str(locked / "x")), workspace.root, capsys)
    finally:
        locked.chmod(0o755)
    assert status == 2 and len(lines) == 1 and "cannot create files" in lines[0]


def test_an_earlier_folder_of_the_same_campaign_is_accepted(workspace):
    """The check that refuses foreign folders must let a campaign resume in its own folder."""
    parsed = parse_campaign({**TINY, "name": "tiny"})
    folder = CampaignFolder(Path(workspace.campaign_folder()))
    (folder.root / "mlflow.db").write_bytes(b"")
    (folder.root / ".mlflow.lock").write_bytes(b"")
    folder.check_can_run(parsed)
    CampaignFolder(Path(workspace.folder("empty"))).check_can_run(parsed)
    CampaignFolder(workspace.root / "new" / "folder").check_can_run(parsed)
