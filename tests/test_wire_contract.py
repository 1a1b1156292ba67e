"""The kernel and a worker agree on one typed contract (wire/contract.py); a worker of another
version says so in one line instead of failing somewhere inside the cell's run."""

from __future__ import annotations

import pytest

from jupyter_burst.wire.contract import CONTRACT, CellSpec, ContractMismatch, ResultMeta


def test_a_spec_crosses_as_plain_values_and_comes_back_typed() -> None:
    spec = CellSpec(source="x = 1", filename="<cell>", assigns=("x",), rank=1, world_size=2)
    sent = spec.to_wire()
    assert sent["contract"] == CONTRACT
    assert CellSpec.from_wire(sent) == spec


def test_a_spec_from_an_older_version_is_refused_in_one_line_naming_both_versions() -> None:
    with pytest.raises(ContractMismatch) as caught:
        CellSpec.from_wire({"source": "x = 1", "filename": "<cell>", "rank": 0})
    message = str(caught.value)
    assert "\n" not in message
    assert "an older version" in message and "pip install jupyter-burst==" in message


def test_result_metadata_round_trips_and_ignores_fields_it_does_not_know() -> None:
    meta = ResultMeta(rank=2, failed=True, failed_at=12.5, events=3)
    assert ResultMeta.loads(meta.dumps()) == meta


def test_a_cell_sent_by_a_kernel_of_another_contract_fails_with_one_line_on_the_worker(kernel):
    kernel.ok("%load_ext jupyter_burst")
    kernel.ok("import jupyter_burst.wire.contract as contract\ncontract.CONTRACT = 99")
    result = kernel.execute("%%burst\nx = 1")
    assert result.status == "error"
    said = f"{result.ename}: {result.evalue}"
    assert "contract 99" in said and "pip install jupyter-burst==" in said, result.error_text
    assert "\n" not in result.evalue.strip()
    assert "KeyError" not in result.error_text and "AttributeError" not in result.error_text
    # The notebook is untouched: the cell's assignment did not land.
    assert kernel.ok("print('x' in dir())").stdout.strip() == "False"
