"""The corpus of notebooks (tests/corpus/): its own rules, and a subset of the differential run.

``make corpus`` runs every notebook both ways; here, within the suite's time budget, the
corpus is checked against its size rules, every notebook runs plainly, and a few
notebooks (``tests.corpus.run.SUBSET``: the DDP tutorial on two ranks, typed configs,
caches with their documented difference, pools and executors, shell escapes and magics
with two expected errors) must be equivalent cell by cell, or as their metadata lists.
The verdicts' own rules (a listed expectation that does not happen fails) are checked on
made-up runs, without kernels.
"""

from __future__ import annotations

import re

import nbformat

from tests.corpus import run as corpus
from tests.harness import burst_processes

# A %pip cell in the plain run would install into the environment the tests run in.
_PIP = re.compile(r"^\s*[%!]+\s*pip\b", re.MULTILINE)


def test_the_corpus_meets_its_own_rules():
    notebooks = corpus.notebooks()
    assert len(notebooks) >= 12
    assert sum(len(nb.cells) for nb in notebooks) >= 150
    for nb in notebooks:
        raw = nbformat.read(nb.path, as_version=4)
        nbformat.validate(raw)
        assert any(c.cell_type == "markdown" for c in raw.cells), f"{nb.name}: no markdown"
        assert all(not c.outputs for c in raw.cells if c.cell_type == "code"), (
            f"{nb.name}: saved with outputs"
        )
        for expected in raw.metadata.get("burst", {}).get("expected", []):
            kinds = [k for k in corpus.KINDS if expected.get(k)]
            assert len(kinds) == 1 and expected.get("why"), f"{nb.name}: {expected}"
        if nb.fixtures is not None:
            assert nb.fixtures.is_dir(), f"{nb.name}: no fixture folder {nb.fixtures}"
        for cell in nb.cells:
            assert cell.gpus >= 1
            assert not _PIP.search(cell.source), f"{nb.name} cell {cell.number} runs pip"
    assert any(c.gpus > 1 for nb in notebooks for c in nb.cells)
    listed = [c.expect.kind for nb in notebooks for c in nb.cells if c.expect is not None]
    assert set(listed) == set(corpus.KINDS), listed
    assert listed.count("difference") <= 2, "a documented difference is an exception"
    assert set(corpus.SUBSET) <= {nb.name for nb in notebooks}


def test_every_corpus_notebook_runs_plainly():
    assert corpus.plain_failures(corpus.notebooks()) == []


def test_a_subset_of_the_corpus_is_equivalent_under_burst():
    results = corpus.run_corpus(corpus.notebooks(subset=True))
    table = corpus.report(results)
    different = [r.nb.name for r in results if not r.ok]
    assert not different, table
    assert sum(r.count("expected") for r in results) >= 2, table
    assert sum(r.count("documented") for r in results) >= 1, table
    left = [r.nb.name for r in results if burst_processes(r.burst.state_dir)]
    assert not left, f"cluster processes left behind by {left}"


def test_the_comparison_rules_normalise_only_what_differs_by_nature():
    from tests.corpus import compare

    plain = compare.text(
        "\rtrain:   0%|          | 0/20 [00:00<?, ?it/s]"
        "\rtrain: 100%|██████████| 20/20 [00:00<00:00, 6172.89it/s, loss=0.050]\n"
        "CPU times: user 1.07 ms, sys: 231 μs, total: 1.3 ms\nWall time: 3.04 ms\n"
        "14.6 μs ± 1.51 μs per loop (mean ± std. dev. of 2 runs, 5 loops each)\n"
        "<__main__.Bag object at 0x7f3a2c1b9d50>\n"
        "checkpoint at 2\n"
        "loss: 0.693147\n"
    )
    burst = compare.text(
        "[rank 0] \rtrain:   0%|          | 0/20 [00:00<?, ?it/s]"
        "\rtrain: 100%|██████████| 20/20 [00:01<00:00, 19.20it/s, loss=0.050]\n"
        "[rank 1] a line of rank 1\n"
        "burst: cluster 'default' grew from 1 to 2 slots\n"
        "[rank 0] CPU times: user 2 ms, sys: 0 ns, total: 2 ms\n[rank 0] Wall time: 2.13 ms\n"
        "[rank 0] 9.7 μs ± 970 ns per loop (mean ± std. dev. of 2 runs, 5 loops each)\n"
        "[rank 0] <__main__.Bag object at 0x7f00000abcd0>\n"
        "[rank 0] download: 100%|██████████| 100/100 [00:00<00:00, 3.55MB/s]\n"
        "[rank 0] checkpoint at 2\n"
        "[rank 0] loss: 0.693148\n",
        ranks=2,
        burst=True,
    )
    assert compare.first_text_difference(plain, burst) is None
    # Progress bars are not compared, in text or as tqdm's widget; the rest of a cell is.
    assert compare.text("\rauto: 100%|##########| 10/10 [00:00, 12.3it/s]\nkept\n") == ["kept"]
    # %timeit's note on a loaded machine (seen in a soak run) is a timing, not the cell's.
    loaded = (
        "The slowest run took 6.11 times longer than the fastest. This could mean that an "
        "intermediate result is being cached.\n"
        "9.7 μs ± 970 ns per loop (mean ± std. dev. of 2 runs, 5 loops each)\n"
    )
    assert compare.text(loaded) == ["<timeit>"]
    widget = {"text/plain": "auto:   0%|          | 0/10 [00:00<?, ?it/s]"}
    widget["application/vnd.jupyter.widget-view+json"] = {"model_id": "7ca5"}
    assert compare.progress_display(widget)
    assert not compare.progress_display({"text/plain": "285"})
    # What the cell did differently is kept: a value that stayed behind, another number.
    note = "burst: 'gen' (generator) stays on the worker: a half-run generator cannot leave"
    assert compare.text(note + "\n", burst=True) == [note]
    assert compare.first_text_difference(["loss: 0.6931"], ["loss: 0.6933"]) is not None
    assert compare.difference(float("nan"), float("nan"), compare.Tolerance()) is None
    assert compare.difference(1.0, 1.0 + 1e-9, compare.Tolerance()) is None
    assert compare.difference(1.0, 1.0 + 1e-9) is not None  # exact: did the cell change it?


def test_a_spent_value_may_stay_behind_and_nothing_else():
    from tests.corpus import compare

    closed = ("file", "_io.TextIOWrapper", "notes.txt", "r", True)
    assert compare.spent(closed) and not compare.spent(closed[:-1] + (False,))
    assert compare.spent(("handle", "multiprocessing.pool.Pool", True))
    assert not compare.spent(("handle", "threading.Lock", None))
    assert compare.spent(("tqdm", "tqdm.std.tqdm", 3, 3, "download", True))
    assert compare.spent(("generator", "<genexpr>", True))
    assert not compare.spent(("generator", "fibonacci", False))  # half-run: not spent
    plain = {"f": closed, "text": "hi"}
    assert corpus._spent_targets(set(plain), plain, {}) == {"f"}
    assert corpus._spent_targets(set(plain), plain, {"f": closed}) == set()  # it came back
    open_file = {"f": closed[:-1] + (False,)}
    assert corpus._spent_targets({"f"}, open_file, {}) == set()


def _one_cell(expect, burst_stderr="", burst_display="1", plain_display="1"):
    """A one-cell notebook's two runs, made up: the verdict without kernels."""
    cell = corpus.Cell(1, "c", "x = 1\nx", expect=expect)
    nb = corpus.Notebook(corpus.NOTEBOOKS / "made-up.ipynb", [cell])
    runs = []
    for kind, stderr, shown in (
        ("plain", "", plain_display),
        ("burst", burst_stderr, burst_display),
    ):
        run = corpus.Run(kind, corpus.NOTEBOOKS)
        run.shown = [corpus.Shown("ok", stderr=stderr, displays=[{"text/plain": shown}])]
        run.snapshots = [{"x": 1}]
        runs.append(run)
    return corpus.compare_runs(nb, *runs)


def test_a_listed_expectation_that_does_not_happen_is_a_failure():
    difference = corpus.Expect("difference", "burst 'CacheInfo(hits=0", "per process")
    other = _one_cell(difference, burst_display="one")  # a difference, not the listed one
    assert [v.kind for v in other.verdicts] == ["DIFFERENT"]
    assert "(listed: " in other.verdicts[0].detail
    shown = _one_cell(
        difference, burst_display="CacheInfo(hits=0, misses=0)", plain_display="CacheInfo(hits=7)"
    )
    assert [v.kind for v in shown.verdicts] == ["documented"] and shown.ok
    stale = _one_cell(difference)
    assert [v.kind for v in stale.verdicts] == ["DIFFERENT"] and not stale.ok
    assert "but equivalent" in stale.verdicts[0].detail

    note = corpus.Expect("note", "stays on the worker", "by nature")
    said = "burst: 'gen' (generator) stays on the worker: a half-run generator\n"
    assert [v.kind for v in _one_cell(note, said).verdicts] == ["expected"]
    assert [v.kind for v in _one_cell(note).verdicts] == ["DIFFERENT"]  # no note came
    glued = "\rbar: 0%| | 0/3 [00:00<?, ?it/s]" + said
    assert "not a line of its own" in _one_cell(note, glued).verdicts[0].detail
    error = corpus.Expect("error", "NameError", "by nature", traceback=True)
    assert [v.kind for v in _one_cell(error).verdicts] == ["DIFFERENT"]  # the cell ran
