"""The chart under a cell of what its ranks burst.log: a curve per rank, redrawn while the
job runs, with a PNG for frontends without the extension and the last values as text."""

from __future__ import annotations

import base64
import json

from jupyter_burst.kernel.metrics_chart import MIME_TYPE, MetricsChart

# Two ranks log a loss each step; rank 1's is twice rank 0's. Slow enough (about 5 s) that
# the chart is redrawn while the cell still runs.
_TRAIN = """%%burst gpus=2
import time
for step in range(10):
    burst.log(step=step, loss=(burst.rank + 1) / (step + 1))
    time.sleep(0.5)
"""


def test_a_two_rank_cell_draws_two_loss_curves_that_grow_while_it_runs(kernel):
    seen: list[tuple[str, dict]] = []  # (message type, its data) of our chart, in order

    def watch(msg: dict) -> None:
        data = msg["content"].get("data") or {}
        if msg["msg_type"] in ("display_data", "update_display_data") and MIME_TYPE in data:
            seen.append((msg["msg_type"], data))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            seen.append(("idle", {}))

    run = kernel.collect(kernel.kc.execute(_TRAIN), 180, on_message=watch)
    assert run.status == "ok", run.error_text
    kinds = [kind for kind, _ in seen]
    assert kinds[0] == "display_data" and kinds[-1] == "idle", kinds
    assert kinds.count("update_display_data") >= 2, kinds  # redrawn as the steps came

    def lengths(data: dict) -> list[int]:
        loss = data[MIME_TYPE]["metrics"]["loss"]
        return [len(loss.get(rank, [])) for rank in ("0", "1")]

    drawn = [lengths(data) for kind, data in seen if kind != "idle"]
    assert drawn == sorted(drawn, key=sum) and sum(drawn[0]) < 20  # the curves grew
    final = seen[-2][1]
    assert lengths(final) == [10, 10]
    loss = final[MIME_TYPE]["metrics"]["loss"]
    assert loss["0"][-1] == [9.0, 0.1] and loss["1"][-1] == [9.0, 0.2]
    assert base64.b64decode(final["image/png"]).startswith(b"\x89PNG")  # no extension needed
    assert final["text/plain"] == "loss  rank 0: 0.1 (step 9)  rank 1: 0.2 (step 9)"
    # The printed lines are unchanged: rank 0's, once per step.
    assert run.stdout.count("step ") == 10


def test_redraws_wait_two_seconds_and_the_end_is_always_drawn():
    now = [0.0]
    shown: list[tuple[dict, bool]] = []
    chart = MetricsChart("j1", clock=lambda: now[0], show=lambda d, m, i, u: shown.append((d, u)))
    chart.add(0, 1, {"loss": 0.5, "note": "text is not drawn", "ok": True})
    chart.tick()
    chart.add(0, 2, {"loss": 0.25})
    now[0] = 1.0
    chart.tick()  # a second later: not yet
    assert len(shown) == 1 and shown[0][1] is False  # the first draw makes the display
    now[0] = 2.5
    chart.tick()
    chart.tick()  # nothing new since: no draw
    chart.add(1, None, {"loss": 0.75})  # no step: the point's index
    chart.tick(final=True)
    assert [update for _, update in shown] == [False, True, True]
    metrics = json.loads(json.dumps(shown[-1][0][MIME_TYPE]["metrics"]))
    assert metrics == {"loss": {"0": [[1.0, 0.5], [2.0, 0.25]], "1": [[0.0, 0.75]]}}
