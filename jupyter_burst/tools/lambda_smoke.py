"""``make lambda-smoke`` (``python -m jupyter_burst.tools.lambda_smoke``): one real cell on one
real Lambda Cloud GPU.

For a user with a Lambda account, to see the whole path work before trusting it with a big
job: a fresh kernel (its own state folder) lists the 1-GPU offers, runs one cell on the
cheapest with ``idle=2``, shows ``%burst cost``, runs ``%burst down``, then asks Lambda's API
whether any machine or firewall ruleset of this run's cluster is left. It always tears down,
also when a step fails; the exit status says PASS (0) or FAIL (1); a missing setting is one
line and exit status 2, before anything is launched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Callable

from jupyter_burst import config
from jupyter_burst.clusters.lambda_cloud import api, firewall, machines, node_key
from jupyter_burst.errors import ClusterError
from jupyter_burst.tools.smoke import Notebook, Run, spent

CELL = """\
%%burst provider=lambda gpus=1 idle=2 cluster={cluster}
try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
except ImportError:
    gpu = "no CUDA (torch is not in the notebook's environment)"
print("smoke: GPU:", gpu)
"""


def check_settings() -> list[str]:
    """One line per setting the smoke test needs and does not have (nothing is launched yet)."""
    problems = []
    for check in (api.require_key, node_key.node_key):
        try:
            check()
        except ClusterError as exc:
            problems.append(str(exc))
    if not config.get("lambda.client-cidr"):
        problems.append(
            "burst: the smoke test needs burst.lambda.client-cidr: set this machine's public "
            "address as a /32, e.g. DASK_BURST__LAMBDA__CLIENT_CIDR=203.0.113.7/32"
        )
    return problems


def _client() -> api.LambdaApi:
    return api.LambdaApi(api.require_key())


def leftovers(cluster: str) -> list[str]:
    """Machines (not terminated) and rulesets of this run's cluster."""
    client, mine = _client(), f"{cluster}-"  # cluster ids are NAME-<8 hex>
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


def clean_up(cluster: str) -> None:
    """What ``%burst down`` left of this run's cluster: terminated, its rulesets deleted."""
    client, mine = _client(), f"{cluster}-"
    ids = [
        str(m["id"])
        for m in machines.ours(client)
        if machines.tag(m, "burst-cluster").startswith(mine)
    ]
    machines.terminate(client, ids)
    for ruleset in firewall.ours(client):
        if str(ruleset.get("name")).startswith(firewall.NAME_PREFIX + mine):
            firewall.delete(client, str(ruleset["id"]), wait=120)


def smoke(cell_timeout: float, echo: Callable[[str], None] = print, state_dir: str = "") -> Run:
    cluster = f"smoke-{uuid.uuid4().hex[:6]}"
    state_dir = state_dir or tempfile.mkdtemp(prefix="burst-smoke-")
    env = {**os.environ, "DASK_BURST__STATE_DIR": state_dir, "DASK_BURST__PROVIDERS": "[lambda]"}
    run = Run(cluster)
    echo(f"smoke: cluster {cluster}, state folder {state_dir}")
    notebook = None
    downed = False
    try:
        notebook = Notebook(env, echo)
        steps = [
            ("load", "%load_ext jupyter_burst", 60),
            ("offers", "%burst offers gpus=1", 120),
            ("cell", CELL.format(cluster=cluster), cell_timeout),
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
            clean_up(cluster)
    run.cost = spent(state_dir, cluster)
    try:
        run.leftovers = leftovers(cluster)
    except ClusterError as exc:  # a check that cannot run is no PASS
        run.leftovers = [f"Lambda's API could not be asked ({exc})"]
    if run.leftovers:
        clean_up(cluster)  # reported as a failure, and still not left to bill
    return run


def summary(run: Run) -> str:
    lines = ["", f"smoke: {'PASS' if run.passed else 'FAIL'} (cluster {run.cluster})"]
    for step in run.steps:
        mark = "ok  " if step.ok else "FAIL"
        lines.append(f"  {mark} {step.name}{': ' + step.error if step.error else ''}")
    if run.leftovers:
        lines.append(f"  FAIL left after down: {'; '.join(run.leftovers)}")
    else:
        lines.append("  ok   no machine or ruleset of this cluster is left on Lambda")
    if run.cost is not None:
        lines.append(f"  cost of this run: ${run.cost:.4f} (from launch to termination)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_burst.tools.lambda_smoke", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--cell-timeout", type=float, default=1800, help="seconds for the launch and the cell"
    )
    parser.add_argument("--state-dir", default="", help="this run's state folder (default: new)")
    args = parser.parse_args(argv)
    config.refresh()
    problems = check_settings()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    run = smoke(args.cell_timeout, state_dir=args.state_dir)
    print(summary(run), flush=True)
    return 0 if run.passed else 1


if __name__ == "__main__":
    sys.exit(main())
