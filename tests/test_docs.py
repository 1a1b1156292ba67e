"""The README documents what users can type and set: every option, verb and setting."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import yaml

from jupyter_burst.kernel import magic, options
from jupyter_burst.kernel.verb_help import VERBS
from jupyter_burst.tools import readme_tables

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _keys(tree: dict, prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _keys(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_setting_of_burst_yaml_is_in_the_readme():
    defaults = yaml.safe_load((REPO / "jupyter_burst" / "burst.yaml").read_text())["burst"]
    missing = [key for key in _keys(defaults) if f"`burst.{key}`" not in README]
    assert not missing, f"settings the README does not name: {missing}"


def test_every_magic_option_has_a_row_in_the_readme_option_table():
    rows = set(re.findall(r"^\| `(\w+)` \|", README, re.MULTILINE))
    missing = [name for name in options._PARSERS if name not in rows]
    assert not missing, f"%%burst options without a row in the README's table: {missing}"


def test_every_line_magic_verb_is_in_the_readme():
    missing = [verb for verb in VERBS if f"%burst {verb}" not in README]
    assert not missing, f"%burst verbs the README does not show: {missing}"


def test_every_verb_the_magic_runs_has_help_and_the_readme_table_is_written_from_it():
    runs = {name[1:] for name in vars(magic.BurstMagics) if name[1:] in VERBS}
    assert runs == set(VERBS), "a verb without its help, or help without its verb"
    assert readme_tables.rewritten(README) == README, (
        "README.md's verbs table is out of date: python -m jupyter_burst.tools.readme_tables"
    )
    # %burst? lists every verb, from the same source.
    assert all(f"%burst {v.usage}" in magic.BurstMagics.burst.__doc__ for v in VERBS.values())
