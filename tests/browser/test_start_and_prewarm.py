"""Start-up is visible, and pre-warm (issue #17), in a real JupyterLab with Debian's Chromium.

The sidebar shows a starting cluster's phases as they happen, each with its seconds, and
keeps where a finished start spent its time on the cluster's row; the cell's status line
keeps them too. With ``burst.prewarm`` on, typing a ``%%burst`` cell starts its cluster
before the cell is run, and the cell finds it up; with it off, typing starts nothing. The
clusters are local ones at a notional price: nothing costs money.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from jupyter_burst.clusters import start_phases
from jupyter_burst.clusters.start_phases import BOOTING, ENVIRONMENT, LAUNCHING, QUOTE
from jupyter_burst.store.ledger import Ledger
from tests.browser.conftest import LOCAL_PRICE_PER_HOUR, Lab
from tests.browser.test_sidebar_story import (
    cell,
    open_notebook,
    open_sidebar,
    run_cell,
    running_clusters,
    shot,
    wait_until_ran,
    write_notebook,
)
from tests.harness import wait_for

PREWARM_URL = re.compile(r"/jupyter-burst/prewarm(\?\d*)?$")  # with a cache-busting query


def ledger_of(lab: Lab) -> Ledger:
    return Ledger(lab.home / "burst-state" / "ledger.sqlite")


def starts_of(lab: Lab, name: str) -> list[start_phases.Start]:
    ledger = ledger_of(lab)
    try:
        return [s for s in start_phases.recent(ledger, 0) if s.name == name]
    finally:
        ledger.close()


def type_cell(page: Page, index: int, lines: list[str]) -> None:
    """Type into the (empty) cell ``index`` as a user does: its first line, Enter, the rest."""
    editor = cell(page, index).locator(".cm-content")
    editor.click()
    expect(cell(page, index)).to_have_class(re.compile(r"\bjp-mod-active\b"))
    for number, line in enumerate(lines):
        if number:
            page.keyboard.press("Enter")
        page.keyboard.type(line)


def test_the_sidebar_shows_a_starting_clusters_phases_live_and_keeps_where_a_start_spent_its_time(
    lab: Lab, browser_context
):
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    write_notebook(lab, "phases.ipynb", ["%load_ext jupyter_burst", "%%burst\nx = 1"])
    open_notebook(page, lab, "phases.ipynb")
    sidebar = open_sidebar(page)
    expect(sidebar).to_contain_text("No cluster is running.")

    # A start under way, recorded as a provider records one (the recorder of clusters/,
    # through the ledger the server reads): each phase shows as it begins, and counts.
    ledger = ledger_of(lab)
    phases = start_phases.StartPhases(ledger, "far", "aws")
    try:
        phases.enter(QUOTE)
        phases.enter(LAUNCHING, done=1, total=2)
        row = sidebar.locator('.jp-BurstStart[data-cluster="far"]')
        current = row.locator(".jp-BurstStart-phase.jp-mod-current")
        expect(current).to_have_text(re.compile(r"^launching 1/2 \d+\.\d s$"))
        expect(row).to_contain_text("starting for")
        expect(sidebar).not_to_contain_text("No cluster is running.")
        ticking = current.inner_text()
        expect(current).not_to_have_text(ticking, timeout=5_000)  # it counts between fetches
        phases.enter(BOOTING)
        expect(current).to_have_text(re.compile(r"^booting \d+\.\d s$"), timeout=10_000)
        phases.enter(ENVIRONMENT, "building", done=3, total=10)
        expect(current).to_have_text(re.compile(r"^environment building 3/10 \d+\.\d s$"))
        expect(row.locator(".jp-BurstStart-phase")).to_have_text(
            [
                re.compile(r"^quote \d+\.\d s$"),
                re.compile(r"^launching 1/2 \d+\.\d s$"),
                re.compile(r"^booting \d+\.\d s$"),
                re.compile(r"^environment building 3/10 \d+\.\d s$"),
            ]
        )
        shot(page, "sidebar-cluster-starting")
    finally:
        phases.end(error="the test ended it")
        ledger.close()
    expect(row).to_have_count(0, timeout=10_000)

    # A real cell's start: the cell's line and the cluster's row keep where it spent its time.
    run_cell(page, 0)
    wait_until_ran(page, 0)
    run_cell(page, 1)
    wait_until_ran(page, 1)
    status = cell(page, 1).locator(".jp-BurstCell-status")
    expect(status).to_contain_text(
        re.compile(r"done · .* · cluster started in [\d.]+ s \(quote [\d.]+ s, launching 1/1 ")
    )
    kept = sidebar.locator('.jp-BurstCluster[data-cluster="default"] .jp-BurstStart-phases')
    expect(kept.locator(".jp-BurstStart-summary")).to_have_text(
        re.compile(r"^started in [\d.]+ s$"), timeout=15_000
    )
    expect(kept.locator(".jp-BurstStart-phase")).to_have_text(
        [
            re.compile(r"^quote [\d.]+ s$"),
            re.compile(r"^launching 1/1 [\d.]+ s$"),
            re.compile(r"^booting [\d.]+ s$"),
            re.compile(r"^workers joined 1/1 [\d.]+ s$"),
            "running",
        ]
    )
    shot(page, "sidebar-cluster-start-phases")


def test_typing_a_burst_cell_starts_its_cluster_before_it_runs_only_with_prewarm_on(
    lab: Lab, browser_context
):
    write_notebook(
        lab,
        "prewarm.ipynb",
        ["%load_ext jupyter_burst\n%burst prewarm off", "", "%burst prewarm on", ""],
    )
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    open_notebook(page, lab, "prewarm.ipynb")
    sidebar = open_sidebar(page)
    run_cell(page, 0)
    wait_until_ran(page, 0)
    expect(cell(page, 0).locator(".jp-OutputArea")).to_contain_text("pre-warm is off")

    # Off (the default): the page asks, the server starts nothing.
    with page.expect_response(PREWARM_URL) as asked:
        type_cell(page, 1, ["%%burst cluster=cold", "z = 1"])
    assert asked.value.ok and asked.value.json()["state"] == "off", asked.value.text()
    assert "cold" not in running_clusters(lab) and not starts_of(lab, "cold")

    # Turned on, with what it costs said.
    run_cell(page, 2)
    wait_until_ran(page, 2)
    said = cell(page, 2).locator(".jp-OutputArea")
    expect(said).to_contain_text("pre-warm is on")
    expect(said).to_contain_text(
        f"costs ${LOCAL_PRICE_PER_HOUR}.00/h notional while it waits for its cell, and stops "
        "after 20 min idle if none comes"
    )

    # On: typing the cell starts its cluster, which is up before the cell is run.
    with page.expect_response(PREWARM_URL) as asked:
        type_cell(page, 3, ["%%burst cluster=warm", "answer = 6 * 7", "answer"])
    answer = asked.value.json()
    assert answer["state"] == "starting" and answer["cluster"] == "warm", answer
    wait_for(lambda: "warm" in running_clusters(lab), 90, "the pre-warmed cluster to be up")
    expect(cell(page, 3).locator(".jp-InputPrompt")).to_have_text("[ ]:")  # not run yet
    row = sidebar.locator('.jp-BurstCluster[data-cluster="warm"]')
    expect(row.locator(".jp-BurstStart-phase").last).to_have_text("running", timeout=15_000)
    shot(page, "sidebar-prewarmed-cluster")
    (start,) = starts_of(lab, "warm")
    assert start.purpose == "prewarm" and start.state == "running"

    # The cell finds it up: it runs there and starts nothing.
    run_cell(page, 3)
    wait_until_ran(page, 3)
    expect(cell(page, 3).locator(".jp-OutputArea")).to_contain_text("42")
    status = cell(page, 3).locator(".jp-BurstCell-status")
    expect(status).to_contain_text("done")
    expect(status).not_to_contain_text("cluster started")
    assert len(starts_of(lab, "warm")) == 1
    ledger = ledger_of(lab)
    try:
        (job,) = ledger.query(
            "SELECT cluster_id FROM jobs WHERE source LIKE ? ORDER BY started", ["%6 * 7%"]
        )
    finally:
        ledger.close()
    assert job["cluster_id"] == start.cluster_id
