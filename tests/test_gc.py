"""``gc``: our instances without a live cluster end, others' never; ``make aws-smoke`` end to end.

A moto server process stands in for EC2 (module-wide, reset per test). Instances are made
with the real provisioning code and tags; "old" is a ``now`` or ``burst.aws.gc-grace``
given to gc, never a sleep.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from jupyter_burst.clusters import records
from jupyter_burst.clusters.aws import gc, prices, provision, sdk
from jupyter_burst.clusters.aws.provision import TAG_CLUSTER, TAG_OWNER, LaunchSpec
from jupyter_burst.clusters.offers import Offer
from tests.aws_cloud import reset_moto
from tests.aws_fakes import CREDENTIALS, Ec2Behaviour, aws_error
from tests.harness import REPO, burst_kernel, wait_for
from tests.notebook_env import index_env
from tests.vm_emulator import VmEmulator

REGION = "us-east-1"
ME, BOB = "alice@laptop", "bob@desk"


@pytest.fixture
def aws(moto_endpoint, moto_image):
    """A fresh moto state; clients per region; a hook that makes EC2 refuse group deletions."""
    reset_moto(moto_endpoint)
    endpoint, image = moto_endpoint, moto_image
    in_use: dict[str, int] = {}  # group id -> deletions EC2 refuses before it lets go
    deletions: list[str] = []
    made: dict[str, object] = {}

    def refuse(params, **_):
        group = params.get("GroupId")
        deletions.append(group)
        if in_use.get(group, 0) > 0:
            in_use[group] -= 1
            raise aws_error("DependencyViolation", "DeleteSecurityGroup")

    def clients(region: str):
        if region not in made:
            client = Ec2Behaviour().attach(sdk.client("ec2", region, endpoint_url=endpoint))
            client.meta.events.register("provide-client-params.ec2.DeleteSecurityGroup", refuse)
            made[region] = client
        return made[region]

    return clients, image, in_use, deletions, endpoint


def _offer() -> Offer:
    return Offer(
        provider="aws",
        instance_type="g4dn.xlarge",
        gpus=1,
        gpu_model="NVIDIA T4",
        gpu_mem_gib=16,
        vcpus=4,
        ram_gib=16,
        region=REGION,
        spot=False,
        price_per_hour=0.526,
    )


def _group(clients, cluster: str, owner: str) -> str:
    tags = [{"Key": TAG_CLUSTER, "Value": cluster}, {"Key": TAG_OWNER, "Value": owner}]
    return clients(REGION).create_security_group(
        GroupName=f"jupyter-burst-{cluster}",
        Description="test",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
    )["GroupId"]


def _cluster(clients, image, cluster: str, owner: str = ME, role: str = "head", count: int = 1):
    """A cluster's instances as the provider launches them: tagged, in the cluster's group."""
    group = _group(clients, cluster, owner)
    spec = LaunchSpec(
        cluster_id=cluster,
        role=role,
        count=count,
        image_id=image,
        user_data="#!/bin/bash\ntrue\n",
        owner=owner,
        max_lifetime_minutes=720,
        security_group_ids=(group,),
    )
    return provision.launch(clients, spec, [_offer()]), group


def _states(clients, ids) -> dict[str, str]:
    reply = clients(REGION).describe_instances(InstanceIds=list(ids))
    return {
        i["InstanceId"]: i["State"]["Name"] for r in reply["Reservations"] for i in r["Instances"]
    }


def _groups(clients) -> set[str]:
    return {g["GroupId"] for g in clients(REGION).describe_security_groups()["SecurityGroups"]}


def _record(state_dir, cluster: str, head: str) -> None:
    record = {"id": cluster, "name": cluster.split("-")[0], "provider": "aws", "region": REGION}
    records.write_record(state_dir, record["name"], {**record, "instances": [head]})


def test_gc_terminates_exactly_our_stale_instances_deletes_their_groups_and_is_idempotent(
    aws, state_dir
):
    clients, image, in_use, deletions, _ = aws
    live, live_group = _cluster(clients, image, "live-00000001")
    _record(state_dir, "live-00000001", live[0].id)  # a record whose head runs: live
    # A record whose head has ended itself; a worker of it still runs: not live.
    dead_record, dead_group = _cluster(clients, image, "dead-00000002", role="worker")
    _record(state_dir, "dead-00000002", "i-0000000000gone")
    gone, gone_group = _cluster(clients, image, "gone-00000003", role="worker", count=2)
    orphan_group = _group(clients, "crashed-00000004", ME)  # a launch that failed after its group
    bobs, bob_group = _cluster(clients, image, "bobs-00000005", owner=BOB)
    untagged = clients(REGION).run_instances(
        ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]

    # As gc sees them (EC2 lists launch times to the second): the young one is launched
    # after the clock has moved on, so one `now` finds it, and only it, inside the grace.
    def launched() -> dict[str, float]:
        return {i.id: i.launched for i in provision.find(clients, REGION, owner=ME)}

    old = max(launched().values())
    wait_for(lambda: time.time() >= old + 1.0, 5, "the clock to move on")
    young, young_group = _cluster(clients, image, "young-00000006")
    now = launched()[young[0].id]
    grace = (now - old) / 2
    assert grace > 0

    listing = gc.collect(clients, [REGION], ME, state_dir, now=now, grace=grace)
    stale = {i.id for i in dead_record + gone}
    assert {i.id for i in listing.instances} == stale
    assert {g.id for g in listing.groups} == {dead_group, gone_group, orphan_group}
    shown = gc.format_listing(listing)
    assert "3 instances of alice@laptop without a live cluster in us-east-1" in shown, shown
    for instance in dead_record + gone:
        assert instance.id in shown and "0.526" in shown  # the catalog's list price for the type
    assert "1 instance launched in the last" in shown  # the young one, spared and said so
    assert live[0].id not in shown and bobs[0].id not in shown and untagged not in shown

    in_use[gone_group] = 2  # EC2 refuses twice: a terminated worker is still shutting down
    swept = gc.sweep(clients, listing, state_dir, group_timeout=30)
    assert set(swept.terminated) == stale and swept.left == []
    assert set(swept.deleted) == {dead_group, gone_group, orphan_group}
    assert deletions.count(gone_group) == 3  # retried until EC2 let go
    states = _states(clients, [*stale, live[0].id, young[0].id, bobs[0].id, untagged])
    assert {states[i] for i in stale} <= {"shutting-down", "terminated"}
    for kept in (live[0].id, young[0].id, bobs[0].id, untagged):
        assert states[kept] in ("pending", "running"), kept
    assert {live_group, young_group, bob_group} <= _groups(clients)
    assert not {dead_group, gone_group, orphan_group} & _groups(clients)
    assert "terminated 3 instances and deleted 3 security groups" in gc.format_swept(swept)

    again = gc.collect(clients, [REGION], ME, state_dir, now=now, grace=grace)
    assert again.empty
    assert gc.format_listing(again).startswith("burst: nothing to clean up: no instance")
    assert gc.sweep(clients, again).terminated == []


def test_a_provider_terminate_deletes_its_group_and_a_group_in_use_is_reported_not_fatal(aws):
    clients, image, in_use, deletions, _ = aws
    (head,), group = _cluster(clients, image, "one-00000001")
    provision.terminate(clients, [head])
    in_use[group] = 10**6  # never lets go within the deadline
    deleted, left = gc.delete_cluster_groups(clients, REGION, "one-00000001", timeout=0.3)
    assert (deleted, left) == ([], [group]) and group in _groups(clients)
    in_use[group] = 0
    assert gc.delete_cluster_groups(clients, REGION, "one-00000001") == ([group], [])
    assert group not in _groups(clients)


def _env(endpoint: str, state_dir) -> dict[str, str]:
    return {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "DASK_BURST__AWS__REGIONS": REGION,
        "DASK_BURST__AWS__OWNER": ME,
        "DASK_BURST__AWS__GC_GRACE": "0",  # every instance without a live cluster is stale
        "DASK_BURST__STATE_DIR": str(state_dir),
        "PYTHONPATH": str(REPO),
    }


def test_jupyter_burst_gc_asks_first_and_a_no_terminates_nothing(aws, state_dir):
    clients, image, _, _, endpoint = aws
    mine, _ = _cluster(clients, image, "gone-00000001")
    bobs, _ = _cluster(clients, image, "bobs-00000002", owner=BOB)
    script = os.path.join(os.path.dirname(sys.executable), "jupyter-burst")
    env = {**os.environ, **_env(endpoint, state_dir)}

    said_no = subprocess.run(
        [script, "gc"], input="n\n", capture_output=True, text=True, env=env, timeout=60
    )
    assert said_no.returncode == 0, said_no.stderr
    assert mine[0].id in said_no.stdout and bobs[0].id not in said_no.stdout
    assert "Terminate these 1 instance? [y/N]" in said_no.stdout
    assert "nothing was terminated" in said_no.stdout
    assert _states(clients, [mine[0].id])[mine[0].id] in ("pending", "running")

    said_yes = subprocess.run(
        [script, "gc", "--region", REGION, "--yes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert said_yes.returncode == 0, said_yes.stderr
    assert "terminated 1 instance and deleted 1 security group" in said_yes.stdout
    states = _states(clients, [mine[0].id, bobs[0].id])
    assert states[mine[0].id] in ("shutting-down", "terminated")
    assert states[bobs[0].id] in ("pending", "running")

    typo = subprocess.run([script, "gc", "--yess"], capture_output=True, text=True, env=env)
    assert typo.returncode != 0 and "unrecognized arguments: --yess" in typo.stderr


def test_percent_burst_gc_lists_then_terminates_with_yes(aws, state_dir, workdir):
    clients, image, _, _, endpoint = aws
    mine, group = _cluster(clients, image, "gone-00000001", count=1)
    bobs, _ = _cluster(clients, image, "bobs-00000002", owner=BOB)
    with burst_kernel(state_dir, workdir, _env(endpoint, state_dir)) as kernel:
        listed = kernel.ok("%burst gc").stdout
        assert mine[0].id in listed and bobs[0].id not in listed, listed
        assert "%burst gc --yes terminates them" in listed
        assert _states(clients, [mine[0].id])[mine[0].id] in ("pending", "running")

        done = kernel.ok("%burst gc --yes", timeout=60).stdout
        assert "terminated 1 instance and deleted 1 security group" in done, done
        assert _states(clients, [mine[0].id])[mine[0].id] in ("shutting-down", "terminated")
        assert _states(clients, [bobs[0].id])[bobs[0].id] in ("pending", "running")
        assert group not in _groups(clients)

        assert "nothing to clean up" in kernel.ok("%burst gc").stdout
        bad = kernel.execute("%burst gc --force")
        assert bad.evalue.startswith("burst: gc does not know '--force'") and "\n" not in bad.evalue


def _smoke_env(endpoint: str, image: str) -> dict[str, str]:
    """What a user with an account sets (as the ``cloud`` fixture of test_aws_cluster does)."""
    return {
        **os.environ,
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "DASK_BURST__AWS__BUCKET": "burst-test",
        "DASK_BURST__AWS__CLIENT_CIDR": "127.0.0.1/32",
        "DASK_BURST__AWS__IMAGE": image,
        "DASK_BURST__AWS__REGIONS": REGION,
        "PYTHONPATH": str(REPO),
    }


def test_make_aws_smoke_runs_a_cell_shows_the_cost_and_leaves_nothing_tagged(
    aws, tmp_path, notebook_python, env_cache
):
    clients, image, _, _, endpoint = aws
    # This module's moto server, and the emulator that boots its instances' user data.
    # moto has no Pricing API and one fixed spot price: the live-price cache of the run's state
    # folder holds the prices a real account would see, spot among them.
    state_dir = tmp_path / "smoke-state"
    t4 = dict(gpus=1, gpu_model="NVIDIA T4", gpu_mem_gib=16.0, vcpus=4, ram_gib=16.0)
    prices.write_cache(
        state_dir,
        [REGION],
        [
            Offer("aws", "g4dn.xlarge", **t4, region=REGION, spot=False, price_per_hour=0.526),
            Offer("aws", "g4dn.xlarge", **t4, region=REGION, spot=True, price_per_hour=0.2104),
        ],
        time.time(),
    )
    # This module's moto server, and the emulator that boots its instances' user data.
    # The smoke run is started from a notebook environment (tests/notebook_env.py): its
    # kernel's packages are what the bare emulated machine installs.
    with VmEmulator(clients, (REGION,), tmp_path / "vms"):
        smoke = subprocess.run(
            [str(notebook_python), "-m", "jupyter_burst.tools.smoke", "--cell-timeout", "180",
             "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            env={**_smoke_env(endpoint, image), **index_env(env_cache)},
            cwd=tmp_path,
            timeout=280,
        )  # fmt: skip
    out = smoke.stdout
    assert smoke.returncode == 0, out + smoke.stderr
    assert "Offers for 1 GPU" in out and "g4dn.xlarge" in out
    assert "smoke: GPU: no CUDA" in out  # the emulated machine has no GPU: said, not faked
    assert "smoke: PASS" in out and "nothing tagged with this cluster is left on EC2" in out
    # g4dn.xlarge spot at $0.2104/h for at least EC2's 60 s minimum: $0.0035 or a little more
    cost = float(re.search(r"cost of this run: \$(\d+\.\d+)", out).group(1))
    assert 0.0035 <= cost < 0.02, out
    ec2 = clients(REGION)
    (launched,) = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert launched.get("InstanceLifecycle") == "spot", launched  # the head too: spot=yes
    held = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    assert held == []
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag-key", "Values": [TAG_CLUSTER]}])
    assert groups["SecurityGroups"] == []


def test_make_aws_smoke_names_a_missing_setting_in_one_line_and_launches_nothing(aws):
    clients, image, _, _, endpoint = aws
    # (burst.aws.image may be left unset: the latest Deep Learning AMI is found, test_aws_images)
    env = {**_smoke_env(endpoint, image), "DASK_BURST__AWS__BUCKET": ""}
    smoke = subprocess.run(
        [sys.executable, "-m", "jupyter_burst.tools.smoke"], capture_output=True, text=True, env=env
    )
    assert smoke.returncode == 2
    assert smoke.stderr.strip().splitlines() == [
        "burst: the smoke test needs burst.aws.bucket: set an S3 bucket of yours for the nodes' "
        "keys (created if missing), e.g. DASK_BURST__AWS__BUCKET=my-burst-bucket"
    ]
    assert clients(REGION).describe_instances()["Reservations"] == []
