"""What runs inside a Dask worker process: the cell's runtime, the ``burst`` helper, the
worker's value cache, the orphan watch, the matplotlib backend, the pre-emption watcher and
the rank's IPython shell. Nothing here imports the kernel, the server or the providers."""
