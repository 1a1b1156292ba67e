"""The ``cloud`` fixture: a moto server, the VM emulator watching it, and a kernel's environment for it.

It yields ``(env, vms, ec2)``: the environment variables a kernel needs to launch
``provider=aws`` clusters there, the :class:`~tests.vm_emulator.VmEmulator`, and an EC2
client of ``REGION``. Shared through ``conftest.py``.
"""

from __future__ import annotations

import urllib.request

import pytest

from jupyter_burst.clusters.aws import sdk
from tests.aws_fakes import CREDENTIALS, moto_server
from tests.notebook_env import KERNEL_PYTHON, index_env
from tests.vm_emulator import VmEmulator

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_endpoint():
    """One moto server for a test module (reset per test with :func:`reset_moto`), with dummy
    credentials in the environment: a real key must never be used by a test."""
    with pytest.MonkeyPatch.context() as env, moto_server() as url:
        for key, value in CREDENTIALS.items():
            env.setenv(key, value)
        yield url


@pytest.fixture(scope="module")
def moto_image(moto_endpoint) -> str:
    """An image moto knows (its built-in ones survive a reset); listing them takes seconds."""
    ec2 = sdk.client("ec2", REGION, endpoint_url=moto_endpoint)
    return ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]


def reset_moto(endpoint: str) -> None:
    """Forget every instance, group and bucket: each test starts from an empty account."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).read()


@pytest.fixture
def cloud(tmp_path, moto_endpoint, moto_image, notebook_python, env_cache):
    """The module's moto server (reset), the emulator watching it, and a kernel's environment.

    The kernel runs in a notebook environment of its own (tests/notebook_env.py); the
    emulated machines are bare and build it from the wheelhouse.
    """
    reset_moto(moto_endpoint)
    made: dict[str, object] = {}

    def clients(region: str):
        if region not in made:
            made[region] = sdk.client("ec2", region, endpoint_url=moto_endpoint)
        return made[region]

    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "DASK_BURST__AWS__BUCKET": "burst-test",
        "DASK_BURST__AWS__CLIENT_CIDR": "127.0.0.1/32",
        "DASK_BURST__AWS__IMAGE": moto_image,
        "DASK_BURST__AWS__REGIONS": REGION,
        **index_env(env_cache),
        KERNEL_PYTHON: str(notebook_python),
    }
    with VmEmulator(clients, (REGION,), tmp_path / "vms") as vms:
        yield env, vms, clients(REGION)
