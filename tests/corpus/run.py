"""Run the corpus twice, plainly and with ``%%burst`` on every cell, and compare.

``python -m tests.corpus.run [--subset] [--keep] [NOTEBOOK ...]`` (``make corpus`` runs it
all). Each notebook of ``tests/corpus/notebooks`` goes through two real kernels, one after
the other, each with its own state folder and the same fresh working folder (its fixtures
copied in), so that paths print alike:

- plain: the cells as written;
- burst: ``%load_ext jupyter_burst`` first, then every code cell with ``%%burst`` (or
  ``%%burst gpus=N`` where the cell's metadata says ``{"burst": {"gpus": N}}``) above it;
  its clusters are stopped at the end and no process of them is left behind.

After every cell each kernel writes a snapshot of its variables (:mod:`.snapshot`). A cell
is *equivalent* when both runs ended it the same way, its stdout, stderr and displays are
the same by the rules of :mod:`.compare`, and every variable it assigned or changed (in
either run) has the same value in both. A cell the notebook's metadata lists
(``{"burst": {"expected": [{"cell": ID, ..., "why": ...}]}}``) must do instead what its
entry says, and is counted apart (:class:`Expect`): an expected error or note, or a
documented difference. ``input()`` in the plain run is answered from the cell's
``{"burst": {"stdin": [...]}}``.

Prints a table per notebook, the cells that are different with their first difference,
and the line ``N/M cells equivalent (...)``, N counting the cells alike and those that did
exactly what their listing says; exits 1 if any cell is different (a listed expectation
that did not happen included).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pathlib
import pickle
import queue
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import nbformat

from tests.corpus import compare
from tests.harness import Execution, Kernel, burst_kernel

CORPUS = pathlib.Path(__file__).resolve().parent
NOTEBOOKS = CORPUS / "notebooks"
FIXTURES = CORPUS / "fixtures"
# What `make test` runs (tests/test_corpus.py), about a minute: the DDP tutorial on two
# ranks, typed configs, caches (a documented difference), pools and executors (spent `with`
# targets), and shell escapes and magics with the corpus's expected errors.
SUBSET = (
    "02_ddp_tutorial",
    "06_configs_dataclasses_enums",
    "10_recursion_functools",
    "12_shell_and_magics",
    "13_parallel_map",
)
CELL_TIMEOUT = 300.0
_STATUS_DISPLAY = "burst-status-"  # the display id of the magic's own status line


# -- the corpus ----------------------------------------------------------------------------


@dataclass
class Expect:
    """What a listed cell must do under ``%%burst`` instead of the plain cell's.

    One of, by the entry's key:

    - ``error``: fail, the error's last line containing the text; in one line (a refusal,
      no traceback) unless the entry says ``"traceback": true`` (a Python error raised by
      the cell's code, shown at its line);
    - ``note``: run, and print a ``burst: 'NAME' ...`` line containing the text; apart from
      that line the cell is equivalent, NAME aside (it stayed on the worker);
    - ``difference``: differ, its first difference containing the text (a documented
      difference: when the cell is equivalent, the entry is stale and that is a failure).
    """

    kind: str  # "error" | "note" | "difference"
    text: str
    why: str
    traceback: bool = False


KINDS = ("error", "note", "difference")


@dataclass
class Cell:
    number: int  # among the notebook's code cells, from 1
    id: str
    source: str
    gpus: int = 1
    stdin: list[str] = field(default_factory=list)
    expect: Expect | None = None

    @property
    def first_line(self) -> str:
        return next((line for line in self.source.splitlines() if line.strip()), "")


@dataclass
class Notebook:
    path: pathlib.Path
    cells: list[Cell]
    rtol: float = compare.RTOL
    fixtures: pathlib.Path | None = None

    @property
    def name(self) -> str:
        return self.path.stem


def load(path: pathlib.Path) -> Notebook:
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("burst", {})
    expected = {e["cell"]: _expect(path, e) for e in meta.get("expected", [])}
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        own = cell.metadata.get("burst", {})
        cells.append(
            Cell(
                number=len(cells) + 1,
                id=cell.get("id", ""),
                source=cell.source,
                gpus=int(own.get("gpus", 1)),
                stdin=list(own.get("stdin", [])),
                expect=expected.get(cell.get("id", "")),
            )
        )
    unknown = set(expected) - {c.id for c in cells}
    if unknown:
        raise ValueError(f"{path.name}: expected cells {sorted(unknown)} are not code cells")
    fixtures = FIXTURES / meta["fixtures"] if "fixtures" in meta else None
    return Notebook(path, cells, float(meta.get("rtol", compare.RTOL)), fixtures)


def _expect(path: pathlib.Path, entry: dict) -> Expect:
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1 or not entry.get("why"):
        raise ValueError(f"{path.name}: {entry} needs a why and one of {', '.join(KINDS)}")
    kind = kinds[0]
    return Expect(kind, entry[kind], entry["why"], bool(entry.get("traceback", False)))


def notebooks(names: Sequence[str] = (), subset: bool = False) -> list[Notebook]:
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    wanted = list(names) or (list(SUBSET) if subset else [])
    if wanted:
        by_name = {p.stem: p for p in paths}
        missing = [n for n in wanted if pathlib.Path(n).stem not in by_name]
        if missing:
            raise SystemExit(f"no such corpus notebook: {', '.join(missing)}")
        paths = [by_name[pathlib.Path(n).stem] for n in wanted]
    return [load(p) for p in paths]


# -- one run of one notebook ---------------------------------------------------------------


@dataclass
class Shown(Execution):
    """What one cell showed in one run (the harness's record, and the prompts it answered)."""

    stdin_asked: list[str] = field(default_factory=list)


@dataclass
class Run:
    kind: str  # "plain" | "burst"
    state_dir: pathlib.Path
    shown: list[Shown] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)  # after each cell
    ignored: set[str] = field(default_factory=set)  # names there before the first cell
    files: dict[str, int] = field(default_factory=dict)  # the working folder at the end
    seconds: float = 0.0
    failure: str | None = None  # the run itself broke (a kernel died, a snapshot failed)


def run_notebook(nb: Notebook, kind: str, root: pathlib.Path) -> Run:
    """Run every code cell of ``nb`` in a fresh kernel, ``kind`` "plain" or "burst"."""
    work = root / "work" / nb.name
    state = root / f"state-{kind}" / nb.name
    snaps = root / f"snapshots-{kind}" / nb.name
    if work.exists():
        shutil.rmtree(work)
    if nb.fixtures is not None:
        shutil.copytree(nb.fixtures, work)
    work.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True)
    snaps.mkdir(parents=True)
    run = Run(kind, state)
    started = time.monotonic()
    try:
        _run_cells(nb, kind, run, state, work, snaps)
    except AssertionError as exc:  # the harness's deadlines: a kernel or cluster that hung
        run.failure = str(exc)
    run.seconds = time.monotonic() - started
    run.files = _files(work)
    shown = [dataclasses.asdict(s) for s in run.shown]
    (snaps / "shown.json").write_text(json.dumps(shown, indent=1, ensure_ascii=False))
    return run


def _run_cells(
    nb: Notebook,
    kind: str,
    run: Run,
    state: pathlib.Path,
    work: pathlib.Path,
    snaps: pathlib.Path,
) -> None:
    with _kernel(kind, state, work) as kernel:
        _quiet(
            kernel,
            f"__import__('tests.corpus.snapshot').corpus.snapshot.names({str(snaps / 'names.pkl')!r})",
        )
        run.ignored = set(pickle.loads((snaps / "names.pkl").read_bytes()))
        for cell in nb.cells:
            code = cell.source
            if kind == "burst":
                code = f"%%burst gpus={cell.gpus}\n{code}" if cell.gpus > 1 else f"%%burst\n{code}"
            shown = execute(kernel, code, list(cell.stdin))
            run.shown.append(shown)
            if shown.ename in ("CorpusTimeout", "KernelDied"):
                run.failure = f"cell {cell.number}: {shown.evalue}; the cells after it did not run"
                break
            path = snaps / f"{cell.number}.pkl"
            error = _quiet(
                kernel,
                f"__import__('tests.corpus.snapshot').corpus.snapshot.write({str(path)!r}, {sorted(run.ignored)!r})",
            )
            if error is not None:
                run.failure = f"cell {cell.number}: the snapshot failed: {error}"
                break
            run.snapshots.append(pickle.loads(path.read_bytes()))


@contextlib.contextmanager
def _kernel(kind: str, state: pathlib.Path, work: pathlib.Path) -> Iterator[Kernel]:
    if kind == "plain":
        kernel = Kernel(state, work)
        try:
            yield kernel
        finally:
            kernel.shutdown()
        return
    with burst_kernel(state, work) as kernel:
        yield kernel


def execute(kernel: Kernel, code: str, stdin: list[str], timeout: float = CELL_TIMEOUT) -> Shown:
    """Run one cell as a notebook frontend would, answering ``input()`` from ``stdin``."""
    kc = kernel.kc
    started = time.monotonic()
    msg_id = kc.execute(code, allow_stdin=True)
    shown = Shown()
    clear_pending = False
    deadline = started + timeout
    while True:
        if time.monotonic() > deadline:
            kernel.interrupt()
            shown.status, shown.ename = "error", "CorpusTimeout"
            shown.evalue = f"the cell did not end within {timeout:g} s (interrupted)"
            _drain(kernel, msg_id, 30)
            break
        _answer_stdin(kc, stdin, shown)
        try:
            msg = kc.get_iopub_msg(timeout=0.1)
        except queue.Empty:
            if not kernel.km.is_alive():
                shown.status, shown.ename, shown.evalue = "error", "KernelDied", "the kernel died"
                break
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            break
        if clear_pending and kind in ("stream", "display_data", "execute_result"):
            shown.stdout, shown.stderr, shown.displays = "", "", []
            clear_pending = False
        if kind == "stream":
            setattr(shown, content["name"], getattr(shown, content["name"]) + content["text"])
        elif kind in ("display_data", "execute_result"):
            display_id = (content.get("transient") or {}).get("display_id") or ""
            if not display_id.startswith(_STATUS_DISPLAY):
                shown.displays.append(content["data"])
        elif kind == "clear_output":
            if content.get("wait"):
                clear_pending = True
            else:
                shown.stdout, shown.stderr, shown.displays = "", "", []
        elif kind == "error":
            shown.ename, shown.evalue = content["ename"], content["evalue"]
            shown.traceback = content["traceback"]
    if not shown.status:
        reply = _reply(kernel, msg_id)
        shown.status = reply["content"]["status"] if reply else "error"
    shown.elapsed = time.monotonic() - started
    return shown


def _answer_stdin(kc: Any, answers: list[str], shown: Shown) -> None:
    try:
        msg = kc.get_stdin_msg(timeout=0)
    except queue.Empty:
        return
    if msg["msg_type"] == "input_request":
        shown.stdin_asked.append(msg["content"].get("prompt", ""))
        kc.input(answers.pop(0) if answers else "")


def _reply(kernel: Kernel, msg_id: str, timeout: float = 30) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = kernel.kc.get_shell_msg(timeout=1)
        except queue.Empty:
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply
    return None


def _drain(kernel: Kernel, msg_id: str, timeout: float) -> None:
    with contextlib.suppress(AssertionError):
        for _ in kernel.messages(msg_id, timeout):
            pass


def _quiet(kernel: Kernel, code: str, timeout: float = 120) -> str | None:
    """Run our own code in the kernel without a trace (no output, history or ``Out``)."""
    msg_id = kernel.kc.execute(code, silent=True, store_history=False, allow_stdin=False)
    error = None
    for msg in kernel.messages(msg_id, timeout):
        if msg["msg_type"] == "error":
            error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
    reply = _reply(kernel, msg_id)
    if error is None and (reply is None or reply["content"]["status"] != "ok"):
        error = "no reply" if reply is None else reply["content"].get("evalue", "failed")
    return error


def _files(work: pathlib.Path) -> dict[str, int]:
    out = {}
    for path in sorted(work.rglob("*")):
        rel = path.relative_to(work).as_posix()
        out[rel + ("/" if path.is_dir() else "")] = 0 if path.is_dir() else path.stat().st_size
    return out


# -- comparing the two runs ----------------------------------------------------------------


@dataclass
class Verdict:
    cell: Cell
    kind: str  # "equivalent" | "expected" (an error or a note) | "documented" | "DIFFERENT"
    detail: str = ""
    stays: set[str] = field(default_factory=set)  # names an expected note says stayed behind


@dataclass
class Result:
    nb: Notebook
    verdicts: list[Verdict]
    plain: Run
    burst: Run
    notes: list[str] = field(default_factory=list)  # notebook-level differences

    def count(self, kind: str) -> int:
        return sum(v.kind == kind for v in self.verdicts)

    @property
    def ok(self) -> bool:
        return not self.count("DIFFERENT") and not self.notes


def compare_runs(nb: Notebook, plain: Run, burst: Run) -> Result:
    tol = compare.Tolerance(rtol=nb.rtol)
    ignored = plain.ignored | burst.ignored
    verdicts = []
    for i, cell in enumerate(nb.cells):
        verdicts.append(_verdict(cell, i, plain, burst, ignored, tol))
    notes = []
    for run in (plain, burst):
        if run.failure:
            notes.append(f"{run.kind} run: {run.failure}")
    if plain.files != burst.files:
        only_plain = sorted(set(plain.files) - set(burst.files))
        only_burst = sorted(set(burst.files) - set(plain.files))
        sizes = sorted(
            k for k in set(plain.files) & set(burst.files) if plain.files[k] != burst.files[k]
        )
        notes.append(
            "working folders differ: "
            + "; ".join(
                part
                for part in (
                    only_plain and f"only in plain {only_plain[:5]}",
                    only_burst and f"only in burst {only_burst[:5]}",
                    sizes and f"sizes differ {sizes[:5]}",
                )
                if part
            )
        )
    if plain.snapshots and burst.snapshots and len(plain.snapshots) == len(burst.snapshots):
        left_out = _names_of_expected_cells(nb, plain, burst, verdicts)
        p, b = plain.snapshots[-1], burst.snapshots[-1]
        left_out |= _spent_targets(set(p), p, b)
        final = _namespace_difference(p, b, ignored | left_out, tol)
        if final:
            notes.append(f"final namespaces differ: {final}")
    return Result(nb, verdicts, plain, burst, notes)


def _verdict(
    cell: Cell,
    i: int,
    plain: Run,
    burst: Run,
    ignored: set[str],
    tol: compare.Tolerance,
) -> Verdict:
    if i >= len(plain.shown) or i >= len(burst.shown):
        return Verdict(cell, "DIFFERENT", "not run: the run broke off earlier")
    p, b = plain.shown[i], burst.shown[i]
    if p.status != "ok":
        return Verdict(cell, "DIFFERENT", f"the plain run failed: {p.ename}: {_first(p.evalue)}")
    expect = cell.expect
    if expect is not None and expect.kind == "error":
        return _expected_error(cell, expect, b)
    if b.status != "ok":
        return Verdict(cell, "DIFFERENT", f"burst raised {b.ename}: {_first(b.evalue)}")
    stderr = compare.text(b.stderr, cell.gpus, burst=True)
    note, stays = "", set()
    if expect is not None and expect.kind == "note":
        found = [line for line in stderr if expect.text in line]
        if not found:
            return Verdict(cell, "DIFFERENT", f"expected the note '{expect.text}', none came")
        note = found[0]
        if not note.startswith("burst: "):  # a notebook shows it glued to the line before
            return Verdict(cell, "DIFFERENT", f"the note is not a line of its own: {note!r}")
        stderr.remove(note)
        stays = set(re.findall(r"^burst: '(\w+)'", note))
    found = _difference(cell, i, p, b, stderr, plain, burst, ignored | stays, tol)
    if expect is not None and expect.kind == "difference":
        if found is None:
            return Verdict(
                cell, "DIFFERENT", f"listed as a difference ('{expect.text}') but equivalent"
            )
        if expect.text not in found:
            return Verdict(cell, "DIFFERENT", f"{found} (listed: '{expect.text}')")
        return Verdict(cell, "documented", found)
    if found:
        return Verdict(cell, "DIFFERENT", found)
    if expect is not None:
        return Verdict(cell, "expected", note, stays)
    return Verdict(cell, "equivalent")


def _expected_error(cell: Cell, expect: Expect, b: Shown) -> Verdict:
    if b.status == "ok":
        return Verdict(cell, "DIFFERENT", f"expected '{expect.text}', but the burst cell ran")
    lines = [line for line in b.error_text.splitlines() if line.strip()]
    said = lines[-1] if lines else f"{b.ename}: {b.evalue}"
    if expect.text not in said:
        return Verdict(
            cell, "DIFFERENT", f"expected '{expect.text}', got {b.ename}: {_first(b.evalue)}"
        )
    if len(lines) > 1 and not expect.traceback:
        return Verdict(cell, "DIFFERENT", f"the error is a traceback, not one line: {said}")
    return Verdict(cell, "expected", said)


def _difference(
    cell: Cell,
    i: int,
    p: Shown,
    b: Shown,
    burst_stderr: list[str],
    plain: Run,
    burst: Run,
    ignored: set[str],
    tol: compare.Tolerance,
) -> str | None:
    """The cell's first difference: its streams, its displays, the values it touched."""
    ranks = cell.gpus
    streams = {
        "stdout": compare.text(b.stdout, ranks, burst=True),
        "stderr": burst_stderr,
    }
    for stream, burst_lines in streams.items():
        found = compare.first_text_difference(
            compare.text(getattr(p, stream)), burst_lines, tol.rtol
        )
        if found:
            return f"{stream} {found}"
    found = _displays_difference(p.displays, b.displays, ranks, tol.rtol)
    if found:
        return found
    if i < len(plain.snapshots) and i < len(burst.snapshots):
        before_p = plain.snapshots[i - 1] if i else {}
        before_b = burst.snapshots[i - 1] if i else {}
        now_p, now_b = plain.snapshots[i], burst.snapshots[i]
        touched = _changed(before_p, now_p) | _changed(before_b, now_b)
        spent = _spent_targets(touched, now_p, now_b)
        found = _namespace_difference(
            {k: v for k, v in now_p.items() if k in touched},
            {k: v for k, v in now_b.items() if k in touched},
            ignored | spent,
            tol,
        )
        if found:
            return f"namespace: {found}"
    return None


def _spent_targets(targets: set[str], plain: dict, burst: dict) -> set[str]:
    """Names missing in the burst run whose plain value is spent (compare.py)."""
    return {n for n in targets if n in plain and n not in burst and compare.spent(plain[n])}


def _displays_difference(
    plain: list[dict], burst: list[dict], ranks: int, rtol: float
) -> str | None:
    plain = [d for d in plain if not compare.progress_display(d)]
    burst = [d for d in burst if not compare.progress_display(d)]
    for n in range(max(len(plain), len(burst))):
        a = plain[n] if n < len(plain) else None
        b = burst[n] if n < len(burst) else None
        if a is None or b is None:
            missing = "burst" if b is None else "plain"
            other = a if b is None else b
            return f"display {n + 1}: none in the {missing} run (the other shows {_mimes(other)}: {_first(other.get('text/plain', ''))!r})"
        if _mimes(a) != _mimes(b):
            return f"display {n + 1}: plain shows {_mimes(a)}, burst {_mimes(b)}"
        found = compare.first_text_difference(
            compare.text(a.get("text/plain", "")),
            compare.text(b.get("text/plain", ""), ranks, burst=True),
            rtol,
        )
        if found:
            return f"display {n + 1} text/plain {found}"
    return None


def _mimes(data: dict) -> str:
    return "+".join(sorted(data))


def _changed(before: dict, after: dict) -> set[str]:
    names = set(before) | set(after)
    return {
        n
        for n in names
        if n not in before or n not in after or compare.difference(before[n], after[n]) is not None
    }


def _namespace_difference(
    plain: dict, burst: dict, ignored: set[str], tol: compare.Tolerance
) -> str | None:
    problems = []
    for name in sorted((set(plain) | set(burst)) - ignored):
        if name not in burst:
            problems.append(f"{name} is missing in the burst run")
        elif name not in plain:
            problems.append(f"{name} is only in the burst run")
        else:
            found = compare.difference(plain[name], burst[name], tol, name)
            if found:
                problems.append(found)
    if not problems:
        return None
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def _names_of_expected_cells(
    nb: Notebook, plain: Run, burst: Run, verdicts: list[Verdict]
) -> set[str]:
    """What expected cells left out: all an expected error's cell changed (it did not run
    under burst, by design), the names an expected note says stayed on the worker."""
    names: set[str] = set()
    for i, (cell, verdict) in enumerate(zip(nb.cells, verdicts, strict=True)):
        names |= verdict.stays
        if cell.expect is None or cell.expect.kind != "error" or i >= len(plain.snapshots):
            continue
        if i >= len(burst.snapshots):
            continue
        for run in (plain, burst):
            names |= _changed(run.snapshots[i - 1] if i else {}, run.snapshots[i])
    return names


def _first(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= 160 else line[:159] + "…"


# -- the report ----------------------------------------------------------------------------


_COLUMNS = ("equivalent", "expected", "documented", "DIFFERENT")


def report(results: list[Result]) -> str:
    rows = [
        (
            "notebook",
            "cells",
            "equivalent",
            "expected",
            "documented",
            "different",
            "plain s",
            "burst s",
        )
    ]
    for r in results:
        rows.append(
            (
                r.nb.name,
                str(len(r.verdicts)),
                *(str(r.count(kind)) for kind in _COLUMNS),
                f"{r.plain.seconds:.1f}",
                f"{r.burst.seconds:.1f}",
            )
        )
    total = sum(len(r.verdicts) for r in results)
    counts = {kind: sum(r.count(kind) for r in results) for kind in _COLUMNS}
    rows.append(
        (
            "all",
            str(total),
            *(str(counts[kind]) for kind in _COLUMNS),
            f"{sum(r.plain.seconds for r in results):.1f}",
            f"{sum(r.burst.seconds for r in results):.1f}",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        if n == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for kind, title in (
        ("expected", "expected (listed: an error or a note by nature)"),
        ("documented", "documented differences (listed)"),
        ("DIFFERENT", "different"),
    ):
        chosen = [(r, v) for r in results for v in r.verdicts if v.kind == kind]
        if chosen:
            lines += ["", f"{title}:"]
            for r, v in chosen:
                lines.append(
                    f"  {r.nb.name} cell {v.cell.number} ({v.cell.first_line[:40]}): {v.detail}"
                )
    notes = [(r, note) for r in results for note in r.notes]
    if notes:
        lines += ["", "notebooks:"]
        lines += [f"  {r.nb.name}: {note}" for r, note in notes]
    lines += [
        "",
        # Equivalent: alike, or doing exactly what the notebook lists for it (an error or a
        # note by nature, or a documented difference); the parts are said with it.
        f"{total - counts['DIFFERENT']}/{total} cells equivalent ({counts['equivalent']} alike, "
        f"{counts['expected']} expected with their listed error or note, "
        f"{counts['documented']} listed documented difference; {counts['DIFFERENT']} different)",
        f"(final namespaces and working folders agree in "
        f"{sum(not r.notes for r in results)}/{len(results)} notebooks)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.corpus.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "notebooks", nargs="*", help="names under tests/corpus/notebooks (default: all)"
    )
    parser.add_argument("--subset", action="store_true", help=f"only {', '.join(SUBSET)}")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (printed)")
    parser.add_argument(
        "--plain", action="store_true", help="only check that the notebooks run plainly"
    )
    args = parser.parse_args(argv)
    chosen = notebooks(args.notebooks, args.subset)
    if args.plain:
        failures = plain_failures(chosen)
        for line in failures:
            print(line)
        print(
            f"{len(chosen)} notebooks, {sum(len(nb.cells) for nb in chosen)} code cells: "
            f"{len(failures)} failed plainly"
        )
        return 1 if failures else 0
    results = run_corpus(chosen, keep=args.keep)
    print(report(results))
    return 0 if all(r.ok for r in results) else 1


def plain_failures(chosen: Sequence[Notebook]) -> list[str]:
    """Every cell that fails in a plain run (a corpus notebook must run as it is)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="burst-corpus-"))
    failures = []
    try:
        for nb in chosen:
            run = run_notebook(nb, "plain", root)
            if run.failure:
                failures.append(f"{nb.name}: {run.failure}")
            for cell, shown in zip(nb.cells, run.shown, strict=False):
                if shown.status != "ok":
                    failures.append(
                        f"{nb.name} cell {cell.number} ({cell.first_line[:40]}): "
                        f"{shown.ename}: {_first(shown.evalue)}"
                    )
            print(f"{nb.name}: plain {run.seconds:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return failures


def run_corpus(chosen: Sequence[Notebook], keep: bool = False) -> list[Result]:
    root = pathlib.Path(tempfile.mkdtemp(prefix="burst-corpus-"))
    results = []
    try:
        for nb in chosen:
            plain = run_notebook(nb, "plain", root)
            burst = run_notebook(nb, "burst", root)
            result = compare_runs(nb, plain, burst)
            results.append(result)
            print(
                f"{nb.name}: {result.count('equivalent')}/{len(result.verdicts)} equivalent "
                f"(plain {plain.seconds:.1f} s, burst {burst.seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if keep:
            print(f"the run's folder: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
