"""Keeping the user's credentials on this machine: what a burst will not send, what is never stored.

A notebook is full of secrets: a boto3 session made for a quick S3 listing, an API token
pasted into a cell. A cell that happens to read one would ship it to every node of the
cluster. So, before anything is packed, the values a cell would send are searched (to a
bounded depth) for cloud SDK sessions, clients and credentials, for strings shaped like AWS
keys, and for variables named like secrets; any of them stops the cell with one line that
names it, unless the cell names it in ``send=`` itself. And the text the ledger keeps (output
lines, errors) has such values replaced, so the sidebar never shows them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import cloudpickle

from jupyter_burst.errors import SendError

_SDK_PACKAGES = ("boto3", "botocore", "aiobotocore", "s3transfer")
# Words of a variable or key name that make it a secret's name (`hf_token`, `apiKey`,
# `AWS_SECRET_ACCESS_KEY`), but not `tokens`, `tokenizer` or `key_size`.
_SECRET_WORDS = frozenset(
    {"secret", "password", "passwd", "pwd", "token", "credential", "credentials"}
)
_SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("auth", "key")})
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_ACCESS_KEY_ID = re.compile(
    r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA)[A-Z0-9]{16}\b"
)
# A value given to a secret-looking name in text: `aws_secret_access_key = abc...`, "token": "...".
_SECRET_SETTING = re.compile(
    r"""((?:secret|passw(?:or)?d|passwd|token(?!s)|api_?key|private_?key|access_?key|credential)"""
    r"""\w*["']?\s*[:=]\s*["']?)((?=[^\s"',;]*[A-Za-z])[^\s"',;]{8,})""",
    re.I,
)
_REDACTED = "[redacted]"
_MAX_ITEMS = 2_000  # per value: a cell's values may be long lists of numbers; a config is small
_MAX_DEPTH = 6
_MIN_SECRET_CHARS = 8


def refuse(
    values: Mapping[str, Any],
    send: tuple[str, ...] = (),
    secrets: Mapping[str, str] | None = None,
) -> None:
    """Raise SendError for the first value that holds a credential, unless ``send=`` names it.

    Searched: what pickling sends, so also what the notebook's own functions and classes
    reach (they travel by value: the globals they use, closures, defaults, attributes), and
    ``secrets`` (:func:`notebook_secrets`): a copy of a secret-named string wherever it sits.
    """
    for name, value in values.items():
        if name in send:
            continue
        if secret_name(name) and _holds_data(value):
            raise SendError(
                f"'{name}' is named like a credential, and a burst does not send credentials "
                f"unless asked: send={name} if the cell needs it (better: give the cluster its "
                "own, e.g. burst.aws.instance-profile)"
            )
        found = _find_credential(value, name, send, secrets or {})
        if found is not None:
            # A secret a function reaches, or a copy of one, is named by its own name, which
            # send= may name; anything else by the variable that holds it.
            path, what, own = found[0], found[1], found[2] or name
            raise SendError(
                f"'{name}' holds {what} at {path}, and a burst does not send credentials unless "
                f"asked: create it inside the cell, exclude={name}, or send={own} if you mean it"
            )


def secret_name(name: str) -> bool:
    """True for a name that says it holds a secret."""
    words = [w.lower() for w in _WORDS.findall(name)]
    return any(w in _SECRET_WORDS for w in words) or any(
        pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False)
    )


def _holds_data(value: Any) -> bool:
    """Text a secret could be: a string or bytes, or a mapping with one (not a list of ids)."""
    if isinstance(value, str | bytes):
        return len(value) >= _MIN_SECRET_CHARS
    if isinstance(value, Mapping):
        return any(isinstance(v, str | bytes) for v in list(value.values())[:_MAX_ITEMS])
    return False


def _find_credential(
    value: Any, path: str, send: tuple[str, ...], secrets: Mapping[str, str]
) -> tuple[str, str, str | None] | None:
    """(where, what, the notebook name that send= would name) of the first credential."""
    for where, item, key in _walk(value, path):
        named = key if _named_in_notebook(where, key) else None
        if named in send:
            continue
        module = type(item).__module__.partition(".")[0]
        if module in _SDK_PACKAGES:
            return where, f"a {type(item).__module__}.{type(item).__qualname__}", named
        if isinstance(item, str):
            copied = secrets.get(item)
            if copied in send:
                continue  # the secret the cell said to send, under whichever name it sits
            if copied is not None:
                return where, f"the value of the notebook's {copied!r}", copied
            if _ACCESS_KEY_ID.search(item):
                return where, "a string shaped like an AWS access key id", named
            if key is not None and secret_name(key) and len(item) >= _MIN_SECRET_CHARS:
                return where, f"a string under the secret-looking key {key!r}", named
    return None


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any, str | None]]:
    """(path, item, the dict key or attribute it sits under) for ``value`` and what it holds."""
    stack: list[tuple[str, Any, str | None, int]] = [(path, value, None, 0)]
    seen: set[int] = set()
    count = 0
    while stack and count < _MAX_ITEMS:
        where, item, key, depth = stack.pop()
        count += 1
        leaf = isinstance(item, str | bytes)  # a string is judged again under each name
        if not leaf and id(item) in seen:
            continue
        seen.add(id(item))
        yield where, item, key
        if depth >= _MAX_DEPTH or isinstance(item, str | bytes | int | float):
            continue
        if isinstance(item, type) or callable(item) and hasattr(item, "__code__"):
            children = _sent_with(item, where) if _by_value(item) else []
        elif isinstance(item, Mapping):
            children = [(f"{where}[{k!r}]", v, str(k)) for k, v in list(item.items())[:_MAX_ITEMS]]
        elif isinstance(item, list | tuple | set | frozenset):
            children = [(f"{where}[{i}]", v, None) for i, v in enumerate(list(item)[:_MAX_ITEMS])]
        else:
            attrs = getattr(item, "__dict__", None)
            if not isinstance(attrs, dict) or _data_library(item):
                continue
            children = [(f"{where}.{k}", v, k) for k, v in list(attrs.items())[:_MAX_ITEMS]]
            if _by_value(type(item)):  # its class travels too, with what the class holds
                children.append((f"{where}.__class__", type(item), None))
        stack.extend((w, v, k, depth + 1) for w, v, k in reversed(children))


def _named_in_notebook(where: str, key: str | None) -> bool:
    """True where ``key`` is a notebook name a function reaches (``fetch.__globals__['tok']``,
    its closure or defaults), not a dict's key."""
    return key is not None and where.endswith(f"__[{key!r}]")


def _by_value(thing: Any) -> bool:
    """True for a function or class that cloudpickle sends by value (the notebook's own, or a
    module registered by value), with the globals it uses, its closure, defaults, attributes."""
    # cloudpickle's own rule (private: looked up, with a fallback if it is ever gone)
    rule = getattr(cloudpickle.cloudpickle, "_should_pickle_by_reference", None)
    if rule is not None:
        try:
            return not rule(thing)
        except Exception:  # noqa: BLE001 - a strange object: judged by its module below
            pass
    return getattr(thing, "__module__", None) == "__main__"


def _sent_with(thing: Any, where: str) -> list[tuple[str, Any, str | None]]:
    """What travels with a function or class sent by value, each with its path and name."""
    if isinstance(thing, type):
        members = [(k, v) for k, v in vars(thing).items() if not k.startswith("__")]
        return [(f"{where}.{k}", v, k) for k, v in members[:_MAX_ITEMS]]
    function = getattr(thing, "__func__", thing)  # a bound method: its function
    code = getattr(function, "__code__", None)
    if code is None:
        return []
    found: list[tuple[str, Any, str | None]] = []
    namespace = getattr(function, "__globals__", {})
    for name in sorted(_global_names(code)):
        if name in namespace:
            found.append((f"{where}.__globals__[{name!r}]", namespace[name], name))
    for name, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
        try:
            found.append((f"{where}.__closure__[{name!r}]", cell.cell_contents, name))
        except ValueError:  # a cell not yet filled
            continue
    names = code.co_varnames[: code.co_argcount]
    for name, default in zip(names[::-1], (function.__defaults__ or ())[::-1], strict=False):
        found.append((f"{where}.__defaults__[{name!r}]", default, name))
    for name, default in (function.__kwdefaults__ or {}).items():
        found.append((f"{where}.__kwdefaults__[{name!r}]", default, name))
    found += [(f"{where}.{k}", v, k) for k, v in vars(function).items()]
    return found[:_MAX_ITEMS]


def _global_names(code: Any) -> set[str]:
    """The global names a code object and the code inside it (lambdas, comprehensions) use."""
    names: set[str] = set()
    stack, seen = [code], 0
    while stack and seen < _MAX_ITEMS:
        current = stack.pop()
        seen += 1
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if hasattr(c, "co_names"))
    return names


def _data_library(item: Any) -> bool:
    """Arrays, tensors, frames: numbers inside, and internals not worth walking."""
    return type(item).__module__.partition(".")[0] in (
        "builtins",
        "numpy",
        "pandas",
        "torch",
        "scipy",
    )


# --------------------------------------------------------------------------------------
# What the ledger keeps

_known: set[str] = set()  # this kernel's own secret values, to replace wherever they appear
_known_lock = threading.Lock()


def notebook_secrets(user_ns: Mapping[str, Any]) -> dict[str, str]:
    """The notebook's secret-named strings (``hf_token = ...``): value -> name."""
    return {
        value: name
        for name, value in user_ns.items()
        if isinstance(value, str)  # first: most names hold no string, and this is cheap
        and len(value) >= _MIN_SECRET_CHARS
        and not name.startswith("_")
        and secret_name(name)
    }


def remember(secrets: Mapping[str, str]) -> None:
    """Note the notebook's secrets (:func:`notebook_secrets`), so that text quoting them can
    be redacted."""
    if secrets:
        with _known_lock:
            _known.update(secrets)


def redact(text: str) -> str:
    """``text`` with AWS key ids, values given to secret-looking names and known secrets replaced."""
    if not text:
        return text
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    text = _ACCESS_KEY_ID.sub(_REDACTED, text)
    return _SECRET_SETTING.sub(lambda m: m.group(1) + _REDACTED, text)
