"""``make aws-smoke`` (``python -m jupyter_burst.tools.smoke``): one real cell on one real AWS GPU.

For a user with a real account, to see the whole path work before trusting it with a big
job: a fresh kernel (its own state folder) lists the 1-GPU offers, runs one cell on the
cheapest (spot unless ``--spot no``) with ``idle=2``, shows ``%burst cost``, runs
``%burst down``, then asks EC2 whether any instance or security group tagged with this
run's cluster is left. The node boots ``burst.aws.image`` when it is set, else the latest
AWS Deep Learning Base GPU AMI of the region (``clusters/aws/images.py``); which, is said. It always tears down, also when a step fails; the exit status says
PASS (0) or FAIL (1); a missing setting is one line and exit status 2, before anything
is launched.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from jupyter_burst import config
from jupyter_burst.clusters.aws import gc, provision
from jupyter_burst.clusters.aws.sdk import boto3_module, ec2_clients
from jupyter_burst.errors import ClusterError
from jupyter_burst.store import cost
from jupyter_burst.store.ledger import Ledger

CELL = """\
%%burst provider=aws gpus=1 spot={spot} idle=2 cluster={cluster}
try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
except ImportError:
    gpu = "no CUDA (torch is not installed on the image)"
print("smoke: GPU:", gpu)
"""


@dataclass
class Step:
    name: str
    ok: bool
    output: str = ""
    error: str = ""


@dataclass
class Run:
    cluster: str
    steps: list[Step] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    cost: Decimal | None = None
    image: str = ""  # the launch's own line: the image and how it was found

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps) and not self.leftovers


def check_settings() -> list[str]:
    """One line per setting the smoke test needs and does not have (nothing is launched yet)."""
    problems = []
    try:
        if boto3_module().session.Session().get_credentials() is None:
            problems.append(
                "burst: no AWS credentials found; run `aws configure` or set AWS_PROFILE "
                "(check with `aws sts get-caller-identity`)"
            )
    except ClusterError as exc:
        problems.append(str(exc))
    needs = {
        "aws.bucket": "an S3 bucket of yours for the nodes' keys (created if missing), "
        "e.g. DASK_BURST__AWS__BUCKET=my-burst-bucket",
        "aws.client-cidr": "this machine's public address as a /32, "
        "e.g. DASK_BURST__AWS__CLIENT_CIDR=203.0.113.7/32",
    }
    for key, how in needs.items():
        if not config.get(key):
            problems.append(f"burst: the smoke test needs burst.{key}: set {how}")
    return problems


def image_plan() -> str:
    """Which image the run's node will boot, said before anything is launched."""
    image = config.get("aws.image")
    if image:
        return f"smoke: image {image}, as burst.aws.image says"
    return (
        "smoke: image: the latest AWS Deep Learning Base GPU AMI (Ubuntu 22.04) of the "
        "launch's region, from its public SSM parameter (burst.aws.image is unset)"
    )


class Notebook:
    """A real IPython kernel (jupyter_client) with ``%load_ext jupyter_burst``."""

    def __init__(self, env: dict[str, str], echo: Callable[[str], None]):
        from jupyter_client.manager import KernelManager

        self.echo = echo
        self.km = KernelManager(kernel_name="python3")
        self.km.kernel_spec.argv[0] = sys.executable  # this Python, with jupyter_burst
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, name: str, code: str, timeout: float) -> Step:
        """Run one cell, echoing its output as it comes; its step (ok unless it raised)."""
        self.echo(f"\n>>> {code.splitlines()[0]}")
        msg_id = self.kc.execute(code)
        out, error = [], ""
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                self.km.interrupt_kernel()
                return Step(name, False, "".join(out), f"did not finish within {timeout:g} s")
            try:
                msg = self.kc.get_iopub_msg(timeout=1.0)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
                self.echo(content["text"].rstrip("\n"))
            elif kind in ("display_data", "execute_result"):
                text = content["data"].get("text/plain", "")
                out.append(text + "\n")
                self.echo(text)
            elif kind == "error":
                error = content["evalue"]
                self.echo(error)
            elif kind == "status" and content["execution_state"] == "idle":
                return Step(name, not error, "".join(out), error)

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)


def leftovers(cluster: str) -> list[str]:
    """Instances (not yet shutting down) and security groups tagged with this run's cluster."""

    clients = ec2_clients()
    mine = f"{cluster}-"  # cluster ids are NAME-<8 hex>
    found = []
    for region in gc.regions():
        found += [
            f"instance {i.id} ({i.state}) in {region}"
            for i in provision.find(clients, region)
            if i.cluster_id.startswith(mine)
        ]
        found += [
            f"security group {g.id} in {region}"
            for g in gc.find_groups(clients, region, None)
            if g.cluster_id.startswith(mine)
        ]
    return found


def clean_up(cluster: str) -> None:
    """What ``%burst down`` left of this run's cluster: terminated, its groups deleted."""

    clients = ec2_clients()
    mine = f"{cluster}-"
    for region in gc.regions():
        instances = [i for i in provision.find(clients, region) if i.cluster_id.startswith(mine)]
        groups = [g for g in gc.find_groups(clients, region, None) if g.cluster_id.startswith(mine)]
        if instances or groups:
            listing = gc.Listing(provision.owner(), (region,), instances, groups)
            print(gc.format_swept(gc.sweep(clients, listing)))


def spent(state_dir: str, cluster: str) -> Decimal:
    """What this run's nodes cost, from the kernel's ledger (EC2's minimum billing included)."""

    path = os.path.join(state_dir, "ledger.sqlite")
    if not os.path.exists(path):
        return Decimal(0)
    nodes = Ledger(path).query("SELECT * FROM nodes WHERE cluster_id LIKE ?", (f"{cluster}-%",))
    now = time.time()
    return sum((cost.node_cost(n, now) for n in nodes), Decimal(0))


def smoke(
    spot: str,
    cell_timeout: float,
    echo: Callable[[str], None] = print,
    state_dir: str | None = None,
) -> Run:
    cluster = f"smoke-{uuid.uuid4().hex[:6]}"
    state_dir = state_dir or tempfile.mkdtemp(prefix="burst-smoke-")
    env = {
        **os.environ,
        "DASK_BURST__STATE_DIR": state_dir,  # a fresh ledger: the cost shown is this run's
        "DASK_BURST__PROVIDERS": "[aws]",
    }
    run = Run(cluster)
    echo(f"smoke: cluster {cluster}, state folder {state_dir}")
    echo(image_plan())
    notebook = None
    downed = False
    try:
        notebook = Notebook(env, echo)
        steps = [
            ("load", "%load_ext jupyter_burst", 60),
            ("offers", f"%burst offers gpus=1 spot={spot}", 300),
            ("cell", CELL.format(spot=spot, cluster=cluster), cell_timeout),
            ("cost", "%burst cost", 120),
        ]
        for name, code, timeout in steps:
            step = notebook.run(name, code, timeout)
            run.steps.append(step)
            if not step.ok:
                break
        cell = next((s for s in run.steps if s.name == "cell"), None)
        if cell is not None:
            # The launch said which image it found, and how.
            said = [s for s in cell.output.splitlines() if s.startswith("burst: image ")]
            run.image = said[0].removeprefix("burst: image ") if said else ""
            if cell.ok and "smoke: GPU:" not in cell.output:
                cell.ok = False
                cell.error = "the cell ran but its output never came back"
    finally:
        # Always down, also after a failed or interrupted step: a smoke test must not bill.
        if notebook is not None:
            try:
                if notebook.km.is_alive():
                    step = notebook.run("down", f"%burst down {cluster}", 900)
                    # A cell that failed before its cluster existed has nothing to stop.
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
    except Exception as exc:  # a check that cannot run is no PASS
        run.leftovers = [f"EC2 could not be asked ({type(exc).__name__}: {exc})"]
    if run.leftovers:
        clean_up(cluster)  # reported as a failure, and still not left to bill
    return run


def summary(run: Run) -> str:
    lines = ["", f"smoke: {'PASS' if run.passed else 'FAIL'} (cluster {run.cluster})"]
    for step in run.steps:
        mark = "ok  " if step.ok else "FAIL"
        lines.append(f"  {mark} {step.name}{': ' + step.error if step.error else ''}")
    if run.image:
        lines.append(f"  image: {run.image}")
    if run.leftovers:
        lines.append(f"  FAIL left tagged after down: {'; '.join(run.leftovers)}")
    else:
        lines.append("  ok   nothing tagged with this cluster is left on EC2")
    if run.cost is not None:
        lines.append(f"  cost of this run: ${run.cost:.4f} (EC2 bills at least 60 s a node)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_burst.tools.smoke", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--spot", choices=("yes", "no"), default="yes", help="the market to launch on"
    )
    parser.add_argument(
        "--cell-timeout", type=float, default=1800, help="seconds for the launch and the cell"
    )
    parser.add_argument(
        "--state-dir",
        help="the state folder (ledger, price cache) of this run; default: a fresh one",
    )
    args = parser.parse_args(argv)
    config.refresh()
    problems = check_settings()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    run = smoke(args.spot, args.cell_timeout, state_dir=args.state_dir)
    print(summary(run), flush=True)
    return 0 if run.passed else 1


if __name__ == "__main__":
    sys.exit(main())
