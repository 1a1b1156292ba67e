"""The server extension's REST API, against a real ``jupyter server`` process on 127.0.0.1.

The state folder holds a ledger filled through :class:`~jupyter_burst.store.ledger.Ledger`,
checkpoints written by :class:`~jupyter_burst.store.checkpoints.CheckpointStore`, and one real
local cluster (a ``jupyter_burst.node`` process) that the API changes and then stops.
Tests run in file order: the last one stops the cluster.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import quote

import psutil
import pytest
import requests

from jupyter_burst.store.checkpoints import CheckpointStore, default_root
from jupyter_burst.store.cost import node_cost
from jupyter_burst.store.ledger import Ledger
from tests.harness import cluster_record, wait_for
from tests.jupyter_server_fixture import API, jupyter_server, local_node, server_env

UNAUTHENTICATED_WARNING = "endpoints without @allow_unauthenticated"
UNAUTHENTICATED_ENDPOINT = re.compile(r"^- \w+ of \w+ registered for (?P<path>\S+)", re.MULTILINE)
PRICE = 36.0  # $/hour of the live cluster: 1 cent a second


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT/
    token: str
    state_dir: pathlib.Path
    log_path: pathlib.Path
    ledger: Ledger
    node: subprocess.Popen
    env: dict[str, str]

    def get(self, path: str, token: bool = True, **kw) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"} if token else {}
        return requests.get(self.url + API + path, headers=headers, timeout=30, **kw)

    def post(self, path: str, token: bool = True, **kw) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"} if token else {}
        return requests.post(self.url + API + path, headers=headers, timeout=60, **kw)

    def put(self, path: str, token: bool = True, **kw) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"} if token else {}
        return requests.put(self.url + API + path, headers=headers, timeout=60, **kw)


def _fill(ledger: Ledger, state_dir: pathlib.Path) -> None:
    """A stopped AWS cluster of 2 GPUs that ran a job with output of two ranks, checkpoints."""
    now = time.time()
    gpus = ["cuda:0", "cuda:1"]
    ledger.cluster_started("old-1", "old", "aws", "tls://10.0.0.1:8786", 2, gpus, 20)
    ledger.node_started("old-1-head", "old-1", "aws", "head", 2, gpus, None, 3.6, started=now - 100)
    source = "\n  import torch  \nprint('hi')\n"
    ledger.job_started(
        "job-a",
        "old-1",
        "k1",
        source,
        {"gpus": 2, "cluster": "exp1", "cell_number": 7},
        notebook="exp/train.ipynb",
    )
    ledger.add_lines(
        "job-a",
        [(now, 0, "stdout", "rank0 line1"), (now, 1, "stdout", "rank1 line1")]
        + [(now, 0, "stdout", "rank0 line2"), (now, 1, "stderr", "rank1 line2")],
    )
    for step in (1, 2):
        for rank in (0, 1):
            ledger.add_metrics("job-a", now, rank, step, {"loss": 1.0 / (step + rank)})
    gpu = {"name": "A10G", "utilization": 91.0, "memory_used": 5 << 30, "memory_total": 24 << 30}
    ledger.add_usage("job-a", now, 0, {"host": "h1", "device": "cuda:0", "rss": 1, "gpu": gpu})
    ledger.add_usage("job-a", now, 1, {"host": "h1", "device": "cpu", "cpu_percent": 97.5})
    ledger.job_ended("job-a", "done")
    ledger.cluster_stopped("old-1", "idle")
    long_line = "x = " + "1 + " * 40 + "1"
    ledger.job_started("job-b", None, "k2", long_line, {"gpus": 1})  # still running
    store = CheckpointStore(default_root(state_dir), "job-a")
    store.save({"w": [1, 2, 3]}, step=1)
    store.save({"w": [4, 5, 6]}, step=2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("server")
    state_dir = home / "state"
    state_dir.mkdir(mode=0o700)
    env = server_env(home, state_dir)
    ledger = Ledger(state_dir / "ledger.sqlite")
    _fill(ledger, state_dir)
    try:
        with local_node(state_dir, env, "live", "--price-per-hour", str(PRICE)) as node:
            with jupyter_server(home, env) as running:
                yield Server(
                    running.url, running.token, state_dir, running.log_path, ledger, node, env
                )
    finally:
        ledger.close()


def _exact(amount: dict) -> Decimal:
    """A money field: strings only, the cents figure the exact one rounded."""
    assert isinstance(amount["usd"], str) and isinstance(amount["exact"], str)
    exact = Decimal(amount["exact"])
    assert amount["usd"] == f"${exact.quantize(Decimal('0.01')):,.2f}", amount
    return exact


GETS = [
    "status",
    "clusters",
    "cost",
    "jobs",
    "jobs/job-a/logs",
    "jobs/job-a/metrics",
    "jobs/job-a/usage",
    "checkpoints",
    "checkpoints/job-a",
]
POSTS = ["clusters/live/stop", "clusters/live/idle", "jobs/job-a/cancel"]


def test_the_extension_is_loaded_and_every_endpoint_has_an_authentication_rule(server):
    log = server.log_path.read_text()
    assert "jupyter-burst server extension loaded" in log
    # Other installed extensions (jupyter_lsp) may be warned about; none of ours may be.
    unguarded = [m["path"] for m in UNAUTHENTICATED_ENDPOINT.finditer(log)]
    assert not [path for path in unguarded if "jupyter-burst" in path], unguarded
    if UNAUTHENTICATED_WARNING in log:
        assert unguarded, log  # the warning's format changed: the check above saw nothing


def test_every_endpoint_answers_403_without_a_token(server):
    names = [c["name"] for c in server.get("checkpoints").json()]
    download = f"checkpoints/job-a/{names[0]}/download"
    for path in [*GETS, download]:
        assert server.get(path, token=False).status_code == 403, path
    for path in POSTS:
        reply = server.post(path, token=False, json={"minutes": 5})
        assert reply.status_code == 403, path
    assert server.put("settings", token=False, json={"idle": 5}).status_code == 403
    assert not (pathlib.Path(server.env["DASK_CONFIG"]) / "jupyter-burst-lab.yaml").exists()
    assert cluster_record(server.state_dir, "live") is not None  # nothing was done


def test_a_write_authenticated_by_cookie_without_xsrf_is_refused(server):
    session = requests.Session()
    # A browser's session: the token once in the URL, then only the login cookie.
    assert session.get(server.url + API + f"status?token={server.token}").status_code == 200
    assert session.get(server.url + API + "status").status_code == 200
    reply = session.post(server.url + API + "clusters/live/idle", json={"minutes": 5})
    assert reply.status_code == 403, reply.text
    assert "Traceback" not in reply.text
    # With the XSRF token the same write goes through (here: to the validation).
    session.get(server.url + "login")  # sets the _xsrf cookie
    xsrf = session.cookies.get("_xsrf")
    assert xsrf
    reply = session.post(
        server.url + API + "clusters/live/idle", json={"minutes": -1}, headers={"X-XSRFToken": xsrf}
    )
    assert reply.status_code == 400, reply.text


def _kernel_reads(env: dict[str, str]) -> list:
    """What a new kernel's %%burst reads as its defaults (a fresh process, fresh config)."""
    code = (
        "import json; from jupyter_burst import config; "
        "print(json.dumps([config.get('provider'), config.get('idle'), config.get('budget.daily')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_the_settings_editor_values_become_the_kernels_defaults(server):
    assert _kernel_reads(server.env) == [None, 20, None]
    reply = server.put("settings", json={"defaultProvider": "ssh", "idle": 7.5, "budget": 40})
    assert reply.status_code == 200, reply.text
    assert _kernel_reads(server.env) == ["ssh", 7.5, 40]
    # Only what the user set: the rest stays as the user's own config says.
    assert server.put("settings", json={"idle": 3}).status_code == 200
    assert _kernel_reads(server.env) == [None, 3, None]
    # A bad value: one line naming it, and the file as it was.
    for body, says in [
        ({"idle": -1}, "idle must be more than 0"),
        ({"idle": "soon"}, "idle must be a number"),
        ({"defaultProvider": "../x"}, "defaultProvider must be a provider name"),
        ({"colour": "red"}, "unknown setting 'colour'"),
        ([1], "send a JSON object"),
    ]:
        reply = server.put("settings", json=body)
        assert reply.status_code == 400 and says in reply.json()["error"], (body, reply.text)
    assert server.put("settings", data=b"{not json").status_code == 400
    assert _kernel_reads(server.env) == [None, 3, None]
    assert server.put("settings", json={}).status_code == 200  # nothing set: file removed
    assert _kernel_reads(server.env) == [None, 20, None]


def test_clusters_lists_the_live_one_and_the_stopped_one(server):
    clusters = {c["name"]: c for c in server.get("clusters").json()}
    live, old = clusters["live"], clusters["old"]
    assert live["provider"] == "local" and live["state"] == "running" and live["nodes"] == 1
    assert Decimal(live["per_hour"]["exact"]) == Decimal(str(PRICE))
    assert live["idle_minutes"] == 30
    assert 0 < live["idle_remaining_seconds"] <= 30 * 60  # asked of the cluster itself
    assert live["uptime_seconds"] >= 0
    assert live["gpus"] + live["cpu_slots"] == 1  # one slot: a GPU, or its CPU stand-in
    assert old["provider"] == "aws" and old["state"] == "stopped" and old["stop_reason"] == "idle"
    assert old["gpus"] == 2 and old["cpu_slots"] == 0 and old["nodes"] == 1
    assert _exact(old["per_hour"]) == 0
    # The bill of its one node (~100 s at $3.60/h), the same figure %burst cost adds up.
    billed = node_cost(server.ledger.nodes(cluster_ids=["old-1"])[0], time.time())
    assert _exact(old["so_far"]) == billed and Decimal("0.1") <= billed < Decimal("0.11")


def test_a_running_clusters_slots_are_listed_as_their_heartbeats_sampled_them(server):
    def slots() -> list[dict]:
        live = next(c for c in server.get("clusters").json() if c["name"] == "live")
        return live["usage"]

    # The worker's first heartbeat carries its first sample: asked of the head, once.
    wait_for(lambda: slots(), 30, "the live cluster's first usage sample")
    (slot,) = slots()
    assert (slot["worker"], slot["device"], slot["label"]) == ("slot-0", "cpu", "CPU slot")
    assert slot["gpu_utilization"] is None and slot["idle_gpu"] is False
    assert slot["rss"] > 0 and 0 < slot["host_memory_used"] <= slot["host_memory_total"]
    old = next(c for c in server.get("clusters").json() if c["name"] == "old")
    assert old["usage"] == []  # a stopped cluster has no live use


def test_cost_has_exact_amounts_and_no_budget_when_none_is_set(server):
    view = server.get("cost?jobs=5").json()
    assert _exact(view["running"]["per_hour"]) == Decimal(str(PRICE))
    assert view["running"]["per_hour"]["notional"]["exact"] == view["running"]["per_hour"]["exact"]
    assert _exact(view["running"]["so_far"]) >= 0
    today, month = _exact(view["today"]), _exact(view["month"])
    assert today >= Decimal("0.1") and month >= today
    assert [j["id"] for j in view["jobs"]] == ["job-b", "job-a"]
    for job in view["jobs"]:
        _exact(job["cost"])
    assert view["budget"] is None
    assert server.get("cost?jobs=x").status_code == 400


def test_jobs_show_status_an_excerpt_duration_and_cost(server):
    jobs = {j["id"]: j for j in server.get("jobs").json()}
    assert jobs["job-a"]["status"] == "done" and jobs["job-a"]["cell"] == "import torch"
    assert jobs["job-a"]["notebook"] == "exp/train.ipynb" and jobs["job-b"]["notebook"] is None
    # What the sidebar titles and groups a job by: In [7] of exp/train.ipynb, cluster exp1.
    assert (jobs["job-a"]["cell_number"], jobs["job-a"]["cluster"]) == (7, "exp1")
    assert (jobs["job-b"]["cell_number"], jobs["job-b"]["cluster"]) == (None, None)
    assert jobs["job-b"]["status"] == "running"
    cell = jobs["job-b"]["cell"]
    assert len(cell) == 80 and cell.endswith("…")
    assert jobs["job-a"]["duration_seconds"] >= 0
    assert _exact(jobs["job-a"]["cost"]) >= 0


def test_logs_are_backfilled_from_a_cursor_and_by_rank(server):
    first = server.get("jobs/job-a/logs").json()
    assert [line["text"] for line in first["lines"]] == [
        "rank0 line1",
        "rank1 line1",
        "rank0 line2",
        "rank1 line2",
    ]
    rank1 = server.get("jobs/job-a/logs?rank=1").json()
    assert [(x["rank"], x["stream"]) for x in rank1["lines"]] == [(1, "stdout"), (1, "stderr")]
    server.ledger.add_lines("job-a", [(time.time(), 0, "stdout", "later")])
    after = server.get(f"jobs/job-a/logs?since={first['next']}").json()
    assert [line["text"] for line in after["lines"]] == ["later"]
    assert server.get("jobs/nope/logs").status_code == 404
    assert server.get("jobs/job-a/logs?since=-1").status_code == 400


def test_a_jobs_usage_history_is_every_ranks_samples(server):
    samples = server.get("jobs/job-a/usage").json()["samples"]
    assert [(s["rank"], s["device"], s["gpu_utilization"]) for s in samples] == [
        (0, "cuda:0", 91.0),
        (1, "cpu", None),
    ]
    assert samples[0]["gpu_memory_total"] == 24 << 30 and samples[1]["cpu_percent"] == 97.5
    assert server.get("jobs/nope/usage").status_code == 404


def test_metrics_are_every_ranks_points_from_a_cursor(server):
    first = server.get("jobs/job-a/metrics").json()
    assert [(p["rank"], p["step"], p["name"]) for p in first["points"]] == [
        (0, 1, "loss"),
        (1, 1, "loss"),
        (0, 2, "loss"),
        (1, 2, "loss"),
    ]
    assert first["points"][1]["value"] == 0.5 and first["status"] == "done"
    server.ledger.add_metrics("job-a", time.time(), 1, 3, {"loss": 0.25})
    after = server.get(f"jobs/job-a/metrics?since={first['next']}").json()
    assert [(p["rank"], p["step"], p["value"]) for p in after["points"]] == [(1, 3, 0.25)]
    assert server.get("jobs/nope/metrics").status_code == 404
    assert server.get("jobs/job-a/metrics?since=x").status_code == 400


@pytest.mark.hardening
def test_checkpoints_are_listed_and_downloaded_by_their_listed_name_only(server):
    listed = server.get("checkpoints/job-a").json()
    assert [c["step"] for c in listed] == [1, 2] and server.get("checkpoints").json() == listed
    assert listed[0]["restore"] == "%burst restore job-a step=1"
    assert server.get("checkpoints/nope").status_code == 404
    store = CheckpointStore(default_root(server.state_dir), "job-a")
    kept = {c.name: c for c in store.list()}
    reply = server.get(f"checkpoints/job-a/{listed[1]['name']}/download")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.headers["Content-Disposition"].startswith('attachment; filename="job-a-step2-')
    path = kept[listed[1]["name"]].url.removeprefix("file://")
    assert reply.content == pathlib.Path(path).read_bytes()
    escapes = ["../../ledger.sqlite", "..", "../job-a/manifest.json", listed[1]["name"] + ".ckpt"]
    for name in escapes:
        reply = server.get(f"checkpoints/job-a/{quote(name, safe='')}/download")
        assert reply.status_code == 404, name
        assert reply.json()["error"] and "Traceback" not in reply.text
    reply = server.get(f"checkpoints/{quote('..', safe='')}/{listed[1]['name']}/download")
    assert reply.status_code == 404


@pytest.mark.hardening
def test_a_download_reads_the_stores_own_file_and_a_changed_one_never_arrives_whole(server):
    store = CheckpointStore(default_root(server.state_dir), "job-dl")
    good, bad = store.save({"w": [1] * 1000}, step=1), store.save({"w": [2] * 1000}, step=2)
    folder = pathlib.Path(store.data_path(good)).parent
    # A manifest whose entry names another URL (a store writer's): it is not followed.
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["checkpoints"]:
        entry["url"] = "http://127.0.0.1:9/elsewhere.ckpt"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    reply = server.get(f"checkpoints/job-dl/{good.name}/download")
    assert reply.status_code == 200
    assert reply.content == pathlib.Path(store.data_path(good)).read_bytes()
    # Data changed under its manifest: the download is cut short, never complete.
    data = bytearray(pathlib.Path(store.data_path(bad)).read_bytes())
    data[-10] ^= 0xFF
    pathlib.Path(store.data_path(bad)).write_bytes(bytes(data))
    try:
        reply = server.get(f"checkpoints/job-dl/{bad.name}/download")
        received = reply.content
    except requests.exceptions.RequestException:
        received = b""  # the connection closed before the end: as a browser sees it
    assert received != bytes(data) and len(received) < len(data)
    assert "does not match its manifest's sha256 and signature" in server.log_path.read_text()


def test_an_internal_error_answers_json_without_a_traceback(server):
    # A row the jobs view cannot read (a start time that is not a time) forces a 500.
    server.ledger.query(
        "INSERT INTO jobs(id, source, options, started, status)"
        " VALUES ('broken', 'x', '{}', 'not-a-time', 'running')"
    )
    try:
        reply = server.get("jobs")
    finally:
        server.ledger.query("DELETE FROM jobs WHERE id = 'broken'")
    assert reply.status_code == 500
    assert reply.headers["Content-Type"].startswith("application/json")
    assert set(reply.json()) == {"error"} and "\n" not in reply.json()["error"]
    assert "Traceback" not in reply.text and "TypeError" not in reply.text
    assert "Traceback" in server.log_path.read_text()  # it went to the log instead


def test_cancel_refuses_an_ended_job_and_records_a_foreground_ones_request(server):
    reply = server.post("jobs/job-a/cancel")
    assert reply.status_code == 409 and "not running" in reply.json()["error"]
    assert server.post("jobs/nope/cancel").status_code == 404
    # A foreground cell's kernel is busy running it: the request waits in the ledger for it.
    reply = server.post("jobs/job-b/cancel")
    assert reply.status_code == 200 and reply.json() == {"id": "job-b", "status": "cancelling"}
    assert server.ledger.cancel_requested("job-b") is not None


def test_the_idle_timeout_is_validated_and_set_on_the_cluster(server):
    for body in ({"minutes": 0}, {"minutes": "5"}, {"minutes": True}, {"x": 1}, [5]):
        assert server.post("clusters/live/idle", json=body).status_code == 400, body
    assert server.post("clusters/live/idle", data=b"{not json").status_code == 400
    assert server.post("clusters/nope/idle", json={"minutes": 5}).status_code == 404
    reply = server.post("clusters/live/idle", json={"minutes": 45})
    assert reply.status_code == 200, reply.text
    assert reply.json()["idle_minutes"] == 45
    assert cluster_record(server.state_dir, "live")["idle"] == 45
    live = next(c for c in server.get("clusters").json() if c["name"] == "live")
    assert live["idle_minutes"] == 45 and 30 * 60 < live["idle_remaining_seconds"] <= 45 * 60


def test_stop_ends_the_cluster_now(server):
    assert server.post(f"clusters/{quote('../live', safe='')}/stop").status_code == 404
    pid = cluster_record(server.state_dir, "live")["pid"]
    reply = server.post("clusters/live/stop")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"stopped": ["live"]}
    server.node.wait(timeout=30)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert cluster_record(server.state_dir, "live") is None
    live = next(c for c in server.get("clusters").json() if c["name"] == "live")
    assert live["state"] == "stopped"
    assert server.post("clusters/live/stop").status_code == 404
