"""The notebook's environment, made again on bare cloud machines.

The kernel reads its own interpreter's packages into a spec (:mod:`.spec`), builds what it
has from local folders into wheels (:mod:`.wheels`) and resolves the whole set for the
nodes' platform with ``uv`` into an exact lock and its hash (:mod:`.lock`), all before
anything is billed: what cannot exist on the nodes is said or refused there. A node builds
the lock once with ``uv`` and stores the result as an archive keyed by the hash in the
cluster's object store; the next node with the same hash unpacks it (:mod:`.boot`, the
bash a boot script runs).
"""
