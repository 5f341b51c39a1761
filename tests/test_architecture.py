"""The shape of the code: every module imports on its own, dependencies run one way, the command
line and campaign files start without heavy libraries, and the README's Python runs as written."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grafs.published import PUBLISHED_GENOTYPES

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("grafs", "baselines", "bench")

# Layers, lowest first: a module may import modules of its own layer or of lower ones only.
LAYERS = (
    ("grafs",),
    ("bench.activations", "bench.budget", "bench.data", "bench.models", "bench.options", "bench.outputs",
     "bench.plots", "bench.registry", "bench.search_task", "bench.searchers", "bench.tasks", "bench.training"),
    ("baselines",),
    ("bench.methods",),
    ("bench.campaign", "bench.folder", "bench.units", "bench.runner", "bench.tracking", "bench.gather",
     "bench.merge", "bench.report", "bench.cli", "bench.benchmarks"),
)
LIGHT = ("grafs", "grafs.config", "grafs.errors", "bench.cli", "bench.campaign", "bench.methods", "bench.folder",
         "bench.tasks", "bench.budget", "baselines.options")
HEAVY = ("torch", "optuna", "mlflow", "sklearn", "umap", "matplotlib", "pandas")


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def layer(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports anywhere in its code (lazy imports included)."""
    path = ROOT / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    known = set(modules())
    return {name for name in found if name in known and name != module}


def test_dependencies_run_one_way():
    wrong = [
        f"{module} imports {target}"
        for module in modules()
        for target in imports(module)
        if layer(target) > layer(module)
    ]
    assert not wrong, wrong


def test_the_method_table_is_the_only_module_that_knows_the_methods():
    implementations = {"baselines.blackbox", "baselines.pangaea", "baselines.surrogate",
                       "baselines.regularized_evolution", "baselines.fixed", "bench.search_task"}
    table = imports("bench.methods")
    assert not table & implementations  # it names them as strings and imports them when a searcher is built
    for module in ("bench.searchers", "baselines.blackbox"):
        assert "bench.methods" not in imports(module)


def test_every_module_imports_alone_in_a_fresh_interpreter():
    # Third-party libraries are loaded once; each project module is then imported first in a forked
    # child, which is what a fresh interpreter sees of the project (an import circle fails there).
    script = f"""
import importlib, os, sys
for heavy in {HEAVY!r} + ("numpy", "scipy", "seaborn", "torchvision"):
    importlib.import_module(heavy)
failed = []
for name in {modules()!r}:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as error:
            print(f"{{name}}: {{type(error).__name__}}: {{error}}", flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
sys.exit(1 if failed else 0)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_load_no_heavy_library(module):
    code = f"import sys, json, {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []


def test_the_public_api_is_importable_from_grafs():
    import grafs

    for name in grafs.__all__:
        assert getattr(grafs, name) is not None
    with pytest.raises(AttributeError):
        grafs.NoSuchThing  # noqa: B018


def readme_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_python_blocks_run_as_written(index, tmp_path):
    PUBLISHED_GENOTYPES["grafs-vit-1"].save(tmp_path / "genotype.json")  # the file the genotype block loads
    code = readme_blocks()[index]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
