"""``python -m jupyter_burst.tools.prewarm [--json] -- LINE``: start the cluster a ``%%burst LINE``
cell would use, now, unless it runs or is starting (``jupyter burst prewarm LINE`` too).

The Jupyter server runs it for the JupyterLab extension's pre-warm (server/prewarm.py): the
line is read by the kernel's own grammar here, in a process of its own, so that the server
never imports the kernel's code and a start of many minutes holds no server thread. With
``--json`` each answer of :func:`jupyter_burst.kernel.prewarm.warm` is one JSON line on
stdout as it is decided (the server answers the first and logs the rest); without it, the
messages. Nothing starts while ``burst.prewarm`` is off.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from jupyter_burst.kernel.prewarm import Answer, warm

# Answers after which the process exits 0: nothing went wrong, whether or not it started.
_FINE = frozenset({"off", "skipped", "running", "starting"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jupyter burst prewarm", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--json", action="store_true", help="one JSON line per answer")
    parser.add_argument("line", nargs="*", help="what follows %%%%burst on the cell's first line")
    args = parser.parse_args(argv)

    def report(answer: Answer) -> None:
        text = (
            json.dumps(answer)
            if args.json
            else f"burst: {answer['message']}".replace("burst: burst: ", "burst: ")
        )
        print(text, flush=True)

    answer = warm(" ".join(args.line), report)
    return 0 if answer["state"] in _FINE else 1


if __name__ == "__main__":
    sys.exit(main())
