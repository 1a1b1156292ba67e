"""``%burst gc`` on GCP: our instances without a live cluster, and our rules without instances.

"Ours" is an instance named ``burst-...`` whose ``burst-owner`` label is this user's
(``burst.gcp.owner``, else user-host); anything else in the project is never listed and never
touched. A cluster is live when this state folder has its record and its head's node still
runs. An instance of ours is stale when its cluster is not live and either it is stopped (its
disk bills on), it was created more than ``burst.gcp.gc-grace`` seconds ago (its cluster may be
forming), or it is past its ``burst-expires`` label. A firewall rule of ours goes once no
instance carries its tag and it is older than the grace.
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.clusters.gcp import machines, sdk
from jupyter_burst.clusters.listing_words import age, count, table
from jupyter_burst.clusters.ssh.nodes import head_alive
from jupyter_burst.store.ledger import shared_ledger

GRACE_SECONDS = 1800.0


@dataclass
class Listing:
    owner: str
    instances: list[Any]
    firewalls: list[Any]
    spared: int = 0
    now: float = field(default_factory=time.time)

    @property
    def empty(self) -> bool:
        return not self.instances and not self.firewalls


def grace_seconds() -> float:
    return float(config.get("gcp.gc-grace", GRACE_SECONDS))


def live_clusters(state_dir: pathlib.Path) -> set[str]:
    """Labels of the clusters with a record here whose head's node still runs."""
    return {
        machines.safe(str(record["id"]))
        for record in records.all_records(state_dir)
        if record.get("provider") == "gcp"
        and record.get("nodes")
        and head_alive(record["nodes"][0], state_dir)
    }


def collect(compute: sdk.Compute, state_dir: pathlib.Path, now: float | None = None) -> Listing:
    """What a gc would end (nothing is changed)."""
    now = time.time() if now is None else now
    live = live_clusters(state_dir)
    stale, kept, spared = [], set(), 0
    for one in machines.ours(compute):
        cluster = one.labels.get("burst-cluster", "")
        expired = _number(one.labels.get("burst-expires", "")) <= now
        young = now - machines.started_at(one) < grace_seconds()
        stopped = one.status == "TERMINATED"
        if cluster in live or (young and not expired and not stopped):
            kept.add(machines.network_tag(cluster))
            spared += cluster not in live
            continue
        stale.append(one)
    ending = {machines.network_tag(one.labels.get("burst-cluster", "")) for one in stale}
    rules = sdk.call("a listing", compute.firewalls.list, project=compute.project)
    firewalls = [
        rule
        for rule in rules
        if rule.name.startswith(machines.NAME_PREFIX)
        and rule.name not in kept
        and (rule.name in ending or now - machines.created_at(rule) >= grace_seconds())
    ]
    return Listing(machines.owner(), stale, firewalls, spared, now)


def sweep(compute: sdk.Compute, listing: Listing, state_dir: pathlib.Path) -> str:
    """Delete the listed instances (disks with them), close them in the ledger, delete rules."""
    ledger = shared_ledger(state_dir) if (state_dir / "ledger.sqlite").exists() else None
    for one in listing.instances:
        stopped = machines.stopped_at(one)
        ended = machines.delete(compute, one.zone.rsplit("/", 1)[-1], [one.name])
        if ledger is not None:
            ledger.node_stopped(one.name, stopped or ended.get(one.name, time.time()), "gc")
    if ledger is not None:
        for cluster in sorted({one.labels.get("burst-cluster", "") for one in listing.instances}):
            for row in ledger.query("SELECT id FROM clusters WHERE stopped IS NULL"):
                if machines.safe(row["id"]) == cluster:
                    ledger.cluster_stopped(row["id"], "gc")
    for rule in listing.firewalls:
        operation = sdk.call(
            "a firewall rule's deletion", compute.firewalls.delete_unary,
            project=compute.project, firewall=rule.name,
        )  # fmt: skip
        sdk.wait(compute, operation, "a firewall rule's deletion")
    parts = (
        [f"deleted {count(len(listing.instances), 'GCP instance')}"] if listing.instances else []
    )
    if listing.firewalls:
        parts.append(f"deleted {count(len(listing.firewalls), 'firewall rule')}")
    return f"burst: {' and '.join(parts) or 'nothing was left to clean up on GCP'}"


def format_listing(listing: Listing) -> str:
    if listing.empty:
        text = f"burst: nothing to clean up on GCP: no instance of {listing.owner} without a live cluster"
        return text + (f" ({_spared(listing)})" if listing.spared else "")
    lines = []
    if listing.instances:
        lines.append(
            f"burst: {count(len(listing.instances), 'GCP instance')} of {listing.owner} "
            "without a live cluster:"
        )
        rows = [("INSTANCE", "TYPE", "ZONE", "CLUSTER", "STATUS", "AGE")]
        for one in listing.instances:
            rows.append(
                (
                    one.name,
                    one.machine_type.rsplit("/", 1)[-1],
                    one.zone.rsplit("/", 1)[-1],
                    one.labels.get("burst-cluster", ""),
                    "stopped (its disk bills)" if one.status == "TERMINATED" else one.status,
                    age(listing.now - machines.started_at(one)),
                )
            )
        lines += table(rows)
    if listing.firewalls:
        names = ", ".join(rule.name for rule in listing.firewalls)
        lines.append(
            f"burst: {count(len(listing.firewalls), 'firewall rule')} of clusters with no "
            f"instance left: {names}"
        )
    if listing.spared:
        lines.append(f"burst: {_spared(listing)}")
    return "\n".join(lines)


def command(yes: bool, how_to_confirm: str) -> str:
    """The GCP part of ``%burst gc``: the listing, or what was cleaned up with ``yes``."""
    compute, state_dir = sdk.compute(), config.state_dir()
    listing = collect(compute, state_dir)
    shown = format_listing(listing)
    if listing.empty:
        return shown
    if not yes:
        return f"{shown}\nburst: {how_to_confirm} deletes them"
    return f"{shown}\n{sweep(compute, listing, state_dir)}"


def _spared(listing: Listing) -> str:
    return (
        f"{count(listing.spared, 'instance')} created in the last {grace_seconds():g} s "
        "spared: its cluster may be forming right now"
    )


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
