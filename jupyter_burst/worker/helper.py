"""The ``burst`` helper a cell sees: its rank, its device, and data parallelism in one call each.

Inside a ``%%burst gpus=N`` cell it describes this rank of N. Outside (a plain notebook
cell, or ``import jupyter_burst; jupyter_burst.burst``) it is a single rank on this
machine's first CUDA device or the CPU, so the same cell also runs without the magic.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from jupyter_burst import config
from jupyter_burst.estimate import estimate, needs_sharding
from jupyter_burst.store.checkpoints import CheckpointStore, default_root
from jupyter_burst.worker.preemption import Notice

# One lock for every helper: it is taken rarely, and a helper must stay picklable (the
# notebook's own `burst` travels when a cell reads it).
_preempt_lock = threading.Lock()


class Burst:
    """One rank's view of the job: ``rank``, ``world_size``, ``device``, and helpers."""

    def __init__(
        self,
        rank: int = 0,
        world_size: int = 1,
        local_rank: int = 0,
        device: str | None = None,
        publish: Callable[..., None] | None = None,
        checkpoints: dict | None = None,
    ):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self._device = device
        self._publish = publish
        self._checkpoints = checkpoints
        self.preempting = False
        self._on_preempt: list[Callable[[], Any]] = []
        self._notified = False  # apart from `preempting`, which a user may set to try a cell

    def __getstate__(self) -> dict[str, Any]:
        # Callbacks belong to the process that registered them; a copy starts with none.
        return {**self.__dict__, "_on_preempt": []}

    def __repr__(self) -> str:
        return f"<burst rank {self.rank} of {self.world_size} on {self.device}>"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self):
        """The rank's torch device: ``cuda:0`` (its own GPU) or ``cpu``."""
        import torch

        if self._device is None:
            self._device = "cuda:0" if torch.cuda.is_available() else "cpu"
        return torch.device(self._device)

    # data parallelism -------------------------------------------------------------------

    def _distributed(self):
        import torch.distributed as dist

        if self.world_size > 1 and not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised for this rank")
        return dist

    def wrap(self, model, **kwargs):
        """The model on this rank's device, wrapped for data parallelism when there are ranks.

        DDP replicates the model; ``shard=True`` (or a memory estimate that says one replica
        does not fit the GPU) shards it with FSDP instead. One rank: the model, moved.
        """
        shard = kwargs.pop("shard", None)
        model = model.to(self.device)
        if self.world_size == 1:
            return model
        self._distributed()
        if shard is None:
            shard = self._should_shard(model)
        if shard and self.device.type == "cuda":
            from torch.distributed.fsdp import FullyShardedDataParallel

            return FullyShardedDataParallel(model, **kwargs)
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            kwargs.setdefault("device_ids", [self.device.index or 0])
        return DistributedDataParallel(model, **kwargs)

    def _should_shard(self, model) -> bool:
        if self.device.type != "cuda":
            return False
        import torch

        free, _total = torch.cuda.mem_get_info(self.device)
        return needs_sharding(model, gpu_bytes=free)

    def loader(self, dataset, batch_size: int = 1, shuffle: bool = True, seed: int = 0, **kwargs):
        """A DataLoader over this rank's share of ``dataset`` (a DistributedSampler).

        Each pass over it is a new epoch: the sampler's epoch is set for you, so every
        epoch shuffles differently and every rank agrees on the order.
        """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        drop_last = kwargs.pop("drop_last", False)
        sampler = DistributedSampler(
            dataset,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        return _EpochLoader(
            DataLoader(
                dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **kwargs
            )
        )

    def barrier(self) -> None:
        """Wait until every rank reaches this line."""
        if self.world_size > 1:
            self._distributed().barrier()

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Record metrics in the ledger, with the step and this rank (the sidebar draws a
        curve per rank); the main rank also prints them."""
        values = {k: _plain(v) for k, v in metrics.items()}
        if self.is_main:
            shown = "  ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            print(f"step {step}  {shown}" if step is not None else shown, flush=True)
        if self._publish is not None:
            self._publish("metrics", step, values)

    # pre-emption --------------------------------------------------------------------

    def on_preempt(self, callback: Callable[[], Any]) -> Callable[[], Any]:
        """Run ``callback()`` once when this node is about to be reclaimed (a spot notice).

        Typically an immediate checkpoint:
        ``burst.on_preempt(lambda: burst.checkpoint(state, step))``. On a worker it runs in
        the notice watcher's thread, concurrently with the cell, so read what it saves with
        that in mind; the cell sees ``burst.preempting`` become True just before, and does
        not end until the callback has returned. If the notice came before this call, the
        callback runs at once, here. Outside a burst cell there is no watcher: it is only
        registered. Returns ``callback``, so it also works as a decorator.
        """
        with _preempt_lock:
            self._on_preempt.append(callback)
            now = self._notified
        if now:
            self._run_preempt_callback(callback)
        return callback

    def _preempted(self, notice: Notice | None = None) -> None:
        """The worker's notice watcher says this node is going: flag it, tell the cell, run callbacks."""
        with _preempt_lock:
            if self._notified:
                return
            self._notified = self.preempting = True
            callbacks = list(self._on_preempt)
        if notice is not None and self.local_rank == 0:  # one line per node, not per rank
            print(notice.message, file=sys.stderr, flush=True)
        for callback in callbacks:
            self._run_preempt_callback(callback)

    @staticmethod
    def _run_preempt_callback(callback: Callable[[], Any]) -> None:
        try:
            callback()
        except Exception:
            # The cell goes on (it may still save its work itself); show what went wrong.
            print("burst: an on_preempt callback raised; the cell goes on:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)

    # checkpoints --------------------------------------------------------------------

    def _store(self):
        settings = self._checkpoints
        if settings is None:  # a plain notebook cell: this machine's state folder
            settings = {"root": default_root(config.state_dir()), "job": "notebook", "keep": 3}
        return CheckpointStore(
            settings["root"], settings["job"], settings.get("keep", 3), settings.get("cell", "")
        )

    def checkpoint(self, state: Any, step: int | None = None):
        """Save ``state`` (state_dicts, any picklable object) from the main rank, atomically.

        A later attempt of the same cell (after a lost worker) gets it from ``burst.restore()``.
        """
        if not self.is_main:
            return None
        saved = self._store().save(state, step)
        if self._publish is not None:
            from dataclasses import asdict

            self._publish("checkpoint", asdict(saved))
        return saved

    def restore(self, step: int | None = None) -> Any:
        """The newest valid checkpoint of this job (or the one at ``step``); None if there is none."""
        found = self._store().restore(step)
        if found is None:
            return None
        state, checkpoint = found
        if self.is_main:
            print(
                f"burst: resumed from the checkpoint of step {checkpoint.step}",
                file=sys.stderr,
                flush=True,
            )
        return state

    def estimate(self, model, **kwargs):
        """Memory needed to train ``model``; see :func:`jupyter_burst.estimate.estimate`."""

        return estimate(model, **kwargs)


class _EpochLoader:
    """A DataLoader whose DistributedSampler moves to the next epoch at each pass."""

    def __init__(self, loader):
        self.loader = loader
        self.epoch = 0

    def __iter__(self) -> Iterator:
        self.loader.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        # Only called for names not found on self; `loader` may be missing while unpickling.
        loader = self.__dict__.get("loader")
        if loader is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(loader, name)


def unwrap(value: Any) -> Any:
    """The model inside a DistributedDataParallel wrapper (what the notebook should get back)."""
    parallel = sys.modules.get("torch.nn.parallel")
    if parallel is not None and isinstance(value, parallel.DistributedDataParallel):
        return value.module
    return value


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def from_environment(publish: Callable[..., None] | None = None) -> Burst:
    """The helper for the rank this process runs, read from torchrun's variables."""
    return Burst(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        device=os.environ.get("JUPYTER_BURST_TORCH_DEVICE"),
        publish=publish,
    )


def local() -> Burst:
    """A single rank on this machine, for cells run without ``%%burst``."""
    return Burst()
