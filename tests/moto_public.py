"""``python -m tests.moto_public FILE [moto.server arguments]``: moto's server, with AWS's public
image parameters.

Every AWS account may read the parameters AWS and Canonical publish under ``/aws/service/``:
the newest AWS Deep Learning AMI of each region, Ubuntu's images. moto serves only a few of its
own there and refuses to store any name under ``/aws``, so this server also serves those FILE
lists (JSON: region -> parameter name -> value), as a new version whenever a value changes,
and no longer once a name is gone from it. FILE is read whenever such a name is looked up:
a test writes what AWS would publish, and the next lookup sees it.
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections import defaultdict


def serve(published: pathlib.Path) -> None:
    from moto.core.utils import utcnow
    from moto.ssm import models

    original = models.ParameterDict._check_loading_status

    def check_loading_status(self, key: str) -> None:
        original(self, key)
        if not str(key or "").startswith("/aws/service/"):
            return
        try:
            wanted = json.loads(published.read_text()).get(self.region_name, {})
        except FileNotFoundError:
            wanted = {}
        served = self.__dict__.setdefault("_published", set())
        for name in served - set(wanted):
            self.pop(name, None)  # withdrawn: a lookup now finds nothing, as in a region without it
        for name, value in wanted.items():
            versions = defaultdict.__getitem__(self, name)  # as moto loads its own public ones
            if versions and versions[-1].value == value:
                continue
            versions.append(
                models.Parameter(
                    account_id=self.account_id,
                    name=name,
                    value=value,
                    parameter_type="String",
                    description=None,
                    allowed_pattern=None,
                    keyid=None,
                    last_modified_date=utcnow(),
                    version=len(versions) + 1,
                    data_type="aws:ec2:image",
                )
            )
        self._published = set(wanted)

    models.ParameterDict._check_loading_status = check_loading_status


def main(argv: list[str]) -> None:
    serve(pathlib.Path(argv[0]))
    from moto.server import main as moto_main

    moto_main(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
