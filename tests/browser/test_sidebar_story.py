"""The sidebar as a user meets it, in a real JupyterLab with Debian's Chromium: open the demo
notebook, run its training cell, watch its log lines arrive in the sidebar while it runs and
the cost tick, restore a checkpoint into a new cell, stop the cluster from the sidebar.

Screenshots of each state go to test-artifacts/screenshots/ (the README shows two).
"""

from __future__ import annotations

import json
import re
import time

from playwright.sync_api import Page, expect

from tests.browser.conftest import ARTIFACTS, Lab

SIDEBAR = "#jupyter-burst-sidebar"
SHOTS = ARTIFACTS / "screenshots"
TRAIN_CELL = 5  # the demo's `%%burst idle=5` training cell (cells counted from 0)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def cell(page: Page, index: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def run_cell(page: Page, index: int) -> None:
    """Select the cell (command mode, as a click in its prompt area does) and run it."""
    cell(page, index).locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")


def wait_until_ran(page: Page, index: int, timeout: float = 120_000) -> None:
    expect(cell(page, index).locator(".jp-InputPrompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=timeout
    )


def running_clusters(lab: Lab) -> list[str]:
    status, body = lab.get("jupyter-burst/clusters")
    assert status == 200, body
    return [c["name"] for c in json.loads(body) if c["state"] == "running"]


def test_a_user_watches_a_burst_from_the_sidebar_restores_a_checkpoint_and_stops_the_cluster(
    lab: Lab, browser_context
):
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(f"{lab.url}lab/tree/demo.ipynb?token={lab.token}")
    expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_be_attached(
        timeout=90_000
    )
    page.locator('.jp-SideBar.jp-mod-left li[data-id="jupyter-burst-sidebar"]').click()
    sidebar = page.locator(SIDEBAR)
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
    shot(page, "sidebar-live-logs")

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

    cells_before = page.locator(".jp-Notebook .jp-Cell").count()
    newest.get_by_role("button", name="Restore").click()
    expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(cells_before + 1)
    expected = f"%burst restore {job} step=150 as state"
    active = page.locator(".jp-Notebook .jp-Cell.jp-mod-active")
    expect(active.locator(".jp-InputArea-editor")).to_have_text(expected)
    restore_cell = page.locator(".jp-Notebook .jp-CodeCell").filter(has_text=expected)
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
