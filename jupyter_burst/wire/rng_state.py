"""The notebook's global random state travels with each cell, and comes back.

In a notebook, ``random.seed(0)`` in one cell decides what ``random.random()`` gives in
the next; so do ``np.random.seed`` and ``torch.manual_seed``. A worker process has its
own global generators, shared by whichever cells (of whichever notebooks) ran there. So
the kernel sends the states of the generators it has (Python's ``random``, NumPy's global
one, torch's CPU one: a few KB) with the cell, each rank starts from them, and rank 0's
states after the cell are set back in the kernel. A seeded notebook gives the same numbers
with or without ``%%burst``. (CUDA generators are per device and stay on the worker.)

Used on both sides: :func:`capture` and :func:`restore` are plain functions of module state.
The worker sends back every state it has: a cell that imported torch and seeded it leaves
that state to the notebook, which has torch from then on.

A kernel and a worker also run library code beside the cell, on other threads: Dask's
connection back-off, its size sampling of lists, tornado's timer jitter, jupyter_client's
message-digest culling. Each of those draws from Python's global generator, so a seeded
cell's numbers would depend on what the process happened to be doing at the time (seen as
a seeded notebook giving other numbers under load). :func:`capture` and :func:`restore`
first give those modules a generator of their own (:func:`_keep_libraries_off`).
"""

from __future__ import annotations

import pickle
import random as _random
import sys
from typing import Any

# Modules that run beside a cell and draw from ``random``'s module functions, which are
# methods of one global generator, named as they call it: ``random.uniform(...)`` and
# the like, or a function imported from it.
_DRAW_FROM_RANDOM = (
    "dask.sizeof",
    "distributed.comm.core",
    "distributed.utils_comm",
    "distributed.worker",
    "distributed.scheduler",
    "tornado.ioloop",
    "jupyter_client.session",
    "zmq.sugar.socket",
)
_IMPORTED_FROM_RANDOM = {"distributed.protocol.compression": ("randint",)}
_theirs = _random.Random()  # the libraries' generator: not the notebook's


def _keep_libraries_off() -> None:
    """Point the libraries' draws at their own generator (those imported so far; cheap)."""
    for name in _DRAW_FROM_RANDOM:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "random", None) is _random:
            module.random = _theirs
    for name, functions in _IMPORTED_FROM_RANDOM.items():
        module = sys.modules.get(name)
        for function in functions:
            if module is not None and getattr(module, function, None) == getattr(_random, function):
                setattr(module, function, getattr(_theirs, function))


def capture() -> bytes:
    """The states of the global generators this process has imported, as one small pickle.

    One bytes object, not a structure: it rides in messages whose pickler looks at every
    object it holds, and a generator's state is hundreds of numbers.
    """
    _keep_libraries_off()
    states: dict[str, Any] = {}
    if "random" in sys.modules:
        states["random"] = sys.modules["random"].getstate()
    numpy = sys.modules.get("numpy")
    if numpy is not None and hasattr(numpy, "random"):
        states["numpy"] = numpy.random.get_state()
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_rng_state"):
        states["torch"] = torch.get_rng_state().numpy().tobytes()
    return pickle.dumps(states, protocol=5)


def restore(packed: bytes | None, import_torch: bool = False, imported_only: bool = False) -> None:
    """Set the global generators to what :func:`capture` gave.

    NumPy is imported for its state when missing (a fraction of a second, once), unless
    ``imported_only``; torch only with ``import_torch`` (seconds): a cell that never touches
    torch need not pay for it.
    """
    _keep_libraries_off()
    if not packed:
        return
    states = pickle.loads(packed)
    if "random" in states:
        import random

        random.setstate(states["random"])
    if "numpy" in states and ("numpy" in sys.modules or not imported_only):
        import numpy

        numpy.random.set_state(states["numpy"])
    if "torch" in states and ("torch" in sys.modules or import_torch):
        import torch

        torch.set_rng_state(torch.frombuffer(bytearray(states["torch"]), dtype=torch.uint8))
