"""The in-cell live status line, and cancelling a foreground cell from outside its kernel.

Real kernels with a real local cluster: the line is read from the kernel's iopub messages
(its widgets' comm messages, and the raw display bundle a frontend without widgets falls
back to); the cancel goes through :func:`jupyter_burst.server.actions.cancel_job`, as the
server's ``POST /jupyter-burst/jobs/<id>/cancel`` calls it.
"""

from __future__ import annotations

import html
import pathlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import dask.config
import pytest

from jupyter_burst.kernel import cell_status
from jupyter_burst.server import actions
from jupyter_burst.server.api import NotFound
from jupyter_burst.store.cost import Spend
from jupyter_burst.store.ledger import Ledger
from tests.harness import Execution, Kernel

FINAL = re.compile(
    r"^burst: cluster default · 1 rank · (?P<state>\w+) · (?P<seconds>\d+) s · \$\d+\.\d\d"
)
JOB_CLASS = re.compile(r"^jp-BurstCell-job-(?P<id>\w+)$")
# The line while the cell starts its local cluster: the phase under way and its seconds.
STARTING = re.compile(
    r"^burst: cluster default · 1 rank · starting: "
    r"(quote|launching( [01]/1)?|booting|workers joined [01]/1) \d+ s · \d+ s · \$\d+\.\d\d$"
)
# The line as first shown, a fraction of a second in: its cluster may be starting a phase.
SHOWN_STARTING = re.compile(r"^burst: cluster default · 1 rank · starting(: [\w /]+ \d+ s)? · ")
SECONDS = r"\d+(?:\.\d)? s"  # tenths below 10 s
STARTED = re.compile(
    rf" · cluster started in {SECONDS} \(quote {SECONDS}, launching 1/1 {SECONDS}, "
    rf"booting {SECONDS}, workers joined 1/1 {SECONDS}\)$"
)


@dataclass
class Seen:
    """What the kernel published about the status line while a cell ran."""

    shown: list[dict] = field(default_factory=list)  # display_data with a display_id
    updated: list[dict] = field(default_factory=list)  # update_display_data
    models: dict[str, dict] = field(default_factory=dict)  # comm id -> widget state
    labels: list[str] = field(default_factory=list)  # each value the label was given

    def watch(self, msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "display_data" and content.get("transient", {}).get("display_id"):
            self.shown.append(content)
        elif kind == "update_display_data":
            self.updated.append(content)
        elif kind == "comm_open":
            self.models[content["comm_id"]] = dict(content["data"].get("state", {}))
        elif kind == "comm_msg" and content["data"].get("method") == "update":
            state = content["data"].get("state", {})
            self.models.setdefault(content["comm_id"], {}).update(state)
            if "value" in state:
                self.labels.append(state["value"])

    def with_class(self, name: str) -> dict:
        found = [s for s in self.models.values() if name in s.get("_dom_classes", ())]
        assert len(found) == 1, (name, self.models)
        return found[0]

    def job_id(self) -> str:
        classes = self.with_class(cell_status.CANCEL_CLASS)["_dom_classes"]
        return next(m["id"] for c in classes if (m := JOB_CLASS.match(c)))


def _run(kernel: Kernel, code: str, seen: Seen, on_message=None) -> Execution:
    def watch(msg: dict) -> None:
        seen.watch(msg)
        if on_message is not None:
            on_message(msg)

    return kernel.collect(kernel.kc.execute(code), timeout=120, on_message=watch)


@pytest.fixture
def server_state(state_dir: pathlib.Path) -> Iterator[pathlib.Path]:
    """This process configured as the server is: on the test's own state folder."""
    with dask.config.set({"burst.state-dir": str(state_dir)}):
        yield state_dir


def test_a_cell_shows_a_live_line_with_a_cancel_button_and_ends_done(kernel, state_dir):
    kernel.ok("x = 1")
    seen = Seen()
    run = _run(kernel, "%%burst\nimport time\nfor i in range(3):\n    time.sleep(1)\nx = 2\n", seen)
    assert run.status == "ok", run.error_text

    # One display, a widget view with its plain-text twin, and one final update of it.
    assert len(seen.shown) == 1, seen.shown
    bundle, display_id = seen.shown[0]["data"], seen.shown[0]["transient"]["display_id"]
    assert SHOWN_STARTING.match(bundle["text/plain"]), bundle
    view = bundle[cell_status.WIDGET_VIEW]
    assert view["version_major"] == 2 and view["version_minor"] == 0
    assert [u["transient"]["display_id"] for u in seen.updated] == [display_id]
    final = seen.updated[0]["data"]
    assert final[cell_status.WIDGET_VIEW] == view
    ended = FINAL.match(final["text/plain"])
    assert ended and ended["state"] == "done" and int(ended["seconds"]) >= 3, final
    # The cell started its cluster: the line said each phase as it began, and keeps their seconds.
    assert any(STARTING.match(label) for label in seen.labels), seen.labels
    assert STARTED.search(final["text/plain"]), final

    # The line's widgets: the container and the button name the job the ledger ran.
    job_id = seen.job_id()
    box = seen.models[view["model_id"]]
    assert set(box["_dom_classes"]) == {"jp-BurstCell-status", f"jp-BurstCell-job-{job_id}"}
    button = seen.with_class("jp-BurstCell-cancel")
    assert set(button["_dom_classes"]) == {"jp-BurstCell-cancel", f"jp-BurstCell-job-{job_id}"}
    assert button["disabled"] is True  # the cell has ended: nothing left to cancel
    job = Ledger(state_dir / "ledger.sqlite").job(job_id)
    assert job is not None and job["status"] == "done"

    # It ticked while the cell ran, and ended with it.
    running = {int(m["s"]) for t in seen.labels if (m := re.search(r"running · (?P<s>\d+) s", t))}
    assert len(running) >= 2, seen.labels
    assert seen.labels[-1] == final["text/plain"]
    assert kernel.ok("print(x)").stdout.strip() == "2"

    # A cell that ends within a fraction of a second shows only its final line, once, and
    # builds no widgets: as text, and as HTML with the classes the widget line has.
    quick = Seen()
    _quick_cells_within(kernel, 5.0)  # a loaded test machine must not make it "slow"
    run = _run(kernel, "%%burst\nq = 1\n", quick)
    assert run.status == "ok", run.error_text
    assert not quick.models and not quick.updated, (quick.models, quick.updated)
    _assert_final_line_once(quick)
    # One thread keeps the lines of the kernel's cells, not one per cell.
    threads = kernel.ok("import threading\nprint([t.name for t in threading.enumerate()])")
    assert threads.stdout.count("burst-cell-status") <= 1, threads.stdout

    # An async cell shows what it started, its Cancel button live (the server cancels it).
    started = Seen()
    run = _run(kernel, "%%burst async name=bg\nimport time\ntime.sleep(60)\n", started)
    assert run.status == "ok", run.error_text
    assert [s["data"]["text/plain"] for s in started.shown] == [
        "burst: cluster default · 1 rank · bg started in the background"
    ]
    assert started.with_class("jp-BurstCell-cancel")["disabled"] is False
    background_job = Ledger(state_dir / "ledger.sqlite").job(started.job_id())
    assert background_job is not None and background_job["status"] == "running"
    kernel.ok("%burst cancel bg")

    _quick_cells_within(kernel, cell_status.SHOW_AFTER_SECONDS)

    # Without ipywidgets a longer cell's line is plain text, replaced by its final state.
    kernel.ok("import sys\nsys.modules['ipywidgets'] = None")
    plain = Seen()
    run = _run(kernel, "%%burst\nimport time\ntime.sleep(1)\ny = 3\n", plain)
    assert run.status == "ok", run.error_text
    assert [set(s["data"]) for s in plain.shown] == [{"text/plain"}]
    assert [set(u["data"]) for u in plain.updated] == [{"text/plain"}]
    ended = FINAL.match(plain.updated[0]["data"]["text/plain"])
    assert ended and ended["state"] == "done", plain.updated
    # And a quick one's is its final line, as with widgets.
    quick = Seen()
    _quick_cells_within(kernel, 5.0)
    assert _run(kernel, "%%burst\ny = 4\n", quick).status == "ok"
    _assert_final_line_once(quick)


def _quick_cells_within(kernel: Kernel, seconds: float) -> None:
    """The kernel's line waits ``seconds`` before it shows itself (a quick cell's test
    would fail on a machine loaded enough to make a 10 ms cell take 0.3 s)."""
    kernel.ok(f"import jupyter_burst.kernel.cell_status as _cs\n_cs.SHOW_AFTER_SECONDS = {seconds}")


def _assert_final_line_once(seen: Seen) -> None:
    assert len(seen.shown) == 1 and not seen.updated, (seen.shown, seen.updated)
    data = seen.shown[0]["data"]
    assert set(data) == {"text/plain", "text/html"}, data
    ended = FINAL.match(data["text/plain"])
    assert ended and ended["state"] == "done", data
    line = re.fullmatch(
        r'<div class="jp-BurstCell-status jp-BurstCell-job-\w+">(.*)</div>', data["text/html"]
    )
    assert line and html.unescape(line[1]) == data["text/plain"], data


def test_without_widgets_the_line_shows_each_phase_of_the_start_and_keeps_their_seconds(
    kernel, state_dir
):
    kernel.ok("import sys\nsys.modules['ipywidgets'] = None")
    plain = Seen()
    run = _run(kernel, "%%burst\nx = 1\n", plain)
    assert run.status == "ok", run.error_text
    assert SHOWN_STARTING.match(plain.shown[0]["data"]["text/plain"]), plain.shown
    *phases, final = [u["data"]["text/plain"] for u in plain.updated]
    # Each phase once, as it began (not a line a second: a saved notebook stays as it was).
    assert phases and all(STARTING.match(text) for text in phases), phases
    assert len({STARTING.match(text)[1] for text in phases}) == len(phases) <= 7, phases
    ended = FINAL.match(final)
    assert ended and ended["state"] == "done", final
    assert STARTED.search(final), final

    # %burst status says where the last start of the cluster spent its time.
    status = kernel.ok("%burst status").text
    found = re.search(
        rf"^default \(local\) started in {SECONDS}: (?P<phases>.*) → running$", status, re.M
    )
    assert found, status
    assert found["phases"].startswith("quote ") and "workers joined 1/1" in found["phases"]

    # A cell on the running cluster starts nothing: its line says nothing of a start.
    again = Seen()
    _quick_cells_within(kernel, 5.0)
    assert _run(kernel, "%%burst\ny = 2\n", again).status == "ok"
    _assert_final_line_once(again)
    assert "cluster started" not in again.shown[0]["data"]["text/plain"]
    assert len(Ledger(state_dir / "ledger.sqlite").starts()) == 1


def test_a_foreground_cell_is_cancelled_from_outside_its_kernel(kernel, workdir, server_state):
    beat = workdir / "beat"
    kernel.ok("counter = -1\nseen = []")
    seen, asked = Seen(), {}

    def cancel_once_running(msg: dict) -> None:
        if msg["msg_type"] == "stream" and "started" in msg["content"]["text"] and not asked:
            asked["answer"] = actions.cancel_job(seen.job_id())  # what the Cancel button POSTs
            asked["at"] = time.monotonic()
        elif msg["msg_type"] == "error" and asked:
            asked["stopped in"] = time.monotonic() - asked["at"]

    run = _run(
        kernel,
        "%%burst\nimport time\nprint('started', flush=True)\nfor i in range(3000):\n"
        f"    counter = i\n    seen.append(i)\n    open({str(beat)!r}, 'w').write(str(i))\n"
        "    time.sleep(0.05)\n",
        seen,
        cancel_once_running,
    )
    job_id = seen.job_id()
    assert asked["answer"] == {"id": job_id, "status": "cancelling"}
    assert run.status == "error" and run.ename == "JobCancelled", run.error_text
    assert run.evalue == "burst: cancelled from JupyterLab: the remote work was stopped"
    assert asked["stopped in"] < 5, asked
    ended = FINAL.match(seen.updated[-1]["data"]["text/plain"])
    assert ended and ended["state"] == "cancelled", seen.updated

    ledger = Ledger(server_state / "ledger.sqlite")
    job = ledger.job(job_id)
    assert job["status"] == "cancelled" and job["cancel_requested"] is not None
    assert "cancelled from JupyterLab" in job["error"]
    # Not run again (retries= is for lost workers), and nothing came back to the notebook.
    assert [line["text"] for line in ledger.lines(job_id)] == ["started"]
    assert kernel.ok("print(counter, len(seen))").stdout.split() == ["-1", "0"]
    last = beat.read_text()
    assert kernel.ok("%%burst\nafter = 1 + 1\n").status == "ok"  # the slot is free again
    assert beat.read_text() == last  # and the loop is not running any more

    # A job that has ended is not cancelled again: the server answers 409.
    with pytest.raises(actions.Refused, match=r"is not running \(it ended as cancelled\)"):
        actions.cancel_job(job_id)


def test_cancel_refuses_an_ended_job_and_names_an_unknown_one(server_state):
    ledger = Ledger(server_state / "ledger.sqlite")
    ledger.job_started("ended", None, "k", "x = 1", {"gpus": 1})
    ledger.job_ended("ended", "done")
    with pytest.raises(actions.Refused, match=r"^job 'ended' is not running \(it ended as done\)$"):
        actions.cancel_job("ended")
    assert ledger.cancel_requested("ended") is None
    with pytest.raises(NotFound):
        actions.cancel_job("nope")

    ledger.job_started("fg", None, "k", "x = 1", {"gpus": 1})
    assert actions.cancel_job("fg") == {"id": "fg", "status": "cancelling"}
    first = ledger.cancel_requested("fg")
    assert first is not None
    assert actions.cancel_job("fg") == {"id": "fg", "status": "cancelling"}  # asked twice
    assert ledger.cancel_requested("fg") == first  # the first request's time is kept


def test_the_line_shows_nothing_outside_ipython_and_reads_the_same_in_plain_text():
    line = cell_status.for_cell("default", 2)
    assert type(line) is cell_status.StatusLine  # a script's jupyter_burst.run(...)
    line.begin("abc")
    line.end("done")
    assert cell_status.elapsed(3.7) == "3 s"
    assert cell_status.elapsed(245) == "4 min 05 s"
    assert cell_status.elapsed(3725) == "1 h 02 min"
    text = cell_status.line_text("exp1", 2, "running", 12, Spend())
    assert text == "burst: cluster exp1 · 2 ranks · running · 12 s · $0.00"
