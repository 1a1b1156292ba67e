"""Only in the processes a test's kernel starts: ``kill -USR1`` writes every thread's stack
to a file, so that a cell which hangs (under CI, where nobody can look) says where.

The harness puts this folder on the kernel's ``PYTHONPATH`` with ``JUPYTER_BURST_TEST_STACKS``
naming where the files go; every Python process below the kernel (node, workers, pip)
inherits both. See :meth:`tests.harness.Kernel.stacks`.
"""

import os

_folder = os.environ.get("JUPYTER_BURST_TEST_STACKS")
if _folder and os.path.isdir(_folder):
    import faulthandler
    import signal

    try:
        _file = open(os.path.join(_folder, f"{os.getpid()}.txt"), "w")  # noqa: SIM115 - held for the process's life
        faulthandler.register(signal.SIGUSR1, file=_file, all_threads=True)
    except (OSError, ValueError, AttributeError):  # a read-only folder; no SIGUSR1 (Windows)
        pass
