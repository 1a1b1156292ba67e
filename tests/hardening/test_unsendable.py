"""Thirty namespaces that cannot travel: each named by its path in one line, within 2 s, for $0."""

from __future__ import annotations

import time

from tests.harness import burst_kernel, cluster_record

# Made in the notebook (a real kernel), one variable per case.
SETUP = """
import asyncio, ctypes, io, multiprocessing, queue, selectors, socket, sqlite3, ssl
import subprocess, tempfile, threading, contextvars, weakref, zipfile
from dataclasses import dataclass, field
import numpy as np

class Box:
    pass

def numbers():
    yield 1

async def job():
    pass

async def stream():
    yield 1

@dataclass
class Trainer:
    lr: float = 0.1
    guard: object = field(default_factory=threading.Lock)

deep = Box(); deep.inner = Box(); deep.inner.lock = threading.Lock()
holder = Box(); holder.conn = socket.socket()
archive_path = tempfile.mktemp(suffix='.zip')
zipfile.ZipFile(archive_path, 'w').close()
loop = asyncio.new_event_loop()
coroutine = job()

lock = threading.Lock()
rlock = threading.RLock()
condition = threading.Condition()
event = threading.Event()
semaphore = threading.Semaphore()
text_file = open(__file__ if '__file__' in dir() else '/etc/hostname')
binary_file = open('/etc/hostname', 'rb')
temp_file = tempfile.TemporaryFile()
generator = numbers()
sock = socket.socket()
cfg = {'lr': 0.1, 'guard': threading.Lock()}
files = [1, 2, open('/etc/hostname')]
pair = (1, numbers())
db = sqlite3.connect(':memory:')
thread = threading.Thread(target=print)
proc = subprocess.Popen(['true'])
mapped = __import__('mmap').mmap(-1, 4096)
jobs_queue = queue.Queue()
frame = __import__('sys')._getframe()
async_gen = stream()
ref = weakref.ref(Box)
pointer = ctypes.pointer(ctypes.c_int(1))
mp_lock = multiprocessing.Lock()
selector = selectors.DefaultSelector()
var = contextvars.ContextVar('v')
tls = ssl.create_default_context()
local = threading.local()
archive = zipfile.ZipFile(archive_path)
trainer = Trainer()
big = np.empty(2 * 2**30, dtype=np.uint8)  # untouched: virtual memory only
"""

# variable -> what its one line must say after "burst: cannot send '<variable>' ("
CASES = {
    "lock": "threading.Lock)",
    "rlock": "threading.RLock)",
    "condition": "threading.Condition); it holds a threading.RLock at condition._lock",
    "event": "threading.Event); it holds a threading.Lock at event._cond._lock",
    "semaphore": "threading.Semaphore); it holds a threading.Lock at semaphore._cond._lock",
    "text_file": "open file)",
    "binary_file": "open file)",
    "temp_file": "open file)",
    "generator": "generator)",
    "sock": "socket.socket)",
    "cfg": "dict); it holds a threading.Lock at cfg['guard']",
    "files": "list); it holds an open file at files[2]",
    "pair": "tuple); it holds a generator at pair[1]",
    "db": "sqlite3.Connection)",
    "thread": "threading.Thread); it holds a threading.Lock at thread._started._cond._lock",
    "proc": "subprocess.Popen); it holds a threading.Lock at proc._waitpid_lock",
    "mapped": "mmap.mmap)",
    "jobs_queue": "queue.Queue); it holds a threading.Lock at jobs_queue.mutex",
    "frame": "frame)",
    "coroutine": "coroutine)",
    "async_gen": "async_generator)",
    "ref": "weakref.ReferenceType)",
    "pointer": "LP_c_int)",
    "mp_lock": "multiprocessing.synchronize.Lock); it holds a _multiprocessing.SemLock at mp_lock._semlock",
    "selector": "selectors.EpollSelector); it holds a selectors._SelectorMapping at selector._map",
    "var": "_contextvars.ContextVar)",
    "tls": "ssl.SSLContext)",
    "local": "_thread._local)",
    "archive": "zipfile.ZipFile); it holds an open file at archive.fp",
    "trainer": "Trainer); it holds a threading.Lock at trainer.guard",
    "holder": "Box); it holds a socket.socket at holder.conn",
    "deep": "Box); it holds a threading.Lock at deep.inner.lock",
}


def test_each_unsendable_value_is_named_by_its_path_within_2s_before_anything_starts(
    state_dir, workdir
):
    with burst_kernel(state_dir, workdir, {"DASK_BURST__SEND_LIMIT": "1 GiB"}) as kernel:
        kernel.ok(SETUP)
        for name, said in CASES.items():
            started = time.monotonic()
            run = kernel.execute(f"%%burst\nkind = type({name}).__name__\n")
            took = time.monotonic() - started
            assert run.status == "error" and run.traceback == [run.evalue], (name, run.traceback)
            expected = (
                f"burst: cannot send '{name}' ({said}: create it inside the cell, or exclude={name}"
            )
            assert run.evalue.startswith(expected), (name, run.evalue)
            assert took < 2, (name, took)
        run = kernel.execute("%%burst\nsize = big.nbytes\n")
        assert run.evalue == (
            "burst: the cell's values come to 2.00 GiB, over burst.send-limit (1.00 GiB); the "
            "largest is 'big' (2.00 GiB): load it inside the cell from where the cluster can "
            "read it, exclude=big, or raise burst.send-limit"
        )
        # Nothing was started ($0), and the notebook still has every value.
        assert cluster_record(state_dir) is None
        names = " ".join([*CASES, "big"])
        kept = kernel.ok(f"print(set('{names}'.split()) <= set(dir()))").stdout.strip()
        assert kept == "True"
        kernel.ok("loop.close()\nproc.wait()")
