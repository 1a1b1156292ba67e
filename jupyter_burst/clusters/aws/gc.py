"""``%burst gc`` / ``jupyter burst gc``: what of ours runs on EC2 without a live cluster, and its end.

"Ours" is what carries this user's owner tag (``burst.aws.owner``, else user@host); an
instance of another owner, or one without our tags, is never listed and never touched.
A cluster is live when this state folder has its record and its head instance is pending
or running; everything else of ours is stale, except an instance launched in the last
``burst.aws.gc-grace`` seconds (its cluster may be forming right now, not yet recorded).

A security group of ours is deleted once its cluster has no instance left. EC2 refuses
that (DependencyViolation) while a terminated instance is still shutting down, so the
deletion is retried until a deadline.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.clusters.aws import provision
from jupyter_burst.clusters.aws.prices import default_regions
from jupyter_burst.clusters.aws.provision import TAG_CLUSTER, TAG_OWNER, Instance
from jupyter_burst.clusters.aws.sdk import ec2_clients, error_code, with_backoff
from jupyter_burst.clusters.listing_words import age, count, table
from jupyter_burst.clusters.shipped_catalog import load_catalog
from jupyter_burst.errors import ClusterError, OptionError
from jupyter_burst.store.ledger import shared_ledger

GRACE_SECONDS = 120.0  # as provision.stale: a launch takes this long to be recorded
GROUP_TIMEOUT_SECONDS = 300.0  # a terminated GPU instance releases its group within minutes


@dataclass(frozen=True)
class Group:
    id: str
    region: str
    cluster_id: str
    name: str


@dataclass
class Listing:
    """What a gc would end: stale instances, the groups left without instances, and why."""

    owner: str
    regions: tuple[str, ...]
    instances: list[Instance]
    groups: list[Group]
    prices: dict[str, tuple[float, bool]] = field(default_factory=dict)  # id -> ($/h, list price?)
    spared: int = 0  # young instances left alone
    now: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.instances and not self.groups


@dataclass
class Swept:
    terminated: list[str]
    deleted: list[str]
    left: list[str]  # groups still in use at the deadline


def regions(narrow: Sequence[str] = ()) -> tuple[str, ...]:
    """``burst.aws.regions`` (else the catalog's), or just ``narrow`` when given."""
    if narrow:
        return tuple(dict.fromkeys(narrow))
    return default_regions()


def grace_seconds() -> float:
    return float(config.get("aws.gc-grace", GRACE_SECONDS))


def live_clusters(state_dir: pathlib.Path, found: Iterable[Instance]) -> set[str]:
    """Clusters with a record here whose head instance is pending or running."""
    held = list(found)
    live = set()
    for record in records.all_records(state_dir):
        if record.get("provider") != "aws":
            continue
        heads = set(record.get("instances") or [])
        for instance in held:
            if instance.cluster_id != record.get("id"):
                continue
            if instance.state in ("pending", "running") and (
                instance.role == "head" or instance.id in heads
            ):
                live.add(record["id"])
    return live


def collect(
    clients: provision.Clients,
    where: Sequence[str],
    owner: str,
    state_dir: pathlib.Path,
    now: float | None = None,
    grace: float | None = None,
) -> Listing:
    """Our stale instances and orphaned security groups in ``where`` (nothing is changed)."""
    now = time.time() if now is None else now
    grace = grace_seconds() if grace is None else grace
    found = [i for region in where for i in provision.find(clients, region, owner=owner)]
    live = live_clusters(state_dir, found)
    stale, kept, spared = [], [], 0
    for instance in found:
        if instance.cluster_id in live:
            kept.append(instance)
        elif instance.launched and now - instance.launched < grace:
            kept.append(instance)
            spared += 1
        else:
            stale.append(instance)
    in_use = {i.cluster_id for i in kept}  # a group goes only with its cluster's last instance
    groups = [
        g
        for region in where
        for g in find_groups(clients, region, owner)
        if g.cluster_id not in in_use
    ]
    listing = Listing(owner, tuple(where), stale, groups, spared=spared, now=now)
    listing.prices = _prices(state_dir, stale)
    return listing


def find_groups(
    clients: provision.Clients, region: str, owner: str | None, cluster_id: str | None = None
) -> list[Group]:
    """Security groups of ours in ``region`` (of one owner, of one cluster), by their tags."""
    filters = [
        {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]}
        if cluster_id
        else {"Name": "tag-key", "Values": [TAG_CLUSTER]}
    ]
    if owner is not None:
        filters.append({"Name": f"tag:{TAG_OWNER}", "Values": [owner]})
    ec2 = clients(region)
    out, token = [], None
    while True:
        kwargs: dict[str, Any] = {"Filters": filters}
        if token:
            kwargs["NextToken"] = token
        page = with_backoff(lambda: ec2.describe_security_groups(**kwargs))  # noqa: B023
        for raw in page.get("SecurityGroups", []):
            tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
            out.append(Group(raw["GroupId"], region, tags.get(TAG_CLUSTER, "?"), raw["GroupName"]))
        token = page.get("NextToken")
        if not token:
            return out


def delete_groups(
    clients: provision.Clients,
    groups: Iterable[Group],
    timeout: float = GROUP_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[str], list[str]]:
    """Delete ``groups``, retrying while EC2 says an instance still uses one; (deleted, left)."""
    pending = {g.id: g for g in groups}
    deleted: list[str] = []
    deadline = time.monotonic() + timeout
    pause = 0.25
    while pending:
        for group in list(pending.values()):
            ec2 = clients(group.region)
            try:
                with_backoff(lambda: ec2.delete_security_group(GroupId=group.id))  # noqa: B023
            except Exception as exc:
                code = error_code(exc)
                if code == "DependencyViolation":
                    continue  # its instance is still shutting down: try again shortly
                if code not in ("InvalidGroup.NotFound", "InvalidGroupId.NotFound"):
                    raise
            deleted.append(group.id)  # deleted now, or already gone: either way no longer ours
            del pending[group.id]
        if not pending or time.monotonic() + pause > deadline:
            break
        sleep(pause)
        pause = min(pause * 2, 5.0)
    return deleted, sorted(pending)


def delete_cluster_groups(
    clients: provision.Clients,
    region: str,
    cluster_id: str,
    timeout: float = GROUP_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[str], list[str]]:
    """The provider's ``terminate``: one cluster's groups, once its instances are terminated."""
    return delete_groups(clients, find_groups(clients, region, None, cluster_id), timeout, sleep)


def sweep(
    clients: provision.Clients,
    listing: Listing,
    state_dir: pathlib.Path | None = None,
    group_timeout: float = GROUP_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> Swept:
    """Terminate the listed instances (confirmed by EC2), then delete the listed groups."""
    ended = (
        provision.terminate(clients, listing.instances, sleep=sleep) if listing.instances else []
    )
    if state_dir is not None and ended:
        _ledger_stopped(state_dir, {i.cluster_id for i in listing.instances})
    deleted, left = delete_groups(clients, listing.groups, group_timeout, sleep)
    return Swept(ended, deleted, left)


def format_listing(listing: Listing) -> str:
    where = ", ".join(listing.regions)
    if listing.empty:
        text = (
            f"burst: nothing to clean up: no instance or security group of {listing.owner} "
            f"without a live cluster in {where}"
        )
        if listing.spared:
            text += f" ({_spared(listing)})"
        return text
    lines = []
    if listing.instances:
        lines.append(
            f"burst: {count(len(listing.instances), 'instance')} of {listing.owner} "
            f"without a live cluster in {where}:"
        )
        rows = [("INSTANCE", "TYPE", "REGION", "CLUSTER", "AGE", "$/H")]
        for i in sorted(listing.instances, key=lambda i: (i.region, i.cluster_id, i.id)):
            price, listed = listing.prices.get(i.id, (None, False))
            shown = "?" if price is None else f"{'~' if listed else ''}{price:.3f}"
            aged = age(listing.now - i.launched) if i.launched else "?"
            market = f"{i.instance_type}{' spot' if i.spot else ''}"
            rows.append((i.id, market, i.region, i.cluster_id, aged, shown))
        lines += table(rows)
        if any(listed for _, listed in listing.prices.values()):
            lines.append("  ~ on-demand list price (the shipped catalog); not recorded at launch")
    if listing.groups:
        ids = ", ".join(g.id for g in listing.groups)
        lines.append(
            f"burst: {count(len(listing.groups), 'security group')} of clusters with no "
            f"instance left: {ids}"
        )
    if listing.spared:
        lines.append(f"burst: {_spared(listing)}")
    return "\n".join(lines)


def format_swept(swept: Swept) -> str:
    parts = []
    if swept.terminated:
        parts.append(f"terminated {count(len(swept.terminated), 'instance')}")
    if swept.deleted:
        parts.append(f"deleted {count(len(swept.deleted), 'security group')}")
    text = f"burst: {' and '.join(parts) or 'nothing was left to clean up'}"
    if swept.left:
        text += (
            f"; {', '.join(swept.left)} still in use by a shutting-down instance: "
            "run gc again in a few minutes"
        )
    return text


def parse_words(words: Sequence[str]) -> tuple[bool, tuple[str, ...]]:
    """``[--yes|yes] [--region R[,R]|region=R[,R]]``: (confirmed, regions to narrow to)."""
    yes, narrow = False, ()
    words = list(words)
    while words:
        word = words.pop(0)
        if word in ("--yes", "-y", "yes"):
            yes = True
        elif word == "--region" and words:
            narrow = _regions(words.pop(0))
        elif word.startswith(("--region=", "region=")):
            narrow = _regions(word.partition("=")[2])
        else:
            raise OptionError(
                f"gc does not know '{word}'; write gc [--yes] [--region us-east-1,us-west-2]"
            )
    return yes, narrow


def command(words: Sequence[str], how_to_confirm: str) -> str:
    """What ``%burst gc`` prints: the listing, or what was cleaned up with ``--yes``."""
    yes, narrow = parse_words(words)
    clients, state_dir = ec2_clients(), config.state_dir()
    try:
        listing = collect(clients, regions(narrow), provision.owner(), state_dir)
    except Exception as exc:
        raise unreachable(exc) or exc from None
    shown = format_listing(listing)
    if listing.empty:
        return shown
    if not yes:
        return f"{shown}\nburst: {how_to_confirm} terminates them"
    return f"{shown}\n{format_swept(sweep(clients, listing, state_dir))}"


def unreachable(exc: BaseException) -> ClusterError | None:
    """botocore's "cannot even ask" errors (no credentials, no network) as one line; else None."""
    if not type(exc).__module__.startswith("botocore") or error_code(exc) is not None:
        return None
    return ClusterError(
        f"EC2 could not be asked ({type(exc).__name__}: {exc}); check the network and the "
        "credentials (`aws sts get-caller-identity`)"
    )


def _regions(text: str) -> tuple[str, ...]:
    found = tuple(r.strip() for r in text.split(",") if r.strip())
    if not found:
        raise OptionError("gc --region needs a region name, e.g. --region us-east-1")
    return found


def _prices(state_dir: pathlib.Path, instances: list[Instance]) -> dict[str, tuple[float, bool]]:
    """$/h in force at launch from the ledger; else the catalog's list price (on-demand only)."""
    out: dict[str, tuple[float, bool]] = {}
    ids = [i.id for i in instances]
    if ids and (state_dir / "ledger.sqlite").exists():
        rows = shared_ledger(state_dir).query(
            f"SELECT id, price_per_hour FROM nodes WHERE id IN ({', '.join('?' * len(ids))})", ids
        )
        out = {r["id"]: (float(r["price_per_hour"]), False) for r in rows if r["price_per_hour"]}
    missing = [i for i in instances if i.id not in out and not i.spot]
    if missing:
        _, catalog = load_catalog("aws")
        listed = {(o.instance_type, o.region): o.price_per_hour for o in catalog}
        for i in missing:
            if (i.instance_type, i.region) in listed:
                out[i.id] = (listed[(i.instance_type, i.region)], True)
    return out


def _ledger_stopped(state_dir: pathlib.Path, cluster_ids: set[str]) -> None:
    """Clusters this state folder recorded stop being billed in ``%burst cost``."""
    if not (state_dir / "ledger.sqlite").exists():
        return
    ledger = shared_ledger(state_dir)
    for cluster_id in sorted(cluster_ids):
        ledger.cluster_stopped(cluster_id, "gc")


def _spared(listing: Listing) -> str:
    return (
        f"{count(listing.spared, 'instance')} launched in the last {grace_seconds():g} s "
        "spared: its cluster may be forming right now"
    )
