"""The contract between the notebook's kernel, a head node and a worker: the one definition of
what a cell's task is told (:class:`CellSpec`), what a rank says of its result beside the
values (:class:`ResultMeta`), what a background job hands its head node (:class:`JobRequest`),
the notebook's working folder as a remote cell gets it and the files that come back
(:class:`Workdir`, :class:`FilesBack`) and the names of the scheduler's RPCs (:class:`Rpc`). Both sides import it; neither builds
or reads these as loose dicts.

A kernel and a worker of different jupyter-burst versions may meet (a node installed from an
older image): the spec crosses as a plain dict stamped with :data:`CONTRACT`, and the worker
refuses one of another contract in one line that names both versions and the fix.
"""

from __future__ import annotations

import dataclasses
import enum
import pickle
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from jupyter_burst._version import __version__
from jupyter_burst.errors import BurstError
from jupyter_burst.wire.ignore_rules import RuleFile

# Raised whenever a field of CellSpec, ResultMeta or JobRequest is added, removed or changes
# meaning: a kernel and a worker must agree on it, not merely on the package's name.
CONTRACT = 2


class ContractMismatch(BurstError):
    """The kernel and a worker (or head node) run versions that do not speak the same contract."""


class Rpc(enum.StrEnum):
    """The scheduler's (and a worker node's nanny's) handlers jupyter-burst adds, by name."""

    INFO = "burst_info"
    SET_IDLE = "burst_set_idle"
    STOP = "burst_stop"
    FIT = "burst_fit"
    NODE_JOINED = "burst_node_joined"
    POWER_OFF = "burst_power_off"  # the head tells each worker node's nanny
    JOB_SUBMIT = "burst_job_submit"
    JOB_EVENTS = "burst_job_events"
    JOB_RESULT = "burst_job_result"
    JOB_CANCEL = "burst_job_cancel"
    JOB_LIST = "burst_job_list"
    DASHBOARD = "burst_dashboard"  # the head adds Dask's dashboard pages (node/dashboard.py)


class FileEntry(NamedTuple):
    """One file of the working folder as the kernel sent it."""

    key: str  # sha256 of its bytes: the node stores files by content, each once
    size: int
    mtime_ns: int  # the node's copy gets the notebook's time, so a write by the cell shows
    executable: bool


@dataclass
class Workdir:
    """The notebook's folder, as a remote cell's nodes get it before the cell (burst.workdir).

    Each node keeps one copy per notebook folder and cluster, shared by its worker
    processes; the cell runs in it. What the cell creates or changes there comes back
    with rank 0's result (:class:`FilesBack`).
    """

    root: str  # the notebook's folder on the kernel's machine: where files come back
    name: str  # the copy's folder name on a node (the folder's name and a hash of its path)
    files: dict[str, FileEntry] = field(default_factory=dict)  # relative path -> its entry
    ignore: tuple[RuleFile, ...] = ()  # the .gitignore/.burstignore rules the kernel applied
    max_bytes: int = 0  # burst.workdir.max-bytes: also what may come back
    max_files: int = 0  # burst.workdir.max-files


@dataclass
class FilesBack:
    """What rank 0's cell created or changed in the node's copy of the working folder."""

    root: str  # the notebook's folder they belong in (Workdir.root)
    # relative path -> (the key it had when sent, None for a new file; its bytes; executable)
    files: dict[str, tuple[str | None, bytes, bool]] = field(default_factory=dict)
    refused: str | None = None  # one line: why they did not come back (past the limits)


@dataclass
class CellSpec:
    """What one rank's task is told about its cell, besides the values (the message)."""

    source: str  # the cell as Python (IPython syntax already turned into calls)
    filename: str  # the name tracebacks show for the cell
    line_offset: int = 0  # the cell's first line in the notebook's numbering (after %%burst)
    assigns: tuple[str, ...] = ()  # names the cell assigns: they come back
    contexts: tuple[str, ...] = ()  # names bound by `with ... as`: spent after the cell
    imported_from: tuple[
        tuple[str, str, str], ...
    ] = ()  # (name, module, attr) of `from m import a`
    returns: tuple[str, ...] | None = None  # return= names; None: all it assigned or changed
    gather: bool = False  # return=gather: every rank's values come back as lists
    exclude: tuple[str, ...] = ()  # exclude= names: never sent, never brought back
    collective_timeout: float = 300.0  # seconds a collective may wait for its peers
    cwd: str | None = None  # the working folder (the notebook's, on this machine's cluster)
    workdir: Workdir | None = None  # a remote cluster's: the notebook's folder, synced to it
    background: bool = False  # %%burst async: results go back by value, for any kernel
    cache: dict[str, Any] | None = None  # the kernel's use of the workers' value caches
    start_method: str | None = None  # multiprocessing's, as in the notebook
    pip: tuple[str, ...] = ()  # %pip lines, done on every node before the cell runs
    rng: bytes | None = None  # the notebook's random generators' states (wire/rng_state.py)
    imports_torch: bool = False  # the cell uses torch: its generator state is restored too
    checkpoints: dict[str, Any] | None = None  # where burst.checkpoint writes (store/checkpoints)
    # Set by the driver for each job and rank:
    job: str = ""
    topic: str = ""  # the pub/sub topic the rank's output goes to
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    master_addr: str | None = None  # rank 0's host, for torch.distributed's rendezvous
    master_port: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The form that crosses to a worker: plain values, stamped with the contract."""
        # A shallow copy: it is pickled on its way, and this runs for every rank of every cell.
        return dict(vars(self), contract=CONTRACT, version=__version__)

    @classmethod
    def from_wire(cls, sent: dict[str, Any]) -> CellSpec:
        """On the worker: the spec the kernel sent, or one line if its contract differs."""
        check(sent, "the kernel")
        return cls(**{k: v for k, v in sent.items() if k in _SPEC_FIELDS})


@dataclass
class ResultMeta:
    """What a rank says of its result, readable without unpickling the values."""

    rank: int = 0
    failed: bool = False
    failed_at: float | None = None  # when its error happened: the first failure is the cause
    events: int = 0  # output batches it published (all must arrive before the result shows)
    could_not_join: str | None = None  # why its process group could not form (a lost peer)
    moved_devices: tuple[str, ...] = ()  # tensors' devices that travelled through the CPU
    cached: dict[str, Any] | None = None  # content keys the worker kept of what it sent back
    # Its slot at the job's end (worker/usage.py), for the ledger's history of the job. It
    # rides here rather than as a last output batch: a batch sent moments before the task
    # ends holds the worker's "finished" message back by Dask's batching interval.
    usage: dict[str, Any] | None = None

    def dumps(self) -> bytes:
        return pickle.dumps(vars(self), protocol=5)

    @classmethod
    def loads(cls, data: bytes) -> ResultMeta:
        return cls(**{k: v for k, v in pickle.loads(data).items() if k in _META_FIELDS})


_SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(CellSpec))
_META_FIELDS = frozenset(f.name for f in dataclasses.fields(ResultMeta))


@dataclass
class JobRequest:
    """A background cell handed to its cluster's head node, which runs its attempts."""

    message: Any  # the packed values (wire.payload.Payload)
    spec: CellSpec
    ranks: int
    retries: int
    timeout_minutes: float | None
    contract: int = field(default=CONTRACT)
    version: str = field(default=__version__)


def check(sent: dict[str, Any] | JobRequest, sender: str) -> None:
    """Refuse in one line what another contract's version of jupyter-burst sent."""
    if isinstance(sent, dict):
        contract, version = sent.get("contract"), sent.get("version", "an older version")
    else:
        contract, version = getattr(sent, "contract", None), getattr(sent, "version", "?")
    if contract != CONTRACT:
        raise ContractMismatch(
            f"{sender} runs jupyter-burst {version} (contract {contract}) and this machine "
            f"{__version__} (contract {CONTRACT}); install the same version on both: "
            f"pip install jupyter-burst=={version}"
        )
