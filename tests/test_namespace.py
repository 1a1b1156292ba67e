"""What a cell reads and assigns, read from its AST and symbol table."""

from __future__ import annotations

import pytest

from jupyter_burst.errors import SendError
from jupyter_burst.kernel.namespace import analyse, select


def test_reads_inside_nested_functions_comprehensions_and_fstrings():
    a = analyse(
        "def f(v):\n    return v + in_func\n"
        "g = lambda t: t * in_lambda\n"
        "squares = [k * in_comp for k in data]\n"
        "label = f'{in_fstring!r}'\n"
        "class C:\n    attr = in_class\n    def m(self):\n        return in_method\n"
    )
    assert {
        "in_func",
        "in_lambda",
        "in_comp",
        "data",
        "in_fstring",
        "in_class",
        "in_method",
    } <= a.reads
    assert not {"v", "t", "k", "self"} & a.reads
    assert {"f", "g", "squares", "label", "C"} <= a.assigns


def test_names_assigned_before_any_read_do_not_travel():
    a = analyse(
        "model = make()\nprint(model)\ncount += 1\nfor i in range(3):\n    acc = i\nprint(acc)\n"
    )
    assert "model" not in a.reads
    assert "count" in a.reads  # augmented assignment reads first
    assert "acc" in a.reads  # a loop may not run: the notebook's value is the fallback


def test_imports_and_deletes():
    a = analyse("import numpy as np\nfrom os import path as p\nimport a.b.c\ndel old\n")
    assert {"np", "p", "a"} <= a.assigns
    assert {"numpy", "os", "a.b.c"} == a.modules
    assert "old" in a.reads and "old" in a.deletes


def test_select_takes_reads_plus_send_minus_exclude_and_skips_builtins_and_ipython_names():
    ns = {
        "x": 1,
        "y": 2,
        "z": 3,
        "print": print,
        "In": [],
        "_i3": "",
        "get_ipython": object(),
        "len": 5,
    }
    a = analyse("print(x, y, In, _i3, len)\n")
    chosen = select(ns, a, send=("z",), exclude=("y",))
    assert chosen == {"len": 5, "x": 1, "z": 3}  # `len` was redefined by the user, so it travels


def test_send_of_a_missing_name_is_refused():
    with pytest.raises(SendError, match="no variable 'nope'"):
        select({}, analyse("pass"), send=("nope",))
