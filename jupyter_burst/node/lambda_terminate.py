"""A Lambda head ending its own cluster: the machines terminated through Lambda's API.

A guest shutdown does not end a Lambda bill; only the API's terminate does. With the user's
opt-in (``burst.lambda.node-api-key-file``: a key made for this, sent to the head over ssh's
stdin, never in user data), the head's watchdog runs this as its power-off command, and a
copy started at boot runs it after the cluster's lifetime whatever the watchdog does:

    python -m jupyter_burst.node.lambda_terminate ORDER [--after SECONDS]

ORDER is a JSON file of this user's alone (0600): ``{"url", "key", "instances"}``. Each try
is logged; the API's pace is kept by the client, and its refusals end the try in one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import time

from jupyter_burst.clusters.lambda_cloud.api import LambdaApi
from jupyter_burst.clusters.lambda_cloud.machines import terminate
from jupyter_burst.errors import ClusterError

log = logging.getLogger("jupyter_burst.node")
_TRIES = 5
_BETWEEN_TRIES = 30.0


def read_order(path: str) -> dict:
    """The order file; refused unless it is this user's alone (it holds a key)."""
    info = os.stat(path)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid != os.getuid():
        raise ClusterError(f"{path} must be this user's alone (mode 600): it holds an API key")
    with open(path) as f:
        order = json.load(f)
    if not isinstance(order.get("instances"), list) or not order.get("key"):
        raise ClusterError(f"{path} names no instances or no key")
    return order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_burst.node.lambda_terminate")
    parser.add_argument("order")
    parser.add_argument("--after", type=float, default=0.0, help="seconds to wait first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.after > 0:
        time.sleep(args.after)
    try:
        order = read_order(args.order)
    except (OSError, ValueError, ClusterError) as exc:
        log.error("cannot terminate this cluster's machines: %s", exc)
        return 2
    client = LambdaApi(order["key"], order.get("url") or None)
    for attempt in range(1, _TRIES + 1):
        try:
            terminate(client, order["instances"])
        except ClusterError as exc:
            log.error("terminating %s failed (try %d): %s", order["instances"], attempt, exc)
            time.sleep(_BETWEEN_TRIES)
            continue
        log.warning("terminated this cluster's machines: %s", ", ".join(order["instances"]))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
