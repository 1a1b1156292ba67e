"""What a ``%burst`` verb returns: its rows as data, a text table for a terminal and an HTML
table for the notebook, both drawn from one description of the columns.

``offers = %burst offers gpus=8`` keeps the plans (``offers[0].price_per_hour``); a verb on a
cell's last line shows the HTML table in JupyterLab and the text table in a terminal, as any
IPython value does.
"""

from __future__ import annotations

import html
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Column:
    """One column: its heading, how a row shows in it, and which side its text keeps to."""

    title: str
    text: Callable[[Any], str]
    align: Literal["<", ">"] = "<"


class Row(types.SimpleNamespace):
    """One row's data as attributes (``status[0].name``); ``row["name"]`` reads the same."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class Table(Sequence[Any]):
    """Rows (any objects: the columns read them) with a heading above and notes below.

    ``limit`` bounds the rows a reader is shown, never the data: every row stays indexable.
    """

    def __init__(
        self,
        rows: Iterable[Any],
        columns: Sequence[Column],
        *,
        heading: str = "",
        notes: Sequence[str] = (),
        empty: str = "",
        indent: str = "",
        limit: int | None = None,
    ) -> None:
        self.rows = list(rows)
        self.columns = tuple(columns)
        self.heading = heading
        self.notes = list(notes)
        self.empty = empty
        self.indent = indent
        self.limit = limit

    # the data ---------------------------------------------------------------------------

    def __getitem__(self, index):  # type: ignore[override]
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def __bool__(self) -> bool:
        return bool(self.rows)

    # the text ---------------------------------------------------------------------------

    def _shown(self) -> list[Any]:
        return self.rows if self.limit is None else self.rows[: self.limit]

    def _cells(self) -> list[list[str]]:
        return [[column.text(row) for column in self.columns] for row in self._shown()]

    def table_lines(self) -> list[str]:
        """The header and the rows, columns padded to their widest cell (or the empty line)."""
        if not self.rows:
            return [self.empty] if self.empty else []
        grid = [[c.title for c in self.columns], *self._cells()]
        widths = [max(len(line[i]) for line in grid) for i in range(len(self.columns))]
        return [
            self.indent
            + "  ".join(
                cell.ljust(width) if column.align == "<" else cell.rjust(width)
                for cell, width, column in zip(line, widths, self.columns, strict=True)
            ).rstrip()
            for line in grid
        ]

    def lines(self) -> list[str]:
        head = [self.heading] if self.heading else []
        return head + self.table_lines() + self.notes

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    # the notebook's view ----------------------------------------------------------------

    def table_html(self) -> str:
        if not self.rows:
            return _paragraph(self.empty) if self.empty else ""

        def cell(tag: str, text: str, column: Column) -> str:
            style = ' style="text-align: right"' if column.align == ">" else ""
            return f"<{tag}{style}>{html.escape(text)}</{tag}>"

        head = "".join(cell("th", c.title, c) for c in self.columns)
        body = "".join(
            "<tr>"
            + "".join(cell("td", text, c) for text, c in zip(line, self.columns, strict=True))
            + "</tr>"
            for line in self._cells()
        )
        return (
            '<table class="jp-BurstTable">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )

    def _repr_html_(self) -> str:
        parts = [_paragraph(self.heading, strong=True)] if self.heading else []
        parts.append(self.table_html())
        parts.extend(_paragraph(note) for note in self.notes if note)
        return "".join(parts)


class Report:
    """A verb's result of several parts in order (tables and lines of text), with its data as
    attributes (``cost.today``, ``cost.jobs[0].cost``)."""

    def __init__(self, parts: Sequence[Table | str], **data: Any) -> None:
        self.parts = list(parts)
        for name, value in data.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return "\n".join(str(part) for part in self.parts)

    __repr__ = __str__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return "".join(
            part._repr_html_() if isinstance(part, Table) else _paragraph(part)
            for part in self.parts
            if str(part)
        )


def _paragraph(text: str, strong: bool = False) -> str:
    escaped = html.escape(text)
    return f"<p><strong>{escaped}</strong></p>" if strong else f"<p>{escaped}</p>"
