"""``make lambda-smoke`` / ``make gcp-smoke`` (``python -m jupyter_burst.tools.cloud_smoke
lambda|gcp``): one real cell on one real GPU of Lambda Cloud or Compute Engine.

For a user with an account, to see the whole path work before trusting it with a big job: a
fresh kernel (its own state folder) lists the 1-GPU offers, runs one cell on the cheapest with
``idle=2``, shows ``%burst cost``, runs ``%burst down``, then asks the cloud's API whether any
machine or firewall rule of this run's cluster is left. It always tears down, also when a step
fails; the exit status says PASS (0) or FAIL (1); a missing setting is one line and exit status
2, before anything is launched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from jupyter_burst import config
from jupyter_burst.clusters.gcp import machines as gcp_machines
from jupyter_burst.clusters.gcp import sdk as gcp_sdk
from jupyter_burst.clusters.lambda_cloud import api, firewall, machines, node_key
from jupyter_burst.errors import ClusterError
from jupyter_burst.tools.smoke import Notebook, Run, spent

CELL = """\
%%burst provider={provider} gpus=1 idle=2 cluster={cluster}
try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
except ImportError:
    gpu = "no CUDA (torch is not in the notebook's environment)"
print("smoke: GPU:", gpu)
"""


@dataclass(frozen=True)
class Cloud:
    """What the smoke test asks of one provider."""

    name: str  # the provider=
    needs: Callable[[], list[str]]  # one line per missing setting
    leftovers: Callable[[str], list[str]]  # what of the cluster (name prefix) is left
    clean_up: Callable[[str], None]  # end it


def _settings(checks: list[Callable[[], object]], cidr: str) -> list[str]:
    problems = []
    for check in checks:
        try:
            check()
        except ClusterError as exc:
            problems.append(str(exc))
    if not config.get(cidr):
        problems.append(
            f"burst: the smoke test needs burst.{cidr}: set this machine's public address "
            f"as a /32, e.g. DASK_BURST__{cidr.upper().replace('.', '__').replace('-', '_')}"
            "=203.0.113.7/32"
        )
    return problems


# Lambda Cloud ---------------------------------------------------------------------------


def _lambda() -> api.LambdaApi:
    return api.LambdaApi(api.require_key())


def _lambda_leftovers(cluster: str) -> list[str]:
    client, mine = _lambda(), f"{cluster}-"  # cluster ids are NAME-<8 hex>
    found = [
        f"machine {m['id']} ({m.get('status')})"
        for m in machines.ours(client)
        if machines.tag(m, "burst-cluster").startswith(mine)
        and m.get("status") not in machines.ENDED
    ]
    found += [
        f"firewall ruleset {r['id']}"
        for r in firewall.ours(client)
        if str(r.get("name")).startswith(firewall.NAME_PREFIX + mine)
    ]
    return found


def _lambda_clean_up(cluster: str) -> None:
    client, mine = _lambda(), f"{cluster}-"
    machines.terminate(
        client,
        [
            str(m["id"])
            for m in machines.ours(client)
            if machines.tag(m, "burst-cluster").startswith(mine)
        ],
    )
    for ruleset in firewall.ours(client):
        if str(ruleset.get("name")).startswith(firewall.NAME_PREFIX + mine):
            firewall.delete(client, str(ruleset["id"]), wait=120)


# GCP ------------------------------------------------------------------------------------


def _gcp_leftovers(cluster: str) -> list[str]:
    compute, mine = gcp_sdk.compute(), gcp_machines.safe(f"{cluster}-")
    found = [
        f"instance {one.name} ({one.status})"
        for one in gcp_machines.ours(compute)
        if one.labels.get("burst-cluster", "").startswith(mine)
    ]
    rules = gcp_sdk.call("a listing", compute.firewalls.list, project=compute.project)
    found += [
        f"firewall rule {rule.name}"
        for rule in rules
        if rule.name.startswith(gcp_machines.NAME_PREFIX + mine)
    ]
    return found


def _gcp_clean_up(cluster: str) -> None:
    compute, mine = gcp_sdk.compute(), gcp_machines.safe(f"{cluster}-")
    for one in gcp_machines.ours(compute):
        if one.labels.get("burst-cluster", "").startswith(mine):
            gcp_machines.delete(compute, one.zone.rsplit("/", 1)[-1], [one.name])
    for rule in gcp_sdk.call("a listing", compute.firewalls.list, project=compute.project):
        if rule.name.startswith(gcp_machines.NAME_PREFIX + mine):
            operation = gcp_sdk.call(
                "a firewall rule's deletion", compute.firewalls.delete_unary,
                project=compute.project, firewall=rule.name,
            )  # fmt: skip
            gcp_sdk.wait(compute, operation, "a firewall rule's deletion")


CLOUDS = {
    "lambda": Cloud(
        "lambda",
        lambda: _settings([api.require_key, node_key.node_key], "lambda.client-cidr"),
        _lambda_leftovers,
        _lambda_clean_up,
    ),
    "gcp": Cloud(
        "gcp",
        lambda: _settings([gcp_sdk.compute, gcp_machines.image], "gcp.client-cidr"),
        _gcp_leftovers,
        _gcp_clean_up,
    ),
}


def smoke(
    cloud: Cloud, cell_timeout: float, echo: Callable[[str], None] = print, state_dir: str = ""
) -> Run:
    cluster = f"smoke-{uuid.uuid4().hex[:6]}"
    state_dir = state_dir or tempfile.mkdtemp(prefix="burst-smoke-")
    env = {
        **os.environ,
        "DASK_BURST__STATE_DIR": state_dir,  # a fresh ledger: the cost shown is this run's
        "DASK_BURST__PROVIDERS": f"[{cloud.name}]",
    }
    run = Run(cluster)
    echo(f"smoke: cluster {cluster} on {cloud.name}, state folder {state_dir}")
    notebook = None
    downed = False
    try:
        notebook = Notebook(env, echo)
        steps = [
            ("load", "%load_ext jupyter_burst", 60),
            ("offers", "%burst offers gpus=1", 120),
            ("cell", CELL.format(provider=cloud.name, cluster=cluster), cell_timeout),
            ("cost", "%burst cost", 120),
        ]
        for name, code, timeout in steps:
            step = notebook.run(name, code, timeout)
            run.steps.append(step)
            if not step.ok:
                break
        cell = next((s for s in run.steps if s.name == "cell"), None)
        if cell is not None and cell.ok and "smoke: GPU:" not in cell.output:
            cell.ok, cell.error = False, "the cell ran but its output never came back"
    finally:
        # Always down, also after a failed or interrupted step: a smoke test must not bill.
        if notebook is not None:
            try:
                if notebook.km.is_alive():
                    step = notebook.run("down", f"%burst down {cluster}", 600)
                    step.ok = step.ok or "no cluster named" in step.error
                    run.steps.append(step)
                    downed = step.ok
            finally:
                notebook.close()
        if not downed:
            cloud.clean_up(cluster)
    run.cost = spent(state_dir, cluster)
    try:
        run.leftovers = cloud.leftovers(cluster)
    except ClusterError as exc:  # a check that cannot run is no PASS
        run.leftovers = [f"the {cloud.name} API could not be asked ({exc})"]
    if run.leftovers:
        cloud.clean_up(cluster)  # reported as a failure, and still not left to bill
    return run


def summary(run: Run, cloud: Cloud) -> str:
    lines = ["", f"smoke: {'PASS' if run.passed else 'FAIL'} (cluster {run.cluster})"]
    for step in run.steps:
        mark = "ok  " if step.ok else "FAIL"
        lines.append(f"  {mark} {step.name}{': ' + step.error if step.error else ''}")
    if run.leftovers:
        lines.append(f"  FAIL left after down: {'; '.join(run.leftovers)}")
    else:
        lines.append(f"  ok   no machine or firewall rule of this cluster is left on {cloud.name}")
    if run.cost is not None:
        lines.append(f"  cost of this run: ${run.cost:.4f} (from launch to its end)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_burst.tools.cloud_smoke", description=__doc__.splitlines()[0]
    )
    parser.add_argument("cloud", choices=sorted(CLOUDS))
    parser.add_argument(
        "--cell-timeout", type=float, default=1800, help="seconds for the launch and the cell"
    )
    parser.add_argument("--state-dir", default="", help="this run's state folder (default: new)")
    args = parser.parse_args(argv)
    config.refresh()
    cloud = CLOUDS[args.cloud]
    problems = cloud.needs()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    run = smoke(cloud, args.cell_timeout, state_dir=args.state_dir)
    print(summary(run, cloud), flush=True)
    return 0 if run.passed else 1


if __name__ == "__main__":
    sys.exit(main())
