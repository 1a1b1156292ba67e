"""A cluster's client, used by the notebook's kernel and by a head node alike: finding,
starting and connecting to a cluster (the cluster handle), submitting a cell's ranks and
following them through attempts, and the plan of what each worker already holds."""
