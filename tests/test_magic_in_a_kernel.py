"""What a notebook user gets from ``%burst`` in a real kernel: Tab completion of options,
values and verbs (``complete_request``), ``%burst VERB?`` help, and verbs that return their
data as objects with an HTML table, a text table and attributes."""

from __future__ import annotations

import json

from jupyter_burst.server.api import jobs_view
from jupyter_burst.store.ledger import Ledger


def complete(kernel, code: str) -> list[str]:
    """The matches a ``complete_request`` with the cursor at the end of ``code`` answers."""
    msg_id = kernel.kc.complete(code, len(code))
    reply = kernel.kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kernel.kc.get_shell_msg(timeout=30)
    content = reply["content"]
    assert content["status"] == "ok", content
    # Each match replaces the text from cursor_start: what the user's line becomes.
    return [code[: content["cursor_start"]] + match for match in content["matches"]]


def test_tab_completes_options_their_values_and_verbs_with_the_names_they_take(kernel, state_dir):
    ledger = Ledger(state_dir / "ledger.sqlite")
    ledger.cluster_started("c1", "exp1", "local", "tcp://127.0.0.1:1", 1, ["cpu"], 20)
    ledger.job_started("j1", "c1", "k", "x = 1", {"background": True, "name": "train1"})

    assert complete(kernel, "%%burst g") == ["%%burst gpus=", "%%burst gpu_mem="]
    assert complete(kernel, "%%burst gpus=2 ti") == ["%%burst gpus=2 timeout="]
    assert set(complete(kernel, "%%burst provider=")) >= {
        "%%burst provider=local",
        "%%burst provider=aws",
        "%%burst provider=ssh",
    }
    assert complete(kernel, "%%burst provider=lo") == ["%%burst provider=local"]
    assert complete(kernel, "%%burst cluster=") == [
        "%%burst cluster=default",
        "%%burst cluster=exp1",
    ]
    assert complete(kernel, "%%burst spot=") == [
        "%%burst spot=yes",
        "%%burst spot=no",
        "%%burst spot=any",
    ]
    verbs = complete(kernel, "%burst ")
    assert {"%burst status", "%burst offers", "%burst cost", "%burst help"} <= set(verbs)
    assert complete(kernel, "%burst st") == ["%burst status"]
    assert complete(kernel, "%burst logs ") == ["%burst logs train1"]
    assert complete(kernel, "%burst down e") == ["%burst down exp1"]
    # A line that is not ours completes as Python does.
    assert "print" in [m.rpartition(" ")[2] for m in complete(kernel, "x = pri")]

    helped = kernel.ok("%burst offers?")
    assert helped.stdout.splitlines()[0] == (
        "%burst offers gpus=N [gpu_mem=GiB] [spot=yes|no] [region=a,b]"
    )
    assert "Returns a table of plans: offers[0].price_per_hour" in helped.stdout
    # Nothing to list is said in words, in the notebook's view too.
    empty = kernel.ok("%burst checkpoints").displays
    assert empty == [
        {"text/plain": "burst: no checkpoints", "text/html": "<p>burst: no checkpoints</p>"}
    ]
    unknown = kernel.execute("%burst help stats")
    assert unknown.evalue.startswith("burst: write %burst help [VERB]; the verbs: status, down")


# Runs in the kernel after the verbs: each value's kind, its HTML, its text and its data.
_DESCRIBE = """
import json
def describe(value):
    return {
        "type": type(value).__name__,
        "html": value._repr_html_(),
        "text": str(value),
    }
print(json.dumps({
    "status": describe(s), "cluster": s[0].name, "provider": s[0].provider,
    "offers": describe(o), "price": o[0].price_per_hour, "gpus": o[0].gpus,
    "cost": describe(c), "cost_jobs": [r.job for r in c.jobs], "today": str(c.today.total),
    "jobs": describe(j), "job_names": [r.name for r in j], "job_status": j[0].status,
    "checkpoints": describe(k), "steps": [r.step for r in k], "bytes": k[0].bytes,
}))
"""


def test_verbs_return_tables_with_html_text_and_data(kernel, state_dir):
    kernel.ok(
        "%%burst async name=train1\nfor step in range(3):\n    burst.checkpoint({'w': step}, step=step)\n"
    )
    kernel.ok("%burst wait train1", timeout=60)
    # The ledger knows the job as In [2] of its notebook (In [1] loaded the extension).
    (job,) = jobs_view(state_dir)
    assert (job["name"], job["cell_number"], job["cluster"]) == ("train1", 2, "default")
    kernel.ok(
        "s = %burst status\no = %burst offers gpus=1\nc = %burst cost\n"
        "j = %burst jobs\nk = %burst checkpoints"
    )
    got = json.loads(kernel.ok(_DESCRIBE).stdout)
    for verb in ("status", "offers", "jobs", "checkpoints"):
        assert got[verb]["type"] == "Table", got[verb]
        assert "<table" in got[verb]["html"] and "<th>" in got[verb]["html"], verb
    assert got["cost"]["type"] == "Report" and "<table" in got["cost"]["html"]
    assert (got["cluster"], got["provider"]) == ("default", "local")
    assert got["status"]["text"].splitlines()[0].split()[:3] == ["cluster", "provider", "state"]
    assert got["gpus"] == 1 and isinstance(got["price"], float)
    assert "Offers for 1 GPU, cheapest first:" in got["offers"]["text"]
    assert got["job_names"] == ["train1"] and got["job_status"] in ("done", "fetched")
    assert got["steps"] == [0, 1, 2] and got["bytes"] > 0
    assert len(got["cost_jobs"]) == 1 and "spend: this session" in got["cost"]["text"]

    # On a cell's last line, the notebook shows the HTML table and a terminal the text.
    shown = kernel.ok("%burst checkpoints")
    assert shown.stdout == ""
    (data,) = shown.displays
    assert data["text/html"].count("<tr>") == 4  # the header and three checkpoints
    assert data["text/plain"].splitlines()[0].split() == ["job", "step", "saved", "size", "cell"]
