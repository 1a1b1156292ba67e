"""What a worker writes shows up in the cell while it runs: text, logging, warnings, tqdm, rich displays."""

from __future__ import annotations

import time

from tests.harness import wait_for


def test_output_arrives_within_a_second_while_the_cell_still_runs(kernel, workdir):
    go = workdir / "go"
    msg_id = kernel.kc.execute(
        "%%burst\n"
        "import os, time\n"
        "print('tick', time.time(), flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('finished')\n"
    )
    seen: dict[str, float] = {}

    def watch(msg):
        if msg["msg_type"] == "stream" and "tick" in msg["content"]["text"]:
            printed_at = float(msg["content"]["text"].split()[1])
            seen["latency"] = time.time() - printed_at
            go.write_text("")  # the cell can only finish after its first line reached the notebook

    result = kernel.collect(msg_id, timeout=120, on_message=watch)
    assert result.status == "ok" and "finished" in result.stdout
    assert seen["latency"] < 1.0, seen


def test_stderr_logging_warnings_and_tqdm_reach_the_cell(kernel):
    run = kernel.ok(
        "%%burst\n"
        "import logging, sys, warnings\n"
        "from tqdm.auto import tqdm\n"
        "logging.getLogger('train').warning('low learning rate')\n"
        "warnings.warn('deprecated knob')\n"
        "print('to stderr', file=sys.stderr)\n"
        "for _ in tqdm(range(50), desc='epochs'):\n"
        "    pass\n"
    )
    assert "low learning rate" in run.stderr
    assert "UserWarning: deprecated knob" in run.stderr
    assert "to stderr" in run.stderr
    assert "epochs: 100%" in run.stderr and "\r" in run.stderr  # a progress bar, redrawn in place


def test_logging_after_a_first_cell_still_reaches_the_right_cell(kernel):
    kernel.ok(
        "%%burst\nimport logging\nlogging.basicConfig()\nlogging.getLogger('x').warning('first')\n"
    )
    run = kernel.ok("%%burst\nimport logging\nlogging.getLogger('x').warning('second')\n")
    assert "second" in run.stderr and "first" not in run.stderr


def test_display_of_a_dataframe_and_a_matplotlib_figure_is_rich(kernel):
    run = kernel.ok(
        "%%burst\n"
        "import pandas as pd\n"
        "import matplotlib.pyplot as plt\n"
        "display(pd.DataFrame({'loss': [0.9, 0.5]}))\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([1, 2, 3])\n"
        "plt.show()\n"
        "from IPython.display import display as d2, Markdown\n"
        "d2(Markdown('**done**'))\n"
    )
    kinds = [set(d) for d in run.displays]
    assert any("text/html" in k for k in kinds), kinds
    assert any("image/png" in k for k in kinds), kinds
    assert any("text/markdown" in k for k in kinds), kinds
    html = next(d["text/html"] for d in run.displays if "text/html" in d)
    assert "loss" in html and "0.9" in html


def test_a_figure_left_open_is_shown_at_the_end_like_inline(kernel):
    run = kernel.ok("%%burst\nimport matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\n")
    assert any("image/png" in d for d in run.displays)


def test_output_is_in_the_ledger_too(kernel, state_dir):
    kernel.ok("%%burst\nfor i in range(3):\n    print('line', i)\n")
    from jupyter_burst.store.ledger import Ledger

    ledger = Ledger(state_dir / "ledger.sqlite")
    job = ledger.query("SELECT * FROM jobs ORDER BY started DESC LIMIT 1")[0]
    assert job["status"] == "done" and "print('line', i)" in job["source"]
    assert [row["text"] for row in ledger.lines(job["id"])] == ["line 0", "line 1", "line 2"]
    wait_for(lambda: ledger.clusters(running_only=True), 5, "the cluster in the ledger")
