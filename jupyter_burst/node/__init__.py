"""What runs on a cluster machine outside its Dask workers: the bootstrap of a head or worker
node (``python -m jupyter_burst.node``), its slots (a worker process per GPU), the idle and
lifetime watchdog, power-off, and the head's runner of background jobs. Nothing here imports
the kernel or the server.

The local provider runs this same code as local processes, so every local test exercises
the path a cloud node takes.
"""
