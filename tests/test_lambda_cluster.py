"""The ``lambda`` provider through a real kernel, against the fake of Lambda's API whose
launched instances boot as bare machines (tests/lambda_fake.py, tests/lambda_machines.py):
a cell runs on two machines over TLS and ``%burst down`` ends them and their bill; an idle
cluster whose head holds the user's node key ends every machine with the kernel gone; and
no launch without the user's word on how an idle machine stops billing."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import psutil
import pytest

from jupyter_burst.store.ledger import Ledger
from tests.harness import REPO, burst_kernel, wait_for
from tests.lambda_fake import KEY, LambdaFake
from tests.lambda_machines import LambdaMachines
from tests.notebook_env import KERNEL_PYTHON, index_env

PRICE = 0.75  # gpu_1x_a10, the cheapest way to two GPUs in the fake
CENT = Decimal("0.01")


@pytest.fixture
def lambda_cloud(tmp_path: pathlib.Path) -> Iterator[LambdaFake]:
    """Lambda's API, at its own pace, whose instances boot as machines; all off afterwards."""
    fake = LambdaFake()
    fake.machines = LambdaMachines(tmp_path / "machines")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def kernel_env(
    lambda_cloud: LambdaFake,
    tmp_path: pathlib.Path,
    notebook_python: pathlib.Path,
    env_cache: pathlib.Path,
) -> dict[str, str]:
    hosts = tmp_path / "on-the-machines"
    hosts.mkdir()
    return {
        "LAMBDA_API_KEY": KEY,
        "DASK_BURST__LAMBDA__API_URL": lambda_cloud.url,
        "DASK_BURST__LAMBDA__CLIENT_CIDR": "127.0.0.1/32",
        "DASK_BURST__LAMBDA__SSH_USER": getpass.getuser(),
        "DASK_BURST__LAMBDA__SSH_PORT": str(lambda_cloud.machines.port),
        "DASK_BURST__LAMBDA__BOOT_TIMEOUT": "120",
        "DASK_BURST__SSH__REMOTE_DIR": str(hosts),
        **index_env(env_cache),
        KERNEL_PYTHON: str(notebook_python),
    }


def _node_key_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "node-key"
    path.write_text(f"api_key = {KEY}\n")
    path.chmod(0o600)
    return path


def _running(fake: LambdaFake) -> list[str]:
    return [i.id for i in fake.instances.values() if i.status != "terminated"]


def test_a_cell_runs_on_two_lambda_machines_and_down_ends_them_billed_to_the_cent(
    lambda_cloud, kernel_env, state_dir, workdir, tmp_path
):
    env = dict(kernel_env, DASK_BURST__LAMBDA__NODE_API_KEY_FILE=str(_node_key_file(tmp_path)))
    with burst_kernel(state_dir, workdir, env) as kernel:
        run = kernel.ok(
            "%%burst provider=lambda gpus=2 return=gather\n"
            "import os\n"
            "where = os.environ['JUPYTER_BURST_HOST_KEY_PROOF']\n"
            "rank = burst.rank\n",
            timeout=300,  # each machine builds the notebook's environment first
        )
        assert "launching gpu_1x_a10 × 2 " in run.stdout, run.stdout
        shown = kernel.ok("import json; print(json.dumps(dict(zip(rank, where))))").stdout
        machines = lambda_cloud.machines.machines
        ranks = {int(r): pathlib.Path(p).parent.parent.name for r, p in json.loads(shown).items()}
        assert sorted(ranks) == [0, 1] and set(ranks.values()) == set(machines), ranks

        # What Lambda was given: our key by name, the cluster's ruleset, its tags; the boot
        # script holds no key of any kind.
        instances = list(lambda_cloud.instances.values())
        assert len(instances) == 2 and {i.type_name for i in instances} == {"gpu_1x_a10"}
        for instance in instances:
            assert "PRIVATE KEY" not in instance.user_data and KEY not in instance.user_data
            tags = {t["key"]: t["value"] for t in instance.tags}
            assert tags["burst-cluster"].startswith("default-") and tags["burst-owner"]
        (ruleset,) = lambda_cloud.firewall_rulesets.values()
        assert instances[0].firewall_rulesets == [ruleset["id"]]
        sources = sorted(r["source_network"] for r in ruleset["rules"])
        addresses = sorted(f"{m.address}/32" for m in machines.values())
        assert sources == sorted(["127.0.0.1/32", *addresses]), sources
        # The TLS key reached each machine over ssh, its own only; the node key the head alone.
        keys = list(pathlib.Path(env["DASK_BURST__SSH__REMOTE_DIR"]).glob("*/*/tls/node.key"))
        assert len(keys) == 2 and all(k.stat().st_mode & 0o077 == 0 for k in keys)
        (order,) = pathlib.Path(env["DASK_BURST__SSH__REMOTE_DIR"]).glob("*/terminate.json")
        assert order.stat().st_mode & 0o077 == 0

        ledger = Ledger(state_dir / "ledger.sqlite")
        rows = ledger.query("SELECT * FROM nodes WHERE provider = 'lambda' ORDER BY role")
        assert [r["role"] for r in rows] == ["head", "worker"]
        assert all(r["price_per_hour"] == PRICE and r["notional"] == 0 for r in rows), rows

        kernel.ok("%burst down", timeout=120)
        assert not _running(lambda_cloud)
        assert not lambda_cloud.firewall_rulesets  # its ruleset went with its machines
        wait_for(
            lambda: all(not lambda_cloud.machines.processes(i) for i in machines),
            30,
            "the terminated machines to power off",
        )
        rows = {r["id"]: r for r in ledger.query("SELECT * FROM nodes WHERE provider = 'lambda'")}
        assert set(rows) == {i.id for i in instances}
        for instance in instances:
            # Billed from the launch to the termination, as Lambda counts them: Lambda's API
            # says neither time, so ours bracket its own (sent before it launched, confirmed
            # after it terminated), each within a request's round trip.
            row = rows[instance.id]
            assert 0 <= instance.launched - row["started"] < 1.0, (row, instance)
            assert 0 <= row["stopped"] - instance.terminated < 1.0, (row, instance)
            ours = _usd((row["stopped"] - row["started"]) * PRICE)
            assert ours == _usd((instance.terminated - instance.launched) * PRICE)


def test_an_idle_cluster_whose_head_holds_the_node_key_ends_every_machine_without_the_kernel(
    lambda_cloud, kernel_env, state_dir, workdir, tmp_path
):
    env = dict(kernel_env, DASK_BURST__LAMBDA__NODE_API_KEY_FILE=str(_node_key_file(tmp_path)))
    idle = 10
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok(f"%%burst provider=lambda gpus=2 idle={idle}s\nx = 1\n", timeout=300)
        assert len(_running(lambda_cloud)) == 2
        kernel.kill()  # no kernel, no `%burst down`: only the head's watchdog is left
        wait_for(lambda: not _running(lambda_cloud), idle + 90, "the head to terminate its cluster")
    wait_for(
        lambda: all(not lambda_cloud.machines.processes(i) for i in lambda_cloud.machines.machines),
        30,
        "the terminated machines to power off",
    )
    # The next kernel that looks settles it: the ledger closed, the ruleset deleted.
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%burst status", timeout=120)
        rows = Ledger(state_dir / "ledger.sqlite").query("SELECT stopped FROM nodes")
        assert len(rows) == 2 and all(r["stopped"] is not None for r in rows)
        assert not lambda_cloud.firewall_rulesets


def test_the_heads_backstop_ends_the_cluster_at_its_lifetime_when_its_watchdog_is_gone(
    lambda_cloud, kernel_env, state_dir, workdir, tmp_path
):
    lifetime = 0.6  # minutes (from the order placed on the head, after the environment)
    env = dict(
        kernel_env,
        DASK_BURST__LAMBDA__NODE_API_KEY_FILE=str(_node_key_file(tmp_path)),
        DASK_BURST__LAMBDA__MAX_LIFETIME=str(lifetime),
    )
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%%burst provider=lambda gpus=2 idle=60\nx = 1\n", timeout=300)
        kernel.kill()
        # Every node's process killed: no watchdog is left to end anything.
        for instance in lambda_cloud.machines.machines:
            for process in lambda_cloud.machines.processes(instance):
                with contextlib.suppress(psutil.NoSuchProcess):
                    if "jupyter_burst.node " in " ".join(process.cmdline()) + " ":
                        process.kill()
        wait_for(
            lambda: not _running(lambda_cloud),
            lifetime * 60 + 90,
            "the head's backstop to terminate the cluster at its lifetime",
        )
    (log,) = pathlib.Path(env["DASK_BURST__SSH__REMOTE_DIR"]).glob("*/terminate.log")
    assert "terminated this cluster's machines" in log.read_text()


def test_without_a_node_key_idle_machines_bill_until_the_next_kernel_looks_and_ends_them(
    lambda_cloud, kernel_env, state_dir, workdir
):
    env = dict(kernel_env, DASK_BURST__LAMBDA__ALLOW_WITHOUT_NODE_KEY="true")
    idle = 10
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok(f"%%burst provider=lambda gpus=2 idle={idle}s\nx = 1\n", timeout=300)
        machines = list(lambda_cloud.machines.machines)
        kernel.kill()
        # The nodes end themselves when idle; the machines, holding no key, cannot.
        wait_for(
            lambda: not any(_runs_a_node(lambda_cloud, i) for i in machines),
            idle + 90,
            "the idle nodes to end",
        )
        assert len(_running(lambda_cloud)) == 2  # still billing: what the setting accepts
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%burst status", timeout=120)  # a look, not a %burst down
        assert not _running(lambda_cloud) and not lambda_cloud.firewall_rulesets
        rows = Ledger(state_dir / "ledger.sqlite").query("SELECT stopped FROM nodes")
        assert len(rows) == 2 and all(r["stopped"] is not None for r in rows)


def test_no_launch_without_the_users_word_on_how_idle_machines_stop_billing(
    lambda_cloud, kernel_env, state_dir, workdir
):
    with burst_kernel(state_dir, workdir, kernel_env) as kernel:
        run = kernel.execute("%%burst provider=lambda gpus=1\nx = 1\n", timeout=120)
    assert run.status == "error"
    assert run.evalue.startswith("burst: a Lambda machine bills until it is terminated")
    assert "burst.lambda.node-api-key-file" in run.evalue and "\n" not in run.evalue
    assert not lambda_cloud.instances and not lambda_cloud.firewall_rulesets


def _runs_a_node(fake: LambdaFake, instance: str) -> bool:
    for process in fake.machines.processes(instance):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "jupyter_burst.node" in " ".join(process.cmdline()):
                return True
    return False


def _usd(amount_seconds: float) -> Decimal:
    return (Decimal(amount_seconds) / 3600).quantize(CENT, rounding=ROUND_HALF_UP)


def test_make_lambda_smoke_runs_a_cell_downs_it_and_finds_nothing_left(
    lambda_cloud, kernel_env, tmp_path
):
    env = dict(kernel_env, DASK_BURST__LAMBDA__NODE_API_KEY_FILE=str(_node_key_file(tmp_path)))
    # The user's notebook environment runs it (and so its kernel), as `make lambda-smoke` would.
    python = env.pop(KERNEL_PYTHON)
    smoke = subprocess.run(
        [python, "-m", "jupyter_burst.tools.cloud_smoke", "lambda", "--cell-timeout", "300",
         "--state-dir", str(tmp_path / "smoke-state")],
        capture_output=True, text=True, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path, timeout=420,
    )  # fmt: skip
    out = smoke.stdout
    assert smoke.returncode == 0, out + smoke.stderr
    assert "smoke: PASS" in out and "smoke: GPU: no CUDA" in out, out
    assert "  ok   no machine or firewall rule of this cluster is left on lambda" in out
    assert len(lambda_cloud.instances) == 1 and not _running(lambda_cloud)
    assert not lambda_cloud.firewall_rulesets


def test_make_lambda_smoke_without_its_settings_says_each_and_launches_nothing(
    lambda_cloud, tmp_path
):
    env = {**os.environ, "DASK_BURST__LAMBDA__API_URL": lambda_cloud.url, "PYTHONPATH": str(REPO),
           "DASK_BURST__LAMBDA__API_KEY_FILE": str(tmp_path / "none")}  # fmt: skip
    env.pop("LAMBDA_API_KEY", None)
    smoke = subprocess.run(
        [sys.executable, "-m", "jupyter_burst.tools.cloud_smoke", "lambda"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert smoke.returncode == 2, smoke.stdout + smoke.stderr
    said = smoke.stderr.splitlines()
    assert said[0].startswith("burst: Lambda Cloud needs an API key")
    assert said[1].startswith("burst: a Lambda machine bills until it is terminated")
    assert said[2].startswith("burst: the smoke test needs burst.lambda.client-cidr")
    assert not lambda_cloud.requests  # nothing was asked of Lambda


def test_offers_list_three_clouds_and_a_plain_gpus_8_cell_takes_the_cheapest_and_says_so(
    lambda_cloud, kernel_env, state_dir, workdir
):
    env = dict(
        kernel_env,
        DASK_BURST__PROVIDERS="[aws, gcp, lambda]",
        DASK_BURST__LAMBDA__ALLOW_WITHOUT_NODE_KEY="true",
        # No AWS account here: its offers are the shipped catalog's list prices.
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
    )
    lambda_cloud.price_cents["gpu_8x_v100"] = 400
    with burst_kernel(state_dir, workdir, env) as kernel:
        offers = kernel.ok("%burst offers gpus=8", timeout=120).text
        rows = [line.split() for line in offers.splitlines()]
        rows = [row for row in rows if row and row[0] in ("aws", "gcp", "lambda")]
        assert {row[0] for row in rows} == {"aws", "gcp", "lambda"}, offers
        assert "gpu_8x_a100" in offers and "gpu_8x_h100_sxm5" not in offers  # no capacity
        prices = [float(row[-1]) for row in rows]  # $/h, the last column
        assert prices == sorted(prices), offers
        # A plain gpus=8: Lambda's 8x V100, priced at $4.00/h today, beats AWS's eight T4
        # machines ($4.21/h) and GCP's ($4.32/h).
        run = kernel.ok("%%burst gpus=8\nx = 6 * 7\n", timeout=300)
        assert "cheapest offer for 8 GPUs: lambda gpu_8x_v100 " in run.stdout, run.stdout
        assert "at $4.00/h" in run.stdout, run.stdout
        assert kernel.ok("print(x)").stdout.strip() == "42"
        assert [i.type_name for i in lambda_cloud.instances.values()] == ["gpu_8x_v100"]
