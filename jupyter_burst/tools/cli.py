"""``jupyter burst ...`` from a shell (jupyter runs the ``jupyter-burst`` script it finds on PATH).

``jupyter burst gc [--yes] [--region a,b]``: the AWS instances (and, with a Lambda API key,
the Lambda machines; with GCP configured, the GCP instances) of this user that no live
cluster owns, ended after a yes (the question defaults to no: ending machines is not
undone).

``jupyter burst prewarm [--json] LINE``: start the cluster a ``%%burst LINE`` cell would use,
now (only while ``burst.prewarm`` is on; :mod:`jupyter_burst.tools.prewarm`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jupyter_burst import config
from jupyter_burst.clusters import gc_all
from jupyter_burst.clusters.aws import gc, provision, sdk
from jupyter_burst.clusters.aws.gc import unreachable
from jupyter_burst.clusters.gcp import gc as gcp_gc
from jupyter_burst.clusters.gcp import sdk as gcp_sdk
from jupyter_burst.clusters.lambda_cloud import api as lambda_api
from jupyter_burst.clusters.lambda_cloud import gc as lambda_gc
from jupyter_burst.clusters.lambda_cloud import machines as lambda_machines
from jupyter_burst.clusters.listing_words import count
from jupyter_burst.errors import BurstError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter burst", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    gc = verbs.add_parser(
        "gc",
        help="list (and terminate) AWS instances and Lambda machines of yours that no live cluster owns",
    )
    gc.add_argument("--yes", "-y", action="store_true", help="terminate without asking")
    gc.add_argument(
        "--region", help="only these regions, comma-separated (default: burst.aws.regions)"
    )
    warm = verbs.add_parser(
        "prewarm", help="start the cluster of a %%%%burst line now (with burst.prewarm on)"
    )
    warm.add_argument("--json", action="store_true", help="one JSON line per answer")
    warm.add_argument("line", nargs="*", help="what follows %%%%burst on the cell's first line")
    args = parser.parse_args(argv)
    if args.verb == "prewarm":
        from jupyter_burst.tools import prewarm  # the kernel's grammar: only for this verb

        return prewarm.main(["--json"] * args.json + ["--", *args.line])
    try:
        return _gc(args.yes, args.region)
    except BurstError as exc:
        print(exc, file=sys.stderr)
        return 1
    except Exception as exc:
        explained = unreachable(exc)
        if explained is None:
            raise
        print(explained, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("burst: interrupted; nothing more was terminated", file=sys.stderr)
        return 130


def _gc(yes: bool, region: str | None) -> int:
    words = ["--region", region] if region else []
    _, narrow = gc.parse_words(words)
    clients, state_dir = sdk.ec2_clients(), config.state_dir()
    others = []
    if lambda_api.api_key() is not None:
        others.append(("Lambda", lambda: _lambda_gc(yes, state_dir)))
    if gc_all.gcp_configured():
        others.append(("GCP", lambda: _gcp_gc(yes, state_dir)))
    if not others:
        return _aws_gc(yes, clients, narrow, state_dir)
    for cloud, part in [("AWS", lambda: _aws_gc(yes, clients, narrow, state_dir)), *others]:
        try:
            part()
        except BurstError as exc:  # a user of one cloud may have no account on another
            print(f"{exc} ({cloud} not cleaned up)", flush=True)
    return 0


def _aws_gc(yes: bool, clients, narrow: tuple[str, ...], state_dir) -> int:
    try:
        listing = gc.collect(clients, gc.regions(narrow), provision.owner(), state_dir)
    except Exception as exc:
        raise unreachable(exc) or exc from None
    print(gc.format_listing(listing), flush=True)
    if listing.empty:
        return 0
    if not yes and not _confirmed(
        len(listing.instances), "instance", len(listing.groups), "security group"
    ):
        print("burst: nothing was terminated")
        return 0
    print(gc.format_swept(gc.sweep(clients, listing, state_dir)))
    return 0


def _lambda_gc(yes: bool, state_dir) -> int:
    client = lambda_api.LambdaApi(lambda_api.require_key())
    listing = lambda_gc.collect(client, lambda_machines.owner(), state_dir)
    print(lambda_gc.format_listing(listing), flush=True)
    if listing.empty:
        return 0
    if not yes and not _confirmed(
        len(listing.machines), "Lambda machine", len(listing.rulesets), "firewall ruleset"
    ):
        print("burst: nothing was terminated on Lambda")
        return 0
    print(lambda_gc.sweep(client, listing, state_dir))
    return 0


def _gcp_gc(yes: bool, state_dir) -> int:
    compute = gcp_sdk.compute()
    listing = gcp_gc.collect(compute, state_dir)
    print(gcp_gc.format_listing(listing), flush=True)
    if listing.empty:
        return 0
    if not yes and not _confirmed(
        len(listing.instances), "GCP instance", len(listing.firewalls), "firewall rule"
    ):
        print("burst: nothing was deleted on GCP")
        return 0
    print(gcp_gc.sweep(compute, listing, state_dir))
    return 0


def _confirmed(machines: int, noun: str, others: int, other_noun: str) -> bool:
    question = (
        f"Terminate these {count(machines, noun)}? [y/N] "
        if machines
        else f"Delete these {count(others, other_noun)}? [y/N] "
    )
    try:
        answer = input(question)  # a closed stdin (EOF) is a no
    except EOFError:
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


if __name__ == "__main__":
    sys.exit(main())
