"""The ``gcp`` provider: Compute Engine GPU machines (issue #19, being built).

Built so far: the shipped price catalog (``catalog/gcp.yaml``) and what each of its names
asks Compute Engine for (:mod:`.shapes`). Not yet registered as a provider: launching
(``InstancesClient.insert`` over REST, Spot with ``max_run_duration`` and ``DELETE`` as
the dead-man, a firewall rule for the client's address) is the next part.
"""
