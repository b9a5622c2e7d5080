"""The one-way architecture, read from the sources: kaffe below everything, no import cycles."""

import ast
import subprocess
import sys

from conftest import ROOT

PACKAGES = ("deeplab_resnet", "kaffe")


def modules():
    """{module name: path} of every module of the two packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(path, known):
    """Every module `path` imports, at any depth (inside functions too), as module names.

    `from package import name` counts as importing `package.name` when that is a
    module, else `package`.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return found


def import_graph():
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_kaffe_imports_neither_deeplab_resnet_nor_tensorflow():
    for name, targets in import_graph().items():
        if name.split(".")[0] == "kaffe":
            bad = [t for t in targets if t.split(".")[0] in ("deeplab_resnet", "tensorflow")]
            assert not bad, f"{name} imports {bad}"


def test_only_the_caffe_glue_imports_kaffe():
    """weights/caffe is the converter's one client; model/layers borrows Caffe's size formulas."""
    for name, targets in import_graph().items():
        if name.split(".")[0] != "deeplab_resnet":
            continue
        used = {t for t in targets if t.split(".")[0] == "kaffe"}
        allowed = {"deeplab_resnet.weights.caffe": used,
                   "deeplab_resnet.model.layers": {"kaffe.sizes"}}
        assert used <= allowed.get(name, set()), f"{name} imports {sorted(used)}"


def test_no_import_cycles():
    graph = import_graph()
    graph = {name: {t for t in targets if t in graph and t != name}
             for name, targets in graph.items()}
    state = {}  # name -> "open" while on the DFS stack, "done" after

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_kaffe_and_the_command_layer_load_without_tensorflow():
    """Every kaffe module (and the caffe glue and the commands, which import the library
    only after `cli.run` has loaded TensorFlow quietly)."""
    names = [n for n in modules() if n.split(".")[0] == "kaffe"]
    names += ["deeplab_resnet.weights.caffe", "deeplab_resnet.cli"]
    names += [n for n, path in modules().items()
              if n.startswith("deeplab_resnet.cli.") and "\ndef entry(" in path.read_text()]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print('tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_console_scripts_and_shims_run_the_cli_modules():
    """pyproject's commands and the top-level scripts lead to deeplab_resnet.cli.<name>.entry."""
    import importlib
    import re

    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    scripts = dict(re.findall(r'^(deeplab-[\w-]+) = "([\w.]+:\w+)"', section, re.M))
    for script in ("train", "train_msc", "fine_tune", "evaluate", "inference", "export", "convert",
                   "demo"):
        command = "deeplab-" + script.replace("_", "-")
        assert scripts.get(command) == f"deeplab_resnet.cli.{script}:entry", command
        shim = (ROOT / f"{script}.py").read_text()
        assert f"from deeplab_resnet.cli.{script} import entry" in shim, script
        assert len([line for line in shim.splitlines() if line.strip()]) <= 5, script
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_the_library_does_not_import_the_command_layer_or_the_scripts():
    scripts = {path.stem for path in ROOT.glob("*.py")}
    for name, targets in import_graph().items():
        assert not {t.split(".")[0] for t in targets} & scripts, name
        if not name.startswith("deeplab_resnet.cli"):
            upward = [t for t in targets if t.startswith("deeplab_resnet.cli")]
            assert not upward, f"{name} imports {upward}"


MAX_FUNCTION_LINES = 60


def test_no_library_function_is_over_60_lines():
    """Small functions: every function of the library and kaffe, docstring included."""
    long = []
    for path in sorted((ROOT / "deeplab_resnet").rglob("*.py")) + sorted(
            (ROOT / "kaffe").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, long


# Each room of the package and the rooms it may import (besides itself). "base" is the
# package's top-level modules that every room uses: the errors, the defaults, file writing.
ROOMS_BELOW = {
    "cli": {"api", "training", "predict", "weights", "data", "model", "runtime", "base"},
    "api": {"training", "predict", "weights", "data", "model", "runtime", "base"},
    "training": {"predict", "weights", "data", "model", "runtime", "base"},
    "predict": {"weights", "data", "model", "runtime", "base"},
    "weights": {"data", "model", "runtime", "base", "kaffe"},
    "data": {"model", "runtime", "base"},
    "model": {"runtime", "base", "kaffe"},
    "runtime": {"base"},
    "base": set(),
}
BASE = {"errors", "defaults", "files", "settings", "_moved"}


def room(module):
    """The room of a module of the package: its sub-package, "api" or "base"; else its top name."""
    parts = module.split(".")
    if parts[0] != "deeplab_resnet":
        return parts[0]
    if len(parts) == 1:
        return "api"
    return "base" if parts[1] in BASE else parts[1]


def test_each_room_imports_only_the_rooms_below_it():
    wrong = []
    for name, targets in import_graph().items():
        if name.split(".")[0] != "deeplab_resnet":
            continue
        for target in targets:
            below = room(target)
            if below in ROOMS_BELOW and below != room(name) \
                    and below not in ROOMS_BELOW[room(name)]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, wrong


def test_the_package_top_level_holds_only_rooms_and_the_base_modules():
    top = ROOT / "deeplab_resnet"
    modules_ = {p.stem for p in top.glob("*.py")} - {"__init__"}
    assert modules_ <= BASE, sorted(modules_ - BASE)
    rooms = {p.name for p in top.iterdir() if (p / "__init__.py").is_file()}
    assert rooms == set(ROOMS_BELOW) - {"api", "base"}
    for package in rooms:
        doc = ast.get_docstring(ast.parse((top / package / "__init__.py").read_text()))
        assert doc and "import" in doc, f"{package}/__init__.py: say what it holds and imports"


def test_the_flat_layouts_paths_still_import_with_a_deprecation_warning():
    import importlib
    import warnings

    from deeplab_resnet import _moved
    for old, new in _moved.MOVED.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message)
                   for w in caught), old
