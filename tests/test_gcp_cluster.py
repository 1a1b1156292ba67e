"""The ``gcp`` provider through a real kernel, against the fake of Compute Engine's REST API
whose instances boot as bare machines (tests/gcp_fake.py, tests/lambda_machines.py): a cell
runs on two instances over TLS, in the next zone where the first has no room, and ``%burst
down`` deletes them and their firewall rule, billed by Compute Engine's own times."""

from __future__ import annotations

import getpass
import json
import pathlib
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import pytest

from jupyter_burst.clusters.shipped_catalog import load_catalog
from jupyter_burst.store.ledger import Ledger
from tests.gcp_fake import PROJECT, ComputeFake
from tests.harness import burst_kernel, wait_for
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
            # From its start to its deletion, as Compute Engine reports them, to the cent.
            start, end = compute.times[name]
            ours = _usd((row["stopped"] - row["started"]) * PRICE)
            assert ours == _usd((end - start) * PRICE), (ours, start, end, row)


def _usd(amount_seconds: float) -> Decimal:
    return (Decimal(amount_seconds) / 3600).quantize(CENT, rounding=ROUND_HALF_UP)
