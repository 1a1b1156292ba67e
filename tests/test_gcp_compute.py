"""The GCP provider's Compute Engine clients (clusters/gcp/sdk.py) against the local fake of
the Compute REST endpoints (tests/gcp_fake.py): long-running calls waited for at the same
endpoint, labels and metadata as sent, capacity and quota in an operation's error as one line
a launch can move on from, and the settings checked before any call."""

from __future__ import annotations

import os
import subprocess
import sys

import dask.config
import pytest

from jupyter_burst.clusters.gcp import sdk
from jupyter_burst.errors import ClusterError
from tests.gcp_fake import PROJECT, ComputeFake
from tests.harness import REPO

ZONE = "us-central1-a"


@pytest.fixture
def fake(monkeypatch):
    server = ComputeFake().start()
    monkeypatch.setenv("DASK_BURST__GCP__API_ENDPOINT", server.url)
    monkeypatch.setenv("DASK_BURST__GCP__BILLING_ENDPOINT", server.url)
    monkeypatch.setenv("DASK_BURST__GCP__PROJECT", PROJECT)
    dask.config.refresh()
    yield server
    server.stop()
    monkeypatch.undo()
    dask.config.refresh()


def _instance(name: str, machine_type: str = "g2-standard-4") -> dict:
    return {
        "name": name,
        "machine_type": f"zones/{ZONE}/machineTypes/{machine_type}",
        "labels": {"burst-cluster": "gpu-1234", "burst-owner": "alice-laptop"},
        "metadata": {"items": [{"key": "startup-script", "value": "#!/bin/bash\necho hi\n"}]},
        "scheduling": {
            "provisioning_model": "SPOT",
            "instance_termination_action": "DELETE",
            "max_run_duration": {"seconds": 3600},
            "on_host_maintenance": "TERMINATE",
        },
        "network_interfaces": [
            {"access_configs": [{"name": "external", "type_": "ONE_TO_ONE_NAT"}]}
        ],
    }


def _insert(compute: sdk.Compute, body: dict, zone: str = ZONE) -> None:
    module = sdk.compute_v1()
    operation = sdk.call(
        "an insert", compute.instances.insert_unary, project=compute.project, zone=zone,
        instance_resource=module.Instance(body),
    )  # fmt: skip
    sdk.wait(compute, operation, "an insert", zone)


def test_an_instance_is_inserted_waited_for_found_with_its_labels_and_deleted(fake):
    compute = sdk.compute()
    _insert(compute, _instance("burst-gpu-1234-0"))
    sent = fake.instances[(ZONE, "burst-gpu-1234-0")]
    assert sent["labels"] == {"burst-cluster": "gpu-1234", "burst-owner": "alice-laptop"}
    assert sent["scheduling"]["provisioningModel"] == "SPOT"
    assert sent["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert sent["scheduling"]["maxRunDuration"]["seconds"] in ("3600", 3600)
    found = compute.instances.get(project=PROJECT, zone=ZONE, instance="burst-gpu-1234-0")
    assert found.status == "RUNNING" and found.labels["burst-cluster"] == "gpu-1234"
    assert found.network_interfaces[0].access_configs[0].nat_i_p == "127.0.0.1"
    listed = compute.instances.list(project=PROJECT, zone=ZONE)
    assert [i.name for i in listed] == ["burst-gpu-1234-0"]
    operation = compute.instances.delete_unary(
        project=PROJECT, zone=ZONE, instance="burst-gpu-1234-0"
    )
    sdk.wait(compute, operation, "a delete", ZONE)
    assert fake.running() == []
    with pytest.raises(sdk.GcpError, match="^burst: Compute Engine answered notFound: "):
        sdk.call("a get", compute.instances.get, project=PROJECT, zone=ZONE, instance="gone")


@pytest.mark.parametrize(
    "setup, code",
    [
        (lambda f: f.exhausted.add((ZONE, "a2-highgpu-1g")), "ZONE_RESOURCE_POOL_EXHAUSTED"),
        (lambda f: f.over_quota.add("a2-highgpu-1g"), "QUOTA_EXCEEDED"),
    ],
)
def test_capacity_and_quota_come_back_as_one_line_the_launch_moves_on_from(fake, setup, code):
    setup(fake)
    compute = sdk.compute()
    with pytest.raises(sdk.GcpError) as refused:
        _insert(compute, _instance("burst-gpu-1234-0", "a2-highgpu-1g"))
    assert refused.value.code == code and refused.value.capacity
    assert str(refused.value).startswith(f"burst: Compute Engine answered {code}: ")
    assert "\n" not in str(refused.value)
    assert fake.running() == []


def test_a_firewall_is_made_and_deleted_through_global_operations(fake):
    compute = sdk.compute()
    module = sdk.compute_v1()
    rule = module.Firewall(
        name="burst-gpu-1234",
        network="global/networks/default",
        source_ranges=["203.0.113.7/32"],
        target_tags=["burst-gpu-1234"],
        allowed=[module.Allowed(I_p_protocol="tcp")],
    )
    operation = sdk.call(
        "a firewall", compute.firewalls.insert_unary, project=PROJECT, firewall_resource=rule
    )
    sdk.wait(compute, operation, "a firewall")
    made = fake.firewalls["burst-gpu-1234"]
    assert made["sourceRanges"] == ["203.0.113.7/32"] and made["targetTags"] == ["burst-gpu-1234"]
    operation = compute.firewalls.delete_unary(project=PROJECT, firewall="burst-gpu-1234")
    sdk.wait(compute, operation, "a firewall's deletion")
    assert fake.firewalls == {}


def test_an_endpoint_that_would_send_credentials_in_clear_and_a_missing_project_are_one_line(
    monkeypatch,
):
    monkeypatch.setenv("DASK_BURST__GCP__API_ENDPOINT", "http://compute.example.com")
    dask.config.refresh()
    with pytest.raises(ClusterError, match="credentials would travel in clear"):
        sdk.compute()
    monkeypatch.setenv("DASK_BURST__GCP__API_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("DASK_BURST__GCP__PROJECT", raising=False)
    dask.config.refresh()
    with pytest.raises(ClusterError, match="^burst: say which Google Cloud project"):
        sdk.compute()
    monkeypatch.undo()
    dask.config.refresh()


def test_make_gcp_smoke_without_credentials_or_settings_says_each_and_asks_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_BURST__GCP", "GOOGLE_"))}
    env.update(PYTHONPATH=str(REPO), NO_GCE_CHECK="True", HOME=str(tmp_path))  # no ADC here
    smoke = subprocess.run(
        [sys.executable, "-m", "jupyter_burst.tools.cloud_smoke", "gcp"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert smoke.returncode == 2, smoke.stdout + smoke.stderr
    said = smoke.stderr.splitlines()
    assert said[0].startswith("burst: no Google Cloud credentials found; run `gcloud auth"), said
    assert said[1].startswith("burst: the smoke test needs burst.gcp.client-cidr"), said
