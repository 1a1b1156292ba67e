"""A cluster's Lambda machines: launched, waited for, found again and terminated.

A launch tries the plan's offer and, where Lambda has no capacity for it after all (it moves
by the minute), the next of the same shape, saying so in one line. Every machine is named
``burst-<cluster id>-<role>`` and tagged with its cluster, owner, role and expiry, so that
``%burst gc`` can find what a lost kernel left behind. Lambda bills from launch until
terminate: a guest shutdown does not end it, so every path that gives up terminates.
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.lambda_cloud.api import LAUNCH_PATH, LambdaApi, LambdaApiError
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.errors import ClusterError

NAME_PREFIX = "burst-"
TERMINATE_PATH = "/instance-operations/terminate"
MISSING = "global/object-does-not-exist"
# Statuses of a machine that will never become active.
GONE = frozenset({"unhealthy", "terminating", "terminated", "preempted"})
# Statuses of a machine that no longer bills (or will not, once terminating is done).
ENDED = frozenset({"terminating", "terminated", "preempted"})
_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class Launched:
    """Machines started for one offer."""

    offer: Offer
    ids: tuple[str, ...]
    at: float  # when the launch that made them was sent (Lambda bills from then, or later)


def tags(
    cluster_id: str, owner: str, role: str, launched: float, expires: float
) -> list[dict[str, str]]:
    """What every machine of the cluster carries (Lambda's tags: key/value pairs). Lambda's
    API says no launch time: the tag keeps it for ``%burst gc``'s grace."""
    return [
        {"key": "burst-cluster", "value": cluster_id},
        {"key": "burst-owner", "value": owner},
        {"key": "burst-role", "value": role},
        {"key": "burst-launched", "value": str(int(launched))},
        {"key": "burst-expires", "value": str(int(expires))},
    ]


def owner() -> str:
    """Whose machines ours are (the owner tag): ``burst.lambda.owner``, else user@host."""
    return str(config.get("lambda.owner") or f"{getpass.getuser()}@{socket.gethostname()}")


def launch(
    client: LambdaApi,
    choices: Iterable[Offer],
    count: int,
    body: Callable[[Offer], dict[str, Any]],
    on_note: Callable[[str], None] = print,
) -> Launched:
    """``count`` machines of the first offer Lambda has capacity for; ``body(offer)``: the rest
    of the launch request (name, SSH key, user data, tags, the region's firewall ruleset).
    A refusal other than capacity is raised."""
    tried = []
    for offer in choices:
        request = {
            **body(offer),
            "region_name": offer.region,
            "instance_type_name": offer.instance_type,
            "quantity": count,
        }
        try:
            ids = (client.post(LAUNCH_PATH, request) or {}).get("instance_ids") or []
        except LambdaApiError as exc:
            if not exc.capacity:
                raise
            tried.append(f"{offer.instance_type} in {offer.region}")
            on_note(f"burst: Lambda has no capacity for {tried[-1]} now; trying the next offer")
            continue
        if len(ids) != count:  # a partial launch is no cluster: end what did start
            terminate(client, ids)
            raise ClusterError(
                f"Lambda started {len(ids)} of {count} {offer.instance_type} machines in "
                f"{offer.region}; they were terminated; try again"
            )
        return Launched(offer, tuple(ids), client.sent_at)
    raise ClusterError(
        f"Lambda has no capacity for any offer that fits ({', '.join(tried) or 'none'}); "
        "try again later, another region (region=), or another provider"
    )


def wait_active(client: LambdaApi, ids: Iterable[str], timeout: float) -> list[dict[str, Any]]:
    """The machines, once every one is active with an address; one line if one never will be
    (the caller terminates them: they bill until then)."""
    deadline = time.monotonic() + timeout
    waiting = list(ids)
    while True:
        found = [client.get(f"/instances/{i}") or {} for i in waiting]
        for machine in found:
            status = machine.get("status")
            if status in GONE:
                raise ClusterError(
                    f"the Lambda machine {machine.get('id')} became {status} while booting; "
                    "try again"
                )
        if all(m.get("status") == "active" and m.get("ip") for m in found):
            return found
        if time.monotonic() >= deadline:
            slow = [m.get("id") for m in found if m.get("status") != "active"]
            raise ClusterError(
                f"the Lambda machine(s) {', '.join(map(str, slow))} were not active within "
                f"{timeout:g} s; raise burst.start-timeout if Lambda is slow"
            )
        time.sleep(_POLL_SECONDS)


def terminate(client: LambdaApi, ids: Iterable[str]) -> None:
    """End the machines (and their bill); ones already gone are no error."""
    ids = list(ids)
    if not ids:
        return
    try:
        client.post(TERMINATE_PATH, {"instance_ids": ids})
    except LambdaApiError as exc:
        if exc.code != MISSING:
            raise
        for one in ids:  # some were gone already: end the others one by one
            try:
                client.post(TERMINATE_PATH, {"instance_ids": [one]})
            except LambdaApiError as again:
                if again.code != MISSING:
                    raise


def ours(client: LambdaApi) -> list[dict[str, Any]]:
    """Every machine of the account that a burst cluster launched (by its name and tags)."""
    return [
        machine
        for machine in client.get("/instances") or []
        if str(machine.get("name") or "").startswith(NAME_PREFIX) and tag(machine, "burst-cluster")
    ]


def tag(machine: dict[str, Any], key: str) -> str:
    for pair in machine.get("tags") or []:
        if pair.get("key") == key:
            return str(pair.get("value") or "")
    return ""
