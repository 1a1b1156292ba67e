"""IPython syntax in a burst cell, read in the kernel: transformed, its magics checked, before anything starts.

A notebook cell holds more than Python: ``!cmd``, ``files = !ls``, ``%time f()``, ``%%time``
below the ``%%burst`` line, ``%pip install ...``. The cell is transformed as IPython
transforms it (into calls on ``get_ipython()``), so that the AST analysis reads plain
Python, and the transformed code runs on each rank against the rank's own
``get_ipython()`` (:mod:`jupyter_burst.worker.rank_shell`). Magics whose argument is code
(``%time``, ``%timeit`` and their cell forms) have that code read too, so that the names
it uses travel. A magic the ranks cannot run is refused here, in one line, for $0.
``%pip install``/``uninstall`` are taken out: the kernel has them done on every node of the
cluster before the cell runs (:mod:`jupyter_burst.worker.node_packages`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jupyter_burst.errors import OptionError
from jupyter_burst.worker.node_packages import EVERY_NODE, pip_verb

# What a rank's get_ipython() runs (rank_shell.py); everything else is refused up front.
LINE_MAGICS = frozenset({"time", "timeit", "env", "set_env", "pip", "cd", "pwd", "matplotlib"})
CELL_MAGICS = frozenset({"time", "timeit", "writefile", "bash", "sh"})
SUPPORTED = (
    "!cmd, x = !cmd, %time, %timeit, %%time, %%timeit, %%writefile, %%bash, %%sh, %env, %pip, "
    "%cd, %pwd and %matplotlib inline"
)

# Magics whose argument is code that runs in the notebook's namespace.
_CODE_MAGICS = frozenset({"time", "timeit"})
_TIMEIT_OPTIONS = re.compile(r"^\s*(?:-[tcqo]\s*|-[nrpv]\s*\S+\s*)*")


@dataclass(frozen=True)
class CellCode:
    """A cell as the ranks run it: plain Python, plus what its magics need before it runs."""

    code: str
    # Code inside %time (which binds into the namespace), and code that is only read:
    # %timeit's (it runs inside a function), `{expr}`/`$name` in `!cmd` and `%cd`-like lines.
    timed: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    # `%pip install ...` / `%pip uninstall ...` argument lines, in the cell's order.
    pip: tuple[str, ...] = field(default=())


def transform(source: str) -> CellCode:
    """The cell as plain Python; its magics checked (one line for one that cannot run remotely).

    Plain Python is returned as it is (IPython's transformers would leave it so, and skipping
    them keeps a trivial cell fast). ``SyntaxError`` is left for the analysis to raise.
    """
    try:
        ast.parse(source)
        code = source
    except SyntaxError:
        code = _ipython_transform(source)
    if "get_ipython" not in code:
        return CellCode(code)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return CellCode(code)  # the analysis raises it, with its line
    timed: list[str] = []
    read_only: list[str] = []
    pip: list[str] = []
    for call in _shell_calls(tree):
        method, args = call
        if method in ("system", "getoutput"):
            read_only.extend(_expanded(args[0]))
        elif method == "run_line_magic":
            name, line = args[0], args[1] if len(args) > 1 else ""
            _check_line_magic(name, line)
            if name not in _CODE_MAGICS:
                read_only.extend(_expanded(line))  # IPython expands $name and {expr} in these
            if name == "time":
                _read_inner(_strip_time_options(line), timed, timed, read_only, pip)
            elif name == "timeit":
                _read_inner(
                    _TIMEIT_OPTIONS.sub("", line, count=1), read_only, timed, read_only, pip
                )
            elif name == "pip" and pip_verb(line) in EVERY_NODE:
                pip.append(line)
        elif method == "run_cell_magic":
            name, line, body = (
                args[0],
                args[1] if len(args) > 1 else "",
                args[2] if len(args) > 2 else "",
            )
            if name not in CELL_MAGICS:
                raise OptionError(_refusal(f"%%{name}"))
            if name == "time":
                _read_inner(body, timed, timed, read_only, pip)
            elif name == "timeit":
                _read_inner(
                    _TIMEIT_OPTIONS.sub("", line, count=1), read_only, timed, read_only, pip
                )
                _read_inner(body, read_only, timed, read_only, pip)
            else:
                read_only.extend(_expanded(line))  # %%writefile {path}: IPython expands the line
    return CellCode(code, tuple(timed), tuple(read_only), tuple(pip))


def refuse_keyboard(code: str, user_ns: Mapping[str, Any]) -> None:
    """A cell that itself calls ``input()`` is one line, before anything starts.

    A rank has no keyboard. (A call inside a function, which may never run, is left to the
    rank's ``input()``, which says the same when it is called.)
    """
    if "input" not in code or "input" in user_ns:
        return
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return
    for node in _outside_functions(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "input"
        ):
            raise OptionError(
                "input() cannot ask the notebook for input from a %%burst cell (the cell runs "
                "on the cluster); read the value in a cell without %%burst and use the variable"
            )


def _outside_functions(node: ast.AST):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield child
        yield from _outside_functions(child)


def expand(line: str, namespace: Mapping[str, Any]) -> str:
    """``$name`` and ``{expr}`` in a magic's line, as IPython's var_expand does."""
    from IPython.utils.text import DollarFormatter

    try:
        return DollarFormatter().vformat(line, args=[], kwargs=dict(namespace))
    except Exception:
        return line


def _expanded(text: str) -> list[str]:
    """The expressions IPython's var_expand evaluates in ``text``: ``{expr}`` and ``$name``."""
    import string

    found = re.findall(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_.]*)", text)
    try:
        found += [field for _, field, _, _ in string.Formatter().parse(text) if field]
    except ValueError:
        pass  # not a format string: IPython leaves it as it is
    return found


def _read_inner(
    source: str, into: list[str], timed: list[str], read_only: list[str], pip: list[str]
) -> None:
    """A magic's code argument: itself IPython syntax, checked and read like a cell."""
    inner = transform(source)
    into.append(inner.code)
    timed.extend(inner.timed)
    read_only.extend(inner.read_only)
    pip.extend(inner.pip)


def _ipython_transform(source: str) -> str:
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        manager = shell.input_transformer_manager  # the kernel's own, with any user transformers
    else:
        from IPython.core.inputtransformer2 import TransformerManager

        manager = TransformerManager()
    code = manager.transform_cell(source)
    # IPython adds a newline; tracebacks count lines, so keep the cell's own count.
    return code if source.endswith("\n") else code.removesuffix("\n")


def _shell_calls(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """``get_ipython().METHOD("constant", ...)`` calls, with their constant string arguments."""
    calls = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Call)
            and isinstance(node.func.value.func, ast.Name)
            and node.func.value.func.id == "get_ipython"
        ):
            continue
        method = node.func.attr
        if method not in ("run_line_magic", "run_cell_magic", "system", "getoutput"):
            continue
        args = [
            a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None
            for a in node.args
        ]
        if not args or args[0] is None:
            continue  # a magic named at run time: the rank's shell checks it then
        calls.append((method, [a if a is not None else "" for a in args]))
    return calls


def _check_line_magic(name: str, line: str) -> None:
    if name.startswith("%"):
        raise OptionError(
            f"%{name} is a cell magic: it works only as the line right below %%burst, as in "
            "IPython on a cell's first line"
        )
    if name not in LINE_MAGICS:
        raise OptionError(_refusal(f"%{name}"))
    if name == "matplotlib" and line.strip() not in ("", "inline"):
        raise OptionError(
            f"%matplotlib {line.strip()} does not run in a %%burst cell: the ranks have no screen; "
            "figures come back as images (%matplotlib inline), or run it in a cell without %%burst"
        )


def _refusal(magic: str) -> str:
    return (
        f"{magic} does not run in a %%burst cell (the cluster runs {SUPPORTED}); "
        f"run {magic} in a cell without %%burst"
    )


def _strip_time_options(line: str) -> str:
    return re.sub(r"^\s*--no-raise-error\b", "", line)
