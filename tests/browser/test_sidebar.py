"""The JupyterLab sidebar: the extension loads, talks to its server extension, and the
server extension lets no one in without a token."""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

import jupyter_burst
from tests.browser.conftest import ARTIFACTS, Lab
from tests.harness import wait_for

SIDEBAR_ID = "jupyter-burst-sidebar"
# Every request in the server's log ("200 GET /jupyter-burst/cost?1712 (...)"), so that the
# tests see what the page asks for; jupyter_server logs a success at debug level.
LAB_ARGS = ["--ServerApp.log_level=DEBUG"]
BURST_REQUEST = re.compile(r" \d{3} (?:GET|POST|PUT|DELETE) /jupyter-burst/(?P<path>[^\s?]+)")
# The sidebar's views are asked every 3 s while it is shown: a closed one this long would
# have asked each at least twice.
CLOSED_WINDOW_MS = 7_000
# Answers already on their way when the sidebar closes are logged within this.
IN_FLIGHT_MS = 1_000
# jupyter_server warns about every handler verb without an authentication rule (the
# extension template's check_auth.py turns that warning into a failure), one line each:
#   Extension endpoints without @allow_unauthenticated, @ws_authenticated, nor @web.authenticated:
#   - GET of StatusHandler registered for /jupyter-burst/status
# Other installed extensions may have such lines of their own; ours must have none.
UNAUTHENTICATED_WARNING = "endpoints without @allow_unauthenticated"
UNAUTHENTICATED_ENDPOINT = re.compile(r"^- \w+ of \w+ registered for (?P<path>\S+)", re.MULTILINE)


def test_sidebar_opens_with_its_three_sections_and_the_default_provider(lab: Lab, browser_context):
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(f"{lab.url}lab?token={lab.token}")
    tab = page.locator(f'.jp-SideBar.jp-mod-left li[data-id="{SIDEBAR_ID}"]')
    expect(tab).to_have_attribute("title", "jupyter-burst", timeout=60_000)
    tab.click()

    panel = page.locator(f"#{SIDEBAR_ID}")
    expect(panel).to_be_visible()
    for title in ("Clusters & cost", "Jobs & logs", "Checkpoints"):
        expect(panel.get_by_role("heading", name=title)).to_be_visible()
    expect(panel).to_contain_text("No cluster is running.")
    expect(panel).to_contain_text("No job has run yet.")
    expect(panel).to_contain_text("default provider: local")

    screenshot = ARTIFACTS / "screenshots" / "sidebar-loaded.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot))
    assert not [e for e in errors if "jupyter-burst" in e], errors


def test_status_endpoint_answers_the_version_with_a_token(lab: Lab):
    status, body = lab.get("jupyter-burst/status")
    assert status == 200, body
    assert json.loads(body) == {"version": jupyter_burst.__version__}


def test_status_endpoint_refuses_a_request_without_a_token(lab: Lab):
    status, _ = lab.get("jupyter-burst/status", token=False)
    assert status in (401, 403)


def test_server_log_has_no_unauthenticated_endpoint_warning(lab: Lab):
    log = lab.log()
    assert "jupyter-burst server extension loaded" in log, log
    # The warning names the module that registered the handlers, then one line per endpoint.
    ours = [
        line
        for line in log.splitlines()
        if UNAUTHENTICATED_WARNING in line and "jupyter_burst" in line
    ]
    ours += [
        m["path"] for m in UNAUTHENTICATED_ENDPOINT.finditer(log) if "jupyter-burst" in m["path"]
    ]
    assert not ours, f"jupyter-burst endpoints without authentication: {ours}"


def menu_item(page, label: str):
    """An entry of the menu bar or of an open menu, by its exact label."""
    return page.locator(".lm-MenuBar-itemLabel, .lm-Menu-itemLabel").filter(
        has_text=re.compile(f"^{re.escape(label)}$")
    )


def rgb(css: str) -> list[int]:
    return [int(c) for c in re.findall(r"\d+", css)[:3]]


def choose_theme(page, name: str) -> None:
    menu_item(page, "Settings").click()
    menu_item(page, "Theme").click()
    menu_item(page, name).click()


def test_the_keyboard_opens_the_sidebar_and_the_dark_theme_styles_it(lab: Lab, browser_context):
    page = browser_context.new_page()
    page.goto(f"{lab.url}lab?reset&token={lab.token}")
    panel = page.locator(f"#{SIDEBAR_ID}")
    expect(page.locator("#jp-main-statusbar")).to_be_visible(timeout=60_000)
    expect(panel).to_be_hidden()
    page.locator("body").press("Control+Alt+b")
    expect(panel).to_be_visible()
    light = panel.evaluate("e => getComputedStyle(e).backgroundColor")

    choose_theme(page, "JupyterLab Dark")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false")
    expect(panel).not_to_have_css("background-color", light)
    expect(page.locator("#jupyterlab-splash")).to_have_count(0)  # the theme is applied
    dark = panel.evaluate("e => getComputedStyle(e).backgroundColor")
    assert max(rgb(dark)) < 100, f"the sidebar stayed light in the dark theme: {dark}"
    title = panel.locator(".jp-BurstSection-title").first
    text = title.evaluate("e => getComputedStyle(e).color")
    assert min(rgb(text)) > 150, f"the sidebar's text is not readable on dark: {text}"
    page.screenshot(path=str(ARTIFACTS / "screenshots" / "sidebar-dark.png"))
    choose_theme(page, "JupyterLab Light")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "true")


def test_the_settings_editor_sets_what_new_cells_default_to(lab: Lab, browser_context):
    page = browser_context.new_page()
    page.goto(f"{lab.url}lab?reset&token={lab.token}")
    expect(page.locator("#jp-main-statusbar")).to_be_visible(timeout=60_000)
    menu_item(page, "Settings").click()
    menu_item(page, "Settings Editor").click()
    page.locator(".jp-PluginList-entry", has_text="jupyter-burst").click()
    expect(page.get_by_text("Idle minutes", exact=True)).to_be_visible()
    idle = page.locator('input[id$="_idle"]')  # the form's field of the schema key "idle"
    expect(idle).to_have_value("20")
    idle.fill("7")
    idle.press("Tab")
    written = lab.home / "dask" / "jupyter-burst-lab.yaml"
    wait_for(
        lambda: written.exists() and "idle: 7" in written.read_text(),
        30,
        "the Settings Editor's idle to reach the kernels' Dask config",
    )
    assert "provider" not in written.read_text()  # only what the user set


def burst_requests(lab: Lab, since: int) -> list[str]:
    """The jupyter-burst endpoints the server answered after byte ``since`` of its log."""
    with open(lab.log_path, "rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    return [m["path"] for m in BURST_REQUEST.finditer(text)]


def log_size(lab: Lab) -> int:
    return lab.log_path.stat().st_size


def test_a_closed_sidebar_asks_the_server_for_nothing_but_the_status_bars_cost(
    lab: Lab, browser_context
):
    start = log_size(lab)
    page = browser_context.new_page()
    page.goto(f"{lab.url}lab?reset&token={lab.token}")
    tab = page.locator(f'.jp-SideBar.jp-mod-left li[data-id="{SIDEBAR_ID}"]')
    expect(tab).to_have_attribute("title", "jupyter-burst", timeout=60_000)
    panel = page.locator(f"#{SIDEBAR_ID}")
    expect(panel).to_be_hidden()
    # At load: the status bar's first cost, and the Settings Editor's values sent once.
    wait_for(
        lambda: {"cost", "settings"} <= set(burst_requests(lab, start)),
        30,
        "the page's first cost and settings requests",
    )

    closed = log_size(lab)
    page.wait_for_timeout(CLOSED_WINDOW_MS)  # the window we watch: nothing may come in it
    assert set(burst_requests(lab, closed)) <= {"cost"}, burst_requests(lab, closed)

    # Opened: its views come at once, then again every few seconds.
    opened = log_size(lab)
    tab.click()
    expect(panel).to_be_visible()
    views = {"clusters", "cost", "jobs", "checkpoints", "starts"}
    wait_for(
        lambda: (
            burst_requests(lab, opened).count("jobs") >= 2
            and views <= set(burst_requests(lab, opened))
        ),
        15,
        "the open sidebar to fetch its views twice",
    )

    # Closed again: they stop.
    tab.click()
    expect(panel).to_be_hidden()
    page.wait_for_timeout(IN_FLIGHT_MS)
    closed = log_size(lab)
    page.wait_for_timeout(CLOSED_WINDOW_MS)
    assert set(burst_requests(lab, closed)) <= {"cost"}, burst_requests(lab, closed)


def test_an_error_from_the_server_shows_as_a_notification_with_its_line(lab: Lab, browser_context):
    page = browser_context.new_page()

    # The sidebar lists a cluster the server does not have (its answer, plus one row), so
    # that its Stop goes to the real server, which refuses it with one line.
    def with_a_gone_cluster(route):
        response = route.fetch()
        rows = response.json() + [GONE_CLUSTER]
        route.fulfill(response=response, json=rows)

    page.route(re.compile(r".*/jupyter-burst/clusters(\?.*)?$"), with_a_gone_cluster)
    page.goto(f"{lab.url}lab?reset&token={lab.token}")
    tab = page.locator(f'.jp-SideBar.jp-mod-left li[data-id="{SIDEBAR_ID}"]')
    expect(tab).to_have_attribute("title", "jupyter-burst", timeout=60_000)
    tab.click()
    stop = page.get_by_role("button", name="Stop cluster gone now")
    stop.click()

    toast = page.locator(".Toastify__toast").filter(has_text="no running cluster named 'gone'")
    expect(toast).to_be_visible(timeout=10_000)
    expect(stop).to_be_enabled()  # the user may try again
    expect(toast).to_be_in_viewport(ratio=1)  # slid in, for the screenshot
    page.screenshot(path=str(ARTIFACTS / "screenshots" / "sidebar-error-notification.png"))


def _spend(usd: str) -> dict:
    return {"usd": usd, "exact": usd[1:], "notional": {"usd": "$0.00", "exact": "0"}, "shown": usd}


GONE_CLUSTER = {
    "id": "gone",
    "name": "gone",
    "provider": "local",
    "state": "running",
    "stop_reason": None,
    "nodes": 1,
    "gpus": 0,
    "cpu_slots": 1,
    "started": 0,
    "uptime_seconds": 60,
    "idle_minutes": 20,
    "idle_remaining_seconds": 600,
    "busy": False,
    "per_hour": _spend("$0.00"),
    "so_far": _spend("$0.00"),
}
