"""The package's layering, read from the source (``ast``, nothing imported):

(a) a knet_d2 module imports only from its own layer or lower (:data:`LAYERS`; imports inside
    functions count too); (b) no import cycles between knet_d2 modules (module-level imports);
(c) knet_d2 never imports the scripts (train_net.py, demo/, tools/, benchmarks/), and knet_onnx
imports nothing from knet_d2; (d) no ``.py`` file of the repository edits ``sys.path``;
(e) no file over :data:`MAX_LINES` lines in knet_d2/, demo/, tools/, benchmarks/; and the URLs
and hashes of known weights appear in knet_d2 only in the table knet_d2/known_weights.py.

An import ``a.b.c`` counts as an import of the deepest knet_d2 module it names (the package
``__init__`` files Python runs on the way are not counted). The checker is tested on a small
tree with an upward import, a cycle and an unplaced subpackage.
"""
from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from tests.helpers.paths import REPO_ROOT

# Layer of each part of knet_d2 (low -> high): a module imports only from its own layer or lower.
# The longest matching prefix wins (e.g. a module of knet_d2.modeling.semantic is in
# knet_d2.modeling); "knet_d2" itself is the package __init__, which imports the public names.
LAYERS: Dict[str, int] = {
    "knet_d2.config": 0,
    "knet_d2.utils": 0,
    "knet_d2.quiet_warnings": 0,
    "knet_d2.path_handlers": 0,
    "knet_d2.known_weights": 0,
    "knet_d2.modeling": 1,
    "knet_d2.data": 1,
    "knet_d2.solver": 1,
    "knet_d2.checkpoint": 2,
    "knet_d2.knet_model": 2,
    "knet_d2.test_time_augmentation": 2,
    "knet_d2.inference_options": 2,
    "knet_d2.engine": 3,
    "knet_d2.export": 3,
    "knet_d2.model_zoo": 3,
    "knet_d2.predictor": 3,
    "knet_d2.rendering": 3,
    "knet_d2.collect_env": 3,
    "knet_d2.install_lock": 3,
    "knet_d2": 3,
}
SCRIPT_DIRS = ("demo", "tools", "benchmarks")  # with train_net.py: never imported by knet_d2
MAX_LINES = 450
MAX_LINES_OF: Dict[str, int] = {}  # exemptions: {file: limit}
NOT_SOURCE = {".venv", "datasets", "output", ".git"}
# Folders whose own top-level .py files are scripts (checked) but whose subfolders hold data.
DATA_FOLDERS_WITH_SCRIPTS = {"datasets"}



# ------------------------------------------------------------------------------- the checker
def module_files(root: Path, package: str) -> Dict[str, Path]:
    """``{dotted module name: file}`` of every .py file of ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(
    name: str, path: Path, modules: Set[str]
) -> Iterator[Tuple[str, int, bool]]:
    """``(imported name, line, module_level)`` for every import in ``path`` (module ``name``);
    relative imports resolved, ``from P import m`` resolved to ``P.m`` when that is a module of
    ``modules``."""
    package = name if _is_package(path) else name.rpartition(".")[0]

    def visit(node: ast.AST, module_level: bool) -> Iterator[Tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = module_level and not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, module_level
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    yield (full if full in modules else base), child.lineno, module_level
            yield from visit(child, inner)

    yield from visit(ast.parse(path.read_text(), str(path)), True)


def _deepest_module(imported: str, modules: Set[str]) -> Optional[str]:
    parts = imported.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def layer_of(module: str, layers: Dict[str, int]) -> Optional[int]:
    """The layer of the longest prefix of ``module`` in ``layers`` ("knet_d2" only exactly)."""
    root = min(layers, key=len)
    best = None
    for prefix in layers:
        if module == prefix or (prefix != root and module.startswith(prefix + ".")):
            if best is None or len(prefix) > len(best):
                best = prefix
    return None if best is None else layers[best]


def layer_violations(root: Path, package: str, layers: Dict[str, int]) -> List[str]:
    """Upward imports and modules without a layer, one line each."""
    files = module_files(root, package)
    modules = set(files)
    problems = []
    for name, path in files.items():
        level = layer_of(name, layers)
        if level is None:
            problems.append(
                f"{path.relative_to(root)}: module {name} has no layer: place it in LAYERS "
                "(tests/test_layers.py) and in the layer table of docs/architecture.md"
            )
            continue
        for imported, line, _ in imports_of(name, path, modules):
            target = _deepest_module(imported, modules)
            target_level = None if target is None else layer_of(target, layers)
            if target_level is not None and target_level > level:
                problems.append(
                    f"{path.relative_to(root)}:{line}: {name} (layer {level}) imports {target} "
                    f"(layer {target_level})"
                )
    return problems


def import_cycles(root: Path, package: str) -> List[List[str]]:
    """The cycles (strongly connected components of more than one module, or a module that
    imports itself) of the module-level import graph of ``package``."""
    files = module_files(root, package)
    modules = set(files)
    graph: Dict[str, Set[str]] = {m: set() for m in files}
    for name, path in files.items():
        for imported, _, module_level in imports_of(name, path, modules):
            target = _deepest_module(imported, modules)
            if module_level and target is not None:
                graph[name].add(target)
    # Tarjan's strongly connected components
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def script_names(root: Path) -> Set[str]:
    """Top-level names under which the scripts could be imported."""
    names = {"train_net", *SCRIPT_DIRS}
    for folder in SCRIPT_DIRS:
        names |= {p.stem for p in (root / folder).glob("*.py")}
    return names


def forbidden_imports(
    root: Path, package: str, forbidden: Set[str]
) -> List[str]:
    """Absolute imports in ``package`` whose top-level name is in ``forbidden``."""
    files = module_files(root, package)
    problems = []
    for name, path in files.items():
        for imported, line, _ in imports_of(name, path, set(files)):
            if imported.split(".")[0] in forbidden:
                problems.append(f"{path.relative_to(root)}:{line}: {name} imports {imported}")
    return problems


def source_files(root: Path, folders: Optional[Sequence[str]] = None) -> List[Path]:
    """The .py files of ``root`` (or of ``root/folder`` for each of ``folders``), outside
    :data:`NOT_SOURCE` and hidden folders; the scripts directly in a folder of
    :data:`DATA_FOLDERS_WITH_SCRIPTS` (e.g. ``datasets/prepare_*.py``) are included."""
    tops = [root] if folders is None else [root / f for f in folders]
    out = []
    for top in tops:
        for path in sorted(top.rglob("*.py")):
            rel = path.relative_to(root).parts
            script_of_data_folder = len(rel) == 2 and rel[0] in DATA_FOLDERS_WITH_SCRIPTS
            if script_of_data_folder or not any(
                p in NOT_SOURCE or p.startswith(".") for p in rel[:-1]
            ):
                out.append(path)
    return out


def _is_sys_path(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "path"
            and isinstance(node.value, ast.Name) and node.value.id == "sys")


def sys_path_edits(root: Path) -> Dict[str, List[int]]:
    """``{file: [lines]}`` of ``sys.path.insert/append/extend/remove(...)`` calls and
    assignments to ``sys.path``."""
    found: Dict[str, List[int]] = {}
    for path in source_files(root):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            edit = (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("insert", "append", "extend", "remove")
                and _is_sys_path(node.func.value)
            ) or (
                isinstance(node, (ast.Assign, ast.AugAssign))
                and any(_is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value))
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
            )
            if edit:
                found.setdefault(str(path.relative_to(root)), []).append(node.lineno)
    return found


def long_files(root: Path) -> Dict[str, int]:
    """``{file: lines}`` of the files over their limit in knet_d2/, demo/, tools/, benchmarks/."""
    out = {}
    for path in source_files(root, ["knet_d2", *SCRIPT_DIRS]):
        rel = path.relative_to(root).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES_OF.get(rel, MAX_LINES):
            out[rel] = lines
    return out


# ------------------------------------------------------------------------------- the repository
def test_imports_point_down_the_layers():
    assert layer_violations(REPO_ROOT, "knet_d2", LAYERS) == []


def test_no_import_cycles():
    assert import_cycles(REPO_ROOT, "knet_d2") == []


def test_knet_d2_never_imports_the_scripts_and_knet_onnx_is_standalone():
    assert forbidden_imports(REPO_ROOT, "knet_d2", script_names(REPO_ROOT)) == []
    assert forbidden_imports(REPO_ROOT, "knet_onnx", {"knet_d2", "torch"}) == []


def test_no_sys_path_edits():
    assert sys_path_edits(REPO_ROOT) == {}


def test_no_file_over_the_line_limit():
    assert long_files(REPO_ROOT) == {}


def test_weight_urls_and_hashes_live_in_the_release_table():
    # a download address (with a host) or a file name with a hash, e.g. resnet50-0676ba61.pth
    known = re.compile(r"https?://[\w-]+\.[\w.-]+/|[\w.-]+-[0-9a-f]{8}\.pth")
    table = REPO_ROOT / "knet_d2/known_weights.py"
    elsewhere = {
        f"{path.relative_to(REPO_ROOT)}:{n}": line.strip()
        for path in source_files(REPO_ROOT, ["knet_d2"]) if path != table
        for n, line in enumerate(path.read_text().splitlines(), 1) if known.search(line)
    }
    assert elsewhere == {}
    assert len(known.findall(table.read_text())) >= 10


# ------------------------------------------------------------------------------- the checker
def _write(root: Path, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_checker_reports_upward_imports_cycles_and_unplaced_modules(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/config.py": "import os\n",
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": """\
            from ..config import X  # down: fine
            def later():
                from pkg.high import run  # upward, inside a function: still counted
            """,
        "pkg/high/__init__.py": "from .b import run\n",
        "pkg/high/b.py": "from . import c\n",
        "pkg/high/c.py": "from pkg.high.b import run\nimport train_net\n",
        "pkg/new/__init__.py": "",
        "demo/predictor.py": "import sys\nsys.path.insert(0, 'x')\n",
        "datasets/prepare_x.py": "import sys\nsys.path.append('..')\n",
        "datasets/coco/data_x.py": "import sys\nsys.path.append('..')\n",
        "tools/long.py": "x = 1\n" * (MAX_LINES + 1),
    })
    layers = {"pkg": 2, "pkg.config": 0, "pkg.low": 1, "pkg.high": 2}
    problems = layer_violations(tmp_path, "pkg", layers)
    assert problems[0] == "pkg/low/a.py:3: pkg.low.a (layer 1) imports pkg.high (layer 2)"
    assert problems[1].startswith("pkg/new/__init__.py: module pkg.new has no layer: place it")
    assert len(problems) == 2
    assert import_cycles(tmp_path, "pkg") == [["pkg.high.b", "pkg.high.c"]]
    assert forbidden_imports(tmp_path, "pkg", script_names(tmp_path)) == [
        "pkg/high/c.py:2: pkg.high.c imports train_net"
    ]
    assert sys_path_edits(tmp_path) == {"datasets/prepare_x.py": [2], "demo/predictor.py": [2]}
    assert long_files(tmp_path) == {"tools/long.py": MAX_LINES + 1}


def test_function_level_imports_do_not_make_cycles(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def f():\n    from . import a\n",
    })
    assert import_cycles(tmp_path, "pkg") == []
    _write(tmp_path, {"pkg/b.py": "from .a import x\n"})
    assert import_cycles(tmp_path, "pkg") == [["pkg.a", "pkg.b"]]
