"""``burst.<provider>.client-cidr``: the one address range a cloud cluster's ports open to.

The notebook's own public address (a /32), or a site's range of at most a /16: never the
whole internet, and never a guess made here (a laptop behind NAT does not know the address
the cloud sees).
"""

from __future__ import annotations

import ipaddress

from jupyter_burst import config
from jupyter_burst.errors import ClusterError

_CLOUD = {"aws": "AWS", "gcp": "GCP", "lambda": "Lambda Cloud"}
# The most addresses a client range may open a cluster's ports to: a /16.
WIDEST_CLIENT_RANGE = 1 << 16


def client_cidr(provider: str) -> str:
    """``burst.<provider>.client-cidr`` as a network, or one line saying what to set."""
    setting = f"burst.{provider}.client-cidr"
    cidr = config.get(f"{provider}.client-cidr")
    if not cidr:
        raise ClusterError(
            f"say which address the notebook reaches {_CLOUD.get(provider, provider)} from: set {setting} "
            "(your public IP as a /32, e.g. 203.0.113.7/32); the scheduler's port opens to it only"
        )
    try:
        network = ipaddress.ip_network(str(cidr).strip(), strict=False)
    except ValueError:
        raise ClusterError(
            f"{setting}={cidr} is not an address range; give your own address "
            "as a /32, e.g. 203.0.113.7/32"
        ) from None
    if network.prefixlen == 0:
        raise ClusterError(
            f"{setting}={cidr} would open the scheduler to the whole internet; "
            "give your own address as a /32"
        )
    if network.num_addresses > WIDEST_CLIENT_RANGE:
        raise ClusterError(
            f"{setting}={cidr} would open the scheduler to {network.num_addresses:,} "
            "addresses; give your own address as a /32 (or your site's range, at most a /16)"
        )
    return str(network)
