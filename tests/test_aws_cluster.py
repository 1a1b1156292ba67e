"""``%%burst provider=aws`` end to end: moto for the AWS API, the VM emulator for the machines.

The real code path: the offer, the TLS certificates, the key bundle behind a presigned S3
URL, the security group, ``run_instances`` with the real user-data script, which the
emulator boots as local processes; the head announces its scheduler; the kernel connects
over TLS; the cell runs there. Then the machine switches itself off when idle, with the
kernel gone.
"""

from __future__ import annotations

import base64
import time
from decimal import Decimal

import pytest

from jupyter_burst.clusters.aws import prices, sdk
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.store import cost
from jupyter_burst.store.budget import usd
from jupyter_burst.store.ledger import Ledger
from tests.aws_cloud import REGION
from tests.harness import burst_kernel, wait_for


def _instances(ec2, states=("pending", "running")) -> list[dict]:
    reply = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": list(states)}]
    )
    return [i for r in reply["Reservations"] for i in r["Instances"]]


@pytest.mark.hardening
def test_a_cell_runs_on_an_emulated_ec2_cluster_over_tls_and_down_terminates_it(
    cloud, state_dir, workdir
):
    env, vms, ec2 = cloud
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("x = 20")
        run = kernel.ok(
            "%%burst provider=aws\nimport os\ny = x + 1\nwhere = os.getcwd()\n", timeout=180
        )
        assert "burst: launching g4dn.xlarge" in run.stdout, run.stdout
        assert kernel.ok("print(y)").stdout.strip() == "21"
        (head,) = _instances(ec2)
        machine = vms.machines[head["InstanceId"]]
        assert kernel.ok("print(where)").stdout.strip().startswith(str(machine.root))
        status = kernel.ok("%burst status").text
        assert "aws" in status and "tls://127.0.0.1:" in status, status

        user_data = base64.b64decode(
            ec2.describe_instance_attribute(InstanceId=head["InstanceId"], Attribute="userData")[
                "UserData"
            ]["Value"]
        ).decode()
        assert "PRIVATE KEY" not in user_data
        # The key bundle's URL lasts the boot timeout (900 s) and 2 minutes, and the boot
        # fetches it first, before the environment, which may take minutes.
        keys_url = next(ln for ln in user_data.splitlines() if ".tar" in ln and "curl" in ln)
        assert "X-Amz-Expires=1020" in keys_url
        assert user_data.index(keys_url) < user_data.index("uv pip sync")
        s3 = sdk.client("s3", REGION, endpoint_url=env["AWS_ENDPOINT_URL"])
        kept = s3.list_objects_v2(Bucket="burst-test").get("Contents", [])
        assert [o["Key"] for o in kept if o["Key"].endswith(".tar")] == []  # the key is gone
        group = head["SecurityGroups"][0]["GroupId"]
        rules = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
        opened = sorted(
            (p["FromPort"], p["ToPort"], r["CidrIp"])
            for p in rules["IpPermissions"]
            for r in p.get("IpRanges", [])
        )
        # The scheduler's port and the dashboard's, to the notebook's address only.
        assert opened == [(8786, 8786, "127.0.0.1/32"), (8787, 8787, "127.0.0.1/32")]

        assert "stopped default" in kernel.ok("%burst down", timeout=120).stdout
        assert _instances(ec2) == []
        wait_for(lambda: machine.off, 30, "the machine to be powered off")

    # The kernel's ledger has the node, its price in force at launch, as a bill, and its end.
    (node,) = Ledger(state_dir / "ledger.sqlite").query("SELECT * FROM nodes")
    assert (node["id"], node["provider"], node["role"]) == (head["InstanceId"], "aws", "head")
    assert node["price_per_hour"] == 0.526 and not node["notional"]
    assert node["billing_minimum"] == 60 and node["stopped"] is not None


def test_an_idle_cluster_terminates_its_machine_with_the_kernel_gone(cloud, state_dir, workdir):
    env, vms, ec2 = cloud
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%%burst provider=aws idle=5s\nx = 1\n", timeout=180)
        (head,) = _instances(ec2)
        kernel.kill()  # the laptop is closed: nobody is left to switch anything off
        wait_for(lambda: _instances(ec2) == [], 5 + 60, "the idle machine to terminate itself")
    machine = vms.machines[head["InstanceId"]]
    assert machine.why == "shutdown -h now"


def test_offers_lists_every_enabled_provider_cheapest_first(cloud, state_dir, workdir):
    env, vms, ec2 = cloud
    env = dict(env, DASK_BURST__PROVIDERS="[local, aws]")
    with burst_kernel(state_dir, workdir, env) as kernel:
        shown = kernel.ok("%burst offers gpus=8 spot=no").text
        rows = [line.split() for line in shown.splitlines() if line.startswith(("aws ", "local "))]
        # the local machine's notional $0 first; then AWS, cheapest first, 8 GPUs a row
        assert rows[0][:3] == ["local", "this", "machine"], shown
        prices = [float(row[-1].rstrip("*")) for row in rows]
        assert prices == sorted(prices) and len(rows) > 5
        assert {row[0] for row in rows} == {"local", "aws"}
        assert "shipped catalog of" in shown  # moto has no Pricing API: the catalog, said so
        bad = kernel.execute("%burst offers gpu=8")
        assert bad.evalue.startswith("burst: ") and "\n" not in bad.evalue


def test_missing_aws_settings_are_one_line_and_launch_nothing(cloud, state_dir, workdir):
    env, vms, ec2 = cloud
    env = {k: v for k, v in env.items() if k != "DASK_BURST__AWS__CLIENT_CIDR"}
    with burst_kernel(state_dir, workdir, {**env, "DASK_BURST__AWS__CLIENT_CIDR": ""}) as kernel:
        run = kernel.execute("%%burst provider=aws\nx = 1\n", timeout=120)
        assert run.traceback == [run.evalue]
        assert run.evalue.startswith("burst: say which address the notebook reaches AWS from")
    assert _instances(ec2) == []
    with burst_kernel(
        state_dir, workdir, {**env, "DASK_BURST__AWS__CLIENT_CIDR": "0.0.0.0/0"}
    ) as kernel:
        run = kernel.execute("%%burst provider=aws\nx = 1\n", timeout=120)
        assert "would open the scheduler to the whole internet" in run.evalue
    assert _instances(ec2) == []


def _inject_prices(state_dir, offers: list[Offer]) -> None:
    """moto has no Pricing API: the live-price cache stands in for it (fresh, so it is used)."""
    prices.write_cache(state_dir, [REGION], offers, time.time())


def test_two_nodes_bill_to_the_cent_from_the_machines_own_launch_and_termination_times(
    cloud, state_dir, workdir
):
    """gpus=2 on 1-GPU machines: a head and a worker node. The kernel dies; the head's idle
    watchdog ends both machines; a new kernel's ledger bills each exactly as EC2 would."""
    env, vms, ec2 = cloud
    price = 6.0  # $/h a node (injected): a cent is 6 s of one machine
    _inject_prices(
        state_dir,
        [
            Offer("aws", "g4dn.xlarge", 1, "NVIDIA T4", 16.0, 4, 16.0, REGION, False, price),
            Offer("aws", "g4dn.2xlarge", 1, "NVIDIA T4", 16.0, 8, 32.0, REGION, False, 9.0),
        ],
    )
    with burst_kernel(state_dir, workdir, env) as kernel:
        run = kernel.ok(
            "%%burst provider=aws gpus=2 idle=5s\nimport os\nhere = os.getcwd()\n",
            timeout=240,
        )
        assert "burst: launching g4dn.xlarge × 2" in run.stdout, run.stdout
        ran_in = kernel.ok("print(sorted(set(here.values())) if isinstance(here, dict) else here)")
        nodes = _instances(ec2)
        assert sorted(n["Tags"] and {t["Key"]: t["Value"] for t in n["Tags"]}["jupyter-burst:role"]
                      for n in nodes) == ["head", "worker"]  # fmt: skip
        assert all(n["InstanceType"] == "g4dn.xlarge" for n in nodes)
        for node in nodes:  # the worker node's boot script holds no key either
            script = (vms.machines[node["InstanceId"]].root / "user-data").read_text()
            assert "PRIVATE KEY" not in script and "X-Amz-Expires=1020" in script
            # the head stays up (not idle) until the worker node has joined
            assert ("--expect-slots 2" in script) == ("--role head" in script)
        roots = {str(vms.machines[n["InstanceId"]].root) for n in nodes}
        assert any(root in ran_in.stdout for root in roots), (ran_in.stdout, roots)
        kernel.kill()  # nobody is left to record when the machines end
        wait_for(lambda: _instances(ec2) == [], 5 + 60, "both idle machines to end themselves")

    with burst_kernel(state_dir, workdir, env) as kernel:
        shown = kernel.ok("%burst cost").text
    ledger = Ledger(state_dir / "ledger.sqlite")
    billed = ledger.query("SELECT * FROM nodes ORDER BY role")
    assert [n["role"] for n in billed] == ["head", "worker"]
    billed_total = Decimal(0)
    for node in billed:
        assert node["stopped"] is not None and node["price_per_hour"] == price
        ran = vms.terminated_at[node["id"]] - vms.booted_at[node["id"]]
        expected = price * max(60.0, ran) / 3600
        node_cost = cost.node_cost(node, time.time())
        assert abs(float(node_cost) - expected) < 0.005, (node, ran)
        billed_total += node_cost
    assert f"today {usd(billed_total)}" in shown, shown
