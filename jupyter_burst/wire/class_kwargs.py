"""The keyword arguments a class was made with (``class CSV(Plugin, name="csv")``), kept.

A class defined in the notebook travels by value and is made again on the other side;
``__init_subclass__`` then runs again and, for a base that takes keywords, needs them. The
class statement consumed them and Python keeps them nowhere, so ``builtins.__build_class__``
(what every ``class`` statement calls) is wrapped, in the kernel by ``%load_ext`` and on the
workers, to note them for classes made with any; :mod:`jupyter_burst.wire.payload` passes them
to the class's remake. Nothing else changes: the class is made by the original.
"""

from __future__ import annotations

import builtins
import threading
import weakref
from typing import Any

_kwargs: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_installed = False


def install() -> None:
    """Once per process: ``class`` statements with keywords have them noted."""
    global _installed
    with _lock:
        if _installed:
            return
        original = builtins.__build_class__

        def __build_class__(func, name, /, *bases, **kwds):
            cls = original(func, name, *bases, **kwds)
            extra = {k: v for k, v in kwds.items() if k != "metaclass"}
            if extra and isinstance(cls, type):
                note(cls, extra)
            return cls

        builtins.__build_class__ = __build_class__
        _installed = True


def note(cls: type, kwargs: dict[str, Any]) -> None:
    try:
        _kwargs[cls] = dict(kwargs)
    except TypeError:  # a class that refuses weak references: left as cloudpickle makes it
        pass


def of(cls: type) -> dict[str, Any]:
    """The keywords ``cls`` was made with ({} for none, or when not noted)."""
    try:
        return _kwargs.get(cls, {})
    except TypeError:
        return {}
