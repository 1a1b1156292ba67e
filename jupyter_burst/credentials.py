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


def refuse(values: Mapping[str, Any], send: tuple[str, ...] = ()) -> None:
    """Raise SendError for the first value that holds a credential, unless ``send=`` names it."""
    for name, value in values.items():
        if name in send:
            continue
        if secret_name(name) and _holds_data(value):
            raise SendError(
                f"'{name}' is named like a credential, and a burst does not send credentials "
                f"unless asked: send={name} if the cell needs it (better: give the cluster its "
                "own, e.g. burst.aws.instance-profile)"
            )
        found = _find_credential(value, name)
        if found is not None:
            path, what = found
            raise SendError(
                f"'{name}' holds {what} at {path}, and a burst does not send credentials unless "
                f"asked: create it inside the cell, exclude={name}, or send={name} if you mean it"
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


def _find_credential(value: Any, path: str) -> tuple[str, str] | None:
    for where, item, key in _walk(value, path):
        module = type(item).__module__.partition(".")[0]
        if module in _SDK_PACKAGES:
            return where, f"a {type(item).__module__}.{type(item).__qualname__}"
        if isinstance(item, str):
            if _ACCESS_KEY_ID.search(item):
                return where, "a string shaped like an AWS access key id"
            if key is not None and secret_name(key) and len(item) >= _MIN_SECRET_CHARS:
                return where, f"a string under the secret-looking key {key!r}"
    return None


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any, str | None]]:
    """(path, item, the dict key or attribute it sits under) for ``value`` and what it holds."""
    stack: list[tuple[str, Any, str | None, int]] = [(path, value, None, 0)]
    seen: set[int] = set()
    count = 0
    while stack and count < _MAX_ITEMS:
        where, item, key, depth = stack.pop()
        count += 1
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield where, item, key
        if depth >= _MAX_DEPTH or isinstance(item, str | bytes | int | float | type):
            continue
        if isinstance(item, Mapping):
            children = [(f"{where}[{k!r}]", v, str(k)) for k, v in list(item.items())[:_MAX_ITEMS]]
        elif isinstance(item, list | tuple | set | frozenset):
            children = [(f"{where}[{i}]", v, None) for i, v in enumerate(list(item)[:_MAX_ITEMS])]
        else:
            attrs = getattr(item, "__dict__", None)
            if not isinstance(attrs, dict) or _data_library(item):
                continue
            children = [(f"{where}.{k}", v, k) for k, v in list(attrs.items())[:_MAX_ITEMS]]
        stack.extend((w, v, k, depth + 1) for w, v, k in reversed(children))


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


def remember(user_ns: Mapping[str, Any]) -> None:
    """Note the notebook's secret-named strings, so that text quoting them can be redacted."""
    found = {
        value
        for name, value in user_ns.items()
        if isinstance(value, str)  # first: most names hold no string, and this is cheap
        and len(value) >= _MIN_SECRET_CHARS
        and not name.startswith("_")
        and secret_name(name)
    }
    if found:
        with _known_lock:
            _known.update(found)


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
