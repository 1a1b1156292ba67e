"""The cluster grows to fit (issue #15): a bigger cell is never refused because its cluster is smaller.

Local: the head starts the worker processes a cell lacks, and closes them again after the
cluster's idle time of their own idleness, the head last. AWS (moto and the VM emulator):
the provider adds a worker node, quoted in one line before it is launched; the head powers
it off when it has been idle; the ledger bills both machines from their own times. And an
unnamed cluster is ``default`` on each provider: AWS cells after local ones start the AWS
one, and ``%burst status`` lists both. Real kernels and real Dask processes throughout.
"""

from __future__ import annotations

import ast
import json
import pathlib
import time
from decimal import Decimal

import psutil

from jupyter_burst.clusters import tls
from jupyter_burst.clusters.aws import prices
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.node.idle import ExtrasPolicy, IdlePolicy
from jupyter_burst.store import cost
from jupyter_burst.store.ledger import Ledger
from tests import test_ssh_provider as ssh
from tests.aws_cloud import REGION
from tests.harness import burst_kernel, burst_processes, cluster_record, wait_for

_PIDS = "%%burst gpus={n} return=gather\nimport os\npid = os.getpid()\nsize = burst.world_size\n"


def _printed(kernel, expression: str):
    return ast.literal_eval(kernel.ok(f"print({expression})").stdout.strip())


def _hold(record: dict, worker: str):
    """A client of the test's own that keeps ``worker`` busy: the cluster is not idle, and the
    slot is taken, until the future is cancelled (then close the client)."""
    from distributed import Client

    security = tls.ClusterCerts(pathlib.Path(record["tls"])).client_security()
    client = Client(record["scheduler"], security=security, timeout=30, set_as_default=False)
    future = client.submit(time.sleep, 600, workers=[worker], pure=False)
    wait_for(lambda: any(client.processing().values()), 30, f"the test's task to run on {worker}")
    return client, future


def _release(client, future) -> None:
    client.cancel(future)
    client.close(timeout=5)


# the pure rule, on a fake clock ------------------------------------------------------------


def test_added_slots_go_after_their_own_idle_time_and_any_busy_moment_restarts_it():
    policy = ExtrasPolicy(idle_seconds=60)
    policy.add("slot-1", now=0)
    policy.add("slot-2", now=0)
    assert policy.observe(set(), now=59) == []
    assert policy.observe({"slot-2"}, now=59) == []  # slot-2 was busy: its countdown restarts
    assert policy.observe(set(), now=60) == ["slot-1"]
    policy.forget("slot-1")
    assert policy.observe(set(), now=118) == []
    assert policy.remaining("slot-2", now=118) == 1
    assert policy.observe(set(), now=119) == ["slot-2"]


def test_a_unit_counts_from_when_it_joined_and_a_cell_on_its_way_restarts_every_countdown():
    policy = ExtrasPolicy(idle_seconds=10)
    policy.add("node-a", now=0)
    policy.add("node-b", now=8)  # a node that took longer to boot counts from its joining
    assert policy.observe(set(), now=10) == ["node-a"]
    policy.touch(now=12)  # burst_fit: a cell that needs them is coming
    assert policy.observe(set(), now=21) == []
    policy.idle_seconds = 5  # a new timeout keeps the time already idle
    assert policy.observe(set(), now=21) == ["node-a", "node-b"]


def test_the_slots_a_cluster_started_with_are_never_an_added_unit_and_the_head_goes_last():
    """The whole cluster's watchdog and the extras' rule see the same moments: an added unit is
    idle no later than the cluster is, so it never outlasts the head."""
    cluster, extras = IdlePolicy(idle_seconds=30, started=0), ExtrasPolicy(idle_seconds=30)
    extras.add("slot-1", now=0)
    for now, busy_units in [(5, {"slot-1"}), (20, set()), (34, set())]:
        cluster_due = cluster.observe(bool(busy_units) or now == 20, now)  # base slot busy at 20
        due = extras.observe(busy_units, now)
        assert not cluster_due
    assert due == []
    assert extras.observe(set(), now=35) == ["slot-1"]
    assert not cluster.observe(False, now=35) and cluster.observe(False, now=50)


# local -----------------------------------------------------------------------------------


def test_a_one_slot_cluster_then_a_gpus_2_cell_runs_instead_of_being_refused(kernel, state_dir):
    kernel.ok("%%burst\nx = 1\n")
    assert cluster_record(state_dir)["slots"] == 1
    run = kernel.ok(_PIDS.format(n=2), timeout=180)
    assert "has 1 slot" not in run.stdout + run.stderr
    assert "burst: cluster 'default' grew from 1 to 2 slots for gpus=2" in run.stdout, run.stdout
    assert _printed(kernel, "size") == [2, 2]
    assert len(set(_printed(kernel, "pid"))) == 2
    assert cluster_record(state_dir)["slots"] == 2


def test_a_gpus_4_cell_adds_worker_processes_that_close_after_the_idle_time_before_the_head(
    state_dir, workdir, no_leaks
):
    with burst_kernel(state_dir, workdir) as kernel:
        kernel.ok("%%burst idle=5s\nimport os\nbase = os.getpid()\n")
        first = cluster_record(state_dir)
        base = _printed(kernel, "base")
        run = kernel.ok(_PIDS.format(n=4), timeout=180)
        assert "grew from 1 to 4 slots for gpus=4 (3 more worker processes" in run.stdout
        pids = _printed(kernel, "pid")
        assert _printed(kernel, "size") == [4, 4, 4, 4] and len(set(pids)) == 4 and base in pids
        added = set(pids) - {base}
        # during the cell they were worker processes of this state folder's cluster
        assert added <= {p.pid for p in burst_processes(state_dir)}
        grown = cluster_record(state_dir)
        assert (grown["id"], grown["slots"], grown["devices"]) == (first["id"], 4, ["cpu"] * 4)
        assert "(3 added)" in kernel.ok("%burst status").text
        ledger = Ledger(state_dir / "ledger.sqlite")
        (node,) = ledger.query("SELECT * FROM nodes")
        assert node["slots"] == 4

        # The head's own slot stays busy: the cluster is not idle, the added slots are.
        client, future = _hold(first, "slot-0")
        try:
            wait_for(
                lambda: not any(psutil.pid_exists(p) for p in added),
                5 + 30,
                "the added worker processes to close after 5 s idle",
            )
            assert psutil.pid_exists(first["pid"]) and psutil.pid_exists(base)
            shrunk = cluster_record(state_dir)
            assert (shrunk["slots"], shrunk["devices"]) == (1, ["cpu"])
            (node,) = ledger.query("SELECT * FROM nodes")
            assert (node["slots"], json.loads(node["devices"]), node["stopped"]) == (
                1,
                ["cpu"],
                None,
            )
        finally:
            _release(client, future)
        # then the head, after its own idle time
        wait_for(lambda: not psutil.pid_exists(first["pid"]), 5 + 30, "the idle head to stop")
        assert cluster_record(state_dir) is None


# AWS (moto and the VM emulator) ----------------------------------------------------------


def _instances(ec2, states=("pending", "running")) -> list[dict]:
    reply = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": list(states)}]
    )
    return [i for r in reply["Reservations"] for i in r["Instances"]]


def _role(instance: dict) -> str:
    return {t["Key"]: t["Value"] for t in instance["Tags"]}["jupyter-burst:role"]


def test_local_cells_then_provider_aws_runs_on_the_aws_default_and_status_lists_both(
    cloud, state_dir, workdir
):
    env, vms, ec2 = cloud
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%%burst\nx = 1\n")
        local = cluster_record(state_dir, provider="local")
        run = kernel.ok("%%burst provider=aws\ny = x + 1\n", timeout=240)
        assert "runs on provider" not in run.stdout + run.stderr
        assert "burst: launching g4dn.xlarge" in run.stdout, run.stdout
        aws = cluster_record(state_dir, provider="aws")
        assert aws["name"] == "default" and aws["id"] != local["id"]
        assert kernel.ok("print(y)").stdout.strip() == "2"
        # each provider's next cell finds its own default again: nothing new is started
        kernel.ok("%%burst\nz = 3\n")
        kernel.ok("%%burst provider=aws\nw = 4\n", timeout=120)
        assert cluster_record(state_dir, provider="local")["id"] == local["id"]
        assert cluster_record(state_dir, provider="aws")["id"] == aws["id"]
        assert len(_instances(ec2)) == 1

        status = kernel.ok("%burst status").text
        # The table's rows: its first block (the starts follow a blank line), less the image
        # lines of the clusters that have one.
        table = status.split("\n\n")[0].splitlines()[1:]
        rows = sorted(tuple(line.split()[:2]) for line in table if " image: " not in line)
        assert rows == [("default", "aws"), ("default", "local")], status

        # A cluster the cell names is one cluster: on another provider, one line says so.
        kernel.ok("%%burst cluster=exp\nv = 1\n")
        named = kernel.execute("%%burst cluster=exp provider=aws\nv = 2\n", timeout=120)
        assert named.evalue == (
            "burst: cluster 'exp' runs on provider 'local', not 'aws'; name another cluster "
            "(cluster=...) or stop it with %burst down exp"
        )
        assert named.traceback == [named.evalue] and len(_instances(ec2)) == 1

        stopped = kernel.ok("%burst down default provider=local").stdout
        assert stopped.strip() == "burst: stopped default"
        assert cluster_record(state_dir, provider="aws")["id"] == aws["id"]


def _inject_prices(state_dir, offers: list[Offer]) -> None:
    """moto has no Pricing API: the live-price cache stands in for it (fresh, so it is used)."""
    prices.write_cache(state_dir, [REGION], offers, time.time())


def test_a_bigger_cell_adds_a_quoted_aws_node_that_ends_when_idle_and_both_bill_their_own_times(
    cloud, state_dir, workdir
):
    env, vms, ec2 = cloud
    price = 6.0  # $/h a node (injected): a cent is 6 s of one machine
    _inject_prices(
        state_dir,
        [Offer("aws", "g4dn.xlarge", 1, "NVIDIA T4", 16.0, 4, 16.0, REGION, False, price)],
    )
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%%burst provider=aws idle=5s\nx = 1\n", timeout=240)
        (head,) = _instances(ec2)
        run = kernel.ok(
            "%%burst provider=aws gpus=2 return=gather\nimport os\nhere = os.getcwd()\n",
            timeout=300,
        )
        quote = (
            "burst: cluster 'default' has 1 GPU and the cell needs 2: adding g4dn.xlarge "
            "(1 × NVIDIA T4 16 GiB) on-demand in us-east-1 at $6.00/h"
        )
        assert quote in run.stdout, run.stdout
        (added,) = [i for i in _instances(ec2) if i["InstanceId"] != head["InstanceId"]]
        worker = added["InstanceId"]
        assert _role(added) == "worker" and added["InstanceType"] == "g4dn.xlarge"
        assert added["SecurityGroups"] == head["SecurityGroups"]
        quoted_at = next(t for t, _, text in run.stream_times if "adding g4dn.xlarge" in text)
        assert quoted_at < vms.booted_at[worker]  # quoted before anything was billed
        script = (vms.machines[worker].root / "user-data").read_text()
        assert "--extra" in script and "PRIVATE KEY" not in script
        ran_in = set(_printed(kernel, "here"))
        roots = {str(vms.machines[i].root) for i in (head["InstanceId"], worker)}
        assert all(any(p.startswith(r) for p in ran_in) for r in roots), (ran_in, roots)
        record = cluster_record(state_dir, provider="aws")
        assert record["slots"] == 2 and worker in record["instances"]

        # The head's own slot stays busy; the added node is idle and ends by itself.
        client, future = _hold(record, "slot-0")
        try:
            wait_for(
                lambda: worker not in {i["InstanceId"] for i in _instances(ec2)},
                5 + 60,
                "the idle added node to end itself",
            )
            assert vms.machines[worker].why == "shutdown -h now"
            assert head["InstanceId"] in {i["InstanceId"] for i in _instances(ec2)}
            kernel.ok("%burst cost")  # the ledger learns the added node's end from EC2
            (row,) = Ledger(state_dir / "ledger.sqlite").query(
                "SELECT * FROM nodes WHERE id = ?", (worker,)
            )
            assert row["stopped"] is not None and row["role"] == "worker"
        finally:
            _release(client, future)
        wait_for(lambda: _instances(ec2) == [], 5 + 60, "the idle head to end itself")

    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%burst cost")
    billed = Ledger(state_dir / "ledger.sqlite").query("SELECT * FROM nodes ORDER BY role")
    assert [(n["id"], n["role"]) for n in billed] == [
        (head["InstanceId"], "head"),
        (worker, "worker"),
    ]
    for node in billed:
        assert node["stopped"] is not None and node["price_per_hour"] == price
        assert not node["notional"] and node["billing_minimum"] == 60
        ran = vms.terminated_at[node["id"]] - vms.booted_at[node["id"]]
        expected = Decimal(repr(price * max(60.0, ran) / 3600))
        assert abs(cost.node_cost(node, time.time()) - expected) < Decimal("0.005"), (node, ran)


# SSH: hosts are not added to a running cluster ---------------------------------------------

# the ssh provider tests' fixtures: a real sshd, its hosts' folder, a kernel's settings for it
sshd, hosts_dir, kernel_env = ssh.sshd, ssh.hosts_dir, ssh.kernel_env


def test_an_ssh_cluster_that_cannot_add_hosts_refuses_a_bigger_cell_in_one_line_with_the_fix(
    kernel_env, state_dir, workdir
):
    with burst_kernel(state_dir, workdir, kernel_env) as kernel:
        kernel.ok("%%burst provider=ssh\nx = 1\n", timeout=90)
        run = kernel.execute("%%burst provider=ssh gpus=2\nx = 2\n", timeout=90)
        assert run.evalue == (
            "burst: cluster 'default' has 1 slot and gpus=2 needs 2, and the ssh provider cannot "
            "add machines to a running cluster; stop it with %burst down default (the next cell "
            "starts one with 2), or name another cluster with cluster=NAME"
        )
        assert run.traceback == [run.evalue]
        assert kernel.ok("%%burst provider=ssh\ny = 3\n", timeout=90).status == "ok"


def test_a_cell_asking_for_bigger_gpus_gets_them_added_to_the_aws_cluster_and_runs_there(
    cloud, state_dir, workdir
):
    env, vms, ec2 = cloud
    _inject_prices(
        state_dir,
        [
            Offer("aws", "g4dn.xlarge", 1, "NVIDIA T4", 16.0, 4, 16.0, REGION, False, 6.0),
            Offer("aws", "g5.xlarge", 1, "NVIDIA A10G", 24.0, 4, 16.0, REGION, False, 9.0),
        ],
    )
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%%burst provider=aws\nx = 1\n", timeout=240)
        (head,) = _instances(ec2)
        assert head["InstanceType"] == "g4dn.xlarge"
        run = kernel.ok(
            "%%burst provider=aws gpu_mem=20\nimport os\nhere = os.getcwd()\n", timeout=300
        )
        assert (
            "burst: cluster 'default' has 0 GPUs with >= 20 GiB and the cell needs 1: adding "
            "g5.xlarge (1 × NVIDIA A10G 24 GiB) on-demand in us-east-1 at $9.00/h"
        ) in run.stdout, run.stdout
        (added,) = [i for i in _instances(ec2) if i["InstanceId"] != head["InstanceId"]]
        assert added["InstanceType"] == "g5.xlarge" and _role(added) == "worker"
        here = kernel.ok("print(here)").stdout.strip()
        assert here.startswith(str(vms.machines[added["InstanceId"]].root)), here
        # the next cell that asks for nothing in particular is not kept off the first machine
        kernel.ok("%%burst provider=aws\nimport os\nthere = os.getcwd()\n", timeout=60)
        assert len(_instances(ec2)) == 2
