"""A remote exception, raised in the notebook with its own type and the cell's own line numbers.

The frames are rebuilt as real traceback entries (file, line, function) so IPython shows
the cell's source lines; frames of jupyter-burst and Dask are left out.
"""

from __future__ import annotations

import pickle
import types
from typing import Any


class RemoteError(Exception):
    """Stands for a remote exception whose class could not travel back."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


def rebuild(error: dict[str, Any]) -> BaseException:
    """The exception the cell raised, with ``__burst_traceback__`` set to the remote frames."""
    exc: BaseException | None = None
    if error.get("pickled") is not None:
        try:
            exc = pickle.loads(error["pickled"])
        except Exception:
            exc = None
    if exc is None:
        exc = _fallback(error["type"], error["message"])
    tb = frames_to_traceback(error["frames"])
    exc.__traceback__ = tb
    exc.__burst_traceback__ = tb
    return exc


def _fallback(type_name: str, message: str) -> BaseException:
    cls = type(type_name, (RemoteError,), {"__module__": "jupyter_burst.remote"})
    return cls(type_name, message)


def frames_to_traceback(
    frames: list[tuple[str, int, str, str | None]],
) -> types.TracebackType | None:
    """Real traceback entries for (filename, line, function) triples, outermost first."""
    tb = None
    for filename, lineno, name, _line in reversed(frames):
        entry = _entry(filename, lineno or 1, name)
        if entry is not None:
            tb = types.TracebackType(tb, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return tb


class _Marker(Exception):
    pass


def _entry(filename: str, lineno: int, name: str) -> types.TracebackType | None:
    code = compile("\n" * (lineno - 1) + "raise __burst_marker__", filename, "exec")
    code = code.replace(co_name=name, co_qualname=name)
    try:
        exec(code, {"__burst_marker__": _Marker(), "__name__": "__main__"})
    except _Marker as marker:
        tb = marker.__traceback__
        return tb.tb_next if tb is not None else None
    return None
