"""The package as a whole: one namespace, modules a reader takes in one sitting, imports that point one way."""

from __future__ import annotations

import ast
import importlib
import inspect
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from prefect import Flow, Task

from conftest import BIN, REPO

# Where each folder of the repository is installed: flows/ and tasks/ keep their top-level folders.
ROOMS = {"embedforge": "embedforge", "flows": "embedforge.flows", "tasks": "embedforge.tasks"}
MAX_MODULE_LINES = 250
MAX_FUNCTION_LINES = 30
MAX_STAGE_PARAMETERS = 5


def _modules() -> dict[str, Path]:
    """{dotted module name: file} of every module the package installs."""
    found = {}
    for folder, package in ROOMS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = _modules()


def _imported(node: ast.AST, module: str) -> list[str]:
    """The embedforge modules one import statement names (a `from x import y` of a submodule names x.y)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        names = [
            f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
            for alias in node.names
        ]
    else:
        return []
    return [name for name in names if name in MODULES and name != module]


def _import_graph() -> dict[str, set[str]]:
    """Every import in every module, wherever it is written: module level, inside functions, under TYPE_CHECKING."""
    return {
        module: {name for node in ast.walk(ast.parse(path.read_text())) for name in _imported(node, module)}
        for module, path in MODULES.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target] if target in path else [module, target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_the_package_is_one_namespace_and_no_flows_or_tasks_package_is_installed(tmp_path):
    # Run outside the repository, as a worker would: only what pip installed is importable.
    for name in ("tasks", "flows"):
        result = subprocess.run([BIN / "python", "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode != 0 and f"No module named '{name}'" in result.stderr
    ok = subprocess.run(
        [BIN / "python", "-c", "import embedforge.flows.finetune, embedforge.tasks.decide, embedforge.cli.main"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr


def test_no_module_is_longer_than_a_sitting():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_longer_than_thirty_lines():
    long = [
        f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _stages() -> list[tuple[str, Task | Flow]]:
    found = []
    for name in MODULES:
        if name.startswith(("embedforge.tasks", "embedforge.flows")):
            module = importlib.import_module(name)
            found += [(f"{name}.{attr}", obj) for attr, obj in vars(module).items() if isinstance(obj, (Task, Flow))]
    return found


def test_no_task_or_flow_takes_more_than_five_parameters():
    stages = _stages()
    assert {"embedforge.tasks.decide.decide_release", "embedforge.flows.finetune.finetune"} <= {n for n, _ in stages}
    wide = {n: len(inspect.signature(s.fn).parameters) for n, s in stages}
    assert not {n: count for n, count in wide.items() if count > MAX_STAGE_PARAMETERS}, wide


def test_no_import_cycle_not_even_under_type_checking():
    graph = _import_graph()
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"
    assert not any("TYPE_CHECKING" in path.read_text() for path in MODULES.values())


def _folder(module: str) -> str:
    """A sub-package (embedforge.flows, embedforge.orchestration, ...) as one node; a top-level module as itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (REPO / "embedforge" / parts[-1]).is_dir() else module


def test_no_import_loop_between_folders():
    """Dependencies point one way between folders too: orchestration/ sets Prefect up and never imports a flow."""
    folders: dict[str, set[str]] = {}
    for module, targets in _import_graph().items():
        folders.setdefault(_folder(module), set()).update(_folder(t) for t in targets if _folder(t) != _folder(module))
    assert _cycle(folders) is None, f"import loop between folders: {' -> '.join(_cycle(folders))}"
    assert "embedforge.flows" not in folders["embedforge.orchestration"]


def test_the_hand_off_types_import_no_stage():
    graph = _import_graph()
    assert graph["embedforge.types"] <= {"embedforge.columns", "embedforge.data_reports", "embedforge.figures"}
    assert graph["embedforge.data_reports"] == set() and graph["embedforge.figures"] == set()


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("command", ["notify", "alerts"])
def test_notify_and_alerts_load_neither_torch_nor_sentence_transformers(command, tmp_path):
    result = subprocess.run(
        [BIN / "python", "-X", "importtime", "-m", "embedforge", command, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "Usage" in result.stdout, result.stderr[-2000:]
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "embedforge" in loaded and not loaded & {"torch", "sentence_transformers", "transformers"}
    probe = "import sys, embedforge.orchestration.notify; print(sorted({m.split('.')[0] for m in sys.modules}))"
    imported = subprocess.run([BIN / "python", "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert not {"torch", "sentence_transformers"} & set(ast.literal_eval(imported.stdout))


def test_the_wheel_installs_embedforge_alone(tmp_path):
    """What `pip install .` puts in site-packages (the Docker image installs so): one top-level package."""
    source = tmp_path / "source"
    for folder in ROOMS:
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / file, source / file)
    build = [BIN / "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheel", source]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"embedforge", wheel.name.split("-py")[0] + ".dist-info"}
    assert {"embedforge/flows/finetune.py", "embedforge/tasks/decide.py", "embedforge/types.py"} <= set(names)
    # Every module of the checkout is in it: a sub-package missing from pyproject's list imports only from a checkout.
    modules = {
        f"embedforge/{p.relative_to(REPO / 'embedforge').as_posix()}" for p in (REPO / "embedforge").rglob("*.py")
    }
    assert modules <= set(names), sorted(modules - set(names))


def test_the_finetune_flow_reads_as_wiring():
    """The flow's body is the DAG at a glance: at most 15 lines, its stages' work in tasks and helpers."""
    (flow_def,) = [
        node
        for node in ast.walk(ast.parse((REPO / "flows" / "finetune.py").read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "finetune"
    ]
    body = flow_def.body[1:] if isinstance(flow_def.body[0], ast.Expr) else flow_def.body
    assert body[-1].end_lineno - body[0].lineno + 1 <= 15
