"""Showing a worker's output in the notebook: text streams, rich displays, clear_output."""

from __future__ import annotations

import sys
from collections.abc import Callable


def renderer(prefix: str = "") -> Callable[[list], None]:
    """A function that shows a batch of output events where the kernel shows a cell's output."""

    def render(events: list) -> None:
        for event in events:
            kind = event[0]
            if kind in ("stdout", "stderr"):
                stream = sys.stdout if kind == "stdout" else sys.stderr
                stream.write(event[1])
            elif kind == "display":
                _publish(event[1], event[2])
            elif kind == "clear_output":
                _clear(event[1])
        sys.stdout.flush()
        sys.stderr.flush()

    return render


def _publish(data: dict, metadata: dict) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import publish_display_data
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        publish_display_data(data, metadata)
    else:
        print(data.get("text/plain", ""))


def _clear(wait: bool) -> None:
    try:
        from IPython.display import clear_output
    except ImportError:
        return
    clear_output(wait=wait)
