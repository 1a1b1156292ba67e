"""Zero-config images: without ``burst.aws.image`` a launch boots the latest AWS Deep Learning
Base GPU AMI of its region, found through AWS's public SSM parameter; setting the image wins.

moto serves none of AWS's public parameters, so this module's moto server also serves the ones
a test publishes (``tests/moto_public.py``), pointing at an image moto knows; everything else
is the real path: the kernel, ``ssm:GetParameter`` through the SDK, ``run_instances``, the
VM emulator booting the user data, the ledger.
"""

from __future__ import annotations

import json
import os
import subprocess

import dask.config
import pytest
from botocore.stub import Stubber

from jupyter_burst.clusters.aws import images, sdk
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.errors import ClusterError
from jupyter_burst.store.ledger import Ledger
from tests.aws_cloud import REGION, reset_moto
from tests.aws_fakes import CREDENTIALS, free_port, moto_server
from tests.harness import REPO, burst_kernel
from tests.notebook_env import KERNEL_PYTHON

DLAMI = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
DESCRIBED = "AWS Deep Learning Base GPU AMI, Ubuntu 22.04"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The file of public parameters this module's moto server serves (region -> name -> value)."""
    return tmp_path_factory.mktemp("ssm") / "public.json"


@pytest.fixture(scope="module")
def moto_endpoint(published):
    """As tests/aws_cloud.py's, with AWS's public image parameters served (the ``cloud`` fixture
    of this module uses this server)."""
    published.write_text("{}")
    with pytest.MonkeyPatch.context() as env, moto_server(public_parameters=published) as url:
        for key, value in CREDENTIALS.items():
            env.setenv(key, value)
        yield url


@pytest.fixture(scope="module")
def newest(moto_endpoint, moto_image) -> str:
    """An image moto knows other than the one the ``cloud`` fixture sets as burst.aws.image: the
    one the public parameter names (a launch that boots it found it through SSM)."""
    ec2 = sdk.client("ec2", REGION, endpoint_url=moto_endpoint)
    found = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"]
    return next(i["ImageId"] for i in found if i["ImageId"] != moto_image)


def publish(path, values: dict[str, str], region: str = REGION) -> None:
    path.write_text(json.dumps({region: values}))


def _instances(ec2) -> list[dict]:
    reply = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )
    return [i for r in reply["Reservations"] for i in r["Instances"]]


def _zero_config(env: dict[str, str]) -> dict[str, str]:
    return {**env, "DASK_BURST__AWS__IMAGE": ""}  # as unset, whatever this shell has


def offer(instance_type: str, gpus: int, region: str = REGION) -> Offer:
    return Offer("aws", instance_type, gpus, "NVIDIA T4", 16.0, 4, 16.0, region, False, 0.5)


# ---- through a real kernel ----------------------------------------------------------------


def test_without_an_image_set_a_launch_boots_the_latest_deep_learning_ami_and_a_set_one_wins(
    cloud, published, newest, moto_image, state_dir, workdir
):
    env, vms, ec2 = cloud
    publish(published, {DLAMI: newest})
    with burst_kernel(state_dir, workdir, _zero_config(env)) as kernel:
        run = kernel.ok("%%burst provider=aws\nx = 1\n", timeout=180)
        said = [line for line in run.stdout.splitlines() if line.startswith("burst: image")]
        assert said == [
            f"burst: image {newest} ({DESCRIBED}, from SSM {DLAMI}, region {REGION})"
        ], run.stdout
        (head,) = _instances(ec2)
        assert head["ImageId"] == newest  # what reached run_instances
        status = kernel.ok("%burst status").text
        assert f"default image: {newest} ({DESCRIBED}, from SSM {DLAMI}" in status, status
        assert "stopped default" in kernel.ok("%burst down", timeout=120).stdout

        # The user sets an image: it wins, and SSM is not asked (asking would now fail).
        publish(published, {})
        kernel.ok(f"import dask\ndask.config.set({{'burst.aws.image': '{moto_image}'}})")
        run = kernel.ok("%%burst provider=aws\nx = 1\n", timeout=180)
        assert f"burst: image {moto_image} (burst.aws.image)" in run.stdout, run.stdout
        (head,) = _instances(ec2)
        assert head["ImageId"] == moto_image
        kernel.ok("%burst down", timeout=120)
    ledger = Ledger(state_dir / "ledger.sqlite")
    first, second = ledger.clusters()  # in the order they started
    assert ledger.images([first["id"]])[first["id"]] == [
        {
            "image": newest,
            "how": f"{DESCRIBED}, from SSM {DLAMI}, region {REGION}",
            "parameter": DLAMI,
        }
    ]
    assert ledger.images([second["id"]])[second["id"]] == [
        {"image": moto_image, "how": "burst.aws.image", "parameter": None}
    ]


def test_an_unreadable_image_parameter_is_one_line_naming_the_setting_and_launches_nothing(
    cloud, published, state_dir, workdir
):
    env, vms, ec2 = cloud
    publish(published, {})  # a region where the parameter is not published
    with burst_kernel(state_dir, workdir, _zero_config(env)) as kernel:
        run = kernel.execute("%%burst provider=aws\nx = 1\n", timeout=120)
    assert run.traceback == [run.evalue] and "\n" not in run.evalue
    assert run.evalue.startswith(f"burst: SSM has no parameter {DLAMI} in region {REGION}")
    assert "set burst.aws.image to an AMI id for us-east-1" in run.evalue
    assert _instances(ec2) == []
    s3 = sdk.client("s3", REGION, endpoint_url=env["AWS_ENDPOINT_URL"])
    assert s3.list_buckets()["Buckets"] == []  # checked before anything was made
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["default"]


def test_make_aws_smoke_boots_the_latest_deep_learning_ami_unless_an_image_is_set(
    cloud, published, newest, tmp_path
):
    env, vms, ec2 = cloud
    publish(published, {DLAMI: newest})
    env = _zero_config(env)
    # The user's notebook environment runs it (and so its kernel), as `make aws-smoke` would.
    python = env.pop(KERNEL_PYTHON)
    smoke = subprocess.run(
        [python, "-m", "jupyter_burst.tools.smoke", "--spot", "no",
         "--cell-timeout", "180", "--state-dir", str(tmp_path / "smoke-state")],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        timeout=280,
    )  # fmt: skip
    out = smoke.stdout
    assert smoke.returncode == 0, out + smoke.stderr
    assert "smoke: image: the latest AWS Deep Learning Base GPU AMI (Ubuntu 22.04)" in out
    assert f"  image: {newest} ({DESCRIBED}, from SSM {DLAMI}, region {REGION})" in out, out
    (launched,) = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert launched["ImageId"] == newest


# ---- the choice, the cache, the errors (no kernel) ----------------------------------------


def test_the_parameter_follows_the_offers_gpus_and_architecture():
    chosen = {
        t: images.public_image(offer(t, gpus)).parameter
        for t, gpus in [("g4dn.xlarge", 1), ("g5g.xlarge", 1), ("m5.large", 0), ("c7g.large", 0)]
    }
    assert chosen == {
        "g4dn.xlarge": DLAMI,
        "g5g.xlarge": DLAMI.replace("/x86_64/", "/arm64/"),
        "m5.large": "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
        "c7g.large": "/aws/service/canonical/ubuntu/server/22.04/stable/current/arm64/hvm/ebs-gp2/ami-id",
    }


def test_a_found_image_is_kept_an_hour_per_region_and_parameter():
    now = [0.0]
    cache = images.ImageCache(keep=3600, clock=lambda: now[0])
    reads: list[str] = []

    def read(value: str):
        return lambda: reads.append(value) or value

    assert cache.get("us-east-1", DLAMI, read("ami-1")) == "ami-1"
    now[0] = 3599
    assert cache.get("us-east-1", DLAMI, read("ami-2")) == "ami-1"  # kept
    assert cache.get("us-west-2", DLAMI, read("ami-3")) == "ami-3"  # another region: asked
    now[0] = 3600
    assert cache.get("us-east-1", DLAMI, read("ami-4")) == "ami-4"  # an hour on: asked again
    assert reads == ["ami-1", "ami-3", "ami-4"]


def test_a_set_image_is_used_without_asking_aws(monkeypatch):
    # Nothing listens at this endpoint: a lookup would fail.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with dask.config.set({"burst.aws.image": "ami-0123456789abcdef0"}):
        found = images.resolve(offer("g4dn.xlarge", 1), cache=images.ImageCache())
    assert (found.id, found.how, found.parameter) == (
        "ami-0123456789abcdef0",
        "burst.aws.image",
        None,
    )
    assert found.line() == "burst: image ami-0123456789abcdef0 (burst.aws.image)"


def test_the_image_is_read_from_ssm_through_the_sdk(moto_endpoint, published, newest, monkeypatch):
    reset_moto(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    publish(published, {DLAMI: newest}, region="eu-west-1")
    with dask.config.set({"burst.aws.image": None}):
        found = images.resolve(offer("g4dn.xlarge", 1, "eu-west-1"), cache=images.ImageCache())
    assert (found.id, found.parameter) == (newest, DLAMI)
    assert found.how == f"{DESCRIBED}, from SSM {DLAMI}, region eu-west-1"


def test_a_parameter_that_is_not_an_ami_id_is_one_line(moto_endpoint, published, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    publish(published, {DLAMI: "not-an-image"})
    with pytest.raises(ClusterError) as raised:
        images.read_parameter(REGION, images.DEEP_LEARNING_GPU["x86_64"])
    assert str(raised.value) == (
        f"burst: the SSM parameter {DLAMI} in {REGION} holds 'not-an-image', not an AMI id; "
        "set burst.aws.image to an AMI id for us-east-1 (e.g. DASK_BURST__AWS__IMAGE=ami-...)"
    )


def test_credentials_without_ssm_get_parameter_are_told_the_permission_and_the_setting():
    # moto does not enforce IAM: AWS's refusal, as botocore's stubber gives it.
    ssm = sdk.client("ssm", REGION)
    with Stubber(ssm) as stub:
        stub.add_client_error(
            "get_parameter",
            service_error_code="AccessDeniedException",
            service_message="User: arn:aws:iam::123456789012:user/alice is not authorized",
            http_status_code=400,
        )
        with pytest.raises(ClusterError) as raised:
            images.read_parameter(REGION, images.DEEP_LEARNING_GPU["x86_64"], ssm=ssm)
    text = str(raised.value)
    assert "\n" not in text and text.startswith("burst: these AWS credentials may not read")
    assert "allow ssm:GetParameter on arn:aws:ssm:us-east-1::parameter/aws/service/*" in text
    assert "set burst.aws.image to an AMI id for us-east-1" in text
