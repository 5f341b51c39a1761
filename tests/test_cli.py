import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_list_tasks_json(capsys):
    assert main(["list", "tasks", "--json"]) == 0
    tasks = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {"mnist1d-resnet1d", "digits-vit", "pydoc-gpt", "cifar10-resnet20", "tinystories-gpt-mini"} <= set(tasks)
    cpu_search = [t for t in tasks.values() if t["scale"] == "cpu" and t["transfer"]]
    assert len(cpu_search) >= 3 and all(len(t["transfer"].split(",")) >= 2 for t in cpu_search)


@pytest.mark.parametrize("topic, expected", [("ops", "beta_mix"), ("activations", "leaky_relu")])
def test_list_tables(capsys, topic, expected):
    assert main(["list", topic]) == 0
    assert expected in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--task", "nope", "--activation", "relu"], "unknown task 'nope'; valid choices: .*mnist1d-resnet1d"),
        (["train", "--task", "mnist1d-resnet1d", "--activation", "swish"], "unknown activation 'swish'"),
        (["train", "--task", "mnist1d-resnet1d", "--activation", "missing.json"], "does not exist"),
        (["train", "--task", "mnist1d-resnet1d", "--activation", "relu", "--seed", "-1"], "non-negative integer"),
        (["list", "things"], "invalid choice"),
        (["show", "relu"], "fixed activation, not a genotype"),
        (["train", "--task", "cifar10-resnet20", "--activation", "relu", "--data-dir", "/nonexistent"], "nonexistent"),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr
    assert "Traceback" not in result.stderr


def test_show_prints_formula_and_plots(tmp_path, capsys):
    from grafs.published import PUBLISHED_GENOTYPES

    path = PUBLISHED_GENOTYPES["grafs-gpt-0"].save(tmp_path / "g.json")
    assert main(["show", str(path), "--plot", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert "SiLU(sigmoid(ReLU(x)) * GELU(x))" in out and "\\mathrm{SiLU}" in out
    assert (tmp_path / "g.png").stat().st_size > 10_000


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```\n(.*?)\n```", readme, flags=re.S)
    install_and_main, tests = blocks[0], blocks[1]
    install = install_and_main.split(" && .venv/bin/grafs-bench")[0]
    assert install in ci and tests in ci
