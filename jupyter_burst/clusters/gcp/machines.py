"""A cluster's Compute Engine instances: what each asks for, launched zone by zone, awaited,
their host keys read, found again and deleted.

Every instance carries the cluster's labels (cluster, owner, role, expiry) and network tag
(its firewall rule's target), ``on_host_maintenance=TERMINATE`` (GPUs cannot migrate), and
a ``max_run_duration`` with ``instance_termination_action=DELETE``: Google deletes it, disk
and all, at the cluster's lifetime whatever runs on it (the dead-man that holds with the
laptop gone). Spot instances are deleted on preemption too. Its metadata holds our SSH
public key (``ssh-keys``), ``enable-guest-attributes`` (the guest environment then publishes
its host keys, which we read through the API instead of trusting the first connection) and
a startup script with nothing secret in it.
"""

from __future__ import annotations

import getpass
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.gcp import sdk
from jupyter_burst.clusters.gcp.shapes import Shape
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.errors import ClusterError

NAME_PREFIX = "burst-"
DEFAULT_IMAGE = (
    "projects/deeplearning-platform-release/global/images/family/common-cu124-debian-11-py310"
)
_POLL_SECONDS = 3.0


@dataclass(frozen=True)
class Launched:
    offer: Offer
    zone: str
    names: tuple[str, ...]


def safe(text: str, longest: int = 63) -> str:
    """``text`` as Compute Engine takes it in a name or label: lowercase letters, digits, '-'."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return cleaned[:longest].rstrip("-") or "x"


def owner() -> str:
    """Whose instances ours are (the owner label): ``burst.gcp.owner``, else user-host."""
    return safe(str(config.get("gcp.owner") or f"{getpass.getuser()}-{socket.gethostname()}"))


def labels(cluster_id: str, role: str, expires: float) -> dict[str, str]:
    return {
        "burst-cluster": safe(cluster_id),
        "burst-owner": owner(),
        "burst-role": role,
        "burst-expires": str(int(expires)),
    }


def image() -> str:
    """``burst.gcp.image``: an image or image family with the NVIDIA driver."""
    name = config.get("gcp.image")
    if not name:
        raise ClusterError(
            "burst.gcp.image is empty: name an image or family, e.g. projects/"
            "deeplearning-platform-release/global/images/family/common-cu124-debian-11-py310"
        )
    return str(name)


def network_tag(cluster_id: str) -> str:
    return safe(NAME_PREFIX + cluster_id)


def instance(
    name: str,
    zone: str,
    shape: Shape,
    *,
    spot: bool,
    lifetime_minutes: float,
    labels: dict[str, str],
    tag: str,
    ssh_user: str,
    public_key: str,
    service_account: str | None = None,
) -> dict[str, Any]:
    """The insert request's Instance (compute_v1 field names). ``service_account``: the one
    the head runs as to delete its cluster's instances (none: no Google access at all)."""
    scheduling: dict[str, Any] = {
        "on_host_maintenance": "TERMINATE",
        "automatic_restart": False,
        "provisioning_model": "SPOT" if spot else "STANDARD",
        "instance_termination_action": "DELETE",
        "max_run_duration": {"seconds": int(lifetime_minutes * 60)},
    }
    body: dict[str, Any] = {
        "name": name,
        "machine_type": f"zones/{zone}/machineTypes/{shape.machine_type}",
        "labels": labels,
        "tags": {"items": [tag]},
        "scheduling": scheduling,
        "disks": [
            {
                "boot": True,
                "auto_delete": True,  # the disk goes with the instance: nothing left billing
                "initialize_params": {
                    "source_image": image(),
                    "disk_size_gb": int(config.get("gcp.disk-gb", 100)),
                },
            }
        ],
        "network_interfaces": [
            {
                "network": "global/networks/default",
                "access_configs": [{"name": "external", "type_": "ONE_TO_ONE_NAT"}],
            }
        ],
        "metadata": {
            "items": [
                {"key": "ssh-keys", "value": f"{ssh_user}:{public_key} {ssh_user}"},
                {"key": "enable-guest-attributes", "value": "TRUE"},
                {"key": "install-nvidia-driver", "value": "True"},
                {"key": "startup-script", "value": STARTUP_SCRIPT},
            ]
        },
    }
    if service_account:
        body["service_accounts"] = [{"email": service_account, "scopes": [sdk.SCOPE]}]
    if shape.attached:
        body["guest_accelerators"] = [
            {
                "accelerator_type": f"zones/{zone}/acceleratorTypes/{shape.accelerator}",
                "accelerator_count": shape.count,
            }
        ]
    return body


# Nothing secret, nothing to do: the node is started over ssh once the machine is up.
STARTUP_SCRIPT = "#!/bin/bash\n# jupyter-burst: this machine's node is started over ssh\ntrue\n"


def launch(
    compute: sdk.Compute,
    choices: Iterable[tuple[Offer, str]],
    count: int,
    body: Callable[[Offer, str, str], dict[str, Any]],
    name: Callable[[int], str],
    on_note: Callable[[str], None] = print,
) -> Launched:
    """``count`` instances of the first (offer, zone) with capacity; ``body(offer, zone,
    name)`` is each one's Instance. A zone out of the type or over quota moves the launch on
    (what it made there deleted first); another refusal is raised."""
    module = sdk.compute_v1()
    tried = []
    for offer, zone in choices:
        made: list[str] = []
        try:
            for i in range(count):
                operation = sdk.call(
                    "an insert", compute.instances.insert_unary, project=compute.project,
                    zone=zone, instance_resource=module.Instance(body(offer, zone, name(i))),
                )  # fmt: skip
                made.append(name(i))
                sdk.wait(compute, operation, "an insert", zone)
        except sdk.GcpError as exc:
            delete(compute, zone, made)
            if not exc.capacity:
                raise
            tried.append(f"{offer.instance_type} in {zone}")
            on_note(f"burst: GCP has no room for {tried[-1]} now ({exc.code}); trying the next")
            continue
        return Launched(offer, zone, tuple(made))
    raise ClusterError(
        f"GCP has no capacity or quota for any offer that fits ({', '.join(tried) or 'none'}); "
        "try again later, another region (region=), or another provider"
    )


def wait_running(
    compute: sdk.Compute, zone: str, names: Iterable[str], timeout: float
) -> list[Any]:
    """The instances, once each is RUNNING with an external address."""
    deadline = time.monotonic() + timeout
    names = list(names)
    while True:
        try:
            found = [
                sdk.call("a get", compute.instances.get, project=compute.project, zone=zone,
                         instance=n)
                for n in names
            ]  # fmt: skip
        except sdk.GcpError as exc:
            if not exc.transient or time.monotonic() >= deadline:
                raise
            time.sleep(_POLL_SECONDS)
            continue
        for one in found:
            if one.status in ("STOPPING", "TERMINATED", "SUSPENDED"):
                raise ClusterError(
                    f"the GCP instance {one.name} became {one.status} while booting; try again"
                )
        if all(one.status == "RUNNING" and external_ip(one) for one in found):
            return found
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"the GCP instances {', '.join(names)} were not running within {timeout:g} s; "
                "raise burst.gcp.boot-timeout if Compute Engine is slow"
            )
        time.sleep(_POLL_SECONDS)


def external_ip(one: Any) -> str:
    for interface in one.network_interfaces:
        for access in interface.access_configs:
            if access.nat_i_p:
                return str(access.nat_i_p)
    return ""


def host_keys(compute: sdk.Compute, zone: str, name: str, timeout: float) -> list[str]:
    """``"<type> <base64>"`` of each host key the instance's guest environment published."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = sdk.call(
                "its host keys", compute.instances.get_guest_attributes,
                request={"project": compute.project, "zone": zone, "instance": name,
                         "query_path": "hostkeys/"},
            )  # fmt: skip
            items = list(found.query_value.items) if found.query_value else []
        except sdk.GcpError as exc:
            # Not published yet, or a failure on Google's side: ask again until the deadline.
            if exc.code != "notFound" and not exc.transient:
                raise
            items = []
        keys = [f"{item.key} {item.value}" for item in items if item.key and item.value]
        if keys:
            return keys
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"the GCP instance {name} did not publish its SSH host keys within {timeout:g} s "
                "(its image needs the guest environment); raise burst.gcp.boot-timeout, or use "
                "an image with the guest environment"
            )
        time.sleep(_POLL_SECONDS)


def delete(compute: sdk.Compute, zone: str, names: Iterable[str]) -> dict[str, float]:
    """Delete the instances (disks with them); when Compute Engine says each ended. One
    already gone is no error (and has no time)."""
    ended: dict[str, float] = {}
    for name in names:
        try:
            operation = sdk.call(
                "a delete", compute.instances.delete_unary, project=compute.project, zone=zone,
                instance=name,
            )  # fmt: skip
            done = sdk.wait(compute, operation, "a delete", zone)
        except sdk.GcpError as exc:
            if exc.code != "notFound":
                raise
            continue
        ended[name] = _when(done.end_time) or time.time()
    return ended


def ours(compute: sdk.Compute) -> list[Any]:
    """Every instance of this owner that a burst cluster launched, in every zone."""
    me = owner()
    found = sdk.call("a listing", compute.instances.aggregated_list, project=compute.project)
    return [
        one
        for _, scoped in found
        for one in scoped.instances
        if one.name.startswith(NAME_PREFIX) and one.labels.get("burst-owner") == me
    ]


def started_at(one: Any) -> float:
    """When the instance started running, as Compute Engine bills it."""
    return _when(one.last_start_timestamp or one.creation_timestamp) or time.time()


def created_at(resource: Any) -> float:
    """When an instance or a firewall rule was made, by Compute Engine's clock."""
    return _when(resource.creation_timestamp)


def stopped_at(one: Any) -> float:
    """When a stopped (TERMINATED) instance stopped; 0 for one that runs."""
    if one.status != "TERMINATED":
        return 0.0
    return _when(one.last_stop_timestamp)


def _when(stamp: str) -> float:
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return 0.0
