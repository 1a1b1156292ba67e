"""The package's shape (shared/DESIGN.md): the folder a module sits in says which process runs
it, and imports go one way. The contracts themselves are import-linter's (pyproject.toml,
run by `make lint`); here, what it does not check."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jupyter_burst"
# A function-local import of our own modules is allowed only with its reason beside it.
REASON_MARK = "#"


def _local_imports_without_reason(path: pathlib.Path) -> list[str]:
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom):
                ours = (inner.module or "").startswith("jupyter_burst") or inner.level > 0
            elif isinstance(inner, ast.Import):
                ours = any(a.name.startswith("jupyter_burst") for a in inner.names)
            else:
                continue
            if not ours:
                continue
            line, before = lines[inner.lineno - 1], lines[inner.lineno - 2].strip()
            if REASON_MARK not in line and not before.startswith(REASON_MARK):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}: {line.strip()}")
    return found


def test_our_modules_are_imported_at_the_top_unless_a_comment_says_why_not() -> None:
    offenders = [
        hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _local_imports_without_reason(path)
    ]
    assert not offenders, "function-local imports without a reason:\n" + "\n".join(offenders)


def test_every_folder_says_which_process_runs_it() -> None:
    for folder in (
        "kernel",
        "driver",
        "wire",
        "worker",
        "node",
        "clusters",
        "store",
        "server",
        "tools",
    ):
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"jupyter_burst/{folder}/__init__.py needs its paragraph"


# What Jupyter itself looks up by these names on the package.
_JUPYTER_HOOKS = {
    "_jupyter_labextension_paths",
    "_jupyter_server_extension_points",
    "_load_jupyter_server_extension",
}
_PRIVATE_MODULES_OF_THE_PACKAGE = {"_version", "_labextension"}


def _private_names_reached(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    ours: set[str] = set()  # local names bound to our modules or their members
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jupyter_burst"):
            for alias in node.names:
                ours.add(alias.asname or alias.name)
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and alias.name not in _JUPYTER_HOOKS | _PRIVATE_MODULES_OF_THE_PACKAGE:
                    found.append(f"{path.name}:{node.lineno}: {node.module}.{alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ours
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_reaches_into_another_modules_private_names() -> None:
    reached = [
        hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_names_reached(path)
    ]
    assert not reached, "private names used from another module:\n" + "\n".join(reached)
