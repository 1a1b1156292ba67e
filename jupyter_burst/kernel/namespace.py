"""What a cell reads, what it assigns, and which notebook values therefore travel.

The rules, in one place:

* A name travels when the cell (or a function, class, lambda or comprehension inside it)
  reads it as a global and the notebook has it -- unless straight-line code in the cell
  assigns it before anything reads it. ``send=`` adds names, ``exclude=`` removes them.
* Builtins stay: the worker has its own. IPython's bookkeeping names (``In``, ``Out``,
  ``_i3``...), ``get_ipython`` and the ``burst`` helper never travel (each rank gets its own).
* Modules travel as import statements (see :mod:`jupyter_burst.wire.payload`), notebook
  functions and classes by value together with the globals they reach.
* What comes back: every name the cell binds at top level (assignment, ``def``, ``class``,
  ``import``, ``for`` targets...), and every travelled value the cell changed in place. A
  ``with ... as f`` target that cannot travel (a closed file, an ended pool) stays behind
  without a warning: it is spent.
"""

from __future__ import annotations

import ast
import builtins
import re
import symtable
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_burst.errors import SendError
from jupyter_burst.worker.helper import Burst

_IPYTHON_NAMES = re.compile(r"_+|_i+|_i\d+|_\d+|_oh|_ih|_dh|In|Out|get_ipython|exit|quit")


@dataclass(frozen=True)
class CellAnalysis:
    """The names one cell reads from and writes to the notebook namespace."""

    reads: frozenset[str]
    assigns: frozenset[str]
    deletes: frozenset[str]
    imports: frozenset[str]
    modules: frozenset[str] = frozenset()  # modules the cell imports, by full name
    # `with ... as NAME`: a closed file, an ended pool; left on the worker without a warning
    contexts: frozenset[str] = frozenset()
    # `from m import a as b` at the cell's top level: b -> ("m", "a"); it comes back as an
    # import, so the notebook gets its own `m.a` (tqdm.auto's notebook bar, not the console's)
    imported_from: tuple[tuple[str, str, str], ...] = ()


def analyse(source: str, filename: str = "<cell>") -> CellAnalysis:
    """Read the cell's AST and symbol table; raise ``SyntaxError`` for a cell that won't compile."""
    tree = ast.parse(source, filename=filename)
    table = symtable.symtable(source, filename, "exec")

    reads: set[str] = set()
    assigns: set[str] = set()
    imports: set[str] = set()
    for sym in table.get_symbols():
        name = sym.get_name()
        if sym.is_referenced():
            reads.add(name)
        if sym.is_assigned() or sym.is_imported() or sym.is_namespace():
            assigns.add(name)
        if sym.is_imported():
            imports.add(name)
    for child in table.get_children():
        _nested_globals(child, reads, assigns)

    deletes: set[str] = set()
    modules: set[str] = set()
    contexts: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            contexts |= {
                item.optional_vars.id
                for item in node.items
                if isinstance(item.optional_vars, ast.Name)
            }
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
        # `x += 1` and `del x` read x first; the symbol table records them only as bindings.
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            reads.add(node.target.id)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    reads.add(target.id)
                    deletes.add(target.id)

    reads -= _assigned_before_read(tree)
    imported_from = tuple(
        (alias.asname or alias.name, stmt.module, alias.name)
        for stmt in _top_level(tree.body)
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module
        for alias in stmt.names
        if alias.name != "*"
    )
    return CellAnalysis(
        reads=frozenset(reads),
        assigns=frozenset(assigns),
        deletes=frozenset(deletes),
        imports=frozenset(imports),
        modules=frozenset(modules),
        contexts=frozenset(contexts),
        imported_from=imported_from,
    )


def _top_level(body: list[ast.stmt]):
    """The statements that run at the cell's top level (inside if/try/with/for, not defs)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _top_level(getattr(stmt, field, []))
        for handler in getattr(stmt, "handlers", []):
            yield from _top_level(handler.body)


def with_magic_code(
    analysis: CellAnalysis, timed: Iterable[str] = (), read_only: Iterable[str] = ()
) -> CellAnalysis:
    """``analysis`` plus the code inside the cell's magics (:mod:`jupyter_burst.kernel.ipython_syntax`).

    ``%time`` runs its code in the notebook's namespace (what it binds comes back);
    ``%timeit`` runs it inside a function, and ``{expr}`` in ``!cmd`` is only evaluated: they
    only read. Code that does not compile is left for the rank to report, as IPython would.
    """
    reads, assigns = set(analysis.reads), set(analysis.assigns)
    imports, modules = set(analysis.imports), set(analysis.modules)
    for snippets, binds in ((timed, True), (read_only, False)):
        for snippet in snippets:
            try:
                inner = analyse(snippet)
            except SyntaxError:
                continue
            reads |= inner.reads
            modules |= inner.modules
            if binds:
                assigns |= inner.assigns
                imports |= inner.imports
    return CellAnalysis(
        reads=frozenset(reads),
        assigns=frozenset(assigns),
        deletes=analysis.deletes,
        imports=frozenset(imports),
        modules=frozenset(modules),
        contexts=analysis.contexts,
        imported_from=analysis.imported_from,
    )


def _nested_globals(table: symtable.SymbolTable, reads: set[str], assigns: set[str]) -> None:
    for sym in table.get_symbols():
        if not sym.is_global():
            continue
        if sym.is_referenced():
            reads.add(sym.get_name())
        if sym.is_declared_global() and sym.is_assigned():
            assigns.add(sym.get_name())
    for child in table.get_children():
        _nested_globals(child, reads, assigns)


_DEFINITE = (
    ast.Assign,
    ast.AnnAssign,
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
)


def _assigned_before_read(tree: ast.Module) -> set[str]:
    """Names that top-level straight-line code binds before any statement mentions them.

    Conservative: any mention in an earlier statement (even inside a function body that
    may never run) counts as a read, and bindings inside ``if``/``for``/``try`` do not count.
    """
    mentioned: set[str] = set()
    definite: set[str] = set()
    for stmt in tree.body:
        loads = {
            n.id
            for n in ast.walk(stmt)
            if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)
        }
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            loads.add(stmt.target.id)
        mentioned |= loads - definite
        if isinstance(stmt, _DEFINITE) and not (
            isinstance(stmt, ast.AnnAssign) and stmt.value is None
        ):
            definite |= _bound_names(stmt) - mentioned
    return definite


def _bound_names(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names if a.name != "*"}
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    names: set[str] = set()
    for target in targets:
        names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def select(
    user_ns: Mapping[str, Any],
    analysis: CellAnalysis,
    send: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The notebook values this cell needs, by name, in a stable order."""
    missing = [name for name in send if name not in user_ns]
    if missing:
        raise SendError(
            f"send={','.join(send)}: the notebook has no variable '{missing[0]}'; "
            "define it first or drop it from send="
        )
    wanted = (analysis.reads | set(send)) - set(exclude)
    chosen: dict[str, Any] = {}
    for name in sorted(wanted):
        if name not in user_ns or _IPYTHON_NAMES.fullmatch(name):
            continue
        value = user_ns[name]
        if name not in send and getattr(builtins, name, _MISSING) is value:
            continue
        if isinstance(value, Burst):
            continue  # each rank gets its own helper on the worker
        chosen[name] = value
    return chosen


_MISSING = object()
