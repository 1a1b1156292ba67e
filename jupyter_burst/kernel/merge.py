"""How a value the cell changed in place lands in the notebook: in place again, where possible.

The worker changed *the notebook's object* as far as the user is concerned, so every other
reference the notebook holds (a view of an array, the optimizer holding a model's
parameters, a list inside a dict) must see the change. The copy that came back is poured
into the original object; only where that cannot be done faithfully (the shape or type
changed) is the name rebound to the copy.
"""

from __future__ import annotations

import sys
import types
from typing import Any

_NOT_MERGED = (type, types.FunctionType, types.ModuleType, types.BuiltinFunctionType)


def merge_in_place(original: Any, new: Any) -> bool:
    """Make ``original`` equal to ``new`` without replacing it; False if that cannot be done."""
    if type(original) is not type(new) or isinstance(original, _NOT_MERGED):
        return False
    for merge in (_numpy, _torch, _builtin_container):
        done = merge(original, new)
        if done is not None:
            return done
    return _plain_object(original, new)


def _numpy(original: Any, new: Any) -> bool | None:
    numpy = sys.modules.get("numpy")
    if numpy is None or not isinstance(original, numpy.ndarray):
        return None
    if original.shape != new.shape or original.dtype != new.dtype or not original.flags.writeable:
        return False
    numpy.copyto(original, new)
    return True


def _torch(original: Any, new: Any) -> bool | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if isinstance(original, torch.Tensor):
        if original.shape != new.shape or original.dtype != new.dtype:
            return False
        with torch.no_grad():
            original.copy_(new)
        if new.grad is not None or original.grad is not None:
            original.grad = None if new.grad is None else new.grad.to(original.device)
        return True
    if isinstance(original, torch.nn.Module):
        try:
            original.load_state_dict(new.state_dict(), strict=True)
        except (RuntimeError, KeyError, ValueError):
            return False  # the cell changed the architecture: take the new model whole
        original.train(new.training)
        return True
    if isinstance(original, torch.optim.Optimizer):
        try:
            original.load_state_dict(new.state_dict())
        except (RuntimeError, KeyError, ValueError, IndexError):
            return False
        return True
    return None


def _builtin_container(original: Any, new: Any) -> bool | None:
    if isinstance(original, (list, bytearray)):
        original[:] = new
        return True
    if isinstance(original, dict):
        original.clear()
        original.update(new)
        return True
    if isinstance(original, set):
        original.clear()
        original.update(new)
        return True
    return None


def _plain_object(original: Any, new: Any) -> bool:
    attrs = getattr(original, "__dict__", None)
    if not isinstance(attrs, dict) or hasattr(type(original), "__slots__"):
        return False
    if sys.modules.get("pandas") is not None and type(original).__module__.startswith("pandas"):
        return False  # frames keep internal caches; take the new one whole
    attrs.clear()
    attrs.update(new.__dict__)
    return True


def repoint(holder: Any, merged: dict[int, Any]) -> None:
    """In ``holder``'s own items or attributes, one level deep: a merged copy → its original."""
    if isinstance(holder, dict):
        for key, value in list(holder.items()):
            if id(value) in merged:
                holder[key] = merged[id(value)]
    elif isinstance(holder, list):
        for i, value in enumerate(holder):
            if id(value) in merged:
                holder[i] = merged[id(value)]
    elif not isinstance(holder, _NOT_MERGED):
        attrs = getattr(holder, "__dict__", None)
        if isinstance(attrs, dict):
            for key, value in list(attrs.items()):
                if id(value) in merged:
                    attrs[key] = merged[id(value)]
