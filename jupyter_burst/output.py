"""Showing a worker's output in the notebook: text streams, rich displays, clear_output.

With several ranks, each line starts with its rank (``[rank 1] ...``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def renderer(world_size: int = 1) -> Callable[[int, list], None]:
    """A function that shows one rank's batch of output events in the cell's output."""
    at_line_start: dict[tuple[int, str], bool] = {}

    def prefixed(rank: int, stream: str, text: str) -> str:
        if world_size == 1:
            return text
        label = f"[rank {rank}] "
        out = []
        for piece in text.splitlines(keepends=True):
            if at_line_start.get((rank, stream), True):
                out.append(label)
            out.append(piece)
            at_line_start[(rank, stream)] = piece.endswith(("\n", "\r"))
        return "".join(out)

    def render(rank: int, events: list) -> None:
        for event in events:
            kind = event[0]
            if kind in ("stdout", "stderr"):
                stream = sys.stdout if kind == "stdout" else sys.stderr
                stream.write(prefixed(rank, kind, event[1]))
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
