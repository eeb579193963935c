"""Static checks of the package's structure, by reading its source with :mod:`ast` (nothing is
imported): the module import graph and its circles, the layers, and private attributes of
dependencies touched outside their compatibility modules.

Used by ``tests/test_architecture.py``, which also tests the checker itself on small synthetic
packages.

Which imports count:

* **eager**: executed when the module is imported, i.e. anywhere outside a function body
  (module level, class bodies, module-level ``if``/``try`` blocks);
* **type-checking**: under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``); never executed;
* **lazy**: inside a function or lambda body; executed when it is called.

An import names one target: ``import a.b`` names ``a.b``; ``from a import b`` names ``a.b`` when
that is one of the package's modules, else ``a``. The parent packages that Python imports on
the way (``a`` for ``a.b``) are not edges: a package's ``__init__`` that imports its own
submodules would otherwise be a circle with each of them.
"""

from __future__ import annotations

import ast
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["eager", "type-checking", "lazy"]


@dataclass(frozen=True)
class Module:
    """One module of the package."""

    name: str  # dotted, e.g. "crdt_sync.transports.memory"
    path: Path  # the real file (symlinked folders resolved)
    shown: str  # the real file relative to the repository, e.g. "transports/memory.py"
    is_package: bool

    def tree(self) -> ast.Module:
        return ast.parse(self.path.read_text(encoding="utf-8"), filename=str(self.path))


@dataclass(frozen=True)
class Import:
    """One imported target of one module."""

    importer: str
    target: str  # absolute dotted name
    line: int
    kind: Kind
    relative: bool = False  # written as a relative import (``from . import x``)
    names: tuple[str, ...] = ()  # for ``from X import a, b``: a, b


@dataclass
class Project:
    """A package's modules (by dotted name) and every import in them."""

    modules: dict[str, Module]
    imports: list[Import] = field(default_factory=list)

    _trees: dict[str, ast.Module] = field(default_factory=dict)

    def tree(self, module: str) -> ast.Module:
        """The parsed source of ``module`` (parsed once)."""
        if module not in self._trees:
            self._trees[module] = self.modules[module].tree()
        return self._trees[module]

    def where(self, imp: Import) -> str:
        return f"{self.modules[imp.importer].shown}:{imp.line}"

    def internal(self, kinds: Iterable[Kind]) -> list[Import]:
        wanted = set(kinds)
        return [imp for imp in self.imports if imp.kind in wanted and imp.target in self.modules]


# -- reading the package -------------------------------------------------------------------------
def discover(package_dir: Path, package: str | None = None, repo: Path | None = None) -> dict[str, Module]:
    """Every ``.py`` module under ``package_dir`` (following symlinked folders, which is how the
    linked subpackages are reached), by dotted name."""
    package = package or package_dir.name
    repo = (repo or package_dir.parent).resolve()
    modules: dict[str, Module] = {}
    for folder, dirs, files in os.walk(package_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        rel = Path(folder).relative_to(package_dir)
        prefix = [package, *rel.parts]
        for file in sorted(files):
            if not file.endswith(".py"):
                continue
            is_package = file == "__init__.py"
            name = ".".join(prefix if is_package else [*prefix, file[:-3]])
            real = (Path(folder) / file).resolve()
            try:
                shown = real.relative_to(repo).as_posix()
            except ValueError:
                shown = real.as_posix()
            modules[name] = Module(name, real, shown, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: Module, known: dict[str, Module]) -> None:
        self.module, self.known = module, known
        self.found: list[Import] = []
        self._functions = 0
        self._type_checking = 0

    @property
    def kind(self) -> Kind:
        if self._type_checking:
            return "type-checking"
        return "lazy" if self._functions else "eager"

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self._type_checking += 1
        for stmt in node.body:
            self.visit(stmt)
        self._type_checking -= 1
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(Import(self.module.name, alias.name, node.lineno, self.kind))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._base(node)
        names = tuple(alias.name for alias in node.names)
        relative = node.level > 0
        submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in self.known]
        for target in submodules:
            self.found.append(Import(self.module.name, target, node.lineno, self.kind, relative,
                                     (target.rsplit(".", 1)[1],)))
        rest = tuple(n for n in names if f"{base}.{n}" not in self.known)
        if rest or not submodules:
            self.found.append(Import(self.module.name, base, node.lineno, self.kind, relative, rest))

    def _base(self, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        parts = self.module.name.split(".")
        if not self.module.is_package:
            parts = parts[:-1]
        if node.level - 1 > len(parts) - 1:
            raise ValueError(f"{self.module.shown}:{node.lineno}: relative import beyond the top package")
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join([*parts, node.module] if node.module else parts)


def imports_of(module: Module, known: dict[str, Module], tree: ast.Module | None = None) -> list[Import]:
    collector = _ImportCollector(module, known)
    collector.visit(tree or module.tree())
    return collector.found


def load(package_dir: Path, package: str | None = None, repo: Path | None = None) -> Project:
    modules = discover(package_dir, package, repo)
    project = Project(modules)
    for module in modules.values():
        project.imports.extend(imports_of(module, modules, project.tree(module.name)))
    return project


# -- import circles ------------------------------------------------------------------------------
def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _shortest_cycle(start: str, graph: dict[str, set[str]], within: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside ``within`` (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph.get(node, ()) & within):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if succ not in parents:
                    parents[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")


def import_cycles(project: Project, kinds: Iterable[Kind] = ("eager",)) -> list[str]:
    """One line per import circle among the package's modules, counting imports of ``kinds``:
    the modules in it, and one concrete cycle with where each import is written."""
    edges: dict[tuple[str, str], Import] = {}
    graph: dict[str, set[str]] = {name: set() for name in project.modules}
    for imp in project.internal(kinds):
        graph[imp.importer].add(imp.target)
        edges.setdefault((imp.importer, imp.target), imp)
    report = []
    for component in strongly_connected(graph):
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        cycle = _shortest_cycle(component[0], graph, set(component))
        steps = " -> ".join(f"{a} ({project.where(edges[(a, b)])})" for a, b in itertools.pairwise(cycle))
        report.append(f"circle of {len(component)} modules {component}: {steps} -> {cycle[-1]}")
    return report


# -- layers --------------------------------------------------------------------------------------
#: The layers above the core, by package prefix; every other module of the package is core.
LAYERS = {"cli": "crdt_sync.cli", "transports": "crdt_sync.transports", "relay": "crdt_sync.relay",
          "benchmarks": "crdt_sync.benchmarks"}
#: What each layer must never import, in any kind (eager, type-checking or lazy).
FORBIDDEN_LAYERS = {"core": {"transports", "relay", "benchmarks", "cli"},
                    "transports": {"cli", "benchmarks"},
                    "relay": {"cli", "benchmarks"}}
#: Libraries the core never imports, in any kind: it opens no sockets and runs no event loop.
CORE_FORBIDDEN_LIBRARIES = frozenset({"asyncio", "socket", "aiohttp"})
#: Top-level names that are folders of the repository, not importable names of ours.
TOP_LEVEL_FOLDERS = frozenset({"transports", "relay", "benchmarks"})


def layer_of(module: str) -> str:
    for layer, prefix in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return "core"


def layer_violations(project: Project) -> list[str]:
    found = []
    for imp in project.imports:
        layer = layer_of(imp.importer)
        if imp.target in project.modules or imp.target.startswith("crdt_sync."):
            target_layer = layer_of(imp.target)
            if target_layer in FORBIDDEN_LAYERS.get(layer, set()):
                found.append(f"{project.where(imp)}: {layer} module {imp.importer} imports "
                             f"{target_layer} module {imp.target} ({imp.kind})")
        elif layer == "core" and not imp.relative and imp.target.split(".")[0] in CORE_FORBIDDEN_LIBRARIES:
            found.append(f"{project.where(imp)}: core module {imp.importer} imports {imp.target} "
                         f"({imp.kind})")
    return found


def top_level_folder_imports(files: dict[str, ast.Module]) -> list[str]:
    """Absolute imports of ``transports``, ``relay`` or ``benchmarks`` as top-level names, in
    the files given (shown name -> parsed source)."""
    found = []
    for shown, tree in files.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [f"{shown}:{node.lineno}: imports top-level {name!r}; use crdt_sync.{name}"
                      for name in names if name.split(".")[0] in TOP_LEVEL_FOLDERS]
    return found


# -- private attributes ----------------------------------------------------------------------------
#: The modules that may touch a dependency's private internals (shown paths). They may not
#: exist yet: the rule simply allows them.
COMPAT_MODULES = frozenset({"crdt_sync/_pycrdt_compat.py", "transports/_aiohttp_compat.py"})
#: Underscore names that are documented public API of the standard library.
PUBLIC_UNDERSCORE_APIS = frozenset({"_replace", "_asdict", "_fields", "_field_defaults", "_make", "_exit"})
#: The builtins that take an attribute name as a string.
ATTRIBUTE_BUILTINS = frozenset({"getattr", "hasattr", "setattr", "delattr"})


def is_private(name: str) -> bool:
    """``_x`` and ``__x``, not dunders (``__init__``) or ``_`` itself."""
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and name.strip("_") != "" and not dunder


def _own_receiver(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


class _Definitions(ast.NodeVisitor):
    """Private names a module defines: module- and class-level names (assignments, imports
    bound there, functions, classes), attributes assigned through ``self``/``cls``, and
    ``__slots__`` entries. Locals of functions are not names an object can be reached by."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._scopes: list[str] = ["module"]

    def _add(self, name: str) -> None:
        if is_private(name):
            self.names.add(name)

    def _scoped(self, node: ast.AST, scope: str) -> None:
        self._scopes.append(scope)
        self.generic_visit(node)
        self._scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._add(node.name)
        self._scoped(node, "function")

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scoped(node, "function")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._add(node.name)
        for stmt in node.body:
            if isinstance(stmt, ast.Assign | ast.AnnAssign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__"
                    for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])):
                for const in ast.walk(stmt.value) if stmt.value is not None else ():
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        self._add(const.value)
        self._scoped(node, "class")

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store) and self._scopes[-1] != "function":
            self._add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del) and _own_receiver(node.value):
            self._add(node.attr)
        self.generic_visit(node)

    def _imported(self, node: ast.Import | ast.ImportFrom) -> None:
        if self._scopes[-1] != "function":
            for alias in node.names:
                self._add(alias.asname or alias.name.split(".")[0])

    visit_Import = visit_ImportFrom = _imported


def defined_private_names(trees: Iterable[ast.Module]) -> set[str]:
    names: set[str] = set()
    for tree in trees:
        definitions = _Definitions()
        definitions.visit(tree)
        names |= definitions.names
    return names


@dataclass(frozen=True)
class PrivateAccess:
    shown: str  # the file, e.g. "crdt_sync/space.py"
    line: int
    name: str  # the private attribute, e.g. "_txn"
    expr: str  # how it is reached, e.g. "doc._txn" or 'getattr(writer, "_write")'
    col: int = 0

    def __str__(self) -> str:
        return f"{self.shown}:{self.line}: {self.expr}"


def private_accesses(tree: ast.Module, shown: str) -> Iterator[PrivateAccess]:
    """Every private attribute reached on something other than ``self``/``cls``: ``x._name``,
    ``getattr(x, "_name")`` (and hasattr, setattr, delattr), and private names imported from
    a module (``from m import _name``, ``import m._name``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr) and not _own_receiver(node.value):
            yield PrivateAccess(shown, node.lineno, node.attr, ast.unparse(node), node.col_offset)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ATTRIBUTE_BUILTINS and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and is_private(node.args[1].value)):
            yield PrivateAccess(shown, node.lineno, node.args[1].value, ast.unparse(node), node.col_offset)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                for part in [*(node.module or "").split("."), alias.name]:
                    if is_private(part):
                        yield PrivateAccess(shown, node.lineno, part,
                                            f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                for part in alias.name.split("."):
                    if is_private(part):
                        yield PrivateAccess(shown, node.lineno, part, f"import {alias.name}")


def reachable(project: Project) -> dict[str, set[str]]:
    """For each module, itself and every package module it imports, directly or not, in any
    kind (eager, type-checking or lazy)."""
    graph: dict[str, set[str]] = {name: set() for name in project.modules}
    for imp in project.internal(("eager", "type-checking", "lazy")):
        graph[imp.importer].add(imp.target)
    closure: dict[str, set[str]] = {}
    for start in graph:
        seen, todo = {start}, [start]
        while todo:
            for succ in graph[todo.pop()] - seen:
                seen.add(succ)
                todo.append(succ)
        closure[start] = seen
    return closure


def _classify_private_accesses(project: Project) -> tuple[list[PrivateAccess], list[PrivateAccess]]:
    """(a dependency's internals touched outside the compatibility modules, our own private
    attributes reached from a module that does not define them); see
    :func:`private_dependency_accesses`."""
    by_shown = {module.shown: module for module in project.modules.values()}
    defined = {module.name: defined_private_names([project.tree(module.name)])
               for module in project.modules.values()}
    module_names = {part for name in project.modules for part in name.split(".") if is_private(part)}
    closure = reachable(project)
    dependency, cross = [], []
    for shown, module in by_shown.items():
        related = closure[module.name] | {other for other, seen in closure.items() if module.name in seen}
        ours = module_names.union(*(defined[m] for m in related))
        for access in private_accesses(project.tree(module.name), shown):
            if access.name in PUBLIC_UNDERSCORE_APIS:
                continue
            if access.name not in ours:
                if shown not in COMPAT_MODULES:
                    dependency.append(access)
            elif access.name not in defined[module.name] and not access.expr.startswith(("from ", "import ")):
                cross.append(access)
    order = lambda a: (a.shown, a.line, a.col)  # noqa: E731
    return sorted(dependency, key=order), sorted(cross, key=order)


def private_dependency_accesses(project: Project) -> list[PrivateAccess]:
    """Private attributes touched outside the compatibility modules that are not ours.

    A private name is ours, where it is touched, when a module on an import path through the
    module touching it defines it (see :class:`_Definitions`): the module itself, one it
    imports (directly or not), or one that imports it (and may hand it its objects). Our
    private module names are ours everywhere. Anything else can only be a dependency's
    internal: a name that an unrelated module of ours happens to define as well (the relay
    store's ``_writer``) does not excuse ``ws._writer`` on an aiohttp object in a module on no
    import path with it.
    """
    return _classify_private_accesses(project)[0]


def cross_module_private_accesses(project: Project) -> list[PrivateAccess]:
    """Our own private attributes (by the rule above) reached from a module that does not
    define that name itself."""
    return _classify_private_accesses(project)[1]
