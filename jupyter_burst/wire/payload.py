"""How values travel between the notebook and a worker, in both directions.

What goes by value, what by reference, and why:

* Notebook functions, lambdas and classes: by value (cloudpickle), with the globals they
  reach, transitively. All of a cell's values are pickled in one call, so an object reached
  from two names (a model and the optimizer that holds its parameters) arrives as one object.
* Installed modules (numpy, torch...): by reference, as an import on the other side.
* Modules that live beside the notebook rather than in the environment (``mylib.py`` in the
  notebook's folder): their source travels first and is loaded on the worker; their
  functions and classes then travel by reference into that copy.
* Large buffers (numpy arrays, torch CPU tensors, pandas blocks) travel out of band as
  separate frames (pickle protocol 5), which Dask writes to the socket without copying.
  CUDA tensors are moved to the CPU for the trip and back to a CUDA device on arrival.
* A value of ``burst.cache.min-bytes`` or more gets a content key per buffer; a worker that
  already holds a buffer is sent its key instead (:mod:`jupyter_burst.driver.cache_plan`).
* On the way back, values the cell did not change are sent as a reference to the notebook's
  own object, and the notebook's globals as a reference to the notebook's namespace, so a
  function defined remotely sees the notebook's variables, just as if it had been defined
  locally.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import pickle
import site
import sys
import sysconfig
import threading
import types
import typing
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import cloudpickle
import xxhash
from distributed.protocol import dask_deserialize, dask_serialize

from jupyter_burst.errors import SendError
from jupyter_burst.wire import class_kwargs, digest
from jupyter_burst.wire.contract import ResultMeta


class JobCache(Protocol):
    """A worker's value cache as a job uses it (:class:`jupyter_burst.worker.value_cache.JobCache`):
    what did not travel is filled from it, what goes back large is kept in it."""

    def fill(self, payload: Payload) -> list: ...

    def keep(
        self, buffer_values: list[str | None], buffers: list[memoryview]
    ) -> dict[str, Any]: ...


# Display metadata: a figure the cell left open, which the notebook shows after the cell's
# result (as the inline backend does, in IPython's post_execute).
AFTER_CELL = "jupyter_burst/after_cell"

_FRIENDLY_TYPES = {
    "_thread.lock": "threading.Lock",
    "_thread.RLock": "threading.RLock",
}


def type_name(value: Any) -> str:
    """The type of ``value`` as a user would write it."""
    if _open_file(value):
        return "open file"
    t = type(value)
    name = (
        t.__qualname__
        if t.__module__ in ("builtins", "__main__")
        else f"{t.__module__}.{t.__qualname__}"
    )
    return _FRIENDLY_TYPES.get(name, name)


def _open_file(value: Any) -> bool:
    return isinstance(value, io.IOBase) and not isinstance(value, io.BytesIO | io.StringIO)


def a_or_an(noun: str) -> str:
    """``noun`` with its indefinite article: "an open file", "a threading.Lock"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


class Payload:
    """One serialized message: a small pickle of metadata, the main pickle, out-of-band buffers.

    Dask moves each buffer as its own frame (see the ``dask_serialize`` registration below),
    which is what keeps a 1 GiB array from being copied into a pickle on its way.

    ``keys``: the content key of each buffer the worker may keep (None for the others); a
    buffer whose position is in ``omitted`` does not travel: the worker has it, by key.
    """

    __slots__ = ("meta", "data", "buffers", "keys", "omitted", "names", "sent", "_result_meta")

    def __init__(
        self,
        meta: bytes,
        data: bytes,
        buffers: list[memoryview | None],
        keys: list[str | None] | None = None,
        omitted: Iterable[int] = (),
    ):
        self.meta = meta
        self.data = data
        self.buffers = buffers
        self.keys = keys or [None] * len(buffers)
        self.omitted = frozenset(omitted)
        self.names: dict[str, str] = {}  # key -> the variable it came from (kernel side only)
        self.sent: Mapping[int, Any] = {}  # position -> object pickled (kernel side only)
        self._result_meta: ResultMeta | None = None

    def result_meta(self) -> ResultMeta:
        """A result's metadata (:class:`ResultMeta`), unpickled once."""
        if self._result_meta is None:
            self._result_meta = ResultMeta.loads(self.meta)
        return self._result_meta

    @property
    def nbytes(self) -> int:
        """The bytes this message carries (omitted buffers not counted)."""
        return (
            len(self.meta) + len(self.data) + sum(b.nbytes for b in self.buffers if b is not None)
        )

    def cached_sizes(self) -> dict[str, int]:
        """Each content key, with its buffer's size."""
        return {
            key: buffer.nbytes
            for key, buffer in zip(self.keys, self.buffers, strict=True)
            if key is not None and buffer is not None
        }

    def without(self, present: Iterable[str]) -> Payload:
        """The same message, less the buffers whose keys are in ``present``."""
        present = set(present)
        omitted = {i for i, key in enumerate(self.keys) if key is not None and key in present}
        if not omitted:
            return self
        buffers = [None if i in omitted else b for i, b in enumerate(self.buffers)]
        return Payload(self.meta, self.data, buffers, self.keys, omitted)

    def __reduce_ex__(self, protocol):
        # Plain pickling (a small payload inside a task) keeps the buffers out of band too.
        # After a trip through Dask, ``data`` may be a memoryview of a received frame.
        data = self.data if isinstance(self.data, bytes) else pickle.PickleBuffer(self.data)
        buffers = [None if b is None else pickle.PickleBuffer(b) for b in self.buffers]
        return (Payload, (self.meta, data, buffers, self.keys, tuple(self.omitted)))


class SentWithOutput:
    """What Dask holds as the result of a rank whose result went with its last output batch
    (:func:`payload_event`): the kernel has it from there."""

    __slots__ = ()


def payload_event(payload: Payload) -> dict[str, Any]:
    """A small payload as an event message carries it (plain bytes, for msgpack)."""
    return {
        "meta": payload.meta,
        "data": bytes(payload.data),
        "buffers": [None if b is None else bytes(b) for b in payload.buffers],
        "keys": list(payload.keys),
        "omitted": sorted(payload.omitted),
    }


def payload_from_event(message: dict[str, Any]) -> Payload:
    """The payload :func:`payload_event` made, as it was."""
    buffers = [None if b is None else memoryview(b) for b in message["buffers"]]
    return Payload(
        bytes(message["meta"]), message["data"], buffers, message["keys"], message["omitted"]
    )


@dask_serialize.register(Payload)
def _serialize_payload(payload: Payload) -> tuple[dict, list]:
    header = {"keys": payload.keys, "omitted": sorted(payload.omitted)}
    return header, [payload.meta, payload.data, *(b for b in payload.buffers if b is not None)]


@dask_deserialize.register(Payload)
def _deserialize_payload(header: dict, frames: list) -> Payload:
    keys, omitted = list(header["keys"]), set(header["omitted"])
    received = iter(frames[2:])
    buffers = [None if i in omitted else memoryview(next(received)) for i in range(len(keys))]
    return Payload(bytes(frames[0]), frames[1], buffers, keys, omitted)


# --------------------------------------------------------------------------------------
# Modules beside the notebook


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    roots.update({sys.base_prefix, sys.prefix, sys.exec_prefix})
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


@functools.lru_cache(maxsize=1)
def _distribution_packages() -> frozenset[str]:
    return frozenset(importlib.metadata.packages_distributions())


@functools.lru_cache(maxsize=4096)
def _is_local_module_name(name: str, file: str | None) -> bool:
    top = name.partition(".")[0]
    if not file or top in sys.builtin_module_names or top == "jupyter_burst":
        return False
    if os.path.realpath(file).startswith(_installed_roots()):
        return False
    # Outside the environment's folders: local, unless a distribution provides it (an
    # editable install). Asked only then: listing the distributions takes a fraction of a
    # second the first time (warm_up, at %load_ext, takes it off the first cell).
    return top not in _distribution_packages()


def warm_up() -> None:
    """What deciding "local module or installed" needs the first time, computed ahead of it."""
    _installed_roots()
    _distribution_packages()


def is_local_module(module: types.ModuleType) -> bool:
    """True for a module the notebook imports from its own folder, not from the environment."""
    name = getattr(module, "__name__", None)
    if not name or name == "__main__":
        return False
    return _is_local_module_name(name, getattr(module, "__file__", None))


@dataclass(frozen=True)
class ModuleSource:
    name: str
    filename: str
    source: str
    is_package: bool

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


def _local_origin(name: str) -> tuple[str, bool] | None:
    """(file, is_package) of a module beside the notebook, imported or not yet; else None."""
    module = sys.modules.get(name)
    if module is not None:
        if not is_local_module(module):
            return None
        return module.__file__, hasattr(module, "__path__")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.has_location or not spec.origin.endswith(".py"):
        return None
    if not _is_local_module_name(name, spec.origin):
        return None
    return spec.origin, spec.submodule_search_locations is not None


def _module_sources(names: Iterable[str]) -> list[ModuleSource]:
    """Sources of the local modules named, with their parent packages, parents first."""
    wanted: dict[str, tuple[str, bool]] = {}
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            parent = ".".join(parts[:i])
            origin = _local_origin(parent)
            if origin is not None:
                wanted[parent] = origin
    sources = []
    for name in sorted(wanted, key=lambda n: (n.count("."), n)):
        filename, is_package = wanted[name]
        with open(filename, encoding="utf-8") as f:
            source = f.read()
        sources.append(ModuleSource(name, filename, source, is_package))
    return sources


def install_modules(sources: Iterable[ModuleSource]) -> None:
    """Load the notebook's own modules on this worker (replacing an older copy)."""
    for src in sources:
        current = sys.modules.get(src.name)
        if current is not None and getattr(current, "__burst_digest__", None) == src.digest:
            continue
        spec = importlib.util.spec_from_loader(src.name, loader=None, is_package=src.is_package)
        module = importlib.util.module_from_spec(spec)
        module.__file__ = src.filename
        module.__burst_digest__ = src.digest
        if src.is_package:
            module.__path__ = []
        sys.modules[src.name] = module
        exec(compile(src.source, src.filename, "exec"), module.__dict__)
        parent, _, child = src.name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, module)


# --------------------------------------------------------------------------------------
# torch tensors: out of band, sharing kept


def _torch():
    return sys.modules.get("torch")


def _rebuild_storage(buffer, device: str):
    torch = _torch() or importlib.import_module("torch")
    view = memoryview(buffer)
    if view.nbytes == 0:
        storage = torch.UntypedStorage(0)
    else:
        if view.readonly:
            view = memoryview(bytearray(view))
        storage = torch.frombuffer(view, dtype=torch.uint8).untyped_storage()
    if device != "cpu" and torch.cuda.is_available():
        storage = storage.cuda()
    return storage


def _rebuild_tensor(storage, offset, size, stride, dtype, requires_grad):
    torch = _torch() or importlib.import_module("torch")
    tensor = torch.empty(0, dtype=dtype, device=storage.device).set_(storage, offset, size, stride)
    tensor.requires_grad_(requires_grad)
    return tensor


def _rebuild_parameter(data, requires_grad):
    torch = _torch() or importlib.import_module("torch")
    return torch.nn.Parameter(data, requires_grad=requires_grad)


class _StorageBytes:
    """Stands for one tensor storage in a pickle, so views of it stay views of one storage."""

    __slots__ = ("storage", "device", "__weakref__")

    def __init__(self, storage, device: str):
        self.storage = storage
        self.device = device

    def __reduce_ex__(self, protocol):
        torch = _torch()
        raw = torch.empty(0, dtype=torch.uint8).set_(self.storage).numpy()
        return (_rebuild_storage, (pickle.PickleBuffer(raw), self.device))


# --------------------------------------------------------------------------------------
# The pickler


class _BufferLog:
    """The pickler's out-of-band buffers, each with the name of the value it belongs to."""

    __slots__ = ("buffers", "values", "current")

    def __init__(self, buffers: list) -> None:
        self.buffers = buffers
        self.values: list[str | None] = []
        self.current: str | None = None  # the name being pickled (pickling is depth first)

    def __call__(self, buffer: pickle.PickleBuffer) -> None:
        self.buffers.append(buffer)
        self.values.append(self.current)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, plus: torch tensors out of band, local modules noted, references back.

    ``notebook_globals``: the notebook's namespace; functions defined in it arrive with the
    worker's stand-in for it (the cell's ``__main__``) as their globals, not a copy.
    """

    def __init__(self, file, buffers: list, notebook_globals: dict | None = None):
        # The buffer callback is not a method of the pickler: a bound method would make a
        # reference cycle (pickler -> callback -> pickler), and the pickler holds every value
        # it sent until the cyclic collector happens to run: a superseded 1 GiB array would
        # outlive its name by several cells.
        self._buffer_log = _BufferLog(buffers)
        super().__init__(file, protocol=5, buffer_callback=self._buffer_log)
        self._notebook_globals = notebook_globals
        self.local_modules: set[str] = set()
        self.moved_devices: set[str] = set()
        self._storages: dict[int, _StorageBytes] = {}

    @property
    def buffer_values(self) -> list[str | None]:
        """For each out-of-band buffer, the name of the value that reached it."""
        return self._buffer_log.values

    def _function_getnewargs(self, func):
        args = super()._function_getnewargs(func)
        if self._notebook_globals is not None and func.__globals__ is self._notebook_globals:
            return (args[0], _NOTEBOOK_GLOBALS, *args[2:])
        return args

    def reducer_override(self, obj):
        t = type(obj)
        if t is _Named:
            # Pickling is depth first: every buffer until the next name belongs to this value.
            self._buffer_log.current = obj.name
            return (_unnamed, (obj.value,))
        if t is types.ModuleType:
            if is_local_module(obj):
                self.local_modules.add(obj.__name__)
            if cloudpickle.cloudpickle._should_pickle_by_reference(obj):
                return (import_module, (obj.__name__,))
            return super().reducer_override(obj)
        if t is types.FunctionType or isinstance(obj, type):
            module = sys.modules.get(getattr(obj, "__module__", None) or "")
            if module is not None and is_local_module(module):
                self.local_modules.add(module.__name__)
            if t is types.FunctionType and _is_singledispatch(obj):
                return _singledispatch_parts(obj)
            reduced = super().reducer_override(obj)
            if t is not types.FunctionType:
                reduced = _class_remake(reduced, obj)
            return reduced
        if t is types.CodeType:
            return _code_reduce_keeping_filename(obj)
        if t is functools.cached_property:
            return _cached_property_parts(obj)
        by_parts = _BY_PARTS.get(t)
        if by_parts is not None and getattr(obj, "__module__", None) == "__main__":
            # It would pickle as the bare name "__main__.x", which a worker cannot look up.
            return by_parts(obj)
        if _open_file(obj):
            # cloudpickle would send a readable file's content as if it were the file: what a
            # worker reads then is a snapshot, and a big file is a surprise. Say so instead.
            raise pickle.PicklingError(f"cannot send an open file ({getattr(obj, 'name', '?')})")
        torch = _torch()
        if torch is not None:
            if isinstance(obj, torch.Tensor):
                return self._reduce_tensor(obj, torch)
            schedulers = sys.modules.get("torch.optim.lr_scheduler")
            if schedulers is not None and isinstance(obj, schedulers.LRScheduler):
                return _scheduler_reduce(obj)
        return super().reducer_override(obj)

    def _reduce_tensor(self, tensor, torch):
        if type(tensor) is torch.nn.Parameter:
            return (_rebuild_parameter, (tensor.data, tensor.requires_grad))
        if (
            type(tensor) is not torch.Tensor
            or tensor.layout != torch.strided
            or tensor.is_quantized
            or tensor.device.type == "meta"
        ):
            return NotImplemented
        device = tensor.device.type
        if device != "cpu":
            self.moved_devices.add(device)
            tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage()
        key = storage.data_ptr() if storage.nbytes() else id(storage)
        holder = self._storages.get(key)
        if holder is None:
            holder = self._storages[key] = _StorageBytes(storage, device)
        return (
            _rebuild_tensor,
            (
                holder,
                tensor.storage_offset(),
                tuple(tensor.shape),
                tuple(tensor.stride()),
                tensor.dtype,
                tensor.requires_grad,
            ),
        )


class MissingModule(types.ModuleType):
    """A module that one side imported and the other cannot (``%pip`` put it on the cluster only)."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ImportError(
            f"burst: the module '{self.__name__}' was imported on the cluster, and this "
            "environment does not have it; install it here too, or use it in %%burst cells only"
        )


def import_module(name: str) -> types.ModuleType:
    """The module ``name`` as this side has it; a :class:`MissingModule` when it has none."""
    try:
        __import__(name)
        return sys.modules[name]
    except ImportError:
        return MissingModule(name)


class ImportedName:
    """``from module import attr``, sent as that import rather than as the object it gave."""

    def __init__(self, module: str, attr: str):
        self.module = module
        self.attr = attr

    def __reduce__(self):
        return (import_attribute, (self.module, self.attr))


def import_attribute(module: str, attr: str) -> Any:
    """``from module import attr`` on this side; a :class:`MissingModule` when it fails."""
    found = import_module(module)
    if isinstance(found, MissingModule):
        return found
    try:
        return getattr(found, attr)
    except AttributeError:
        return import_module(f"{module}.{attr}")


class Shown:
    """A cell's last value that cannot travel back: what the notebook shows of it."""

    def __init__(self, data: dict, metadata: dict):
        self.data = data
        self.metadata = metadata

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data, self.metadata

    def __repr__(self) -> str:
        return str(self.data.get("text/plain", "<a value that stayed on the worker>"))


class _NotebookGlobals:
    """Stands for the notebook's namespace in a pickle: the worker puts the cell's own there."""

    def __reduce__(self):
        return (_notebook_globals, ())


_NOTEBOOK_GLOBALS = _NotebookGlobals()
_unpacking = threading.local()


def _after_load(action) -> None:
    """Run ``action`` once the message being read is whole (at once outside our unpickler)."""
    queue = getattr(_unpacking, "after", None)
    if queue is None:
        action()
    else:
        queue.append(action)


def _notebook_globals() -> dict:
    namespace = getattr(_unpacking, "namespace", None)
    return namespace if namespace is not None else {"__name__": "__main__"}


# Objects that pickle as a bare name ("__main__.slow_square"): made in the notebook, they
# travel as the parts they were made from and are made again from them on the worker.
def _lru_cache_parts(wrapper):
    parameters = wrapper.cache_parameters()
    extra = {k: v for k, v in vars(wrapper).items() if k != "__wrapped__"}
    return (
        _rebuild_lru_cache,
        (wrapper.__wrapped__, parameters["maxsize"], parameters["typed"], extra),
    )


def _rebuild_lru_cache(function, maxsize, typed, extra):
    wrapper = functools.lru_cache(maxsize=maxsize, typed=typed)(function)
    vars(wrapper).update(extra)
    return wrapper


def _newtype_parts(new_type):
    return (_rebuild_newtype, (new_type.__name__, new_type.__supertype__))


def _rebuild_newtype(name, supertype):
    new_type = typing.NewType(name, supertype)
    new_type.__module__ = "__main__"
    return new_type


def _class_remake(reduced, cls: type):
    """cloudpickle's remake of a class by value, completed with what it leaves out.

    Its ``__slots__`` (cloudpickle makes the class without them, so instances grow a
    ``__dict__`` and the slots' descriptors are gone), and the keywords its class statement
    had (class_kwargs.py).
    """
    if (
        not isinstance(reduced, tuple)
        or reduced[0] is not cloudpickle.cloudpickle._make_skeleton_class
    ):
        return reduced
    slots = cls.__dict__.get("__slots__") or None  # () makes no descriptors: nothing lost
    kwargs = class_kwargs.of(cls)
    if slots is None and not kwargs:
        return reduced
    args = list(reduced[1])
    if slots is not None:
        args[3] = {**args[3], "__slots__": slots}  # type_kwargs: the class body's names
    return (_make_class_with_kwargs, (kwargs, *args), *reduced[2:])


def _make_class_with_kwargs(
    kwargs, type_constructor, name, bases, type_kwargs, class_tracker_id, extra
):
    # cloudpickle's _make_skeleton_class, with the class statement's own keywords. A class
    # already made from this pickle is not made again: its __init_subclass__ would register
    # a second class that is then thrown away.
    known = cloudpickle.cloudpickle._DYNAMIC_CLASS_TRACKER_BY_ID.get(class_tracker_id)
    if class_tracker_id is not None and known is not None:
        return known
    type_kwargs = {sys.intern(k): v for k, v in type_kwargs.items()}
    try:
        skeleton = types.new_class(
            name,
            bases,
            {"metaclass": type_constructor, **kwargs},
            lambda ns: ns.update(type_kwargs),
        )
    except TypeError:
        # The base's __init_subclass__ is not made yet: this class is part of the base's own
        # state (a registry of its subclasses). Make it without, and call __init_subclass__
        # with its keywords once the whole message is read.
        skeleton = types.new_class(
            name, bases, {"metaclass": type_constructor}, lambda ns: ns.update(type_kwargs)
        )
        _after_load(lambda: super(skeleton, skeleton).__init_subclass__(**kwargs))
    class_kwargs.note(skeleton, kwargs)
    return cloudpickle.cloudpickle._lookup_class_or_track(class_tracker_id, skeleton)


def _is_singledispatch(function) -> bool:
    attrs = function.__dict__
    return (
        "registry" in attrs
        and "dispatch" in attrs
        and not cloudpickle.cloudpickle._should_pickle_by_reference(function)
    )


def _singledispatch_parts(function):
    # Its dispatch cache (a WeakKeyDictionary) cannot travel; its registry can.
    registry = dict(function.registry)
    default = registry.pop(object)
    extra = {
        k: v
        for k, v in vars(function).items()
        if k not in ("registry", "dispatch", "register", "_clear_cache", "__wrapped__")
    }
    return (_rebuild_singledispatch, (default, list(registry.items()), extra))


def _rebuild_singledispatch(default, registered, extra):
    function = functools.singledispatch(default)
    for cls, implementation in registered:
        function.register(cls, implementation)
    vars(function).update(extra)
    return function


def _cached_property_parts(prop):
    # Python 3.11's holds an RLock, which cannot travel; the function it caches can.
    return (_rebuild_cached_property, (prop.func, prop.attrname, prop.__doc__))


def _rebuild_cached_property(func, attrname, doc):
    prop = functools.cached_property(func)
    prop.attrname = attrname  # set by __set_name__ when its class was made
    prop.__doc__ = doc
    return prop


_BY_PARTS = {
    functools._lru_cache_wrapper: _lru_cache_parts,  # lru_cache, cache, and what wraps them
    # (a TypeVar cloudpickle itself rebuilds from its parts)
    typing.NewType: _newtype_parts,
}


def _scheduler_reduce(scheduler):
    # A torch LR scheduler wraps its optimizer's `step` when it is made, and warns that
    # "optimizer.step() has been overridden" when it finds it unwrapped; an optimizer pickles
    # without that wrapper. Put it back on arrival, as the scheduler's own __init__ did.
    reduced = scheduler.__reduce_ex__(5)
    parts = tuple(reduced) + (None,) * (5 - len(reduced))
    return (*parts[:5], _scheduler_setstate)


def _scheduler_setstate(scheduler, state) -> None:
    attrs, slots = state if isinstance(state, tuple) else (state, None)
    vars(scheduler).update(attrs or {})
    for name, value in (slots or {}).items():
        setattr(scheduler, name, value)
    optimizer = getattr(scheduler, "optimizer", None)
    step = getattr(optimizer, "step", None)
    if step is None or hasattr(step, "_wrapped_by_lr_sched") or not hasattr(step, "__func__"):
        return
    reference, method = weakref.ref(optimizer), step.__func__

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        opt = reference()
        opt._opt_called = True
        return method.__get__(opt, opt.__class__)(*args, **kwargs)

    wrapper._wrapped_by_lr_sched = True
    optimizer.step = wrapper


class _Named:
    """A notebook value with its variable name, so that its buffers can be told apart."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: Any):
        self.name = name
        self.value = value


def _unnamed(value: Any) -> Any:
    return value


def _code_reduce_keeping_filename(code: types.CodeType):
    # cloudpickle >= 3.1 writes "<dynamic-code>" as the file name; a traceback from the worker
    # needs the real one (the notebook cell that defined the function) to show its lines.
    constructor, args = cloudpickle.cloudpickle._code_reduce(code)
    return constructor, tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)


class _RefPickler(_Pickler):
    """Also sends unchanged notebook objects, and the notebook's globals, as references.

    A separate class because pickle calls ``persistent_id`` for every object once defined.
    """

    def __init__(
        self,
        file,
        buffers: list,
        refs: Mapping[int, str],
        ns_id: int,
        arrived: Mapping[int, int] | None = None,
    ):
        super().__init__(file, buffers)
        self._refs = refs
        self._ns_id = ns_id
        self._arrived = arrived or {}

    def persistent_id(self, obj):
        name = self._refs.get(id(obj))
        if name is not None:
            return ("ref", name)
        position = self._arrived.get(id(obj))
        if position is not None:
            return ("sent", position)
        stand_in = self.globals_ref.get(self._ns_id)
        if stand_in is not None and obj is stand_in:
            return "globals"
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, buffers, namespace: dict | None, snapshot: Mapping[str, Any] | None):
        super().__init__(file, buffers=buffers)
        self._namespace = namespace
        self._snapshot = snapshot or {}

    def load(self):
        before = getattr(_unpacking, "namespace", None), getattr(_unpacking, "after", None)
        _unpacking.namespace, _unpacking.after = self._namespace, []
        try:
            loaded = super().load()
            for action in _unpacking.after:
                action()
            return loaded
        finally:
            _unpacking.namespace, _unpacking.after = before

    def find_class(self, module: str, name: str):
        if module == "__main__" and self._namespace is not None:
            try:
                return self._namespace[name]
            except KeyError:
                raise SendError(
                    f"the notebook's '{name}' pickles as its bare name in __main__ (its "
                    "__reduce__ says so), so it cannot be made again on the cluster: create it "
                    "inside the cell, or leave out what holds it with exclude="
                ) from None
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if pid == "globals":
            return self._namespace
        kind, name = pid
        if kind == "sent":
            return self._snapshot[SENT][name]
        return self._snapshot[name]


def _as_frame(buffer: pickle.PickleBuffer) -> memoryview:
    try:
        return buffer.raw()
    except BufferError:  # not contiguous: one copy
        return memoryview(bytes(buffer))


def dumps(
    obj: Any,
    refs: Mapping[int, str] | None = None,
    ns_id: int | None = None,
    notebook_globals: dict | None = None,
    arrived: Mapping[int, int] | None = None,
) -> tuple[bytes, list[memoryview], _Pickler]:
    """Pickle ``obj``; large buffers are returned apart, uncopied."""
    buffers: list[pickle.PickleBuffer] = []
    file = io.BytesIO()
    if refs is None or ns_id is None:
        pickler = _Pickler(file, buffers, notebook_globals)
    else:
        pickler = _RefPickler(file, buffers, refs, ns_id, arrived)
    pickler.dump(obj)
    return file.getvalue(), [_as_frame(b) for b in buffers], pickler


def loads(
    data, buffers: list, namespace: dict | None = None, snapshot: Mapping[str, Any] | None = None
) -> Any:
    return _Unpickler(io.BytesIO(data), buffers, namespace, snapshot).load()


class SentObjects(Mapping):
    """The objects of a message, by their position in its pickle (the kernel's side).

    A new object the cell sends back may hold one that travelled and that the cell did not
    change (an optimizer made from the notebook's model holds the model's parameters); the
    worker then names it by its position in the message it received, and the notebook's
    own object is put there, not a copy of it. Read from the pickler's memo on first use.
    """

    def __init__(self, pickler: _Pickler):
        self._pickler: _Pickler | None = pickler
        self._objects: dict[int, Any] | None = None

    def _table(self) -> dict[int, Any]:
        if self._objects is None:
            memo = self._pickler.memo.copy() if self._pickler is not None else {}
            self._objects = {position: _pickled_for(obj) for position, obj in memo.values()}
            self._pickler = None
        return self._objects

    def __getitem__(self, position: int) -> Any:
        return self._table()[position]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


def _pickled_for(obj: Any) -> Any:
    """The notebook's object behind a stand-in the pickler put in its place (what the worker
    has at the same position is the object the stand-in was made into)."""
    if type(obj) is _Named:
        return obj.value
    if type(obj) is _StorageBytes:
        return obj.storage
    return obj


# The key under which a snapshot of the notebook holds the message's SentObjects.
SENT = ("burst", "sent objects")


def arrived_positions(unpickler_memo: Any, reachable: set[int]) -> dict[int, int]:
    """On the worker: id -> position in the received pickle, for the objects in ``reachable``
    (``unpickler_memo``: the memo of the unpickler that read the message)."""
    memo = unpickler_memo.copy()
    return {id(obj): position for position, obj in memo.items() if id(obj) in reachable}


# --------------------------------------------------------------------------------------
# The notebook's side: pack what the cell reads; unpack what it sends back


def _anchor() -> None:
    """A function whose globals are the notebook's: on the worker it finds that namespace."""


def pack_namespace(
    values: Mapping[str, Any],
    user_ns: dict,
    imports: Iterable[str] = (),
    cache_from: int | None = None,
    limit: int | None = None,
) -> Payload:
    """Pickle the cell's values in one pass; name the variable when one cannot travel.

    ``imports``: modules the cell itself imports; those beside the notebook travel too.
    ``cache_from``: the buffers of a value this big or bigger get content keys, so that a
    worker can keep them and later be sent the key alone (None: no keys).
    ``limit``: the most bytes the values may come to (``burst.send-limit``; None: no limit).
    """
    anchor = types.FunctionType(_anchor.__code__, user_ns, "_burst_anchor")
    named = {name: _Named(name, value) for name, value in values.items()}
    try:
        data, buffers, pickler = dumps(
            {"anchor": anchor, "values": named}, notebook_globals=user_ns
        )
    except Exception as exc:
        raise _send_error(values, exc) from None
    meta = {
        "modules": _module_sources(pickler.local_modules | set(imports)),
        "moved_devices": sorted(pickler.moved_devices),
    }
    message = Payload(pickle.dumps(meta, protocol=5), data, buffers)
    message.sent = SentObjects(pickler)
    if limit is not None and message.nbytes > limit:
        raise _too_big(message.nbytes, limit, pickler.buffer_values, buffers)
    if cache_from is not None:
        for i, (key, name) in content_keys(pickler.buffer_values, buffers, cache_from).items():
            message.keys[i] = key
            message.names[key] = name
    return message


def content_keys(
    buffer_values: list[str | None],
    buffers: list[memoryview],
    min_bytes: int,
    memo: dict[tuple[int, int], str] | None = None,
) -> dict[int, tuple[str, str]]:
    """Buffer position -> (content key, value name), for the values of ``min_bytes`` or more.

    ``memo``: digests already known, by (address, size).
    """
    sizes: dict[str, int] = {}
    for name, buffer in zip(buffer_values, buffers, strict=True):
        if name is not None:
            sizes[name] = sizes.get(name, 0) + buffer.nbytes
    keys = {}
    for i, (name, buffer) in enumerate(zip(buffer_values, buffers, strict=True)):
        if name is None or sizes[name] < min_bytes or not buffer.nbytes:
            continue
        known = memo.get((digest.address(buffer), buffer.nbytes)) if memo else None
        keys[i] = (known or digest.of(buffer), name)
    return keys


def unpack_namespace(
    payload: Payload, cache: JobCache | None = None, namespace: dict | None = None
) -> tuple[dict, dict, dict]:
    """On the worker: (meta, namespace, values); the namespace is what notebook functions see.

    ``namespace``: the dict to use as the notebook's namespace (the cell's ``__main__``);
    notebook functions get it as their globals. With ``cache``, buffers that did not travel
    come from this worker's cache, and those that did are kept in it.
    """
    meta = pickle.loads(payload.meta)
    install_modules(meta["modules"])
    buffers = cache.fill(payload) if cache is not None else payload.buffers
    namespace = {} if namespace is None else namespace
    unpickler = _Unpickler(io.BytesIO(payload.data), buffers, namespace, None)
    shipped = unpickler.load()
    # Its memo (position -> object), read only if the result needs references back.
    meta["arrived"] = unpickler.memo
    namespace.setdefault("__name__", "__main__")
    namespace.setdefault("__builtins__", __builtins__)
    return meta, namespace, shipped["values"]


def pack_result(
    result: Mapping[str, Any],
    namespace: dict,
    unchanged: Mapping[int, str],
    status: ResultMeta | None = None,
    cache: JobCache | None = None,
    arrived: Mapping[int, int] | None = None,
) -> Payload:
    """On the worker: pickle what goes back, referring to unchanged notebook objects by name.

    ``arrived``: id -> position in the received message, for unchanged objects that new
    values may hold (they go back as references to the notebook's own).
    ``status`` (failed or not, when) travels apart, readable without unpickling the values.
    With ``cache``, this worker keeps the large values that go back, so that a later cell
    that reads them unchanged need not send them here again.
    """
    result = dict(result)
    if cache is not None and result.get("values"):
        result["values"] = {k: _Named(k, v) for k, v in result["values"].items()}
    data, buffers, pickler = dumps(result, refs=unchanged, ns_id=id(namespace), arrived=arrived)
    meta = dataclasses.replace(
        status or ResultMeta(), moved_devices=tuple(sorted(pickler.moved_devices))
    )
    if cache is not None:
        meta.cached = cache.keep(pickler.buffer_values, buffers)
    return Payload(meta.dumps(), data, buffers)


def event_count(payload: Payload) -> int:
    """How many output batches the rank behind ``payload`` published (read from its metadata)."""
    return payload.result_meta().events


def unpack_result(payload: Payload, user_ns: dict, snapshot: Mapping[str, Any]) -> Any:
    """In the kernel: the values the cell sent back, with references resolved to notebook objects."""
    builtins_before = user_ns.get("__builtins__")
    try:
        return loads(payload.data, payload.buffers, namespace=user_ns, snapshot=snapshot)
    finally:
        if builtins_before is not None:
            user_ns["__builtins__"] = builtins_before


# --------------------------------------------------------------------------------------
# Fingerprints: did the cell change a value in place?


def fingerprint(
    value: Any, memo: dict[tuple[int, int], str], reached: set[int] | None = None
) -> bytes | None:
    """A hash of everything that would travel for ``value``; None when it cannot be pickled.

    Buffers are hashed where they lie (never copied), and a buffer reached twice is hashed once.
    ``reached``: gets the ids of the objects the pickle holds.
    """
    try:
        data, buffers, pickler = dumps(value)
    except Exception:
        return None
    if reached is not None:
        reached.update(pickler.memo.copy())
    whole = xxhash.xxh3_128(data)
    for buffer in buffers:
        where = (digest.address(buffer), buffer.nbytes)
        part = memo.get(where)
        if part is None:
            part = memo[where] = digest.of(buffer)
        whole.update(part.encode())
    return whole.digest()


# --------------------------------------------------------------------------------------
# Naming what cannot travel


def _send_error(values: Mapping[str, Any], exc: Exception) -> SendError:
    for name, value in values.items():
        try:
            dumps(value)
        except Exception as inner:
            path, culprit = find_unpicklable(value, name)
            held = f"; it holds {a_or_an(type_name(culprit))} at {path}" if path != name else ""
            return SendError(
                f"cannot send '{name}' ({type_name(value)}){held}: create it inside the cell, "
                f"or exclude={name}  [{type(inner).__name__}: {_first_line(inner)}]"
            )
    return SendError(f"cannot send the cell's variables: {_first_line(exc)}")


def _too_big(
    total: int, limit: int, buffer_values: list[str | None], buffers: list[memoryview]
) -> SendError:
    from dask.utils import format_bytes

    sizes: dict[str, int] = {}
    for name, buffer in zip(buffer_values, buffers, strict=True):
        if name is not None:
            sizes[name] = sizes.get(name, 0) + buffer.nbytes
    biggest = max(sizes, key=sizes.__getitem__) if sizes else None
    which = f"; the largest is '{biggest}' ({format_bytes(sizes[biggest])})" if biggest else ""
    fix = f"exclude={biggest}, " if biggest else ""
    return SendError(
        f"the cell's values come to {format_bytes(total)}, over burst.send-limit "
        f"({format_bytes(limit)}){which}: load it inside the cell from where the cluster can "
        f"read it, {fix}or raise burst.send-limit"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _picklable(value: Any) -> bool:
    try:
        dumps(value)
        return True
    except Exception:
        return False


def find_unpicklable(
    value: Any, path: str, depth: int = 0, seen: set[int] | None = None
) -> tuple[str, Any]:
    """The deepest part of ``value`` that fails to pickle, as a Python expression path.

    An object reached again (a child that points back at its parent) is not followed.
    """
    seen = set() if seen is None else seen
    seen.add(id(value))
    if depth > 8:
        return path, value
    for child_path, child in _children(value, path):
        if id(child) not in seen and not _picklable(child):
            return find_unpicklable(child, child_path, depth + 1, seen)
    return path, value


def _children(value: Any, path: str):
    if isinstance(value, dict):
        for key, child in list(value.items())[:1000]:
            yield f"{path}[{key!r}]", child
    elif isinstance(value, (list, tuple)):
        for i, child in enumerate(value[:1000]):
            yield f"{path}[{i}]", child
    elif isinstance(value, (set, frozenset)):
        for child in list(value)[:1000]:
            yield f"{path}{{...}}", child
    elif isinstance(value, (types.FunctionType, type, types.ModuleType)):
        return
    else:
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict):
            for key, child in list(attrs.items())[:1000]:
                yield f"{path}.{key}", child
