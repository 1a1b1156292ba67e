"""The sidebar as a user meets it, in a real JupyterLab with Debian's Chromium: open the demo
notebook, run its training cell, watch its log lines arrive in the sidebar while it runs and
the cost tick, restore a checkpoint into a new cell, stop the cluster from the sidebar; a
two-rank cell's burst.log curves, its cost over time and its slots, live.

Screenshots of each state go to test-artifacts/screenshots/ (the README shows some, copied
to docs/).
"""

from __future__ import annotations

import json
import re
import time

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import ARTIFACTS, LOCAL_PRICE_PER_HOUR, Lab
from tests.harness import wait_for

SIDEBAR = "#jupyter-burst-sidebar"
SHOTS = ARTIFACTS / "screenshots"
TRAIN_CELL = 5  # the demo's `%%burst idle=5` training cell (cells counted from 0)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"  # the one in view


def cell(page: Page, index: int):
    return page.locator(f"{NOTEBOOK} .jp-Cell").nth(index)


def run_cell(page: Page, index: int) -> None:
    """Select the cell (command mode, as a click in its prompt area does) and run it."""
    target = cell(page, index)
    target.locator(".jp-InputPrompt").click()
    expect(target).to_have_class(re.compile(r"\bjp-mod-active\b"))
    page.keyboard.press("Shift+Enter")
    # Queued or run: the prompt is no longer the empty one.
    expect(target.locator(".jp-InputPrompt")).not_to_have_text("[ ]:", timeout=10_000)


def wait_until_ran(page: Page, index: int, timeout: float = 120_000) -> None:
    expect(cell(page, index).locator(".jp-InputPrompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=timeout
    )


def running_clusters(lab: Lab) -> list[str]:
    status, body = lab.get("jupyter-burst/clusters")
    assert status == 200, body
    return [c["name"] for c in json.loads(body) if c["state"] == "running"]


def write_notebook(lab: Lab, name: str, sources: list[str]) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(notebook, lab.home / "root" / name)


def open_sidebar(page: Page) -> Locator:
    """Open the jupyter-burst sidebar from the left bar; its element, once shown."""
    page.locator('.jp-SideBar.jp-mod-left li[data-id="jupyter-burst-sidebar"]').click()
    sidebar = page.locator(SIDEBAR)
    expect(sidebar).to_be_visible()
    return sidebar


def open_notebook(page: Page, lab: Lab, name: str) -> None:
    # ?reset: a workspace of its own, not the layout an earlier test left open.
    page.goto(f"{lab.url}lab/tree/{name}?reset&token={lab.token}")
    # The kernel is connected and idle (the status bar says so once it is).
    expect(page.locator("#jp-main-statusbar")).to_contain_text("| Idle", timeout=90_000)


def test_a_user_watches_a_burst_from_the_sidebar_restores_a_checkpoint_and_stops_the_cluster(
    lab: Lab, browser_context
):
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    open_notebook(page, lab, "quickstart.ipynb")
    sidebar = open_sidebar(page)
    expect(sidebar).to_contain_text("No cluster is running.")

    for index in (1, 3):  # %load_ext, then the data made in the notebook
        run_cell(page, index)
        wait_until_ran(page, index)

    # The training cell: its lines reach the sidebar while it still runs.
    run_cell(page, TRAIN_CELL)
    log = sidebar.locator(".jp-BurstLog-lines")
    expect(log).to_contain_text("epoch   0  loss", timeout=60_000)
    expect(cell(page, TRAIN_CELL).locator(".jp-InputPrompt")).to_have_text("[*]:")
    expect(sidebar.locator(".jp-BurstJob.jp-mod-running")).to_have_count(1)
    expect(sidebar.locator(".jp-BurstJob.jp-mod-running")).to_contain_text("quickstart.ipynb")
    shot(page, "sidebar-live-logs")
    # A line printed on the worker is in the sidebar within a second of its showing in the cell.
    expect(cell(page, TRAIN_CELL).locator(".jp-OutputArea")).to_contain_text("epoch  50  loss")
    expect(log).to_contain_text("epoch  50  loss", timeout=1_000)

    # The cost ticks by itself, between the server's figures, while the cluster runs.
    live_cost = sidebar.get_by_test_id("live-cost")
    first = live_cost.inner_text()
    expect(live_cost).not_to_have_text(first, timeout=5_000)
    expect(page.locator(".jp-BurstStatus-button")).to_contain_text("burst $")
    shot(page, "sidebar-cost-ticking")

    wait_until_ran(page, TRAIN_CELL)
    expect(log).to_contain_text("epoch 150  loss")
    expect(sidebar.locator(".jp-BurstJob.jp-mod-done")).to_have_count(1)

    # Checkpoints: steps 50, 100, 150 kept (burst.checkpoints.keep=3), newest first.
    checkpoints = sidebar.locator(".jp-BurstCheckpoint")
    expect(checkpoints).to_have_count(3, timeout=15_000)
    newest = checkpoints.first
    expect(newest).to_have_attribute("data-step", "150")
    job = newest.get_attribute("data-job")
    shot(page, "sidebar-checkpoints")

    cells_before = page.locator(f"{NOTEBOOK} .jp-Cell").count()
    newest.get_by_role("button", name="Restore").click()
    expect(page.locator(f"{NOTEBOOK} .jp-Cell")).to_have_count(cells_before + 1)
    expected = f"%burst restore {job} step=150 as state"
    active = page.locator(f"{NOTEBOOK} .jp-Cell.jp-mod-active")
    expect(active.locator(".jp-InputArea-editor")).to_have_text(expected)
    restore_cell = page.locator(f"{NOTEBOOK} .jp-CodeCell").filter(has_text=expected)
    page.keyboard.press("Shift+Enter")
    expect(restore_cell.locator(".jp-OutputArea-output")).to_contain_text(
        f"burst: state = the checkpoint of job {job}, step 150", timeout=60_000
    )
    shot(page, "sidebar-checkpoint-restored")

    # Stop spending now: the cluster is gone, from the sidebar and from the server.
    assert running_clusters(lab) == ["default"]
    sidebar.locator('.jp-BurstCluster[data-cluster="default"]').get_by_role(
        "button", name="Stop cluster default now"
    ).click()
    expect(sidebar).to_contain_text("No cluster is running.", timeout=60_000)
    expect(page.locator(".jp-BurstStatus-button")).to_have_count(0)
    deadline = time.monotonic() + 30
    while running_clusters(lab) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running_clusters(lab) == []
    shot(page, "sidebar-cluster-stopped")

    assert not [e for e in errors if "jupyter-burst" in e], errors


LONG_CELL = """%%burst cluster=cancel-me
import time
for i in range(6000):
    print('tick', i, flush=True)
    counter = i
    time.sleep(0.1)"""

# 10,000 lines a second for 4 s.
FLOOD_CELL = """%%burst cluster=cancel-me
import time
for second in range(4):
    started = time.time()
    for i in range(10_000):
        print(f'flood {second} {i}')
    time.sleep(max(0, 1 - (time.time() - started)))
print('flood over')"""

# The longest gap between two 50 ms timer ticks of the page: a frozen page shows a long one.
WATCH_FREEZE = """() => {
  window.__burstGap = 0;
  let last = performance.now();
  window.__burstTimer = setInterval(() => {
    const now = performance.now();
    window.__burstGap = Math.max(window.__burstGap, now - last);
    last = now;
  }, 50);
}"""


def test_the_cells_cancel_button_stops_it_and_a_flood_of_lines_does_not_freeze_the_page(
    lab: Lab, browser_context
):
    write_notebook(
        lab,
        "cancel.ipynb",
        ["%load_ext jupyter_burst\ncounter = -1", LONG_CELL, FLOOD_CELL, "counter"],
    )
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    open_notebook(page, lab, "cancel.ipynb")
    sidebar = open_sidebar(page)

    run_cell(page, 0)
    wait_until_ran(page, 0)
    run_cell(page, 1)
    status = cell(page, 1).locator(".jp-BurstCell-status")
    expect(status).to_contain_text("running", timeout=90_000)
    expect(cell(page, 1).locator(".jp-OutputArea-output").last).to_contain_text("tick 3")
    status.locator(".jp-BurstCell-cancel").click()
    expect(cell(page, 1).locator(".jp-OutputArea")).to_contain_text(
        "cancelled from JupyterLab", timeout=20_000
    )
    wait_until_ran(page, 1, timeout=20_000)
    expect(status).to_contain_text("cancelled")
    expect(sidebar.locator(".jp-BurstJob.jp-mod-cancelled")).to_have_count(1, timeout=10_000)
    shot(page, "cell-cancelled")

    page.evaluate(WATCH_FREEZE)
    run_cell(page, 2)
    flood = sidebar.locator(".jp-BurstJob.jp-mod-running")
    expect(flood).to_have_count(1, timeout=60_000)
    flood.locator(".jp-BurstJob-cell").click()  # the row, not its Cancel button
    # The view says what it left out; the newest lines are there.
    expect(sidebar.locator(".jp-BurstLog-dropped")).to_contain_text(
        "not shown here", timeout=30_000
    )
    wait_until_ran(page, 2, timeout=90_000)
    expect(sidebar.locator(".jp-BurstLog-lines")).to_contain_text("flood over", timeout=10_000)
    shot(page, "sidebar-flood")
    gap = page.evaluate("() => { clearInterval(window.__burstTimer); return window.__burstGap; }")
    assert gap < 1500, f"the page froze for {gap:.0f} ms during the flood"
    lines = sidebar.locator(".jp-BurstLog-line").count()
    assert 0 < lines <= 5000

    # Nothing the user had is lost: the cancelled cell changed nothing in the notebook.
    run_cell(page, 3)
    expect(cell(page, 3).locator(".jp-OutputArea-output")).to_contain_text("-1")


# Two ranks (CPU slots here) log a loss each half second for about 8 s.
METRICS_STEPS = 16
METRICS_CELL = f"""%%burst gpus=2 cluster=charts idle=2
import time
for step in range({METRICS_STEPS}):
    burst.log(step=step, loss=1.0 / (step + 1 + burst.rank))
    time.sleep(0.5)"""


def test_a_two_rank_cell_draws_a_curve_per_rank_live_its_cost_and_its_slots_in_the_sidebar(
    lab: Lab, browser_context
):
    write_notebook(lab, "charts.ipynb", ["%load_ext jupyter_burst", METRICS_CELL])
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    # Tall enough that the screenshots show the sidebar's GPU panel and charts together.
    page.set_viewport_size({"width": 1280, "height": 1300})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    open_notebook(page, lab, "charts.ipynb")
    sidebar = open_sidebar(page)
    run_cell(page, 0)
    wait_until_ran(page, 0)
    run_cell(page, 1)

    # The sidebar follows the running job: a curve per rank, growing while the cell runs.
    loss = sidebar.locator('.jp-BurstJobCharts .jp-BurstChart[data-name="loss"]')
    expect(loss).to_have_attribute("data-series", "rank 0,rank 1", timeout=90_000)
    partial = re.compile(r"^([1-9]|1[0-4]),([1-9]|1[0-4])$")  # both ranks, not all 16 yet
    expect(loss).to_have_attribute("data-points", partial, timeout=30_000)
    expect(cell(page, 1).locator(".jp-InputPrompt")).to_have_text("[*]:")
    expect(loss).to_have_attribute("data-drawn", "true")  # uPlot drew on its canvas
    # Under the cell, JupyterLab draws the kernel's display with the same chart: it grows too.
    under = cell(page, 1).locator(".jp-BurstMetricsOutput .jp-BurstChart")
    expect(under).to_have_attribute("data-points", partial, timeout=15_000)

    # The cluster's slots, as its workers' heartbeats sample them: CPU slots, said so.
    slots = sidebar.locator('.jp-BurstUsage-cluster[data-cluster="charts"] .jp-BurstSlot')
    expect(slots).to_have_count(2, timeout=30_000)
    for i in range(2):
        expect(slots.nth(i)).to_have_class(re.compile(r"\bjp-mod-cpu\b"))
        expect(slots.nth(i).locator(".jp-BurstSlot-label")).to_have_text("CPU slot")

    # The job's cost over time, from the jobs poll: it moves with the notional price.
    cost = sidebar.locator(".jp-BurstJobCharts-cost .jp-BurstChart")
    expect(cost).to_have_attribute("data-points", re.compile(r"^([2-9]|\d\d+)$"), timeout=15_000)
    cost_now = cost.locator(".jp-BurstChart-series")
    first_cost = cost_now.get_attribute("data-last")
    shot(page, "sidebar-charts-live")
    expect(cost_now).not_to_have_attribute("data-last", first_cost, timeout=10_000)

    # After the run: every point of both ranks, nothing more asked.
    wait_until_ran(page, 1, timeout=60_000)
    charts = sidebar.locator(".jp-BurstJobCharts")
    expect(charts).to_have_attribute("data-state", "complete", timeout=10_000)
    expect(loss).to_have_attribute("data-points", f"{METRICS_STEPS},{METRICS_STEPS}")
    last = loss.locator('.jp-BurstChart-series[data-series="rank 1"]')
    expect(last).to_have_attribute("data-last", str(1.0 / (METRICS_STEPS - 1 + 1 + 1)))
    # The cost chart ends at the job's cost as the server says it.
    job = charts.get_attribute("data-job")
    status, body = lab.get("jupyter-burst/jobs")
    assert status == 200, body
    (row,) = [j for j in json.loads(body) if j["id"] == job]
    final_cost = float(row["cost"]["exact"])
    assert final_cost > float(first_cost) > 0
    # ... at the notional price: the cluster's one node, for as long as the job ran.
    notional = row["duration_seconds"] * LOCAL_PRICE_PER_HOUR / 3600
    assert abs(final_cost - notional) <= 0.1 * notional, (final_cost, row)
    wait_for(
        lambda: abs(float(cost_now.get_attribute("data-last")) - final_cost) < 2e-6,
        10,
        f"the cost chart to end at the job's ${final_cost}",
    )

    # ... and all the points at the end, drawn by our renderer, not the kernel's PNG.
    expect(under).to_have_attribute("data-points", f"{METRICS_STEPS},{METRICS_STEPS}")
    expect(under).to_have_attribute("data-drawn", "true")
    expect(cell(page, 1).locator(".jp-OutputArea-output img")).to_have_count(0)
    shot(page, "sidebar-charts-done")

    # A finished job's metrics stay browsable: select another job, then this one again.
    row_of = sidebar.locator(f'.jp-BurstJob[data-job="{job}"] .jp-BurstJob-cell')
    row_of.click()  # unselected
    expect(charts).to_have_count(0)
    row_of.click()
    expect(loss).to_have_attribute("data-points", f"{METRICS_STEPS},{METRICS_STEPS}")
    assert not [e for e in errors if "jupyter-burst" in e], errors
