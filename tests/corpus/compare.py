"""The rules by which a plain run and a burst run of a cell are "the same".

Text is compared as a notebook shows it, after a few normalisations, each for a reason
(tests/corpus/README.md says them with examples):

1. ANSI colour codes are dropped.
2. A ``\\r`` redraw shows only its last state: each line keeps what follows its last ``\\r``.
3. With several ranks the burst cell prefixes each line with ``[rank N] ``: rank 0's lines
   are kept without it, the other ranks' lines are dropped (a plain notebook is rank 0).
4. Lines the magic prints about its clusters (``burst: cluster 'default' grew from 1 to 2
   slots``, ``burst: cheapest offer ...``, ``burst: checkpoints go to ...``, ``burst: 12
   lines not shown here ...``) are dropped: they are about where the cell ran, not what it
   did. Its other lines (``burst: 'gen' (generator) stays on the worker ...``) are kept:
   they say the cell did not do what the plain one did.
5. Progress bars are not compared: a tqdm bar's line (text, on either stream) and tqdm's
   widget display are dropped from both runs. On a worker a bar is text on stderr, in a
   notebook ``tqdm.auto`` draws a widget, and a bar's times and rates differ anyway; what
   the cell prints besides its bars (``tqdm.write``, ``print``) is compared.
6. Timings (``%time``, ``%%time``, ``%timeit``) are replaced by a placeholder: no two runs
   agree on them. ``%timeit``'s note that its slowest run took N times longer than its
   fastest is dropped: a loaded machine prints it, on either side.
7. Memory addresses (``0x7f...``) are replaced by ``0x…``.
8. A line that differs only in its numbers is the same when each pair of numbers agrees
   within the notebook's tolerance, or within one unit of the last digit printed (floating
   point sums in another order, or on more threads, differ in the last bits).

Values (the snapshots of :mod:`tests.corpus.snapshot`) are compared exactly, except
floats and float arrays: NaN equals NaN, and otherwise within ``rtol``/``atol``. One
value may be missing in the burst run: a name the cell bound (as a ``with ... as NAME``
target, or plainly) whose plain value is spent (:func:`spent`: a closed file, an ended
pool or executor, a closed tqdm bar, a finished generator). It stays on the worker without
a note, by design: a spent resource is of no use in the notebook, and the cell's work is
in the values it made with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

RTOL = 1e-5
ATOL = 1e-8

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RANK = re.compile(r"^\[rank (\d+)\] ?")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")
_MAGIC_LINE = re.compile(
    r"^burst: (cluster '|cheapest offer |checkpoints go to |[\d,]+ lines? not shown here|pip .* of cluster )"
)
_TIMEIT_NOTE = re.compile(
    r"^The slowest run took [\d.]+ times longer than the fastest\. This could mean that an "
    r"intermediate result is being cached\.$"
)
_TIMINGS = [
    # %time / %%time
    (re.compile(r"^CPU times: .*$"), "CPU times: <time>"),
    (re.compile(r"^Wall time: .*$"), "Wall time: <time>"),
    # %timeit: "1.23 µs ± 4.5 ns per loop (mean ± std. dev. of 7 runs, 100,000 loops each)"
    (
        re.compile(r"^[\d.]+ \S+ ± [\d.]+ \S+ per loop \(mean ± std\. dev\. of .*\)$"),
        "<timeit>",
    ),
]
# A tqdm bar ends with its times and rate: "[00:00<?, ?it/s]", "[00:00<00:00, 819kB/s]",
# "[00:01<00:00,  2.03s/it, loss=1]", or without a total "[00:00, 12.3it/s]".
_PROGRESS_BAR = re.compile(r"\[\d+:\d\d(?::\d\d)?(?:<[\d:?]+)?, [^\[\]]*(?:/s|s/)[^\[\]]*\]$")
_WIDGET = "application/vnd.jupyter.widget-view+json"
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def text(raw: str, ranks: int = 1, burst: bool = False) -> list[str]:
    """What a notebook shows of a stream, as lines, normalised by the rules above."""
    raw = _ANSI.sub("", raw)
    lines = []
    for line in raw.split("\n"):
        line = line.rstrip("\r")
        if "\r" in line:
            line = line.rsplit("\r", 1)[1]
        if burst and ranks > 1:
            found = _RANK.match(line)
            if found:
                if found.group(1) != "0":
                    continue
                line = line[found.end() :]
        if burst and _MAGIC_LINE.match(line):
            continue
        if _PROGRESS_BAR.search(line.rstrip()) or _TIMEIT_NOTE.match(line.rstrip()):
            continue
        for pattern, placeholder in _TIMINGS:
            line = pattern.sub(placeholder, line)
        lines.append(_ADDRESS.sub("0x…", line.rstrip()))
    while lines and not lines[-1]:
        lines.pop()
    return lines


def progress_display(data: dict) -> bool:
    """A display that is tqdm's widget bar (rule 5)."""
    return _WIDGET in data and bool(_PROGRESS_BAR.search(data.get("text/plain", "").rstrip()))


def lines_equal(a: str, b: str, rtol: float = RTOL) -> bool:
    """Equal lines, or lines that differ only in numbers close enough (rule 7)."""
    if a == b:
        return True
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b), strict=True):
        if x == y:
            continue
        fx, fy = float(x), float(y)
        decimals = len(x.split(".")[1].split("e")[0].split("E")[0]) if "." in x else 0
        last_digit = 10.0**-decimals
        if abs(fx - fy) > max(rtol * max(abs(fx), abs(fy)), last_digit * 1.0001):
            return False
    return True


def first_text_difference(plain: list[str], burst: list[str], rtol: float = RTOL) -> str | None:
    """None when the two are the same; else the first line that differs, from both runs."""
    for i in range(max(len(plain), len(burst))):
        a = plain[i] if i < len(plain) else None
        b = burst[i] if i < len(burst) else None
        if a is None or b is None or not lines_equal(a, b, rtol):
            return f"line {i + 1}: plain {_short(a)} | burst {_short(b)}"
    return None


def _short(line: str | None, width: int = 100) -> str:
    if line is None:
        return "(nothing)"
    return repr(line if len(line) <= width else line[: width - 1] + "…")


# -- values --------------------------------------------------------------------------------


@dataclass
class Tolerance:
    rtol: float = RTOL
    atol: float = ATOL


def difference(a: Any, b: Any, tol: Tolerance | None = None, path: str = "") -> str | None:
    """None when the canonical values agree; else where and how they first differ.

    With ``tol=None`` the comparison is exact (NaN still equals NaN): that is how the
    runner sees whether a cell changed a value at all.
    """
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return _arrays(a, b, tol, path)
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return None
        if a == b or (tol is not None and math.isclose(a, b, rel_tol=tol.rtol, abs_tol=tol.atol)):
            return None
        return f"{path or 'value'}: {a!r} != {b!r}"
    if type(a) is not type(b):
        return f"{path or 'value'}: {_describe(a)} != {_describe(b)}"
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path or 'value'}: {_describe(a)} != {_describe(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = difference(x, y, tol, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, dict):
        if set(a) != set(b):
            only_a = sorted(map(str, set(a) - set(b)))
            only_b = sorted(map(str, set(b) - set(a)))
            return f"{path or 'value'}: keys only in plain {only_a}, only in burst {only_b}"
        for k in a:
            found = difference(a[k], b[k], tol, f"{path}[{k!r}]")
            if found:
                return found
        return None
    if a != b:
        return f"{path or 'value'}: {_describe(a)} != {_describe(b)}"
    return None


def spent(value: Any) -> bool:
    """A snapshot's closed file, ended pool or executor, closed tqdm bar, finished generator."""
    if not (isinstance(value, tuple) and value):
        return False
    if value[0] in ("file", "handle", "tqdm", "generator"):  # (..., closed / ended / finished)
        return value[-1] is True
    return False


def _arrays(a: Any, b: Any, tol: Tolerance | None, path: str) -> str | None:
    where = path or "array"
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return f"{where}: {_describe(a)} != {_describe(b)}"
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{where}: {a.dtype}{list(a.shape)} != {b.dtype}{list(b.shape)}"
    if a.dtype.kind in "fc":
        if tol is None:
            same = np.array_equal(a, b, equal_nan=True)
        else:
            same = np.allclose(a, b, rtol=tol.rtol, atol=tol.atol, equal_nan=True)
        if same:
            return None
        worst = np.nanmax(np.abs(a - b)) if a.size else 0
        return f"{where}: arrays differ (largest difference {worst:.3g})"
    if a.dtype.kind == "V" or a.dtype.names:
        same = a.tobytes() == b.tobytes()
    else:
        same = np.array_equal(a, b)
    return None if same else f"{where}: arrays differ"


def _describe(value: Any) -> str:
    text = repr(value)
    if isinstance(value, tuple) and value and isinstance(value[0], str):
        text = repr(value[:3])
    return text if len(text) <= 120 else text[:119] + "…"
