"""torch.distributed on a worker: the cell's process group, whoever in the cell asks for it.

Runs inside a Dask worker process. For ``gpus=N`` the ranks' group is made before the cell
runs, so that ``burst``'s helpers and a bare ``dist.all_reduce`` work at once. A
torchrun-style script also calls ``init_process_group(backend=...)`` itself, often from a
function of an earlier cell that imported it by name (``from torch.distributed import
init_process_group``), and ``destroy_process_group()`` at its end. So, once per worker
process, both functions are replaced where such names resolve -- in ``torch.distributed``
and in ``torch.distributed.distributed_c10d``, which defines them and which a pickled
reference names -- by functions that ask the running cell:

* ``init_process_group``: the cell's group is ready → it is kept; a script asking for
  another backend that the slot supports gets the group made again with it, over the same
  rendezvous; ``nccl`` on a CPU slot becomes ``gloo``, said in one line; with no group yet
  (``gpus=1``) the script's own call makes one from the rank's torchrun variables.
* ``destroy_process_group``: the cell's group stays until the cell ends, then it is
  destroyed (as is a group the script made and left).
"""

from __future__ import annotations

import datetime
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from typing import Any

_C10D = "torch.distributed.distributed_c10d"
_lock = threading.Lock()
_installed = False
_cell: CellGroup | None = None


class CellGroup:
    """The process group of one running cell (one rank of it)."""

    def __init__(
        self,
        rank: int,
        world_size: int,
        master: tuple[str, int] | None,
        timeout_seconds: float,
        cuda: bool,
        say,
    ):
        self.rank = rank
        self.world_size = world_size
        self.master = master
        self.timeout = datetime.timedelta(seconds=timeout_seconds)
        self.cuda = cuda
        self._say = say
        self._said: set[str] = set()
        self._store = None
        self._again = 0

    def start(self) -> None:
        """The ranks' group, made before the cell runs (``gpus`` > 1).

        None without torch: a node has the notebook's environment, so a notebook without
        torch has cells that cannot use torch.distributed; its ranks still run side by side
        with ``burst.rank`` and ``burst.world_size``.
        """
        if self.world_size <= 1 or self.master is None:
            return
        if importlib.util.find_spec("torch") is None:
            return
        dist = _dist()
        host, port = self.master
        _original("init_process_group")(
            "nccl" if self.cuda else "gloo",
            init_method=f"tcp://{host}:{port}",
            rank=self.rank,
            world_size=self.world_size,
            timeout=self.timeout,
        )
        self._store = dist.distributed_c10d._get_default_store()

    def init(self, backend: Any, args: tuple, kwargs: dict) -> None:
        dist = _dist()
        backend = self._usable(backend)
        if dist.is_initialized():
            if backend is None or backend == str(dist.get_backend()).lower():
                return  # the group the cell already has: a torchrun script's call is satisfied
            if self._store is None:
                raise ValueError(
                    "trying to initialize the default process group twice! (it was made "
                    f"with backend {dist.get_backend()}; this call asks for {backend})"
                )
            self._make_again(backend)
            return
        if backend is not None:
            kwargs["backend"] = backend
        _original("init_process_group")(*args, **kwargs)

    def _usable(self, backend: Any) -> str | None:
        """The backend asked for, as this slot can run it (nccl needs a GPU)."""
        if backend is None:
            return None
        text = str(backend).lower().replace(" ", "")
        if not self.cuda and ":" in text:
            # "cpu:gloo,cuda:nccl": on a CPU slot only its CPU part can ever be used.
            cpu = [part.split(":", 1)[1] for part in text.split(",") if part.startswith("cpu:")]
            text = cpu[0] if cpu else "nccl"
        if text == "nccl" and not self.cuda:
            if self.rank == 0 and "nccl" not in self._said:
                self._said.add("nccl")
                self._say(
                    'burst: init_process_group(backend="nccl") on a CPU slot: it uses gloo '
                    "(nccl needs a GPU; gpus= on a provider with GPUs gives NCCL)"
                )
            return "gloo"
        return text

    def _make_again(self, backend: str) -> None:
        dist = _dist()
        _original("destroy_process_group")()
        self._again += 1
        store = dist.PrefixStore(f"burst-again-{self._again}", self._store)
        _original("init_process_group")(
            backend,
            store=store,
            rank=self.rank,
            world_size=self.world_size,
            timeout=self.timeout,
        )

    def destroy(self, group: Any) -> None:
        dist = _dist()
        if group is None or group is dist.GroupMember.WORLD:
            if self._store is not None:
                return  # the cell's own group: destroyed when the cell ends
        _original("destroy_process_group")(group)

    def close(self) -> None:
        """Destroy whatever default group the cell leaves (a peer may be gone already)."""
        dist = sys.modules.get("torch.distributed")
        if dist is None or not dist.is_available() or not dist.is_initialized():
            return
        try:
            _original("destroy_process_group")()
        except Exception:  # a peer is gone; the group dies with this process's state
            pass


def begin(group: CellGroup) -> None:
    """``group`` is the running cell's from now on; its group is made (gpus > 1)."""
    global _cell
    install()
    _cell = group
    group.start()


def end(group: CellGroup) -> None:
    global _cell
    try:
        group.close()
    finally:
        if _cell is group:
            _cell = None


# ----------------------------------------------------------------------------------------
# The replacements, in place before torch.distributed is first imported


_originals: dict[str, Any] = {}


def _original(name: str):
    return _originals[name]


def _dist():
    import torch.distributed as dist

    return dist


def _replace(module) -> None:
    """Put the cell-aware functions into ``distributed_c10d`` (and torch.distributed)."""
    for name, make in (
        ("init_process_group", _init_wrapper),
        ("destroy_process_group", _destroy_wrapper),
    ):
        current = getattr(module, name, None)
        if current is None or getattr(current, "__burst__", False):
            continue
        _originals[name] = current
        replacement = make(current)
        setattr(module, name, replacement)
        package = sys.modules.get("torch.distributed")
        if package is not None and getattr(package, name, None) is current:
            setattr(package, name, replacement)


def _init_wrapper(original):
    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        cell = _cell
        if cell is None:
            return original(*args, **kwargs)
        if args:
            backend, args = args[0], args[1:]
        else:
            backend = kwargs.pop("backend", None)
        return cell.init(backend, args, kwargs)

    init_process_group.__burst__ = True
    return init_process_group


def _destroy_wrapper(original):
    @functools.wraps(original)
    def destroy_process_group(group=None):
        cell = _cell
        if cell is None:
            return original(group)
        return cell.destroy(group)

    destroy_process_group.__burst__ = True
    return destroy_process_group


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _replace(module)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Replaces the two functions as ``distributed_c10d`` is imported, whoever imports it."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _C10D:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader)
        return spec


def install() -> None:
    """Once per worker process; cheap, and it imports nothing of torch."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        module = sys.modules.get(_C10D)
        if module is not None:
            _replace(module)
        else:
            sys.meta_path.insert(0, _PatchOnImport())
