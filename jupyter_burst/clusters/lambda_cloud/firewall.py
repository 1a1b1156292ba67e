"""A cluster's Lambda firewall ruleset: its machines open to the notebook's address only.

Lambda machines take firewall rulesets at launch (``firewall_rulesets: [{"id"}]``). Each
cluster gets one of its own, named ``burst-<cluster id>``, in its region: every TCP port
open to ``burst.lambda.client-cidr`` (ssh, the scheduler, the dashboard), and, once the
machines have addresses, to each of them (the cluster's nodes talk to each other). Nothing
else gets in. The ruleset goes when its machines have gone (Lambda refuses to delete one in
use); one left behind costs nothing and ``%burst gc`` deletes it.

Lambda applies no firewall rules in us-south-1: a launch there is told so in one line.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from jupyter_burst.clusters.lambda_cloud.api import LambdaApi, LambdaApiError

PATH = "/firewall-rulesets"
NAME_PREFIX = "burst-"
# Regions where Lambda applies no firewall rules (its API's own note).
UNFILTERED_REGIONS = frozenset({"us-south-1"})
IN_USE = "firewall-rulesets/firewall-ruleset-in-use"
GONE = "global/object-does-not-exist"


def _rule(source: str, description: str) -> dict[str, Any]:
    return {
        "protocol": "tcp",
        "port_range": [1, 65535],
        "source_network": source,
        "description": description,
    }


def create(client: LambdaApi, cluster_id: str, region: str, cidr: str) -> str | None:
    """The new ruleset's id; None in a region where Lambda applies none (the caller says so)."""
    if region in UNFILTERED_REGIONS:
        return None
    made = client.post(
        PATH,
        {
            "name": NAME_PREFIX + cluster_id,
            "region": region,
            "rules": [_rule(cidr, "the notebook")],
        },
    )
    return str(made["id"])


def admit(client: LambdaApi, ruleset: str, cidr: str, addresses: Iterable[str]) -> None:
    """The ruleset opened to the cluster's own machines too (their public addresses)."""
    rules = [_rule(cidr, "the notebook")]
    rules += [_rule(f"{address}/32", "a node of this cluster") for address in sorted(addresses)]
    client.patch(f"{PATH}/{ruleset}", {"rules": rules})


def delete(client: LambdaApi, ruleset: str, wait: float = 0.0) -> bool:
    """Delete the ruleset; False if its machines still hold it after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            client.delete(f"{PATH}/{ruleset}")
            return True
        except LambdaApiError as exc:
            if exc.code == GONE:
                return True
            if exc.code != IN_USE or time.monotonic() >= deadline:
                if exc.code == IN_USE:
                    return False
                raise
        time.sleep(2.0)


def ours(client: LambdaApi) -> list[dict[str, Any]]:
    """Every ruleset a burst cluster made (by its name)."""
    return [
        ruleset
        for ruleset in client.get(PATH) or []
        if str(ruleset.get("name") or "").startswith(NAME_PREFIX)
    ]
