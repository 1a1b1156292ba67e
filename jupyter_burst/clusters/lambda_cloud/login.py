"""The SSH key Lambda machines let the kernel in with: made here once, registered once.

Lambda's launch names exactly one SSH key of the account. Ours is an ed25519 pair made in
the state folder (``lambda/id_ed25519``, 0600 in a 0700 folder: this user's alone) and
registered under a name derived from its public half, so that every kernel of this user finds
the same registration and another machine's state folder makes one of its own. The private
half never leaves this machine.
"""

from __future__ import annotations

import hashlib

from jupyter_burst.clusters.lambda_cloud.api import LambdaApi

NAME_PREFIX = "jupyter-burst-"


def key_name(public: str) -> str:
    return NAME_PREFIX + hashlib.sha256(public.encode()).hexdigest()[:12]


def registered_name(api: LambdaApi, public: str) -> str:
    """The name our public key has in the account; registered now if it has none."""
    for key in api.get("/ssh-keys") or []:
        if " ".join(str(key.get("public_key", "")).split()[:2]) == public:
            return str(key["name"])
    name = key_name(public)
    api.post("/ssh-keys", {"name": name, "public_key": public})
    return name
