"""A running cluster's Dask dashboard in a JupyterLab tab, in a real JupyterLab with Debian's
Chromium: the sidebar's Dashboard button opens it once, and bokeh draws it, its page, its
scripts and its websocket all through the Jupyter server (the cluster serves nothing to the
browser itself).
"""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from tests.browser.conftest import Lab
from tests.browser.test_sidebar_story import (
    open_notebook,
    open_sidebar,
    run_cell,
    shot,
    wait_until_ran,
    write_notebook,
)

CLUSTER = "dash"
DASHBOARD = f"/jupyter-burst/dashboard/{CLUSTER}/"
TAB_ID = f"jupyter-burst-dashboard-{CLUSTER}"
MAIN_TABS = "#jp-main-dock-panel .lm-TabBar-tab"


def dashboard_url(lab: Lab) -> str | None:
    status, body = lab.get("jupyter-burst/clusters")
    assert status == 200, body
    rows = [c for c in json.loads(body) if c["name"] == CLUSTER and c["state"] == "running"]
    assert len(rows) == 1, rows
    return rows[0]["dashboard_url"]


def test_the_dashboard_button_opens_the_clusters_dask_dashboard_in_one_tab(
    lab: Lab, browser_context
):
    write_notebook(
        lab, "dashboard.ipynb", ["%load_ext jupyter_burst", f"%%burst cluster={CLUSTER}\nx = 1"]
    )
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    # What went wrong under the dashboard's path, for the failure message.
    failed: list[str] = []
    sockets: list[str] = []
    errors: list[str] = []
    page.on(
        "response",
        lambda r: (
            failed.append(f"{r.status} {r.url}") if DASHBOARD in r.url and r.status >= 400 else None
        ),
    )
    page.on(
        "requestfailed",
        lambda r: failed.append(f"{r.failure} {r.url}") if DASHBOARD in r.url else None,
    )
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    open_notebook(page, lab, "dashboard.ipynb")
    for index in (0, 1):
        run_cell(page, index)
        wait_until_ran(page, index)
    assert dashboard_url(lab) == f"{DASHBOARD}status"

    sidebar = open_sidebar(page)
    button = sidebar.locator(f'.jp-BurstCluster[data-cluster="{CLUSTER}"]').get_by_role(
        "button", name=f"Dask dashboard of cluster {CLUSTER}"
    )
    button.click()
    tab = page.locator(MAIN_TABS).filter(has_text=f"Dask · {CLUSTER}")
    expect(tab).to_have_count(1)
    expect(tab).to_have_class(re.compile(r"\blm-mod-current\b"))
    panel = page.locator(f"#{TAB_ID}")
    expect(panel).to_be_visible()
    expect(panel.locator("iframe")).to_have_attribute("src", f"{DASHBOARD}status")

    # Bokeh draws its plots (canvases, in its shadow roots) once its websocket brought the
    # document: the page, its scripts and the websocket all came through the server.
    canvases = page.frame_locator(f"#{TAB_ID} iframe").locator("canvas")
    try:
        expect(canvases.first).to_be_attached(timeout=60_000)
    except AssertionError as exc:
        raise AssertionError(
            f"no bokeh canvas in the dashboard tab; failed: {failed}; "
            f"websockets: {sockets}; console errors: {errors}"
        ) from exc
    assert any(f"{DASHBOARD}status/ws" in url for url in sockets), sockets
    assert failed == [], failed
    shot(page, "dashboard-tab")

    # Another tab in front, then the button again: the same tab comes back, no second one.
    page.locator(MAIN_TABS).filter(has_text="dashboard.ipynb").click()
    expect(tab).not_to_have_class(re.compile(r"\blm-mod-current\b"))
    button.click()
    expect(tab).to_have_class(re.compile(r"\blm-mod-current\b"))
    expect(page.locator(MAIN_TABS).filter(has_text="Dask ·")).to_have_count(1)
    expect(page.locator(f"#{TAB_ID} iframe")).to_have_count(1)

    assert not [e for e in errors if "jupyter-burst" in e], errors
