"""What runs on a cluster's machines: the bootstrap that starts Dask, and the idle watchdog.

The local provider runs this same code as local processes, so every local test exercises
the path a cloud node takes.
"""
