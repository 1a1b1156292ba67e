"""The notebook's variables in a form two kernels can compare: runs inside the kernel.

After every cell the runner asks the kernel (quietly: no output, no history, no ``Out``)
to call :func:`write`, which turns each user variable into plain data — tuples, lists,
dicts, numbers, strings and NumPy arrays — and pickles it to a file the runner reads.
Two runs of a notebook are then compared value by value (:mod:`tests.corpus.compare`)
without either kernel's objects: a model is its ``state_dict``, an optimizer its
``state_dict`` and which models' parameters it steps, a dataclass its fields, an object
its class and ``__dict__``, a function its code and what its closure holds.

Only the standard library is imported here; NumPy, torch, pandas and matplotlib are
looked up in ``sys.modules``, so a snapshot never imports what the notebook did not.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import io
import pathlib
import pickle
import re
import sys
import types
from typing import Any

MAX_DEPTH = 8
_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_HANDLES = {
    "multiprocessing",
    "concurrent",
    "threading",
    "_thread",
    "socket",
    "subprocess",
    "asyncio",
}
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")


def write(path: str, skip: frozenset[str] | set[str] = frozenset()) -> None:
    """Pickle the canonical form of the kernel's user namespace to ``path``."""
    from IPython import get_ipython

    with open(path, "wb") as f:
        pickle.dump(canonical_namespace(get_ipython().user_ns, skip), f)


def names(path: str) -> None:
    """Pickle the names the namespace holds now (before any cell: IPython's own, ``burst``)."""
    from IPython import get_ipython

    with open(path, "wb") as f:
        pickle.dump(sorted(get_ipython().user_ns), f)


def canonical_namespace(user_ns: dict[str, Any], skip: frozenset[str] | set[str]) -> dict:
    """``{name: canonical value}`` for every user variable (not ``_``-names, not ``skip``)."""
    context = _Context(user_ns)
    out = {}
    for name, value in list(user_ns.items()):
        if name.startswith("_") or name in skip:
            continue
        try:
            out[name] = context.canon(value, 0)
        except Exception as exc:  # a value we cannot read is a value to report, not a crash
            out[name] = ("unreadable", type(exc).__name__, _no_address(str(exc))[:200])
    return out


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _no_address(text: str) -> str:
    return _ADDRESS.sub("0x…", text)


class _Context:
    def __init__(self, user_ns: dict[str, Any]):
        self.user_ns = user_ns
        self.active: set[int] = set()
        self.np = sys.modules.get("numpy")
        self.torch = sys.modules.get("torch")
        self.pd = sys.modules.get("pandas")
        self._params: dict[int, str] | None = None

    # -- helpers ---------------------------------------------------------------------------

    def notebook_class(self, cls: type) -> bool | None:
        """For a class defined in the notebook: is it the one the notebook's name holds?"""
        if getattr(cls, "__module__", None) != "__main__":
            return None
        return self.user_ns.get(cls.__qualname__.split(".")[0]) is not None and (
            _lookup(self.user_ns, cls.__qualname__) is cls
        )

    def module_params(self) -> dict[int, str]:
        """id(parameter) -> the name of the notebook model that holds it."""
        if self._params is None:
            self._params = {}
            torch = self.torch
            for name, value in self.user_ns.items():
                if torch is not None and isinstance(value, torch.nn.Module):
                    for p in value.parameters():
                        self._params.setdefault(id(p), name)
        return self._params

    # -- the canonical form ----------------------------------------------------------------

    def canon(self, v: Any, depth: int) -> Any:
        if type(v) in _PLAIN:
            return v
        if depth > MAX_DEPTH:
            return ("deep", _qualname(type(v)))
        key = id(v)
        if key in self.active:
            return ("cycle", _qualname(type(v)))
        self.active.add(key)
        try:
            return self._canon(v, depth + 1)
        finally:
            self.active.discard(key)

    def _canon(self, v: Any, d: int) -> Any:
        np, torch, pd = self.np, self.torch, self.pd
        t = type(v)
        if isinstance(v, types.ModuleType):
            return ("module", v.__name__)
        if isinstance(v, enum.Enum):
            return ("enum", _qualname(t), self.notebook_class(t), self.canon(v.value, d))
        for base in _PLAIN[1:]:  # subclasses (IntEnum above; IPython's SList is a list)
            if isinstance(v, base):
                return ("subclass", _qualname(t), base.__name__, base(v))
        module = getattr(t, "__module__", "") or ""
        if module.split(".")[0] in _HANDLES:
            # Pools, executors, locks, sockets: what they hold (processes, pids, keys) is
            # this process's; their type says what the notebook has, and whether a pool or
            # an executor has ended (after its `with`: the comparison's spent-target rule).
            return ("handle", _qualname(t), _ended(v))
        if np is not None:
            if isinstance(v, np.ndarray):
                if v.dtype == object:
                    return (
                        "ndarray",
                        "object",
                        v.shape,
                        [self.canon(x, d) for x in v.ravel().tolist()],
                    )
                return ("ndarray", v.dtype.str, v.shape, v.copy())
            if isinstance(v, np.generic):
                return ("npscalar", v.dtype.str, v.item())
            if isinstance(v, np.random.Generator):
                return ("np.Generator", self.canon(v.bit_generator.state, d))
            if isinstance(v, np.dtype):
                return ("np.dtype", v.str)
            lib = getattr(np.lib, "npyio", None)
            if lib is not None and isinstance(v, getattr(lib, "NpzFile", ())):
                return ("npz", sorted(v.files))
        if torch is not None:
            special = self._torch(v, d)
            if special is not None:
                return special
        if pd is not None:
            special = self._pandas(v, d)
            if special is not None:
                return special
        if module.startswith("matplotlib"):
            return self._matplotlib(v)
        if module.startswith("tqdm"):
            return (
                "tqdm",
                _qualname(t),
                getattr(v, "n", None),
                getattr(v, "total", None),
                getattr(v, "desc", None),
                bool(getattr(v, "disable", False)),  # close() disables the bar: it is spent
            )
        if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
            kind = "list" if isinstance(v, list) else "tuple"
            extra = None if t in (list, tuple) else _qualname(t)
            return (kind, extra, [self.canon(x, d) for x in v])
        if isinstance(v, tuple):  # a namedtuple
            return (
                "namedtuple",
                _qualname(t),
                self.notebook_class(t),
                [self.canon(x, d) for x in v],
            )
        if isinstance(v, types.MappingProxyType):
            v, t = dict(v), dict
        random = sys.modules.get("random")
        if random is not None and isinstance(v, random.Random):
            return ("random.Random", _qualname(t), self.canon(v.getstate(), d))
        if isinstance(v, dict):
            extra = None if t is dict else _qualname(t)
            items = [(self.canon(k, d), self.canon(x, d)) for k, x in v.items()]
            if extra == "collections.defaultdict":
                extra = (extra, _qualname(v.default_factory) if v.default_factory else None)
            return ("dict", extra, sorted(items, key=lambda kv: repr(kv[0])))
        if isinstance(v, (set, frozenset)):
            kind = "set" if isinstance(v, set) else "frozenset"
            return (kind, sorted((self.canon(x, d) for x in v), key=repr))
        if isinstance(v, (range, slice)):
            return (t.__name__, repr(v))
        if t.__name__ == "deque" and t.__module__ == "collections":
            return ("deque", v.maxlen, [self.canon(x, d) for x in v])
        if isinstance(v, functools.partial):
            return (
                "partial",
                self.canon(v.func, d),
                self.canon(v.args, d),
                self.canon(v.keywords, d),
            )
        if isinstance(v, functools._lru_cache_wrapper):
            # Its parameters, not its statistics: a cache is per process, and the calls a
            # worker made are not counted in the notebook's (a documented difference, shown
            # once by 10_recursion_functools, not again in every snapshot after it).
            params = v.cache_parameters()
            return ("lru_cache", self.canon(v.__wrapped__, d), params["maxsize"], params["typed"])
        if isinstance(v, functools.singledispatchmethod):
            return ("singledispatchmethod", self.canon(v.func, d))
        if isinstance(v, (types.FunctionType, types.LambdaType)):
            return self._function(v, d)
        if isinstance(v, (types.BuiltinFunctionType, types.MethodWrapperType)):
            return (
                "builtin",
                getattr(v, "__qualname__", repr(v)),
                getattr(getattr(v, "__self__", None), "__name__", None),
            )
        if isinstance(v, types.MethodType):
            return ("method", v.__func__.__qualname__, self.canon(v.__self__, d))
        if isinstance(v, type):
            return self._class(v, d)
        if isinstance(v, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
            finished = isinstance(v, types.GeneratorType) and (
                inspect.getgeneratorstate(v) == inspect.GEN_CLOSED
            )
            return ("generator", v.__qualname__, finished)  # finished: it is spent
        if isinstance(v, (io.IOBase,)):
            return (
                "file",
                _qualname(t),
                getattr(v, "name", None),
                getattr(v, "mode", None),
                v.closed,
            )
        if isinstance(v, pathlib.PurePath):  # its text, not the caches its slots fill lazily
            return ("path", _qualname(t), str(v))
        if isinstance(v, re.Pattern):
            return ("re", v.pattern, v.flags)
        if isinstance(v, BaseException):
            return ("exception", _qualname(t), self.canon(v.args, d))
        if dataclasses.is_dataclass(v):
            fields = {
                f.name: self.canon(getattr(v, f.name, None), d) for f in dataclasses.fields(v)
            }
            return ("dataclass", _qualname(t), self.notebook_class(t), fields)
        if t.__module__ in ("itertools", "builtins") and hasattr(v, "__next__"):
            return ("iterator", _qualname(t))
        state = {}
        if hasattr(v, "__dict__"):
            state = {k: self.canon(x, d) for k, x in vars(v).items()}
        slots = [
            s
            for c in t.__mro__
            for s in getattr(c, "__slots__", ())
            if s not in ("__dict__", "__weakref__")
        ]
        for s in slots:
            if hasattr(v, s):
                state[s] = self.canon(getattr(v, s), d)
        if state or hasattr(v, "__dict__") or slots:
            return ("object", _qualname(t), self.notebook_class(t), state)
        return ("repr", _qualname(t), _no_address(repr(v)))

    def _function(self, f: types.FunctionType, d: int) -> tuple:
        code = f.__code__
        closure = [
            self.canon(c.cell_contents, d) if _has(c) else ("empty",) for c in f.__closure__ or ()
        ]
        if callable(getattr(f, "register", None)) and isinstance(
            getattr(f, "registry", None), types.MappingProxyType
        ):
            registry = sorted((_qualname(k), self.canon(x, d)) for k, x in f.registry.items())
            return ("singledispatch", self.canon(f.__wrapped__, d), registry)
        return (
            "function",
            f.__module__,
            f.__qualname__,
            _code_digest(code),
            self.canon(f.__defaults__, d),
            self.canon(f.__kwdefaults__, d),
            closure,
            {k: self.canon(x, d) for k, x in vars(f).items() if k not in ("__wrapped__",)},
            self.notebook_function(f),
        )

    def notebook_function(self, f: types.FunctionType) -> bool | None:
        if f.__module__ != "__main__" or "<" in f.__qualname__:
            return None
        return _lookup(self.user_ns, f.__qualname__) is f

    def _class(self, cls: type, d: int) -> tuple:
        if cls.__module__ != "__main__":
            return ("class", _qualname(cls))
        attrs = {}
        for k, x in vars(cls).items():
            if k.startswith("__") or k in ("_abc_impl",):
                continue
            if isinstance(x, (staticmethod, classmethod)):
                x = x.__func__
            if isinstance(x, property):
                attrs[k] = ("property", x.fget is not None, x.fset is not None)
                continue
            attrs[k] = self.canon(x, d)
        return (
            "class",
            _qualname(cls),
            self.notebook_class(cls),
            [b.__qualname__ for b in cls.__mro__],
            attrs,
        )

    def _torch(self, v: Any, d: int) -> Any:
        torch = self.torch
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu()
            return (
                "tensor",
                str(v.dtype),
                tuple(v.shape),
                v.requires_grad,
                t.numpy().copy() if t.dtype != torch.bfloat16 else t.float().numpy(),
            )
        if isinstance(v, torch.nn.Module):
            state = {k: self.canon(x, d) for k, x in v.state_dict().items()}
            return ("module", _qualname(type(v)), self.notebook_class(type(v)), v.training, state)
        if isinstance(v, torch.optim.Optimizer):
            params = self.module_params()
            linked = sorted({params.get(id(p), "?") for g in v.param_groups for p in g["params"]})
            return ("optimizer", _qualname(type(v)), self.canon(v.state_dict(), d), linked)
        if isinstance(v, (torch.dtype, torch.device, torch.Size)):
            return ("torch", type(v).__name__, str(v))
        if isinstance(v, torch.Generator):
            return ("torch.Generator", v.get_state().numpy().copy())
        return None

    def _pandas(self, v: Any, d: int) -> Any:
        pd = self.pd
        if isinstance(v, pd.DataFrame):
            columns = {str(c): self._series(v[c], d) for c in v.columns}
            return ("DataFrame", [str(c) for c in v.columns], self._index(v.index, d), columns)
        if isinstance(v, pd.Series):
            return ("Series", str(v.name), self._series(v, d))
        if isinstance(v, pd.Index):
            return self._index(v, d)
        if isinstance(v, (pd.Timestamp, pd.Timedelta, pd.Period)):
            return ("pandas", type(v).__name__, str(v))
        return None

    def _series(self, s: Any, d: int) -> tuple:
        values = s.to_numpy()
        if values.dtype == object:
            values = [self.canon(x, d) for x in values.tolist()]
        elif values.dtype.kind == "M" or values.dtype.kind == "m":
            values = values.astype("int64")
        else:
            values = values.copy()
        return (str(s.dtype), self._index(s.index, d), values)

    def _index(self, index: Any, d: int) -> tuple:
        return ("Index", type(index).__name__, str(index.dtype), [str(x) for x in index.tolist()])

    def _matplotlib(self, v: Any) -> tuple:
        t = type(v)
        if hasattr(v, "get_size_inches") and hasattr(v, "axes"):
            return (
                "figure",
                [round(float(x), 3) for x in v.get_size_inches()],
                len(v.axes),
                [a.get_title() for a in v.axes],
            )
        if hasattr(v, "get_title") and hasattr(v, "get_xlabel"):
            return ("axes", v.get_title(), v.get_xlabel(), v.get_ylabel(), len(v.get_lines()))
        return ("matplotlib", _qualname(t))


def _ended(handle: Any) -> bool | None:
    """Whether a pool or an executor has ended (None for other handles)."""
    state = getattr(handle, "_state", None)  # multiprocessing.Pool: "RUN", "CLOSE", "TERMINATE"
    if isinstance(state, str):
        return state != "RUN"
    for flag in ("_shutdown_thread", "_shutdown"):  # ProcessPoolExecutor, ThreadPoolExecutor
        if isinstance(getattr(handle, flag, None), bool):
            return getattr(handle, flag)
    return None


def _code_digest(code: types.CodeType) -> str:
    """The bytecode and constants of a function, nested functions' code included by digest."""
    h = hashlib.sha1(code.co_code)
    for const in code.co_consts:
        h.update(
            _code_digest(const).encode()
            if isinstance(const, types.CodeType)
            else repr(const).encode()
        )
    h.update(repr(code.co_names).encode())
    return h.hexdigest()[:16]


def _has(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _lookup(user_ns: dict[str, Any], qualname: str) -> Any:
    parts = qualname.split(".")
    obj = user_ns.get(parts[0])
    for part in parts[1:]:
        obj = getattr(obj, part, None)
    return obj
