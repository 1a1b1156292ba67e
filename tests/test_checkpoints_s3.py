"""Checkpoints in S3: a moto server process stands in for S3, reached through s3fs.

The endpoint comes from ``AWS_ENDPOINT_URL``, which botocore (and so aiobotocore and s3fs)
honours as a user's would; the credentials are moto's dummy ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
import warnings

import pytest

pytest.importorskip("s3fs")

from jupyter_burst.errors import CheckpointError
from jupyter_burst.store.checkpoints import MANIFEST, CheckpointSkipped, CheckpointStore, listing
from tests.aws_fakes import CREDENTIALS, moto_server
from tests.harness import REPO, burst_kernel
from tests.test_checkpoints import third_skipped

BUCKET = "burst-checkpoints"
BLOB = 256 << 10


def state_of(k: int) -> dict:
    return {"k": k, "blob": bytes([k % 251]) * BLOB}


@pytest.fixture(scope="module")
def endpoint():
    with pytest.MonkeyPatch.context() as env, moto_server() as url:
        for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": url}.items():
            env.setenv(key, value)  # dummy credentials: a real key must never be used here
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield url


@pytest.fixture
def root(endpoint) -> str:
    """A fresh prefix in the bucket for each test."""
    return f"s3://{BUCKET}/ckpts-{uuid.uuid4().hex[:8]}"


def objects(root: str, job: str = "job") -> dict[str, bytes]:
    """What S3 itself holds under the job's folder (through boto3, not the code under test)."""
    import boto3

    s3 = boto3.client("s3")
    prefix = f"{root.split('/', 3)[3]}/{job}/"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {
        o["Key"][len(prefix) :]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        for o in listed
    }


def check_store(root: str, keep: int) -> int:
    """Every checkpoint the manifest in S3 names is intact, restore() gives the newest; its step."""
    held = objects(root)
    entries = json.loads(held[MANIFEST])["checkpoints"]
    assert 1 <= len(entries) <= keep
    for entry in entries:
        data = held[f"{entry['name']}.ckpt"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact store restores without skipping anything
        state, checkpoint = CheckpointStore(root, "job", keep=keep).restore()
    assert state == state_of(checkpoint.step) and checkpoint.step == entries[-1]["step"]
    return checkpoint.step


def test_save_restore_and_keep_n_in_s3(root):
    store = CheckpointStore(root, "job", keep=2)
    saved = [store.save(state_of(k), step=k) for k in range(1, 5)]
    assert [c.step for c in store.list()] == [3, 4]
    # Only the kept checkpoints and the manifest are left in the bucket.
    assert set(objects(root)) == {MANIFEST, f"{saved[2].name}.ckpt", f"{saved[3].name}.ckpt"}
    assert saved[3].url == f"{root}/job/{saved[3].name}.ckpt"
    assert check_store(root, keep=2) == 4
    assert store.restore(step=3)[0] == state_of(3)
    # What %burst checkpoints lists, through a store opened afresh.
    assert [(job, c.step) for job, c in listing(root)] == [("job", 3), ("job", 4)]


def test_a_corrupted_object_is_skipped_with_a_warning_and_the_one_before_is_used(root):
    import boto3

    store = CheckpointStore(root, "job", keep=3)
    saved = [store.save(state_of(k), step=k) for k in (1, 2, 3)]
    key = f"{root.split('/', 3)[3]}/job/{saved[2].name}.ckpt"
    data = bytearray(objects(root)[f"{saved[2].name}.ckpt"])
    data[1000] ^= 0xFF  # same size, one bit pattern changed: only the sha256 can tell
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
    with pytest.warns(CheckpointSkipped) as caught:
        state, checkpoint = store.restore()
    assert checkpoint.step == 2 and state == state_of(2)
    (message,) = [str(w.message) for w in caught]
    assert message == third_skipped(saved)


# Saves steps 1-3, then SIGKILLs itself at one point of the save of step 4.
_KILL_AT = f"""
import os, signal, sys
from jupyter_burst.store import checkpoints
from jupyter_burst.store.checkpoints import CheckpointStore
root, owner, name, nth = sys.argv[1:5]
store = CheckpointStore(root, "job", keep=2)
def state_of(k):
    return {{"k": k, "blob": bytes([k % 251]) * {BLOB}}}
for k in (1, 2, 3):
    store.save(state_of(k), step=k)
target = {{"store": CheckpointStore, "writer": checkpoints._HashingWriter}}[owner]
original = getattr(target, name)
calls = [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(target, name, dying)
store.save(state_of(4), step=4)
print("not killed", flush=True)
"""


@pytest.mark.parametrize(
    ("owner", "name", "nth", "committed", "leftover"),
    [
        ("writer", "write", 2, 3, False),  # part of the data pickled; nothing uploaded yet
        ("store", "_write_manifest", 1, 3, True),  # the data object uploaded, not committed
        ("store", "_tidy", 1, 4, True),  # committed; the retired object not yet deleted
    ],
    ids=["mid-data", "data-written-not-committed", "committed-not-pruned"],
)
def test_a_save_killed_mid_way_leaves_the_previous_checkpoint_restorable(
    root, owner, name, nth, committed, leftover
):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", _KILL_AT, root, owner, name, str(nth)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert check_store(root, keep=2) == committed
    named = {f"{e['name']}.ckpt" for e in json.loads(objects(root)[MANIFEST])["checkpoints"]}
    assert (set(objects(root)) - named - {MANIFEST} != set()) == leftover
    # The next save commits and sweeps what the killed one left in the bucket.
    store = CheckpointStore(root, "job", keep=2)
    store.save(state_of(5), step=5)
    assert [c.step for c in store.list()] == [committed, 5]
    assert set(objects(root)) == {MANIFEST} | {f"{c.name}.ckpt" for c in store.list()}


def test_a_missing_bucket_is_one_line_and_is_not_created(endpoint):
    import boto3

    root = "s3://no-such-burst-bucket/ckpts"
    store = CheckpointStore(root, "job")
    assert store.restore() is None  # nothing saved there yet
    with pytest.raises(CheckpointError) as caught:
        store.save(state_of(1), step=1)
    assert str(caught.value) == (
        f"burst: could not save the checkpoint of step 1 in {root}: The specified bucket does "
        "not exist; create the bucket or set burst.checkpoints.url to one that exists; the "
        "previous checkpoints are unchanged"
    )
    names = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
    assert "no-such-burst-bucket" not in names  # a typo never creates a bucket


_NO_CREDENTIALS = """
import sys
from jupyter_burst.store.checkpoints import CheckpointStore
from jupyter_burst.errors import CheckpointError
store = CheckpointStore(sys.argv[1], "job")
for attempt in (lambda: store.restore(), lambda: store.save({"k": 1}, step=1)):
    try:
        attempt()
    except CheckpointError as exc:
        print(exc)
"""


def test_no_credentials_is_one_line_naming_the_fix(root, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PYTHONPATH=str(REPO),
        AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"],
        AWS_DEFAULT_REGION="us-east-1",
        # No profile files and no instance metadata: no credentials from anywhere.
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    run = subprocess.run(
        [sys.executable, "-c", _NO_CREDENTIALS, root],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    fix = (
        "give this machine AWS credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY); on AWS nodes set burst.aws.instance-profile"
    )
    # restore(), and save() (which reads the manifest first), say the same one line.
    expected = (
        f"burst: could not read the checkpoints of job job in {root}: no AWS credentials "
        f"(Unable to locate credentials); {fix}"
    )
    assert run.stdout.splitlines() == [expected, expected]


# In a real kernel ------------------------------------------------------------------------

_SAVE_THREE = (
    "%%burst\nfor k in range(1, 4):\n    burst.checkpoint({'w': [k] * 3, 'k': k}, step=k)\n"
)

# Saves steps 1-3 and waits to be killed; the attempt after the kill resumes from S3.
_RESUMING = """%%burst
import os, time
state = burst.restore()
if state is None:
    for k in range(1, 4):
        burst.checkpoint({'w': [k] * 3, 'k': k}, step=k)
    print('saved, pid', os.getpid(), flush=True)
    while True:
        time.sleep(0.05)
print('resumed at', state['k'], state['w'], flush=True)
"""


def test_a_cell_checkpoints_to_s3_lists_restores_and_resumes_from_it(
    endpoint, root, state_dir, workdir
):
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "DASK_BURST__CHECKPOINTS__URL": root}
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok(_SAVE_THREE)
        listed = kernel.ok("%burst checkpoints").text.strip().splitlines()
        rows = [line.split() for line in listed[1:]]
        assert [row[1] for row in rows] == ["1", "2", "3"]
        job = rows[0][0]
        # In S3, not in the state folder: the kept three and the manifest.
        assert len(objects(root, job)) == 4 and not (state_dir / "checkpoints").exists()
        restored = kernel.ok("%burst restore last step=2 as s")
        assert restored.stdout.strip() == f"burst: s = the checkpoint of job {job}, step 2"
        assert kernel.ok("print(s['w'])").stdout.strip() == "[2, 2, 2]"

        # The worker dies after step 3 was saved: the cell runs again and resumes from S3.
        msg_id = kernel.kc.execute(_RESUMING)
        killed: list[int] = []

        def kill_when_saved(msg):
            text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
            if "saved, pid" in text and not killed:
                killed.append(int(text.split()[-1]))
                os.kill(killed[0], signal.SIGKILL)

        run = kernel.collect(msg_id, timeout=120, on_message=kill_when_saved)
        assert run.status == "ok", run.error_text
        assert killed and "resumed at 3 [3, 3, 3]" in run.stdout
        assert "burst: resumed from the checkpoint of step 3" in run.stderr

        # A bucket that does not exist: one line naming the fix, and the notebook unchanged.
        # (The magic re-reads the config, the environment included, for each cell.)
        kernel.ok(
            "x = 'before'\nimport os\n"
            "os.environ['DASK_BURST__CHECKPOINTS__URL'] = 's3://no-such-burst-bucket/ckpts'"
        )
        failed = kernel.execute("%%burst\nx = 'after'\nburst.checkpoint({'x': x}, step=1)\n")
        # The cell's line that failed is shown (as for any error the cell raises), then the
        # one line: the problem and the fix.
        assert failed.status == "error" and failed.ename == "CheckpointError"
        assert "----> 3 burst.checkpoint({'x': x}, step=1)" in failed.error_text
        assert "jupyter_burst/" not in failed.error_text  # no frames of the library's insides
        assert failed.error_text.strip().splitlines()[-1] == f"CheckpointError: {failed.evalue}"
        assert failed.evalue.startswith(
            "burst: could not save the checkpoint of step 1 in s3://no-such-burst-bucket/ckpts:"
        )
        assert "create the bucket or set burst.checkpoints.url" in failed.evalue
        assert kernel.ok("print(x)").stdout.strip() == "before"


def test_background_results_are_kept_beside_the_checkpoints_in_s3(root):
    import pickle

    from jupyter_burst.store import results

    results.save(root, "job", pickle.dumps(({"y": 1}, None, None)))
    assert results.exists(root, "job") and results.load(root, "job") == ({"y": 1}, None, None)
    assert set(objects(root)) == {".result.pkl"}  # one object, no leftover written aside
    results.remove(root, "job")
    assert results.load(root, "job") is None
