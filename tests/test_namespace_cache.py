"""Nothing sent twice: large values are kept on the workers, sent again only when they change."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from dask.utils import parse_bytes
from distributed.protocol import deserialize, serialize

from jupyter_burst.wire import digest, payload
from jupyter_burst.worker import value_cache
from tests.harness import burst_kernel

MiB = 1 << 20


# ---------------------------------------------------------------------------------------
# The pieces, without a cluster


def test_content_keys_change_with_one_byte_and_agree_across_the_parallel_path():
    data = np.zeros(80 * MiB, dtype=np.uint8)  # above the size hashed on several threads
    first = digest.of(memoryview(data))
    assert digest.of(memoryview(data.copy())) == first
    data[-1] = 1
    assert digest.of(memoryview(data)) != first
    assert digest.of(memoryview(b"ab")) != digest.of(memoryview(b"ab\0"))


def test_a_value_over_the_threshold_gets_keys_and_a_small_one_does_not():
    values = {
        "big": np.ones(2 * MiB, dtype=np.uint8),
        "small": np.ones(64 << 10, dtype=np.uint8),
        # Many small buffers make one big value: each gets a key.
        "parts": [np.full(64 << 10, i, dtype=np.uint8) for i in range(32)],
        "frame": pd.DataFrame({"a": np.arange(MiB, dtype=np.float64)}),
    }
    message = payload.pack_namespace(values, {}, {}, cache_from=MiB)
    names = sorted(set(message.names.values()))
    assert names == ["big", "frame", "parts"]
    assert sum(1 for name in message.names.values() if name == "parts") == 32
    # The frame's column travelled out of band, uncopied.
    assert sum(message.cached_sizes().values()) >= 2 * MiB + 2 * MiB + 8 * MiB


def test_a_message_without_the_buffers_a_worker_holds_travels_without_them():
    x = np.arange(MiB, dtype=np.float64)
    message = payload.pack_namespace({"x": x, "y": 3}, {}, {}, cache_from=MiB)
    (key,) = message.cached_sizes()
    lean = message.without({key})
    assert lean.nbytes < 4096 < message.nbytes
    header, frames = serialize(lean, serializers=["dask"])
    arrived = deserialize(header, frames)
    assert arrived.omitted == lean.omitted and arrived.keys == message.keys

    cache = value_cache.ValueCache()
    original, value_cache.cache = value_cache.cache, cache
    try:
        full = value_cache.JobCache("me", 100 * MiB, MiB, "job-1")
        payload.unpack_namespace(deserialize(*serialize(message, serializers=["dask"])), full)
        full.release()
        job = value_cache.JobCache("me", 100 * MiB, MiB, "job-2")
        _, _, values = payload.unpack_namespace(arrived, job)
        assert np.array_equal(values["x"], x) and values["y"] == 3
        stranger = value_cache.JobCache("someone-else", 100 * MiB, MiB, "job-3")
        with pytest.raises(value_cache.CacheMiss):
            payload.unpack_namespace(arrived, stranger)
    finally:
        value_cache.cache = original


def test_the_worker_cache_forgets_the_least_recently_used_but_never_a_pinned_entry():
    cache = value_cache.ValueCache()
    a, b, c = (memoryview(bytearray(4 * MiB)) for _ in range(3))
    cache.put("me", "a", a, 10 * MiB, "job-1")
    cache.put("me", "b", b, 10 * MiB, "job-1")
    cache.release("job-1")
    cache.take("me", "a")  # a is now more recently used than b
    cache.put("me", "c", c, 10 * MiB, "job-2")
    assert cache.hold("me", ["a", "b", "c"], "job-3") == ["b"]
    # Everything left is pinned (by job-2 and job-3): over the limit rather than pull it away.
    cache.put("me", "d", memoryview(bytearray(4 * MiB)), 10 * MiB, "job-3")
    assert cache.hold("me", ["a", "c", "d"], "job-4") == []
    assert cache.nbytes == 12 * MiB
    for job in ("job-2", "job-3", "job-4"):
        cache.release(job)
    assert cache.nbytes <= 10 * MiB
    # A pin whose job never came is let go after a while.
    cache.put("me", "e", memoryview(bytearray(4 * MiB)), 10 * MiB, "never-ran")
    for entry in cache._entries.values():
        entry.pins = {job: when - 3600 for job, when in entry.pins.items()}
    cache.put("me", "f", memoryview(bytearray(8 * MiB)), 10 * MiB, "job-5")
    assert cache.nbytes <= 10 * MiB and cache.hold("me", ["f"], "job-6") == []
    # Entries are per owner: the same key of another kernel is not there.
    assert cache.hold("someone-else", ["f"], "job-7") == ["f"]
    assert cache.clear("someone-else") == 0 and cache.hold("me", ["f"], "job-8") == []


def test_the_limit_is_bytes_or_a_share_of_the_workers_memory():
    assert value_cache.limit_bytes("8 GiB") == 8 << 30
    assert value_cache.limit_bytes(1000) == 1000
    assert 0 < value_cache.limit_bytes("25%") < value_cache.limit_bytes("50%")


# ---------------------------------------------------------------------------------------
# In a real kernel, on a real cluster

_LAST_CELL = re.compile(r"last cell: sent ([\d.]+ \w*B); found on the cluster ([\d.]+ \w*B)")


def last_cell(kernel) -> tuple[int, int]:
    """(bytes the last cell sent, bytes its workers had already), as ``%burst cache`` says."""
    text = kernel.ok("%burst cache").stdout
    match = _LAST_CELL.search(text)
    assert match, text
    return parse_bytes(match[1]), parse_bytes(match[2])


def test_an_unchanged_value_is_sent_once_and_a_one_element_change_is_seen(kernel):
    kernel.ok(
        "import numpy as np, torch\nx = np.arange(2**20, dtype=np.float64)\nt = torch.ones(2**20)"
    )
    kernel.ok("%%burst gpus=2\ntotal = float(x.sum()) + float(t.sum())")
    sent, found = last_cell(kernel)
    assert sent >= 2 * 12 * MiB and found == 0  # 8 MiB + 4 MiB to each of the two ranks

    kernel.ok("%%burst\ntotal = float(x.sum()) + float(t.sum())")
    sent, found = last_cell(kernel)
    # What is left is the cell itself: its spec, the keys, and the notebook's random
    # generators' states (about 10 KB: random, NumPy's and torch's), nothing of x or t.
    assert sent < 16384 and found == 12 * MiB
    assert kernel.ok("print(total == x.sum() + 2**20)").stdout.strip() == "True"

    kernel.ok("x[12345] = -1e9\nt[7].add_(1)")  # one element of each, in the notebook
    kernel.ok("%%burst\ntotal = float(x.sum()) + float(t.sum())")
    assert kernel.ok("print(total == x.sum() + 2**20 + 1)").stdout.strip() == "True"
    sent, found = last_cell(kernel)
    assert sent >= 12 * MiB and found == 0

    # A cell that changes a cached value in place: the worker's copy is the new one.
    kernel.ok("%%burst\nx[0] = 7.0\n")
    assert kernel.ok("print(x[0])").stdout.strip() == "7.0"
    kernel.ok("%%burst\nfirst = float(x[0])")
    assert kernel.ok("print(first)").stdout.strip() == "7.0"
    assert last_cell(kernel)[1] == 8 * MiB

    # Rank 1 changes its copy; what it changed does not come back, so the next cell must
    # not find that copy: both ranks see the notebook's x.
    kernel.ok("%%burst gpus=2\nif burst.rank == 1:\n    x[:] = 0\n")
    kernel.ok("%%burst gpus=2 return=gather\nfirst = float(x[0])")
    assert kernel.ok("print(first)").stdout.strip() == "[7.0, 7.0]"

    # A new large value the cell made stays on its worker for the next cell.
    kernel.ok("%%burst\ny = x * 2")
    kernel.ok("%%burst\nlast = float(y[-1])")
    assert kernel.ok("print(last == x[-1] * 2)").stdout.strip() == "True"
    assert last_cell(kernel)[0] < 16384  # the cell and its random states, nothing of y

    listing = kernel.ok("%burst cache").stdout
    assert re.search(r"^    x: ", listing, re.M) and re.search(r"^    y: ", listing, re.M), listing
    assert "freed" in kernel.ok("%burst cache clear").stdout
    kernel.ok("%%burst\nlast = float(y[-1])")
    assert last_cell(kernel)[1] == 0


def test_an_evicted_value_is_sent_again(state_dir, workdir):
    env = {"DASK_BURST__CACHE__MAX_BYTES": "12 MiB"}
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("import numpy as np\na = np.full(2**20, 1.0)\nb = np.full(2**20, 2.0)")
        kernel.ok("%%burst\nsa = float(a.sum())")
        kernel.ok("%%burst\nsb = float(b.sum())")  # 16 MiB would pass the limit: a goes
        kernel.ok("%%burst\nsb = float(b.sum())")
        assert last_cell(kernel)[1] == 8 * MiB
        kernel.ok("a[0] = 5.0")
        kernel.ok("%%burst\nsa = float(a.sum())")
        sent, found = last_cell(kernel)
        assert sent >= 8 * MiB and found == 0
        assert kernel.ok("print(sa == 2**20 + 4)").stdout.strip() == "True"
        kernel.ok("a[0] = 1.0")  # back to the bytes that were evicted
        kernel.ok("%%burst\nsa = float(a.sum())")
        assert last_cell(kernel)[1] == 0
        assert kernel.ok("print(sa == 2**20)").stdout.strip() == "True"
        listing = kernel.ok("%burst cache").stdout
        assert "limit 12.00 MiB" in listing, listing


def test_two_kernels_sharing_a_cluster_never_see_each_others_values(state_dir, workdir):
    with burst_kernel(state_dir, workdir) as one, burst_kernel(state_dir, workdir) as two:
        one.ok("import numpy as np\nx = np.full(2**20, 1.0)")
        two.ok("import numpy as np\nx = np.full(2**20, 1.0)")  # the same bytes
        one.ok("%%burst\ns = float(x.sum())")
        two.ok("%%burst\ns = float(x.sum())")
        sent, found = last_cell(two)
        assert sent >= 8 * MiB and found == 0  # not taken from the other notebook's entry
        two.ok("x[:] = 2.0")
        for _ in range(2):
            one.ok("%%burst\ns = float(x.sum())")
            two.ok("%%burst\ns = float(x.sum())")
        assert one.ok("print(s)").stdout.strip() == str(float(2**20))
        assert two.ok("print(s)").stdout.strip() == str(float(2**21))
        assert last_cell(one)[1] == 8 * MiB and last_cell(two)[1] == 8 * MiB
        listing = one.ok("%burst cache").stdout
        # This notebook's 8 MiB of the 16 MiB the worker keeps: two's old x made way for its new one.
        assert re.search(r"8\.00 MiB of this notebook's values \(16\.00 MiB in all", listing), (
            listing
        )
