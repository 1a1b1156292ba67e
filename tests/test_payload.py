"""What travels and how: one serialization, shared references kept, buffers out of band."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch
from distributed.protocol import deserialize, serialize

from jupyter_burst.errors import SendError
from jupyter_burst.wire import payload as wire


def _through_dask(message: wire.Payload) -> wire.Payload:
    header, frames = serialize(message, serializers=["dask"])
    return deserialize(header, frames)


def _notebook(source: str) -> dict:
    ns = {"__name__": "__main__"}
    exec(source, ns)
    return ns


def test_optimizer_still_refers_to_its_models_parameters_after_the_trip():
    ns = _notebook(
        "import torch\nmodel = torch.nn.Linear(4, 2)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    )
    message = wire.pack_namespace({"model": ns["model"], "opt": ns["opt"]}, ns)
    _, _, values = wire.unpack_namespace(_through_dask(message))
    assert values["opt"].param_groups[0]["params"][0] is values["model"].weight
    assert torch.equal(values["model"].weight, ns["model"].weight)


def test_large_buffers_travel_out_of_band_without_copies():
    array = np.arange(1_000_000, dtype=np.float64)
    tensor = torch.ones(500_000)
    message = wire.pack_namespace({"a": array, "t": tensor, "view": tensor[10:20]}, {})
    assert len(message.data) < 10_000  # the pickle itself holds no data
    assert sorted(b.nbytes for b in message.buffers) == [
        2_000_000,
        8_000_000,
    ]  # the view shares its storage
    _, _, values = wire.unpack_namespace(_through_dask(message))
    assert np.array_equal(values["a"], array)
    values["t"][15] = 7
    assert values["view"][5] == 7


def test_notebook_functions_see_the_shipped_namespace_as_their_globals():
    ns = _notebook(
        "scale = 3\ndef helper():\n    return 1\ndef f(v):\n    return v * scale + helper()\n"
    )
    message = wire.pack_namespace({"f": ns["f"]}, ns)
    _, remote_ns, values = wire.unpack_namespace(_through_dask(message))
    remote_ns.update(values)
    assert values["f"](2) == 7
    exec("scale = 10", remote_ns)
    assert values["f"](2) == 21


def test_unchanged_values_come_back_as_the_notebooks_own_objects_and_classes_stay_the_notebooks():
    ns = _notebook(
        "class Point:\n    def __init__(self, x):\n        self.x = x\nbig = list(range(5))\n"
    )
    message = wire.pack_namespace({"Point": ns["Point"], "big": ns["big"]}, ns)
    _, remote_ns, values = wire.unpack_namespace(_through_dask(message))
    remote_ns.update(values)
    exec("p = Point(2)\npair = (big, p)\ndef g():\n    return big\n", remote_ns)
    back = wire.pack_result(
        {"p": remote_ns["p"], "pair": remote_ns["pair"], "g": remote_ns["g"]},
        remote_ns,
        {id(values["big"]): "big"},
    )
    result = wire.unpack_result(_through_dask(back), ns, dict(ns))
    assert type(result["p"]) is ns["Point"]
    assert result["pair"][0] is ns["big"]
    assert result["g"].__globals__ is ns


def test_a_lock_inside_a_dict_is_named_by_its_path():
    with pytest.raises(SendError) as info:
        wire.pack_namespace({"state": {"ok": 1, "lock": threading.Lock()}}, {})
    assert str(info.value).startswith(
        "burst: cannot send 'state' (dict); it holds a threading.Lock at state['lock']: "
        "create it inside the cell, or exclude=state"
    )


def test_local_module_travels_as_source(tmp_path, monkeypatch):
    (tmp_path / "mylocal_mod.py").write_text(
        "FACTOR = 6\ndef triple(v):\n    return v * FACTOR // 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import mylocal_mod

    message = wire.pack_namespace({"mylocal_mod": mylocal_mod, "triple": mylocal_mod.triple}, {})
    meta = wire.pickle.loads(message.meta)
    assert [m.name for m in meta["modules"]] == ["mylocal_mod"]
    del sys.modules["mylocal_mod"]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    _, _, values = wire.unpack_namespace(_through_dask(message))
    assert values["triple"](2) == 6 and values["mylocal_mod"].FACTOR == 6


def test_fingerprint_sees_a_one_element_change():
    array = np.zeros(1_000_000)
    before = wire.fingerprint(array, {})
    assert wire.fingerprint(array, {}) == before
    array[123_456] = 1
    assert wire.fingerprint(array, {}) != before
