"""Any ``%%burst`` line: parsed, or one line that says what is wrong. Never a traceback, never a
half-run cell (property-based, over the option grammar and its near misses)."""

from __future__ import annotations

import pathlib
import uuid

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from jupyter_burst.errors import BurstError
from jupyter_burst.kernel import options

# Characters IPython reads as the end of the magic's line are not part of one.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_TEXT = st.text(st.characters(blacklist_characters=_LINE_BREAKS), max_size=12)
_KEYS = st.sampled_from([*options._PARSERS, "gpu", "GPUS", "idle_", "returns", "x", "", " "])
_VALUES = st.one_of(
    st.sampled_from(
        [
            *("1", "0", "-1", "8", "1_000", "1e9", "nan", "inf", "1.5", "0.0", "٣", "auto"),
            *("90s", "2h", "10m", "-5s", "yes", "no", "any", "gather", "a,b", "a,,b", "1a"),
            *("local", "aws", "ssh", "nowhere", "x=y", "'", '"', "__import__('os')"),
        ]
    ),
    _TEXT,
)
_WORDS = st.one_of(
    st.builds(lambda key, value: f"{key}={value}", _KEYS, _VALUES),
    st.sampled_from(["async", "spot", "gather", "yes", "=", "==", "gpus==1", "'gpus=1"]),
    _TEXT,
)
LINES = st.lists(_WORDS, max_size=6).map(" ".join)


def _parsed_or_said(line: str) -> BurstError | None:
    try:
        parsed = options.parse(line)
    except BurstError as exc:
        text = str(exc)
        assert text.startswith("burst: ") and "\n" not in text, (line, text)
        assert len(text) < 500, (line, text)
        return exc
    assert isinstance(parsed, options.CellOptions) and parsed.gpus >= 1, line
    return None


@given(LINES)
@settings(max_examples=600, deadline=None)
def test_every_line_is_parsed_or_refused_with_one_line(line):
    _parsed_or_said(line)  # any other exception fails the test, with the line that caused it


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_burst")
    yield shell
    InteractiveShell.clear_instance()


def test_a_line_parses_as_the_magic_receives_it_with_trailing_whitespace_of_any_kind():
    # Found by the test below: IPython drops a trailing "\x1f" (whitespace to Python, not to
    # shlex), so "%%burst \x1f" ran its cell while the same line, parsed here, was refused.
    assert options.parse("gpus=2 \x1f\u3000") == options.parse("gpus=2")


@given(line=LINES)
@example(line="\x1f")
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_refused_line_runs_nothing_of_its_cell(shell, tmp_path, line):
    assume(_parsed_or_said(line) is not None)  # a valid line would start a cluster
    # One marker per example (tmp_path is shared by all of them): a failure names its own line.
    marker = pathlib.Path(tmp_path) / f"ran-{uuid.uuid4().hex}"
    result = shell.run_cell(f"%%burst {line}\nopen({str(marker)!r}, 'w').write('x')\n")
    assert isinstance(result.error_in_exec, BurstError), (line, result.error_in_exec)
    assert result.error_in_exec._render_traceback_() == [str(result.error_in_exec)]
    assert not marker.exists(), line
