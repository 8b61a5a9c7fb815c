"""Structure of nblib, checked from its source (fast tier):

* no private name (``_x``) crosses a module boundary inside nblib -- neither ``from nblib.m import _x`` nor
  ``m._x`` on a name bound to an imported nblib module (a shared helper is made public instead);
* no circular imports: the graph of module-level ``nblib`` imports is acyclic, and every module imports on
  its own in a fresh interpreter (forked from one that holds only third-party packages);
* layering: imports between subpackages run one way, bottom to top (:data:`LAYERS`), and in a fresh interpreter
  ``nblib.claims`` loads no training, run or attack module and ``nblib.norms`` no training module;
* ruff (``[tool.ruff]`` of pyproject.toml) passes on nblib/, tests/, benchmarks/, tasks.py and the notebooks' py:percent
  twins.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBLIB = ROOT / "nblib"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(NBLIB.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str | None, level: int, importer: str) -> str:
    """Absolute name of ``from <level dots><module> import ...`` written in module ``importer``."""
    if level == 0:
        return module or ""
    package = importer.split(".") if MODULES[importer].name == "__init__.py" else importer.split(".")[:-1]
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str, top_level_only: bool):
    """(imported module, imported names or None, lineno, node) of every ``nblib`` import of module ``name``;
    ``top_level_only``: only statements executed at import time (module body, ``if``/``try`` blocks)."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    if top_level_only:
        nodes, todo = [], list(tree.body)
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.If, ast.Try)):
                todo += node.body + node.orelse + getattr(node, "finalbody", []) + \
                    [s for h in getattr(node, "handlers", []) for s in h.body]
            else:
                nodes.append(node)
    else:
        nodes = list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "nblib":
                    yield alias.name, None, node.lineno, alias
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node.module, node.level, name)
            if mod.split(".")[0] == "nblib":
                yield mod, [a.name for a in node.names], node.lineno, node


def _module_of(expr: ast.expr, module_aliases: dict) -> str | None:
    """The nblib module an expression such as ``m`` or ``nblib.models.vgg`` names, or None."""
    if isinstance(expr, ast.Name):
        return module_aliases.get(expr.id)
    if isinstance(expr, ast.Attribute):
        parent = _module_of(expr.value, module_aliases)
        if parent is not None and f"{parent}.{expr.attr}" in MODULES:
            return f"{parent}.{expr.attr}"
    return None


def private_imports() -> list[str]:
    """Every use of another nblib module's private name, as ``file:line: what``."""
    found = []
    for name, path in MODULES.items():
        module_aliases = {}  # local name -> nblib module it is bound to
        for mod, names, line, node in _imports(name, top_level_only=False):
            if names is None:  # import nblib.m [as x]: binds x, or the name nblib
                module_aliases[node.asname or "nblib"] = mod if node.asname else "nblib"
                continue
            for alias in node.names:
                if f"{mod}.{alias.name}" in MODULES:  # from nblib import m: a module
                    module_aliases[alias.asname or alias.name] = f"{mod}.{alias.name}"
                elif _is_private(alias.name) and mod != name:
                    found.append(f"{path.relative_to(ROOT)}:{line}: from {mod} import {alias.name}")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                owner = _module_of(node.value, module_aliases)
                if owner is not None and owner != name:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {owner}.{node.attr}")
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the nblib modules its module-level statements import (``from nblib import m`` counts as
    an import of ``nblib.m`` when ``m`` is a module; every import also loads the importer's packages)."""
    graph = {}
    for name in MODULES:
        deps = set()
        for mod, names, _, _ in _imports(name, top_level_only=True):
            targets = [mod] + [f"{mod}.{n}" for n in names or () if f"{mod}.{n}" in MODULES]
            deps |= {t for t in targets if t in MODULES}
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that starts and ends at the same node), or None (depth-first)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


#: The subpackages of nblib, bottom to top: a module may import from its own subpackage, from a lower layer
#: and from the top-level modules (:data:`SHARED`), never from its own layer's siblings or from above.
LAYERS = (("norms", "models", "data"), ("attacks",), ("training",), ("runs", "perf"), ("claims",), ("experiments",),
          ("pipeline",))
#: Top-level modules every layer may import; they import no subpackage.
SHARED = ("results", "vocabulary")


def _layer_of(module: str) -> tuple[str, int | None]:
    """(subpackage or top-level module, its layer index; None for a shared top-level module)."""
    part = module.split(".")[1] if module.count(".") else ""
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return part, i
    return part, None


def wrong_way_imports() -> list[str]:
    """Every import (at any depth of a module) against :data:`LAYERS`, as ``file:line: importer -> imported``."""
    found = []
    for name, path in MODULES.items():
        if name == "nblib":
            continue
        own, own_layer = _layer_of(name)
        for mod, names, line, _ in _imports(name, top_level_only=False):
            targets = [f"{mod}.{n}" for n in names or () if f"{mod}.{n}" in MODULES] or [mod]
            for target in targets:
                other, other_layer = _layer_of(target)
                if other == own or target == "nblib":
                    continue
                if own_layer is None and other not in SHARED:
                    ok = False  # a shared module imports no subpackage
                elif other_layer is None:
                    ok = other in SHARED
                else:
                    ok = other_layer < own_layer
                if not ok:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {name} -> {target}")
    return found


def modules_loaded_by(package: str) -> list[str]:
    """The nblib modules a fresh interpreter holds after ``import <package>``."""
    script = f"import sys, {package}; print('\\n'.join(m for m in sys.modules if m.startswith('nblib')))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


# --------------------------------------------------------------------------- the checker's own oracle
def test_checkers_catch_what_they_must(tmp_path, monkeypatch):
    """Each checker fails on a planted defect (so the tests below can fail)."""
    pkg = tmp_path / "nblib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from nblib.b import f\n\ndef _h():\n    pass\n")
    (pkg / "b.py").write_text("import nblib.a\nfrom nblib import a as aa\n\n\ndef f():\n    return aa._h(), "
                              "nblib.a._k, aa._h.__name__, f._own\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from . import d\nfrom .d import _g\nfrom ..a import _h\n")
    (pkg / "sub" / "d.py").write_text("def _g():\n    from nblib.sub import c\n    return c._x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {_module_name(p): p for p in sorted(pkg.rglob("*.py"))})
    found = private_imports()
    assert {f.split(": ", 1)[1] for f in found} == {
        "nblib.a._h", "nblib.a._k", "from nblib.sub.d import _g", "from nblib.a import _h", "nblib.sub.c._x"}, found
    graph = import_graph()
    assert graph["nblib.sub.c"] == {"nblib.sub", "nblib.sub.d", "nblib.a"}
    assert graph["nblib.sub.d"] == set()  # the import inside a function runs later, not at import time
    assert find_cycle(graph) == ["nblib.a", "nblib.b", "nblib.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_layering_checker_catches_a_wrong_way_import(tmp_path, monkeypatch):
    """A planted import upwards (norms -> training), sideways (runs -> perf) and from a shared module into a
    subpackage is found; imports downwards and within a subpackage are not."""
    pkg = tmp_path / "nblib"
    for sub in ("norms", "training", "runs", "perf"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "results.py").write_text("from nblib.norms import a\n")
    (pkg / "norms" / "a.py").write_text("from nblib.norms import b\n\n\ndef f():\n    from nblib.training import t\n")
    (pkg / "norms" / "b.py").write_text("from nblib import results\n")
    (pkg / "training" / "t.py").write_text("from nblib.norms.a import f\n")
    (pkg / "runs" / "r.py").write_text("from nblib.training import t\nfrom nblib.perf import p\n")
    (pkg / "perf" / "p.py").write_text("import nblib.training.t\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {_module_name(p): p for p in sorted(pkg.rglob("*.py"))})
    found = {f.split(": ", 1)[1] for f in wrong_way_imports()}
    assert found == {"nblib.norms.a -> nblib.training.t", "nblib.runs.r -> nblib.perf.p",
                     "nblib.results -> nblib.norms.a"}, found


# --------------------------------------------------------------------------- the package
def test_no_private_name_crosses_modules():
    found = private_imports()
    assert not found, "private names used across nblib modules (make them public):\n" + "\n".join(found)


def test_imports_run_one_way_between_subpackages():
    assert {m.split(".")[1] for m in MODULES if m.count(".") >= 2} == {p for layer in LAYERS for p in layer}, \
        "a subpackage is missing from LAYERS"
    found = wrong_way_imports()
    assert not found, "imports against the layering (bottom to top: " + " < ".join("/".join(la) for la in LAYERS) + \
        "):\n" + "\n".join(found)


def test_claims_load_no_training_run_or_attack_code():
    loaded = modules_loaded_by("nblib.claims.table2") + modules_loaded_by("nblib.claims.figure2")
    assert "nblib.claims.verdict" in loaded  # the probe sees what it loads
    bad = [m for m in loaded if m.startswith(("nblib.training", "nblib.runs", "nblib.attacks"))]
    assert not bad, f"importing the claims loads {bad}"


def test_norms_load_no_training_code():
    loaded = modules_loaded_by("nblib.norms")
    assert "nblib.norms.operator_norms" in loaded
    assert not [m for m in loaded if m.startswith(("nblib.training", "nblib.runs", "nblib.attacks"))], loaded


def test_import_graph_is_acyclic():
    graph = import_graph()
    # the scan sees real imports
    assert graph["nblib.training.train"] >= {"nblib.attacks.autoattack", "nblib.attacks.lipschitz"}
    cycle = find_cycle(graph)
    assert cycle is None, "circular module-level imports: " + " -> ".join(cycle)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks one child per module (POSIX)")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    """One child per module, forked from an interpreter that has imported only the third-party packages
    nblib imports (so each child starts with no nblib module loaded and the check stays fast)."""
    third_party = sorted({alias.name.split(".")[0] for p in MODULES.values()
                          for node in ast.walk(ast.parse(p.read_text()))
                          if isinstance(node, ast.Import) for alias in node.names} |
                         {node.module.split(".")[0] for p in MODULES.values()
                          for node in ast.walk(ast.parse(p.read_text()))
                          if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module} - {"nblib"})
    script = textwrap.dedent(f"""
        import importlib, os, sys, traceback
        for m in {third_party!r}:
            try:
                importlib.import_module(m)
            except Exception:
                pass
        assert not [m for m in sys.modules if m == "nblib" or m.startswith("nblib.")]
        failed = []
        for name in {sorted(MODULES)!r}:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                try:
                    importlib.import_module(name)
                    code = 0
                except BaseException:
                    os.write(w, traceback.format_exc().encode())
                    code = 1
                os._exit(code)
            os.close(w)
            with os.fdopen(r) as f:
                err = f.read()
            if os.waitpid(pid, 0)[1] != 0:
                failed.append(name + ":\\n" + err)
        print("\\n".join(failed))
        sys.exit(1 if failed else 0)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"modules that fail to import alone:\n{out.stdout}\n{out.stderr}"


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        pytest.fail("ruff is not installed: `pip install -e .[test]` (or `pip install ruff`)")
    return [exe]


def test_ruff_passes():
    out = subprocess.run(_ruff() + ["check", "--no-cache", "nblib", "tests", "benchmarks", "notebooks", "tasks.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"ruff check failed (run `ruff check` from the repo root):\n{out.stdout}{out.stderr}"


def test_ruff_config_checks_e_f_w_at_120_columns():
    import tomllib

    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 120
    assert {"E", "F", "W"} <= set(ruff["lint"]["select"])


#: Size limits of issue 10: a module reads in one sitting, a function on one screen.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_every_module_is_under_the_line_limit():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


def test_every_function_is_under_the_line_limit():
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - first + 1 > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = node.end_lineno - first + 1
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (break them into named steps): {long}"


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text with white space folded) of the lines that carry code: no blank, comment, import,
    lone-punctuation or docstring-only line."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        text = " ".join(line.split())
        if (i in docstrings or not text or text.startswith(("#", "import ", "from ")) or
                not any(c.isalnum() for c in text)):
            continue
        out.append((i, text))
    return out


def test_no_block_of_six_code_lines_repeats_in_nblib():
    """The same six consecutive code lines in two places of nblib (the reference model definitions of
    nblib/models/ excepted) are one helper written twice."""
    seen, repeats = {}, []
    for name, path in MODULES.items():
        if name.startswith("nblib.models"):
            continue
        lines = _code_lines(path)
        for k in range(len(lines) - 5):
            block = tuple(text for _, text in lines[k:k + 6])
            where = f"{path.relative_to(ROOT)}:{lines[k][0]}"
            if block in seen and not seen[block].startswith(f"{path.relative_to(ROOT)}:"):
                repeats.append(f"{where} repeats {seen[block]}")
            seen.setdefault(block, where)
    assert not repeats, "blocks of six code lines written twice:\n" + "\n".join(repeats[:20])
