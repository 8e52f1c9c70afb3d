"""The dependency rules of /work/shared/ARCHITECTURE.md, checked on the import graph.

Every module under src/poolkeeper is parsed with ``ast`` (no import, so a broken or slow module
cannot hide an edge): imports at any depth (module level, inside functions, under
``if TYPE_CHECKING``), ``from . import x`` and relative imports resolved against the package.
A rule lists the edges that break it as ``importer -> imported``.

Rules today's tree breaks are known to issue #16 (the restructure): each has a strict xfail
listing exactly those edges, so a fix turns it into an XPASS failure until its entry in KNOWN is
removed; and a second test, which passes today, fails as soon as an edge appears that is not in
KNOWN, so nothing gets worse while the restructure is under way.
"""

from __future__ import annotations

import ast
import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = "poolkeeper"

#: top-level packages that are database drivers: only drivers/ may import them
DRIVER_PACKAGES = frozenset({
    "psycopg", "psycopg_binary", "psycopg_c", "psycopg_pool", "psycopg2", "pymysql", "MySQLdb",
    "mysql", "mariadb", "sqlite3", "aiosqlite", "aiomysql", "asyncpg",
})
#: standard-library modules that mean threads, I/O or an event loop: core/ decides without them
NO_IO_IN_CORE = frozenset({
    "threading", "_thread", "asyncio", "socket", "select", "selectors", "subprocess",
    "multiprocessing", "concurrent", "queue", "io",
})
#: the loader's decisions (ARCHITECTURE.md: "an I/O-free buffer"): they import no module of
#: NO_IO_IN_LOADER_DECISIONS and, of poolkeeper, only errors and each other
LOADER_DECISIONS = frozenset(f"{PACKAGE}.loader.{name}"
                             for name in ("batch", "budget", "buffer", "options"))
NO_IO_IN_LOADER_DECISIONS = NO_IO_IN_CORE | {"os", "shutil", "tempfile", "fcntl", "mmap"}
#: a driver package used as an embedded SQL engine, not as a driver: the admin views run
#: their SELECT on an in-memory database of the standard library's sqlite3 holding
#: poolkeeper's own state (README, Layout). No pooled database, no driver quirk, no package
#: beyond the standard library; test_embedded_engines_open_only_in_memory_databases keeps
#: it so. Module -> the one package it may import.
EMBEDDED_ENGINES: dict[str, str] = {f"{PACKAGE}.observe.admin": "sqlite3"}
#: single-underscore names that are public by convention (namedtuple's API)
PUBLIC_UNDERSCORE = frozenset({"_asdict", "_replace", "_fields", "_make", "_field_defaults"})


# ============================================================================ layers
#: a module's layer, by its first name below poolkeeper (a longer key wins); the future
#: names of ARCHITECTURE.md are listed too, so the restructure needs no edit here
LAYERS: dict[str, str] = {
    "": "api",  # poolkeeper/__init__.py: the public API, above every layer
    "errors": "errors",
    "config": "base", "dsn": "base",
    "core": "core",
    "drivers": "drivers",
    "pool": "shell",
    "hooks": "hooks",
    "scheduler": "scheduler",
    "sql": "sql",
    "observe": "observe", "admin": "observe", "metrics": "observe",
    "console": "top", "loader": "top", "integrations": "top", "cli": "top",
}
#: layers that may know no driver, no console, no private attribute of a shell
KNOW_NO_DRIVER = frozenset({"hooks", "sql", "observe", "scheduler"})


def layer(module: str) -> str:
    rest = module.removeprefix(PACKAGE).removeprefix(".")
    parts = rest.split(".") if rest else []
    # poolkeeper itself is "" (the API); a module below it needs a name of its own in LAYERS
    for n in range(len(parts), 0 if parts else -1, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise AssertionError(f"{module} has no layer: add its name to LAYERS in "
                         f"tests/test_architecture.py (see ARCHITECTURE.md's tree)")


# ============================================================================ the graph
@dataclass(frozen=True)
class Edge:
    src: str  # importing module
    dst: str  # imported module (internal: full dotted name; external: its top-level name)
    internal: bool
    names: tuple[str, ...]  # for ``from X import a, b``: a, b; else ()
    where: str  # "module", "function" or "typing" (under if TYPE_CHECKING)
    line: int

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst}"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, where: str) -> Iterator[tuple[ast.AST, str]]:
    """Every node below ``node`` with when it runs: "module" (at import time; class bodies
    too), "function" (when called) or "typing" (never: under ``if TYPE_CHECKING``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.body:
                yield sub, "typing"
                yield from _walk(sub, "typing")
            for sub in child.orelse:
                yield sub, where
                yield from _walk(sub, where)
            continue
        yield child, where
        inner = where
        if where == "module" and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                            | ast.Lambda):
            inner = "function"
        yield from _walk(child, inner)


@cache
def graph() -> tuple[Edge, ...]:
    known = modules()
    edges: list[Edge] = []
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        package = module if is_package else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, where in _walk(tree, "module"):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    edges.append(_edge(module, alias.name, (), where, node.lineno, known))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = tuple(a.name for a in node.names)
                # ``from pkg import sub``: an edge to the submodule where one exists
                subs = [n for n in names if f"{base}.{n}" in known]
                for sub in subs:
                    edges.append(_edge(module, f"{base}.{sub}", (), where, node.lineno, known))
                rest = tuple(n for n in names if n not in subs)
                if rest or not subs:
                    edges.append(_edge(module, base, rest, where, node.lineno, known))
    return tuple(edges)


def _edge(src: str, target: str, names: tuple[str, ...], where: str, line: int,
          known: dict[str, Path]) -> Edge:
    top = target.split(".", maxsplit=1)[0]
    if top != PACKAGE:
        return Edge(src, top, False, names, where, line)
    # ``import poolkeeper.a.b`` where b is a name, not a module: the longest module prefix
    while target not in known and "." in target:
        target = target.rpartition(".")[0]
    return Edge(src, target, True, names, where, line)


def internal_edges() -> list[Edge]:
    return [e for e in graph() if e.internal and e.src != e.dst]


# ============================================================================ rules
def rule_core_imports_only_errors_and_itself() -> list[Edge]:
    return [e for e in internal_edges()
            if layer(e.src) == "core" and layer(e.dst) not in ("core", "errors")]


def rule_core_uses_no_threads_io_or_event_loop() -> list[Edge]:
    return [e for e in graph() if not e.internal and layer(e.src) == "core"
            and e.dst in NO_IO_IN_CORE and e.where != "typing"]


def rule_loader_decisions_use_no_threads_or_io() -> list[Edge]:
    return [e for e in graph() if e.src in LOADER_DECISIONS and e.where != "typing" and (
        (not e.internal and e.dst in NO_IO_IN_LOADER_DECISIONS)
        or (e.internal and e.dst not in LOADER_DECISIONS | {f"{PACKAGE}.errors"}))]


def rule_drivers_import_no_shell_hook_or_top_layer() -> list[Edge]:
    return [e for e in internal_edges() if layer(e.src) == "drivers"
            and layer(e.dst) in ("shell", "hooks", "top")]


def _is_embedded_engine(e: Edge) -> bool:
    return not e.internal and EMBEDDED_ENGINES.get(e.src) == e.dst


def rule_hooks_sql_observe_scheduler_know_no_driver_and_no_console() -> list[Edge]:
    return [e for e in graph() if layer(e.src) in KNOW_NO_DRIVER and (
        (e.internal and layer(e.dst) == "drivers")
        or (e.internal and e.dst.startswith(f"{PACKAGE}.console"))
        or (not e.internal and e.dst in DRIVER_PACKAGES and not _is_embedded_engine(e)))]


def rule_nothing_below_the_top_layer_imports_it() -> list[Edge]:
    # The package root re-exports (e.g. Loader) and is not "below": it is the public API.
    return [e for e in internal_edges()
            if layer(e.dst) == "top" and layer(e.src) not in ("top", "api")]


def rule_top_layer_uses_only_public_names_of_the_layers_below() -> list[Edge]:
    """console/, loader/, integrations/ and cli use the pools' public API and observe's views:
    from a shell, core or a driver only names in ``poolkeeper.__all__``; nowhere a private name
    of another package."""
    public = _public_names()
    out = []
    for e in internal_edges():
        if layer(e.src) != "top" or layer(e.dst) == "top":
            continue
        private = [n for n in e.names if n.startswith("_") and not n.startswith("__")]
        not_public = [n for n in e.names if n not in public]
        if private or (layer(e.dst) in ("shell", "core", "drivers")
                       and (not_public or not e.names)):
            out.append(e)
    return out


def rule_only_drivers_import_a_driver_package() -> list[Edge]:
    return [e for e in graph() if not e.internal and e.dst in DRIVER_PACKAGES
            and layer(e.src) != "drivers" and e.where != "typing"
            and not _is_embedded_engine(e)]


@cache
def _public_names() -> frozenset[str]:
    tree = ast.parse((SRC / PACKAGE / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            value = ast.literal_eval(node.value)
            return frozenset(value)
    raise AssertionError("src/poolkeeper/__init__.py defines no __all__")


# ---------------------------------------------------------------------- private attributes
@dataclass(frozen=True)
class Read:
    module: str
    name: str
    line: int

    def __str__(self) -> str:
        return f"{self.module} reads .{self.name}"


def _defined_private_names(paths: list[Path]) -> set[str]:
    """Private names a set of modules defines: attributes assigned (``x._a = ``), methods,
    class attributes, ``__slots__`` entries, module globals."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
                with contextlib.suppress(ValueError):  # computed slots: not a literal
                    names.update(ast.literal_eval(node.value))
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _private_reads(path: Path, module: str) -> list[Read]:
    """``obj._name`` and ``getattr(obj, "_name"...)`` where obj is not self, cls or a module."""
    tree = ast.parse(path.read_text())
    modules_bound = {a.asname or a.name.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.Import) for a in node.names}
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            base, name = node.value, node.attr
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            base, name = node.args[0], node.args[1].value
        else:
            continue
        if not name.startswith("_") or name.startswith("__") or name in PUBLIC_UNDERSCORE:
            continue
        if isinstance(base, ast.Name) and (base.id in ("self", "cls") or base.id in modules_bound):
            continue
        reads.append(Read(module, name, node.lineno))
    return reads


def _layer_paths(*layers: str) -> list[Path]:
    return [p for m, p in modules().items() if layer(m) in layers]


def rule_no_private_attribute_of_a_shell_or_proxy_is_read() -> list[Read]:
    """In hooks/, sql/, observe/, scheduler: no private name that a shell (the pool, the proxies)
    defines and the reader's own package does not."""
    shell_private = _defined_private_names(_layer_paths("shell"))
    out = []
    for module, path in modules().items():
        if layer(module) not in KNOW_NO_DRIVER:
            continue
        own_package = module.rpartition(".")[0] if path.name != "__init__.py" else module
        own = _defined_private_names([p for m, p in modules().items()
                                      if m == own_package or m.startswith(own_package + ".")]
                                     if own_package != PACKAGE else [path])
        out += [r for r in _private_reads(path, module)
                if r.name in shell_private and r.name not in own]
    return out


def rule_no_private_attribute_of_a_driver_object_is_read() -> list[Read]:
    """In hooks/, sql/, observe/, scheduler: no private name poolkeeper does not define at all,
    i.e. one of a foreign object's: in practice a driver's connection or cursor internals."""
    ours = _defined_private_names(list(modules().values()))
    out = []
    for module, path in modules().items():
        if layer(module) in KNOW_NO_DRIVER:
            out += [r for r in _private_reads(path, module) if r.name not in ours]
    return out


def _own_package(module: str) -> str:
    """The package below poolkeeper a module belongs to (``poolkeeper.cli.demo``:
    ``poolkeeper.cli``), or the module itself when it sits at the top."""
    return ".".join(module.split(".")[:2])


def rule_top_layer_reads_no_private_name_of_another_package() -> list[Edge | Read]:
    """In console/, loader/, integrations/ and cli/: no private attribute of a pool or proxy
    (``pool._hooks``, ``getattr(pool, "_hooks")``), no private name of another package, read
    or imported (``from ..console.views import _sql_entries``): they use the pools' public API
    and the public views of observe/ and console/. (A name the reader's own package defines
    too is taken for its own: the loader's engine has a ``_lock`` like the pool's.)"""
    found = modules()
    out: list[Edge | Read] = []
    for module, path in found.items():
        if layer(module) != "top":
            continue
        package = _own_package(module)
        own = _defined_private_names([p for m, p in found.items()
                                      if m == package or m.startswith(package + ".")])
        out += [r for r in _private_reads(path, module) if r.name not in own]
    out += [e for e in internal_edges() if layer(e.src) == "top"
            and _own_package(e.dst) != _own_package(e.src)
            and any(n.startswith("_") and not n.startswith("__") for n in e.names)]
    return out


RULES: dict[str, Callable[[], list[Edge]] | Callable[[], list[Read]]
            | Callable[[], list[Edge | Read]]] = {
    "core imports nothing but errors and itself": rule_core_imports_only_errors_and_itself,
    "core uses no threads, I/O or event loop": rule_core_uses_no_threads_io_or_event_loop,
    "the loader's buffer, budget, options and batch use no threads or I/O":
        rule_loader_decisions_use_no_threads_or_io,
    "drivers import no shell, hook, console, loader, integration or cli":
        rule_drivers_import_no_shell_hook_or_top_layer,
    "hooks, sql, observe and scheduler know no driver and no console":
        rule_hooks_sql_observe_scheduler_know_no_driver_and_no_console,
    "nothing below console, loader, integrations and cli imports them":
        rule_nothing_below_the_top_layer_imports_it,
    "console, loader, integrations and cli use only public names below them":
        rule_top_layer_uses_only_public_names_of_the_layers_below,
    "console, loader, integrations and cli read no private name of another package":
        rule_top_layer_reads_no_private_name_of_another_package,
    "only drivers import a driver package": rule_only_drivers_import_a_driver_package,
    "hooks, sql, observe and scheduler read no private attribute of a shell or proxy":
        rule_no_private_attribute_of_a_shell_or_proxy_is_read,
    "hooks, sql, observe and scheduler read no driver internals":
        rule_no_private_attribute_of_a_driver_object_is_read,
}

#: what today's tree breaks, rule by rule, while a restructure is under way (one string per
#: edge, or per module and private name read, whatever the line): none since issue #16's
#: last three (observe.admin's sqlite3 is an EMBEDDED_ENGINES entry, the loader takes its
#: canceller and its COPY formatter from pool.driver)
KNOWN: dict[str, frozenset[str]] = {}


def violations(rule: str) -> set[str]:
    return {str(v) for v in RULES[rule]()}


def _detail(rule: str) -> str:
    found = RULES[rule]()
    return "\n".join(sorted({f"  {v} (line {v.line})" for v in found}))


def _rule_cases() -> Iterator[object]:
    for rule in RULES:
        known = KNOWN.get(rule)
        if known:
            yield pytest.param(rule, id=rule, marks=pytest.mark.xfail(
                strict=True, reason=f"issue #16: {rule}: " + "; ".join(sorted(known))))
        else:
            yield pytest.param(rule, id=rule)


@pytest.mark.parametrize("rule", list(_rule_cases()))
def test_rule_holds(rule: str) -> None:
    found = violations(rule)
    assert not found, f"{rule}: {len(found)} violation(s):\n{_detail(rule)}"


@pytest.mark.parametrize("rule", list(RULES))
def test_rule_gets_no_new_violations(rule: str) -> None:
    new = violations(rule) - KNOWN.get(rule, frozenset())
    assert not new, (f"{rule}: {len(new)} new violation(s) (not in KNOWN; fix them, do not "
                     f"add them):\n" + "\n".join(f"  {v}" for v in sorted(new)))
    fixed = KNOWN.get(rule, frozenset()) - violations(rule)
    assert not fixed, (f"{rule}: fixed, remove from KNOWN in tests/test_architecture.py:\n"
                       + "\n".join(f"  {v}" for v in sorted(fixed)))


def test_embedded_engines_open_only_in_memory_databases() -> None:
    """What makes EMBEDDED_ENGINES an engine and not a driver: each module listed imports its
    package (the entry is not stale), opens no database but ``connect(":memory:")``, and
    takes no name from the package into its own namespace (``from sqlite3 import connect``
    would hide a connect from this check)."""
    found = modules()
    for module, package in EMBEDDED_ENGINES.items():
        assert any(e.src == module and e.dst == package for e in graph()), (
            f"{module} no longer imports {package}: remove it from EMBEDDED_ENGINES")
        tree = ast.parse(found[module].read_text())
        imports_from = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                        and (n.module or "").split(".")[0] == package]
        renamed = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Import)
                   for a in n.names if a.name.split(".")[0] == package and a.asname]
        assert not imports_from and not renamed, (
            f"{module}: 'from {package} import ...' or 'import {package} as ...' at line(s) "
            f"{sorted(imports_from + renamed)}: import {package} and use {package}.<name>")
        connects = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Attribute) and n.func.attr == "connect"
                    and isinstance(n.func.value, ast.Name) and n.func.value.id == package]
        assert connects, f"{module} opens no {package} database: remove it from EMBEDDED_ENGINES"
        for call in connects:
            first = call.args[0] if call.args else next(
                (k.value for k in call.keywords if k.arg == "database"), None)
            assert isinstance(first, ast.Constant) and first.value == ":memory:", (
                f"{module} line {call.lineno}: {package}.connect() of something else than "
                "':memory:': a database on disk is a pooled database; go through a Pool and "
                "drivers/ for it")


# ============================================================================ cycles
def cycles(wheres: tuple[str, ...]) -> list[list[str]]:
    """Every strongly connected component of more than one module, each as a sorted list."""
    adjacency: dict[str, set[str]] = {m: set() for m in modules()}
    for e in internal_edges():
        if e.where in wheres:
            adjacency[e.src].add(e.dst)
    # Tarjan, iteratively: the graph is small but recursion limits are not a test's business.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start, targets in adjacency.items():
        if start in index:
            continue
        work = [(start, iter(sorted(targets)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(adjacency[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def _cycle_edges(component: list[str], wheres: tuple[str, ...]) -> list[str]:
    members = set(component)
    return sorted({f"{e} ({e.where}, line {e.line})" for e in internal_edges()
                   if e.src in members and e.dst in members and e.where in wheres})


def test_no_import_cycle_at_import_time() -> None:
    found = cycles(("module",))
    assert not found, "import cycles among module-level imports:\n" + "\n".join(
        f"  {' <-> '.join(c)}: " + "; ".join(_cycle_edges(c, ("module",))) for c in found)


#: circles today's tree closes only through function-level or TYPE_CHECKING imports
KNOWN_CYCLES_ANY_DEPTH: frozenset[frozenset[str]] = frozenset()


@pytest.mark.xfail(bool(KNOWN_CYCLES_ANY_DEPTH), strict=True, reason="issue #16: import "
                   "circles through function-level and TYPE_CHECKING imports: " + "; ".join(
                       " <-> ".join(sorted(c)) for c in KNOWN_CYCLES_ANY_DEPTH))
def test_no_import_cycle_at_any_depth() -> None:
    """No import circles, even those a function-level import or TYPE_CHECKING keeps from
    failing at import time: ARCHITECTURE.md's "no import circles" counts them too."""
    wheres = ("module", "function", "typing")
    found = cycles(wheres)
    assert not found, "import cycles (any depth):\n" + "\n".join(
        f"  {' <-> '.join(c)}:\n    " + "\n    ".join(_cycle_edges(c, wheres)) for c in found)


def test_known_cycles_are_still_the_ones_found() -> None:
    found = {frozenset(c) for c in cycles(("module", "function", "typing"))}
    assert found <= KNOWN_CYCLES_ANY_DEPTH, (
        "new import cycles: " + "; ".join(" <-> ".join(sorted(c))
                                           for c in found - KNOWN_CYCLES_ANY_DEPTH))


# ============================================================================ stdlib only
def test_import_poolkeeper_needs_only_the_standard_library() -> None:
    """``import poolkeeper`` in a fresh interpreter where every non-standard module is blocked
    by a meta-path finder placed first: an optional package imported at module level fails."""
    code = textwrap.dedent("""
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top == "poolkeeper":
                    return None
                raise ImportError(f"blocked: {name} is not in the standard library")

        sys.meta_path.insert(0, Block())
        import poolkeeper
        outside = sorted(m for m in sys.modules if m.partition(".")[0] not in
                         sys.stdlib_module_names and m.partition(".")[0] != "poolkeeper"
                         and not m.startswith("_"))
        print(outside)
        sys.exit(1 if outside else 0)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_graph_sees_every_kind_of_import() -> None:
    """The parser itself: relative imports resolved, ``from . import x`` to the submodule,
    function-level and TYPE_CHECKING imports found (on edges today's tree has)."""
    by = {(e.src, e.dst, e.where) for e in graph()}
    assert ("poolkeeper", "poolkeeper.admin", "module") in by  # from . import admin
    assert ("poolkeeper.core.bag", "poolkeeper.errors", "module") in by  # from ..errors
    assert ("poolkeeper.pool.lender", "poolkeeper.core.slot", "typing") in by
    assert any(e.where == "function" and e.dst == "psycopg" for e in graph())
    for module in modules():
        layer(module)  # every module has a layer
