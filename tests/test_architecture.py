"""The shape of bench/ (issue: protocols as plug-ins): no import cycle, no protocol named outside bench/protocols/,
the old module paths of the flat bench/ still importable, and one word per idea where the tree shows it."""

import ast
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bench import protocols

BENCH = Path(__file__).resolve().parent.parent / "bench"


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(BENCH.rglob("*.py")):
        parts = f.relative_to(BENCH.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The bench modules ``path`` imports, anywhere in it (module level or inside functions): ``from .x import y``
    is an edge to ``x.y`` when that is a module, else to ``x``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "bench":
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "bench"}
    return {m for m in found if m in known and m != name}


def test_the_import_graph_of_bench_has_no_cycle():
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def strongly_connected(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongly_connected(w)
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
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strongly_connected(v)
    assert not cycles, cycles
    # the check can fail: a module importing one that imports it back is a cycle
    assert "bench.run.spec" in graph["bench.run.evaluate"] and "bench.run.evaluate" not in graph["bench.run.spec"]


def test_the_subpackages_follow_the_data_flow():
    """engine ← protocols ← run ← report: no package imports one downstream of it."""
    order = ["bench.engine", "bench.protocols", "bench.run", "bench.report"]
    mods = modules()
    for name, path in mods.items():
        here = next((i for i, p in enumerate(order) if name == p or name.startswith(p + ".")), None)
        if here is None:
            continue
        for target in imports(name, path, set(mods)):
            there = next((i for i, p in enumerate(order) if target == p or target.startswith(p + ".")), None)
            assert there is None or there <= here, f"{name} imports {target}, downstream of it"


#: Names of a shipped protocol used for another reason: the replacement function g called ``road``
#: (``perturbation=road``: ROAD's imputation as the region-perturbation g, its class and its noise stream) and the
#: old module paths of _moved.py.
ALLOWED = {"bench/engine/replacement.py": {"road", "Road", "road_noise"}, "bench/_moved.py": {"*"}}


def names_of(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every identifier and every string literal without spaces (docstrings and prose are not
    names) in ``path``."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out += [(node.lineno, token) for token in re.split(r"[\s,;:=/\[\]()'\"{}]+", node.value) if token]
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            out.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            out.append((node.lineno, node.arg))
        elif isinstance(node, ast.keyword) and node.arg:
            out.append((node.lineno, node.arg))
        elif isinstance(node, ast.alias):
            out += [(node.lineno, part) for part in (node.asname or node.name).split(".")]
    return out


def test_no_python_file_outside_bench_protocols_names_a_shipped_protocol():
    shipped = [n for n in protocols.SHIPPED if n in protocols.available()]
    pattern = re.compile(rf"^({'|'.join(shipped)})(_\w+)?(\.parquet)?$")  # (prose may say "AOPC")
    found = []
    for path in sorted(BENCH.rglob("*.py")):
        rel = path.relative_to(BENCH.parent).as_posix()
        if rel.startswith(("bench/protocols/", "bench/perf/")):
            continue
        allowed = ALLOWED.get(rel, set())
        found += [f"{rel}:{line}: {text}" for line, text in names_of(path)
                  if pattern.match(text) and "*" not in allowed and text not in allowed]
    assert not found, "\n".join(found)
    # … and the check finds one where there is one
    assert any(pattern.match(t) for _, t in names_of(BENCH / "protocols" / "road.py"))


def test_every_shipped_protocol_is_one_file_with_its_declarations():
    assert set(protocols.available()) >= set(protocols.SHIPPED)
    for cls in protocols.catalogue():
        assert cls.name and cls.title and cls.family in ("faithfulness", "complexity", "continuity"), cls
        assert all(n in protocols.base.NEEDS for n in cls.needs), cls.name
        assert all(q.direction in (-1, 0, 1) and q.label for q in cls.quantities), cls.name
        assert sum(q.headline for q in cls.quantities) <= 1, cls.name
        for name, f in cls.settings().items():
            assert "check" in f.metadata, f"{cls.name}.{name} is not declared with setting()"
            default = f.default
            assert cls.from_config({name: list(default) if isinstance(default, tuple) else default}) == cls()
    names = [q for cls in protocols.catalogue() for q in (x.name for x in cls.quantities)]
    assert len(names) == len(set(names)), "two protocols declare the same quantity"


def test_old_module_paths_still_import_the_same_module_with_a_deprecation_warning():
    from bench.engine import seeding
    from bench.interfaces import Method

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = __import__("bench.seeding", fromlist=["rand_per_image"])
        from bench.api import Method as OldMethod  # noqa: F401 (a plug-in's import before the move)
    assert old is seeding and OldMethod is Method
    assert any(issubclass(w.category, DeprecationWarning) and "bench.engine.seeding" in str(w.message) for w in caught)


def test_old_command_paths_still_run():
    for old in ("bench.collect", "bench.perf_compare"):
        proc = subprocess.run([sys.executable, "-m", old, "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage" in proc.stdout, proc.stderr


@pytest.mark.parametrize("command", ["bench.perf", "bench.perf.family", "bench.perf.road", "bench.models"])
def test_the_benchmarks_and_tools_have_their_commands(command):
    proc = subprocess.run([sys.executable, "-m", command, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage" in proc.stdout, proc.stderr
