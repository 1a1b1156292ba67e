"""tests/hardening/README.md names, for each promise of issue #9, the test that shows it:
each named test exists, and one outside this folder carries the hardening mark."""

from __future__ import annotations

import ast
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[2]
INDEX = (REPO / "tests" / "hardening" / "README.md").read_text()


def _marked(decorator: ast.expr) -> bool:
    text = ast.unparse(decorator)
    return text == "pytest.mark.hardening"


def test_every_test_the_index_names_exists_and_is_marked():
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", INDEX)
    assert len(named) >= 25, named
    problems = []
    for path, name in named:
        tree = ast.parse((REPO / path).read_text())
        found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
        if not found:
            problems.append(f"{path}::{name} does not exist")
        elif not path.startswith("tests/hardening/") and not any(
            _marked(d) for d in found[0].decorator_list
        ):
            problems.append(f"{path}::{name} lacks @pytest.mark.hardening")
    assert not problems, problems


def test_every_test_marked_outside_this_folder_is_in_the_index():
    listed = set(re.findall(r"`(tests/[\w/]+\.py::\w+)`", INDEX))
    unlisted = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(_marked(d) for d in node.decorator_list):
                ref = f"{path.relative_to(REPO)}::{node.name}"
                if ref not in listed:
                    unlisted.append(ref)
    assert not unlisted, unlisted
