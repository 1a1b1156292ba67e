"""A GCP head deleting its own cluster's instances: nothing left billing, disks included.

A guest shutdown only stops a GCP instance, and its disk bills on. Where the user named a
service account for the head (``burst.gcp.node-service-account``, one they allowed to delete
instances), the head's watchdog runs this as its power-off command instead:

    python -m jupyter_burst.node.gcp_delete --api URL --metadata URL --project P --zone Z NAME...

It asks the instance's metadata server for the service account's short-lived token (no key
is ever on the machine), deletes each named instance through the Compute API (its own last),
and falls back to a guest shutdown if it cannot: the GPU's bill ends either way. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
import urllib.error
import urllib.request

log = logging.getLogger("jupyter_burst.node")
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
_TIMEOUT = 30


def token(metadata: str) -> str:
    request = urllib.request.Request(
        metadata.rstrip("/") + TOKEN_PATH, headers={"Metadata-Flavor": "Google"}
    )
    with urllib.request.urlopen(request, timeout=_TIMEOUT) as reply:
        return str(json.loads(reply.read())["access_token"])


def delete(api: str, project: str, zone: str, name: str, bearer: str) -> None:
    """Ask for the instance's deletion (Compute Engine finishes it even after we are gone)."""
    url = f"{api.rstrip('/')}/compute/v1/projects/{project}/zones/{zone}/instances/{name}"
    request = urllib.request.Request(
        url, method="DELETE", headers={"Authorization": f"Bearer {bearer}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 404:  # gone already is what we wanted
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_burst.node.gcp_delete")
    parser.add_argument("--api", required=True)
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--zone", required=True)
    parser.add_argument("--fallback", default="sudo -n shutdown -h now")
    parser.add_argument("instances", nargs="+", help="the cluster's instances, this one last")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        bearer = token(args.metadata)
        for name in args.instances:
            delete(args.api, args.project, args.zone, name, bearer)
    except (OSError, ValueError, KeyError) as exc:
        log.error("could not delete this cluster's instances (%s): shutting down instead", exc)
        subprocess.run(shlex.split(args.fallback), check=False, timeout=60)
        return 1
    log.warning("asked Compute Engine to delete this cluster's instances: %s", args.instances)
    return 0


if __name__ == "__main__":
    sys.exit(main())
