"""``%burst VERB?`` shows that verb's help.

IPython reads a line ending in ``?`` as "inspect the last name" (``%burst status?`` would look
for a variable ``status``), so a cell whose only line is ``%burst VERB?`` (or ``??``) is
rewritten to ``%burst help VERB`` before IPython's own help transform sees it.
"""

from __future__ import annotations

import re

from jupyter_burst.kernel.verb_help import VERBS

_HELP_LINE = re.compile(r"^\s*%burst\s+(?P<verb>\w+)\s*\?{1,2}\s*$")


def rewrite(lines: list[str]) -> list[str]:
    """IPython's cleanup transform: the cell's lines in, the lines to run out."""
    if len(lines) != 1:
        return lines
    found = _HELP_LINE.match(lines[0])
    if found is None or found["verb"] not in VERBS:
        return lines
    return [f"%burst help {found['verb']}\n"]


def install(shell) -> None:
    if rewrite not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(rewrite)
