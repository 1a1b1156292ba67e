"""Pre-warm (issue #17): the server starts a ``%%burst`` line's cluster ahead of its cell,
only while ``burst.prewarm`` is on, once, and an unused pre-warmed cluster stops by itself.

A real ``jupyter server`` (the extension's ``POST /jupyter-burst/prewarm``, as the JupyterLab
extension calls it) and a real kernel that turns pre-warm on with ``%burst prewarm on``, on
one state folder and one Dask config folder; the clusters are real local ones.
"""

from __future__ import annotations

import pathlib

import pytest
import requests

from jupyter_burst.clusters import start_phases
from jupyter_burst.store.ledger import Ledger
from tests.harness import burst_kernel, burst_processes, cluster_record, stop_clusters, wait_for
from tests.jupyter_server_fixture import API, jupyter_server, server_env

PRICE = 36  # notional $/hour of a local cluster


@pytest.fixture
def server(tmp_path: pathlib.Path, state_dir: pathlib.Path, no_leaks):
    env = dict(server_env(tmp_path, state_dir), DASK_BURST__LOCAL__PRICE_PER_HOUR=str(PRICE))
    with jupyter_server(tmp_path, env) as running:
        running.env = env  # type: ignore[attr-defined]
        try:
            yield running
        finally:
            stop_clusters(state_dir)


def _post(server, body, token: bool = True) -> requests.Response:
    headers = {"Authorization": f"token {server.token}"} if token else {}
    return requests.post(server.url + API + "prewarm", json=body, headers=headers, timeout=90)


def _starts(state_dir: pathlib.Path, name: str) -> list[start_phases.Start]:
    ledger = Ledger(state_dir / "ledger.sqlite")
    try:
        return [s for s in start_phases.recent(ledger, 0) if s.name == name]
    finally:
        ledger.close()


def test_prewarm_starts_nothing_while_off_and_refuses_what_is_not_a_line(
    server, state_dir, workdir
):
    reply = _post(server, {"line": "cluster=cold"})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "state": "off",
        "message": "pre-warm is off (burst.prewarm); %burst prewarm on turns it on",
    }
    for body in ({}, {"line": 3}, {"line": "a\nb"}, ["gpus=1"], {"line": "x" * 2001}):
        reply = _post(server, body)
        assert reply.status_code == 400 and "\n" not in reply.json()["error"], (body, reply.text)
    assert _post(server, {"line": ""}, token=False).status_code in (401, 403)

    # Turned on and off again in a kernel: off means off, whatever was on before.
    with burst_kernel(state_dir, workdir, server.env) as kernel:
        kernel.ok("%burst prewarm on")
        assert kernel.ok("%burst prewarm off").stdout.strip() == (
            "burst: pre-warm is off (burst.prewarm); %burst prewarm on turns it on"
        )
        refused = kernel.execute("%burst prewarm maybe")
        assert refused.status == "error" and refused.evalue == (
            "burst: write %burst prewarm on, %burst prewarm off, or %burst prewarm to see which it is"
        )
    assert _post(server, {"line": "cluster=cold"}).json()["state"] == "off"
    assert cluster_record(state_dir, "cold") is None and not _starts(state_dir, "cold")
    assert not burst_processes(state_dir)


def test_prewarm_starts_a_lines_cluster_once_and_unused_it_stops_after_its_idle_time(
    server, state_dir, workdir
):
    with burst_kernel(state_dir, workdir, server.env) as kernel:
        said = kernel.ok("%burst prewarm on").stdout
    # Turning it on says what it costs: the default shape's price, and when it stops.
    assert said.startswith("burst: pre-warm is on: in JupyterLab, a cell that begins with %%burst")
    assert (
        f"A plain %%burst cell's cluster (gpus=1 on local) costs ${PRICE}.00/h notional while it "
        "waits for its cell, and stops after 20 min idle if none comes" in said
    ), said

    assert _post(server, {"line": "gpuz=2"}).json() == {
        "state": "invalid",
        "message": "burst: unknown option 'gpuz' (did you mean 'gpus'?); known: "
        + _known_options(),
    }
    assert _post(server, {"line": "gpus=auto cluster=auto"}).json()["state"] == "skipped"

    first = _post(server, {"line": "cluster=warm idle=4s"}).json()
    assert first == {
        "cluster": "warm",
        "provider": "local",
        "gpus": 1,
        "state": "starting",
        "message": "pre-warming cluster 'warm' on local",
    }
    # Asked again meanwhile (the same line, or another line of the same cluster): no second start.
    assert _post(server, {"line": "cluster=warm idle=4s"}).json()["state"] in (
        "starting",
        "running",
    )
    assert _post(server, {"line": "cluster=warm  idle=4s gpus=1"}).json()["state"] in (
        "starting",
        "running",
    )
    wait_for(lambda: cluster_record(state_dir, "warm"), 60, "the pre-warmed cluster to start")
    wait_for(
        lambda: [s.state for s in _starts(state_dir, "warm")] == ["running"],
        60,
        "its start to be over",
    )
    (start,) = _starts(state_dir, "warm")
    assert (
        start.purpose == "prewarm" and start.cluster_id == cluster_record(state_dir, "warm")["id"]
    )
    assert [p.label() for p in start.phases] == [
        "quote",
        "launching 1/1",
        "booting",
        "workers joined 1/1",
    ]
    wait_for(
        lambda: _post(server, {"line": "cluster=warm idle=4s"}).json()["state"] == "running",
        30,
        "the server to say the cluster runs",
    )
    assert len(_starts(state_dir, "warm")) == 1

    # Nobody used it: it stops after its idle time, like any cluster, with no one's help.
    ledger = Ledger(state_dir / "ledger.sqlite")

    def stop_reason() -> str | None:
        (row,) = ledger.query("SELECT stop_reason FROM clusters WHERE id = ?", [start.cluster_id])
        return row["stop_reason"]

    try:
        reason = wait_for(stop_reason, 60, "the unused cluster to stop by itself")
    finally:
        ledger.close()
    assert reason.startswith("idle for"), reason
    assert cluster_record(state_dir, "warm") is None
    wait_for(lambda: not burst_processes(state_dir), 30, "its processes to exit")


def _known_options() -> str:
    from jupyter_burst.kernel import options

    return ", ".join(options._PARSERS)
