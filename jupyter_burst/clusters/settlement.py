"""Which recorded clusters still run, and the ledger told when the others' machines stopped.

A cluster's machines may end by themselves while no kernel watches (idle, lifetime, a node
the cluster grew by and then let go): the provider's own records say when, and a provider
with ``settle(record)`` writes that in the ledger, so the bill shown is the bill sent.
"""

from __future__ import annotations

from typing import Any

from jupyter_burst.clusters import records, registry


def live_cluster_ids(state_dir: Any) -> set[str]:
    """Clusters whose head is still there, by their records (cheap: no connection); each
    provider that can settles what of its clusters ended meanwhile."""
    live = set()
    for record in records.all_records(state_dir):
        try:
            provider = registry.get_provider(record.get("provider", "local"))
            if provider.is_alive(record):
                live.add(record["id"])
                if hasattr(provider, "settle") and len(record.get("instances") or ()) > 1:
                    # A node the cluster grew by, ended when it went idle: billed to its end.
                    provider.settle(dict(record, state_dir=str(state_dir)))
            elif hasattr(provider, "settle"):
                # Its machines ended by themselves (idle, lifetime): the ledger learns when,
                # from the provider's own records, so the bill shown is the bill sent.
                provider.settle(dict(record, state_dir=str(state_dir)))
        except Exception:  # an unknown or broken provider: its cluster is not shown live
            continue
    return live
