"""Whoever can write the checkpoint store (a shared bucket, a node's instance profile) cannot
run code in the kernel: every entry is signed with the user's store key, and one that is
not is refused before a byte of it is unpickled (store/store_key.py)."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest

from jupyter_burst.errors import CheckpointError
from jupyter_burst.store import results
from jupyter_burst.store.checkpoints import MANIFEST


class _RunsCode:
    """What an attacker stores: unpickling it writes the marker file (it needs no class of
    ours to load: the pickle names builtins.exec)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _forge(folder, entry: dict, data: bytes) -> None:
    """Replace ``entry``'s data and make the manifest agree: size, sha256, pickle format."""
    (folder / f"{entry['name']}.ckpt").write_bytes(data)
    manifest = json.loads((folder / MANIFEST).read_text())
    for kept in manifest["checkpoints"]:
        if kept["name"] == entry["name"]:
            kept.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), format="pickle")
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_a_forged_checkpoint_is_refused_unread_and_the_one_before_is_offered(
    kernel, state_dir, tmp_path
):
    kernel.ok("%%burst\nfor step in (1, 2):\n    burst.checkpoint({'w': step}, step=step)\n")
    (folder,) = (state_dir / "checkpoints").iterdir()
    first, second = json.loads((folder / MANIFEST).read_text())["checkpoints"]
    marker = tmp_path / "ran"
    # The writer replaces the newest entry, and even gives it the older entry's signature.
    _forge(folder, second, pickle.dumps(_RunsCode(marker)))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["checkpoints"][1]["mac"] = first["mac"]
    (folder / MANIFEST).write_text(json.dumps(manifest))

    run = kernel.execute(f"%burst restore {folder.name} as state")
    assert run.status == "ok", run.error_text
    said = run.stdout + run.stderr
    assert f"skipped checkpoint {second['name']} of job {folder.name} (step 2)" in said, said
    assert "is not signed with this user's store key" in said and "so it was not read" in said
    assert f"state = the checkpoint of job {folder.name}, step 1" in said, said
    assert kernel.ok("print(state)").stdout.strip() == "{'w': 1}"
    assert not marker.exists()  # nothing of the forged entry ran

    run = kernel.execute(f"%burst restore {folder.name} step=2 as state")
    assert run.status == "error" and not marker.exists()


def test_forged_background_results_are_refused_unread(tmp_path):
    root = str(tmp_path / "store")
    results.save(root, "job", pickle.dumps(({"y": 1}, None, None)))
    assert results.load(root, "job") == ({"y": 1}, None, None)
    marker = tmp_path / "ran"
    (tmp_path / "store" / "job" / ".result.pkl").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError) as refused:
        results.load(root, "job")
    assert "are not signed with this user's store key" in str(refused.value)
    assert not marker.exists()


def test_a_damaged_store_key_verifies_nothing_and_a_save_says_so(tmp_path, monkeypatch):
    from jupyter_burst.store import store_key
    from jupyter_burst.store.checkpoints import CheckpointStore

    store = CheckpointStore(str(tmp_path / "store"), "job")
    saved = store.save({"w": 1}, step=1)
    key = tmp_path / "damaged.key"
    key.write_text("not a key")
    monkeypatch.setenv(store_key.ENV, str(key))
    with pytest.warns(UserWarning, match="is not signed with this user's store key"):
        assert store.restore() is None  # nothing verifies: nothing is unpickled
    with pytest.raises(CheckpointError, match=r"no usable store key \(.*damaged\.key\)"):
        store.save({"w": 2}, step=2)
    assert store.list() == [saved]
