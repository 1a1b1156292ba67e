"""``%burst gc`` on Lambda Cloud: our machines without a live cluster, and our empty rulesets.

"Ours" is a machine named ``burst-...`` whose ``burst-owner`` tag is this user's
(``burst.lambda.owner``, else user@host); anything else in the account is never listed and
never touched. A cluster is live when this state folder has its record and its head's node
still runs; a machine of ours is stale when its cluster is not live and it was launched more
than ``burst.lambda.gc-grace`` seconds ago (its cluster may be forming: a Lambda start
includes the boot and the environment's build), or whenever it is past its
``burst-expires`` tag. A ruleset of ours goes once no machine holds it and its cluster is
not live.
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.clusters.lambda_cloud import api, firewall, machines
from jupyter_burst.clusters.listing_words import age, count, table
from jupyter_burst.clusters.ssh.nodes import head_alive
from jupyter_burst.store.ledger import shared_ledger

GRACE_SECONDS = 1800.0
_RULESET_WAIT_SECONDS = 60.0


@dataclass
class Listing:
    owner: str
    machines: list[dict[str, Any]]
    rulesets: list[dict[str, Any]]
    spared: int = 0
    now: float = field(default_factory=time.time)

    @property
    def empty(self) -> bool:
        return not self.machines and not self.rulesets


def grace_seconds() -> float:
    return float(config.get("lambda.gc-grace", GRACE_SECONDS))


def live_clusters(state_dir: pathlib.Path) -> set[str]:
    """Clusters with a record here whose head's node still runs (one ssh look each)."""
    return {
        str(record["id"])
        for record in records.all_records(state_dir)
        if record.get("provider") == "lambda"
        and record.get("nodes")
        and head_alive(record["nodes"][0], state_dir)
    }


def collect(
    client: api.LambdaApi, owner: str, state_dir: pathlib.Path, now: float | None = None
) -> Listing:
    """What a gc would end (nothing is changed)."""
    now = time.time() if now is None else now
    live = live_clusters(state_dir)
    stale, kept, spared = [], set(), 0
    for machine in machines.ours(client):
        if machines.tag(machine, "burst-owner") != owner:
            continue
        cluster = machines.tag(machine, "burst-cluster")
        expired = _number(machines.tag(machine, "burst-expires")) <= now
        young = now - _number(machines.tag(machine, "burst-launched")) < grace_seconds()
        if not expired and (cluster in live or young):
            kept.add(cluster)
            spared += cluster not in live
            continue
        stale.append(machine)
    ending = {str(m["id"]) for m in stale}
    rulesets = [
        ruleset
        for ruleset in firewall.ours(client)
        if str(ruleset.get("name")).removeprefix(firewall.NAME_PREFIX) not in live | kept
        and set(ruleset.get("instance_ids") or ()) <= ending
        # Made before its machines: an empty one may be a start under way (anyone's: a
        # ruleset carries no owner), so only one older than the grace goes.
        and now - _created(ruleset) >= grace_seconds()
    ]
    return Listing(owner, stale, rulesets, spared, now)


def sweep(client: api.LambdaApi, listing: Listing, state_dir: pathlib.Path) -> str:
    """Terminate the listed machines, close their clusters in the ledger, delete the rulesets."""
    ids = [str(m["id"]) for m in listing.machines]
    machines.terminate(client, ids)
    if ids and (state_dir / "ledger.sqlite").exists():
        ledger = shared_ledger(state_dir)
        now = time.time()
        for machine in listing.machines:
            ledger.node_stopped(str(machine["id"]), now, "gc")
        for cluster in sorted({machines.tag(m, "burst-cluster") for m in listing.machines}):
            ledger.cluster_stopped(cluster, "gc")
    left = [
        str(r["id"])
        for r in listing.rulesets
        if not firewall.delete(client, str(r["id"]), wait=_RULESET_WAIT_SECONDS)
    ]
    deleted = len(listing.rulesets) - len(left)
    parts = [f"terminated {count(len(ids), 'Lambda machine')}"] if ids else []
    if deleted:
        parts.append(f"deleted {count(deleted, 'firewall ruleset')}")
    text = f"burst: {' and '.join(parts) or 'nothing was left to clean up on Lambda'}"
    if left:
        text += f"; ruleset {', '.join(left)} still in use: run gc again in a few minutes"
    return text


def format_listing(listing: Listing) -> str:
    if listing.empty:
        text = f"burst: nothing to clean up on Lambda: no machine of {listing.owner} without a live cluster"
        return text + (f" ({_spared(listing)})" if listing.spared else "")
    lines = []
    if listing.machines:
        lines.append(
            f"burst: {count(len(listing.machines), 'Lambda machine')} of {listing.owner} "
            "without a live cluster:"
        )
        rows = [("INSTANCE", "TYPE", "REGION", "CLUSTER", "AGE", "$/H")]
        for m in listing.machines:
            kind = m.get("instance_type") or {}
            launched = _number(machines.tag(m, "burst-launched"))
            cents = kind.get("price_cents_per_hour")
            rows.append(
                (
                    str(m.get("id")),
                    str(kind.get("name") or "?"),
                    str((m.get("region") or {}).get("name") or "?"),
                    machines.tag(m, "burst-cluster"),
                    age(listing.now - launched) if launched else "?",
                    "?" if cents is None else f"{int(cents) / 100:.2f}",
                )
            )
        lines += table(rows)
    if listing.rulesets:
        ids = ", ".join(str(r.get("id")) for r in listing.rulesets)
        lines.append(
            f"burst: {count(len(listing.rulesets), 'firewall ruleset')} of clusters with no "
            f"machine left: {ids}"
        )
    if listing.spared:
        lines.append(f"burst: {_spared(listing)}")
    return "\n".join(lines)


def command(yes: bool, how_to_confirm: str) -> str:
    """The Lambda part of ``%burst gc``: the listing, or what was cleaned up with ``yes``."""
    client, state_dir = api.LambdaApi(api.require_key()), config.state_dir()
    listing = collect(client, machines.owner(), state_dir)
    shown = format_listing(listing)
    if listing.empty:
        return shown
    if not yes:
        return f"{shown}\nburst: {how_to_confirm} terminates them"
    return f"{shown}\n{sweep(client, listing, state_dir)}"


def _spared(listing: Listing) -> str:
    return (
        f"{count(listing.spared, 'machine')} launched in the last {grace_seconds():g} s "
        "spared: its cluster may be forming right now"
    )


def _created(ruleset: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(ruleset.get("created"))).timestamp()
    except ValueError:
        return 0.0  # no readable time: old enough


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
