"""The ``cloud`` fixture: a moto server, the VM emulator watching it, and a kernel's environment for it.

It yields ``(env, vms, ec2)``: the environment variables a kernel needs to launch
``provider=aws`` clusters there, the :class:`~tests.vm_emulator.VmEmulator`, and an EC2
client of ``REGION``. Shared through ``conftest.py``.
"""

from __future__ import annotations

import pytest

from jupyter_burst.clusters.aws import sdk
from tests.aws_fakes import CREDENTIALS, moto_server
from tests.vm_emulator import VmEmulator

REGION = "us-east-1"


@pytest.fixture
def cloud(tmp_path):
    """A moto server, the emulator watching it, and the environment a kernel needs for it."""
    with moto_server() as url:
        made: dict[str, object] = {}

        def clients(region: str):
            if region not in made:
                made[region] = sdk.client("ec2", region, endpoint_url=url)
            return made[region]

        with pytest.MonkeyPatch.context() as mp:
            for key, value in CREDENTIALS.items():
                mp.setenv(key, value)
            image = clients(REGION).describe_images(Owners=["amazon"], MaxResults=5)["Images"]
            env = {
                **CREDENTIALS,
                "AWS_ENDPOINT_URL": url,
                "DASK_BURST__AWS__BUCKET": "burst-test",
                "DASK_BURST__AWS__CLIENT_CIDR": "127.0.0.1/32",
                "DASK_BURST__AWS__IMAGE": image[0]["ImageId"],
                "DASK_BURST__AWS__REGIONS": REGION,
            }
            with VmEmulator(clients, (REGION,), tmp_path / "vms") as vms:
                yield env, vms, clients(REGION)
