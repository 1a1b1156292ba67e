"""The ``gcp`` provider through a real kernel, against the fake of Compute Engine's REST API
whose instances boot as bare machines (tests/gcp_fake.py, tests/lambda_machines.py): a cell
runs on two instances over TLS, in the next zone where the first has no room, and ``%burst
down`` deletes them and their firewall rule, billed by Compute Engine's own times."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import pathlib
import subprocess
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import psutil
import pytest

from jupyter_burst.clusters.shipped_catalog import load_catalog
from jupyter_burst.store.ledger import Ledger
from tests.gcp_fake import PROJECT, RATES, TOKEN, ComputeFake
from tests.harness import REPO, burst_kernel, wait_for
from tests.lambda_machines import LambdaMachines
from tests.notebook_env import KERNEL_PYTHON, index_env, make_notebook_env

# The catalog's cheapest way to two GPUs: two N1 machines with a T4 each, in us-central1.
TYPE = "n1-standard-4+t4x1"
PRICE = next(o.price_per_hour for o in load_catalog("gcp")[1] if o.instance_type == TYPE)
CENT = Decimal("0.01")


@pytest.fixture
def compute(tmp_path: pathlib.Path) -> Iterator[ComputeFake]:
    fake = ComputeFake()
    fake.machines = LambdaMachines(tmp_path / "machines")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def gcp_notebook_python(tmp_path_factory) -> pathlib.Path:
    """A notebook environment that has Compute Engine's client too (one per test process)."""
    base = tmp_path_factory.mktemp("gcp-notebook-env")
    return make_notebook_env(base / "venv", base / "uv-cache", extra=("google-cloud-compute",))


@pytest.fixture
def kernel_env(
    compute: ComputeFake,
    tmp_path: pathlib.Path,
    gcp_notebook_python: pathlib.Path,
    env_cache: pathlib.Path,
) -> dict[str, str]:
    hosts = tmp_path / "on-the-machines"
    hosts.mkdir()
    return {
        "DASK_BURST__GCP__API_ENDPOINT": compute.url,
        "DASK_BURST__GCP__BILLING_ENDPOINT": compute.url,
        "DASK_BURST__GCP__PROJECT": PROJECT,
        "DASK_BURST__GCP__ZONES": "us-central1-a,us-central1-b",
        "DASK_BURST__GCP__CLIENT_CIDR": "127.0.0.1/32",
        "DASK_BURST__GCP__SSH_USER": getpass.getuser(),
        "DASK_BURST__GCP__SSH_PORT": str(compute.machines.port),
        "DASK_BURST__GCP__BOOT_TIMEOUT": "120",
        "DASK_BURST__GCP__POWER_OFF": "true",  # no guest shutdown on this machine
        "DASK_BURST__SSH__REMOTE_DIR": str(hosts),
        **index_env(env_cache),
        KERNEL_PYTHON: str(gcp_notebook_python),
    }


def test_a_cell_runs_on_two_gcp_instances_and_down_deletes_them_billed_to_the_cent(
    compute, kernel_env, state_dir, workdir
):
    compute.exhausted.add(("us-central1-a", "n1-standard-4"))
    with burst_kernel(state_dir, workdir, kernel_env) as kernel:
        run = kernel.ok(
            "%%burst provider=gcp gpus=2 return=gather\n"
            "import os\n"
            "where = os.environ['JUPYTER_BURST_HOST_KEY_PROOF']\n"
            "rank = burst.rank\n",
            timeout=300,  # each instance builds the notebook's environment first
        )
        assert f"launching {TYPE} × 2 " in run.stdout, run.stdout
        assert (
            f"burst: GCP has no room for {TYPE} in us-central1-a now "
            "(ZONE_RESOURCE_POOL_EXHAUSTED); trying the next" in run.stdout
        ), run.stdout
        shown = kernel.ok("import json; print(json.dumps(dict(zip(rank, where))))").stdout
        booted = compute.machines.machines
        ranks = {int(r): pathlib.Path(p).parent.parent.name for r, p in json.loads(shown).items()}
        assert sorted(ranks) == [0, 1] and set(ranks.values()) == set(booted), ranks

        instances = compute.running()
        assert len(instances) == 2
        assert {i["zone"].rsplit("/", 1)[-1] for i in instances} == {"us-central1-b"}
        for instance in instances:
            assert instance["labels"]["burst-cluster"].startswith("default-")
            assert set(instance["labels"]) == {
                "burst-cluster", "burst-owner", "burst-role", "burst-expires"
            }  # fmt: skip
            scheduling = instance["scheduling"]
            assert scheduling["onHostMaintenance"] == "TERMINATE"
            assert scheduling["instanceTerminationAction"] == "DELETE"
            assert int(scheduling["maxRunDuration"]["seconds"]) == 720 * 60
            metadata = {m["key"]: m["value"] for m in instance["metadata"]["items"]}
            assert "PRIVATE KEY" not in json.dumps(instance)
            assert metadata["ssh-keys"].startswith(f"{getpass.getuser()}:ssh-ed25519 ")
            assert instance["disks"][0]["autoDelete"] is True
            (accelerator,) = instance["guestAccelerators"]  # an N1 gets its T4 attached
            assert accelerator["acceleratorType"].endswith("/acceleratorTypes/nvidia-tesla-t4")
        (rule,) = compute.firewalls.values()
        assert rule["sourceRanges"] == ["127.0.0.1/32"]
        assert rule["targetTags"] == rule["sourceTags"] == instances[0]["tags"]["items"]
        keys = list(
            pathlib.Path(kernel_env["DASK_BURST__SSH__REMOTE_DIR"]).glob("*/*/tls/node.key")
        )
        assert len(keys) == 2 and all(k.stat().st_mode & 0o077 == 0 for k in keys)

        ledger = Ledger(state_dir / "ledger.sqlite")
        rows = ledger.query("SELECT * FROM nodes WHERE provider = 'gcp' ORDER BY role")
        assert [r["role"] for r in rows] == ["head", "worker"]
        assert all(r["price_per_hour"] == PRICE and r["notional"] == 0 for r in rows), rows

        kernel.ok("%burst down", timeout=120)
        assert compute.running() == [] and compute.firewalls == {}
        wait_for(
            lambda: all(not compute.machines.processes(i) for i in booted),
            30,
            "the deleted instances to power off",
        )
        rows = {r["id"]: r for r in ledger.query("SELECT * FROM nodes WHERE provider = 'gcp'")}
        assert set(rows) == {i["name"] for i in instances}
        for name, row in rows.items():
            # From its start to its deletion, by Compute Engine's own times (to the
            # millisecond they are given in): the same bill, to the cent, however long it ran.
            start, end = compute.times[name]
            assert abs(row["started"] - start) < 0.002 and abs(row["stopped"] - end) < 0.002
            assert _usd((row["stopped"] - row["started"]) * PRICE) == _usd((end - start) * PRICE)


def _usd(amount_seconds: float) -> Decimal:
    return (Decimal(amount_seconds) / 3600).quantize(CENT, rounding=ROUND_HALF_UP)


def test_an_idle_cluster_stops_every_instance_without_the_kernel_and_the_next_look_deletes_them(
    compute, kernel_env, state_dir, workdir
):
    env = dict(kernel_env, DASK_BURST__GCP__POWER_OFF="shutdown -h now")
    idle = 10
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok(f"%%burst provider=gcp gpus=2 idle={idle}s\nx = 1\n", timeout=300)
        names = [i["name"] for i in compute.running()]
        assert len(names) == 2
        kernel.kill()  # no kernel, no `%burst down`: only the nodes' watchdogs are left
        # Each node's guest shutdown stops its instance: the machine's bill ends there.
        wait_for(lambda: not compute.running(), idle + 90, "the idle instances to stop")
        assert len(compute.stopped()) == 2  # their disks are still there, still billing
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%burst status", timeout=120)  # a look, not a %burst down
        assert compute.stopped() == [] and compute.firewalls == {}  # deleted, disks too
        rows = {
            r["id"]: r for r in Ledger(state_dir / "ledger.sqlite").query("SELECT * FROM nodes")
        }
        for name in names:  # billed to each machine's stop, by Compute Engine's times
            start, stop = compute.times[name][:2]
            assert abs(rows[name]["started"] - start) < 0.002
            assert abs(rows[name]["stopped"] - stop) < 0.002


def test_with_a_node_service_account_an_idle_cluster_deletes_itself_disks_and_all(
    compute, kernel_env, state_dir, workdir
):
    env = dict(
        kernel_env,
        DASK_BURST__GCP__NODE_SERVICE_ACCOUNT="burst-node@burst-tests.iam.gserviceaccount.com",
        DASK_BURST__GCP__METADATA_URL=compute.url,
        DASK_BURST__GCP__POWER_OFF="shutdown -h now",
    )
    idle = 10
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok(f"%%burst provider=gcp gpus=2 idle={idle}s\nx = 1\n", timeout=300)
        head, worker = sorted(compute.running(), key=lambda i: i["name"])
        assert [a["email"] for a in head["serviceAccounts"]] == [
            "burst-node@burst-tests.iam.gserviceaccount.com"
        ]
        assert "serviceAccounts" not in worker  # the head alone may delete
        kernel.kill()  # no kernel, no `%burst down`, no look: only the head's watchdog
        wait_for(lambda: not compute.instances, idle + 90, "the head to delete its cluster")
    # Deleted, not stopped: no disk left; by the account's token from the metadata server.
    assert compute.stopped() == [] and f"Bearer {TOKEN}" in compute.authorizations


def test_googles_deadline_deletes_the_instances_at_the_lifetime_whatever_the_watchdog_does(
    compute, kernel_env, state_dir, workdir
):
    lifetime = 0.75  # minutes: max_run_duration, with DELETE
    env = dict(kernel_env, DASK_BURST__GCP__MAX_LIFETIME=str(lifetime))
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%%burst provider=gcp gpus=1 idle=60\nx = 1\n", timeout=300)
        (instance,) = compute.running()
        assert int(instance["scheduling"]["maxRunDuration"]["seconds"]) == int(lifetime * 60)
        kernel.kill()
        for machine in compute.machines.machines:  # no watchdog left to end anything
            for process in compute.machines.processes(machine):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        wait_for(lambda: not compute.instances, lifetime * 60 + 60, "Google's deadline")


def test_gc_deletes_a_lost_clusters_instances_and_rule_and_spares_a_forming_one(
    compute, kernel_env, state_dir, workdir
):
    """A cluster whose kernel died mid-start has no record: gc finds its instances by label."""
    from tests.gcp_fake import ZONES

    def insert(name: str, cluster: str, created: float, status: str = "RUNNING") -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S-00:00", time.gmtime(created))
        compute.instances[(ZONES[0], name)] = {
            "name": name, "status": status, "creationTimestamp": stamp,
            "lastStartTimestamp": stamp, "lastStopTimestamp": stamp,
            "zone": f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{ZONES[0]}",
            "machineType": "zones/x/machineTypes/g2-standard-4",
            "labels": {"burst-cluster": cluster, "burst-owner": "alice-laptop",
                       "burst-expires": str(int(time.time() + 3600))},
        }  # fmt: skip
        compute.times[name] = [created]

    now = time.time()
    insert("burst-lost-1111-0", "lost-1111", now - 7200)
    insert("burst-off-2222-0", "off-2222", now - 60, status="TERMINATED")  # its disk bills
    insert("burst-new-3333-0", "new-3333", now - 60)  # may be forming
    compute.instances[(ZONES[0], "burst-theirs-0")] = dict(
        compute.instances[(ZONES[0], "burst-lost-1111-0")], name="burst-theirs-0",
        labels={"burst-cluster": "theirs", "burst-owner": "bob-desk"},
    )  # fmt: skip
    compute.firewalls["burst-lost-1111"] = {"name": "burst-lost-1111", "creationTimestamp":
                                            "2026-01-01T00:00:00.000-00:00"}  # fmt: skip
    compute.firewalls["burst-new-3333"] = {"name": "burst-new-3333", "creationTimestamp":
                                           "2026-01-01T00:00:00.000-00:00"}  # fmt: skip
    env = dict(
        kernel_env,
        DASK_BURST__GCP__OWNER="alice-laptop",
        # No AWS account here: that part of gc is one line, and nothing leaves this machine.
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
    )
    with burst_kernel(state_dir, workdir, env) as kernel:
        listed = kernel.ok("%burst gc", timeout=120).stdout
        assert "burst: 2 GCP instances of alice-laptop without a live cluster:" in listed, listed
        assert "stopped (its disk bills)" in listed and "1 instance created in the last" in listed
        assert "burst-lost-1111" in listed and "burst-new-3333-0" not in listed
        assert "(AWS not cleaned up)" in listed
        done = kernel.ok("%burst gc --yes", timeout=120).stdout
        assert "burst: deleted 2 GCP instances and deleted 1 firewall rule" in done, done
    left = sorted(name for _, name in compute.instances)
    assert left == ["burst-new-3333-0", "burst-theirs-0"]
    assert list(compute.firewalls) == ["burst-new-3333"]


def test_make_gcp_smoke_runs_a_cell_downs_it_and_finds_nothing_left(compute, kernel_env, tmp_path):
    env = dict(kernel_env)
    # The user's notebook environment runs it (and so its kernel), as `make gcp-smoke` would.
    python = env.pop(KERNEL_PYTHON)
    smoke = subprocess.run(
        [python, "-m", "jupyter_burst.tools.cloud_smoke", "gcp", "--cell-timeout", "300",
         "--state-dir", str(tmp_path / "smoke-state")],
        capture_output=True, text=True, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path, timeout=420,
    )  # fmt: skip
    out = smoke.stdout
    assert smoke.returncode == 0, out + smoke.stderr
    assert "smoke: PASS" in out and "smoke: GPU: no CUDA" in out, out
    assert "  ok   no machine or firewall rule of this cluster is left on gcp" in out
    assert compute.instances == {} and compute.firewalls == {}
    assert len(compute.times) == 1  # one instance was made, and it is gone


_SPOT_TRAINING = (
    "%%burst provider=gcp gpus=1 spot=yes\n"
    "import time\n"
    "state = {'step': 0}\n"
    "saved = []\n"
    "def save_now():\n"
    "    burst.checkpoint(dict(state), step=state['step'])\n"
    "    saved.append(state['step'])\n"
    "burst.on_preempt(save_now)\n"
    "print('running', flush=True)\n"
    "deadline = time.monotonic() + 90\n"
    "while not burst.preempting and time.monotonic() < deadline:\n"
    "    state['step'] += 1\n"
    "    time.sleep(0.01)\n"
    "saw_preempting = burst.preempting\n"
)


def test_a_spot_instance_is_launched_as_spot_and_its_preemption_reaches_the_running_cell(
    compute, kernel_env, state_dir, workdir
):
    env = dict(kernel_env, DASK_BURST__GCP__METADATA_URL=compute.url)
    with burst_kernel(state_dir, workdir, env) as kernel:
        msg_id = kernel.kc.execute(_SPOT_TRAINING)

        def watch(msg: dict) -> None:
            if msg["msg_type"] == "stream" and "running" in msg["content"]["text"]:
                compute.preempted = True  # only once the cell runs: the notice comes mid-cell

        run = kernel.collect(msg_id, timeout=300, on_message=watch)
        assert run.status == "ok", run.error_text
        assert "burst: this node will be reclaimed at" in run.stderr, run.stderr
        assert "spot in us-central1" in run.stdout, run.stdout
        saw, saved = json.loads(
            kernel.ok("import json; print(json.dumps([saw_preempting, saved]))").stdout
        )
        assert saw is True and len(saved) == 1 and saved[0] >= 1
        (instance,) = compute.running()
        assert instance["scheduling"]["provisioningModel"] == "SPOT"
        assert instance["scheduling"]["instanceTerminationAction"] == "DELETE"
        rate = {part: pair[1] for part, pair in RATES["us-central1"].items()}
        spot = round(
            4 * rate["N1 Predefined Instance Core"] + 15 * rate["N1 Predefined Instance Ram"]
            + rate["Nvidia Tesla T4 GPU"], 5,
        )  # fmt: skip
        (row,) = Ledger(state_dir / "ledger.sqlite").query("SELECT * FROM nodes")
        assert row["price_per_hour"] == spot  # the Billing Catalog's Spot price, not a list one
