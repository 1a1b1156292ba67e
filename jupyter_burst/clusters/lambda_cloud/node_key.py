"""How an idle or orphaned Lambda machine stops billing when the notebook is gone.

Lambda has no stop, and a guest shutdown does not end the bill: only the API's terminate
does, and that takes an API key. So a Lambda cluster starts only once the user has said
which way it ends without them:

- ``burst.lambda.node-api-key-file``: a key the user made for this (``api_key = <key>``,
  mode 600). It goes to the head node only, over ssh's stdin (never in user data, never on
  a command line), into a file of the login's alone; the head's watchdog terminates every
  machine of the cluster with it when the cluster is idle, and a copy started beside it
  does so after the cluster's lifetime whatever the watchdog does
  (:mod:`jupyter_burst.node.lambda_terminate`). Whoever gets root on the head gets the key:
  SECURITY.md says so, and why a separate key, deleted after use, limits what that costs.
- ``burst.lambda.allow-without-node-key: true``: no key on any machine. The nodes' watchdog
  still ends their processes when idle, but the machines bill until this notebook (or any
  kernel or the JupyterLab server of this user: their status checks settle the cluster) or
  ``%burst gc`` terminates them.
"""

from __future__ import annotations

import json
import pathlib

from jupyter_burst import config
from jupyter_burst.clusters.lambda_cloud.api import read_key_file
from jupyter_burst.clusters.ssh import channel
from jupyter_burst.clusters.ssh.hosts import Host
from jupyter_burst.errors import ClusterError

KEY_FILE = "lambda.node-api-key-file"
WITHOUT = "lambda.allow-without-node-key"


def node_key() -> str | None:
    """The key the head may terminate its cluster with; None where the user allowed none.

    One line, before anything is launched, where the user has said neither.
    """
    setting = config.get(KEY_FILE, None)
    if setting:
        path = pathlib.Path(str(setting)).expanduser()
        key = read_key_file(path, "burst.lambda.node-api-key-file")
        if key is None:
            raise ClusterError(
                f"burst.lambda.node-api-key-file is {path}, which does not exist; write "
                "'api_key = <key>' there (mode 600), a key made for the nodes"
            )
        return key
    if config.flag(WITHOUT):
        return None
    raise ClusterError(
        "a Lambda machine bills until it is terminated through Lambda's API, even when idle: "
        "set burst.lambda.node-api-key-file to a key for the head node (it then ends its own "
        "cluster), or burst.lambda.allow-without-node-key: true to leave that to this "
        "notebook and %burst gc (see SECURITY.md)"
    )


def place(
    head: Host,
    state_dir: pathlib.Path,
    root: str,
    python: str,
    order: dict[str, object],
    lifetime_minutes: float,
) -> str:
    """Put the terminate order on the head (its backstop started); the watchdog's command."""
    answer = channel.helper(
        head,
        state_dir,
        ["order", root, python, f"{lifetime_minutes * 60:g}"],
        stdin=json.dumps(order).encode(),
        timeout=60,
    )
    return f"{python} -m jupyter_burst.node.lambda_terminate {answer['order']}"
