"""Nodes started over ssh on machines that are there: each runs ``python -m jupyter_burst.node``
of the notebook's environment, started by the host-side helper in a session of its own (so it
outlives the connection), its key bundle on stdin. The ``ssh`` provider starts them on its
configured hosts; the ``lambda`` provider on the machines it launched.
"""

from __future__ import annotations

import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import start_phases
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.ssh import channel, environment
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.clusters.start_phases import LAUNCHING
from jupyter_burst.clusters.tls import ClusterCerts
from jupyter_burst.errors import ClusterError

_STOP_GRACE = 20.0  # seconds a node gets to close its workers before what is left is killed


def start_nodes(
    hosts: list[Host],
    request: ClusterRequest,
    pythons: dict[tuple[str, int], str],
    *,
    provider: str,
    cluster_id: str,
    certs: ClusterCerts,
    lifetime_minutes: float,
    power_off: str = "",
    worker_power_off: str = "",
    scheduler_port: int = 0,
    settings: dict[str, str] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The head's scheduler address and the started nodes (the head first), once each runs.

    ``pythons``: the environment's python on each host (:func:`environment.ensure`).
    ``settings``: ``DASK_BURST__...`` variables every node (and so its workers) starts with.
    ``power_off``: what the head's watchdog runs when the cluster ends ("": it ends the
    node's processes, never the machine); ``worker_power_off`` the same for a worker node.
    A node that did not start leaves none running.
    """
    phases = start_phases.of(request)
    base = str(config.get("ssh.remote-dir") or ".cache/jupyter-burst")
    timeout = float(config.get("start-timeout", 60))
    started: list[dict[str, Any]] = []
    # launching k/N: a host counts once its node runs (the head's once its scheduler
    # listens); the driver then counts the workers as they join the head.
    phases.enter(LAUNCHING, done=0, total=len(hosts))
    counting = threading.Lock()  # hosts answer from several threads: counts stay in order

    def start(i: int, host: Host, role: str, scheduler: str = "") -> dict[str, Any]:
        node_args = [
            "--cluster", request.name, "--cluster-id", cluster_id, "--provider", provider,
            "--role", role, "--slots", str(host.gpus), "--idle", f"{request.idle_minutes:g}",
            "--max-lifetime", f"{lifetime_minutes:g}", "--host", host.listen,
            "--node-name", f"{request.name}-{i}-{host.listen}",
            "--power-off", power_off if role == "head" else worker_power_off,
        ]  # fmt: skip
        if role == "head":
            node_args += ["--port", str(scheduler_port)]
        else:
            node_args += ["--scheduler", scheduler]
        root = f"{base.rstrip('/')}/{cluster_id}/{i}"
        python = pythons[environment.host_key(host)]  # the environment's, built or cached
        answer = channel.helper(
            host,
            request.state_dir,
            [
                "start",
                root,
                request.name,
                role,
                f"{timeout:g}",
                python,
                *(f"{k}={v}" for k, v in (settings or {}).items()),
                "--",
                *node_args,
            ],  # fmt: skip
            stdin=certs.node_bundle(),
            timeout=timeout + 30,
        )
        node = {
            "target": host.target, "port": host.port, "python": host.python,
            "identity": host.identity, "known_hosts": host.known_hosts,
            "role": role, "gpus": host.gpus, "pid": answer["pid"], "root": answer["root"],
            "devices": [
                f"{host.listen} {'cuda:' + str(g) if g < answer['gpus'] else 'cpu'}"
                for g in range(host.gpus)
            ],
        }  # fmt: skip
        with counting:
            started.append(node)
            phases.enter(LAUNCHING, done=len(started), total=len(hosts))
        return dict(node, scheduler=answer.get("scheduler", ""))

    workers = list(enumerate(hosts))[1:]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            if scheduler_port:
                # The address is known before the head is up: the worker nodes start
                # alongside it (their workers retry until its scheduler listens).
                scheduler = f"tls://{hosts[0].listen}:{scheduler_port}"
                joined = [pool.submit(start, i, h, "worker", scheduler) for i, h in workers]
                head = start(0, hosts[0], "head")
                for future in joined:
                    future.result()
            else:
                head = start(0, hosts[0], "head")
                list(pool.map(lambda pair: start(*pair, "worker", head["scheduler"]), workers))
    except BaseException:
        # A cluster that did not come up must not leave a node running on any host.
        stop_nodes(started, request.state_dir, quiet=True)
        raise
    nodes = sorted(started, key=lambda n: n["role"] != "head")
    return head["scheduler"], nodes


def host_of(node: dict[str, Any]) -> Host:
    """The host a started node runs on, as its record keeps it."""
    return Host(
        target=node["target"], gpus=node["gpus"], port=node["port"], python=node["python"],
        identity=node.get("identity", ""), known_hosts=node.get("known_hosts", ""),
    )  # fmt: skip


def head_alive(node: dict[str, Any], state_dir: pathlib.Path) -> bool | None:
    """Whether the head node's processes still run (one ssh round trip); None: unreachable."""
    try:
        answer = channel.helper(
            host_of(node), state_dir, ["alive", node["root"], str(node["pid"])], timeout=30
        )
    except channel.Unreachable:
        return None
    return bool(answer.get("alive"))


def stop_nodes(nodes: list[dict[str, Any]], state_dir: pathlib.Path, quiet: bool) -> None:
    """Stop the nodes in parallel; unless ``quiet``, a node that may still run is an error."""

    def stop(node: dict[str, Any]) -> str:
        try:
            answer = channel.helper(
                host_of(node),
                state_dir,
                ["stop", node["root"], str(node["pid"]), f"{_STOP_GRACE:g}"],
                timeout=_STOP_GRACE + 30,
            )
        except ClusterError as exc:
            return str(exc)
        return "" if answer.get("stopped") else f"{node['target']}: pid {node['pid']} still runs"

    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [p for p in pool.map(stop, nodes) if p]
    if problems and not quiet:
        raise ClusterError(
            f"could not confirm the cluster's nodes stopped: {problems[0]}; "
            "run %burst down again, or end them on the host"
        )
