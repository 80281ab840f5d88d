"""Result rows (dicts, one per job, image or variant) as tables: their columns and their Markdown."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["column_union", "markdown_table"]


def column_union(rows: Iterable[Mapping], first: Sequence[str] = ()) -> list[str]:
    """The `first` columns, then every other key of the rows, in first-seen order (a CSV header)."""
    columns = dict.fromkeys(first)
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def markdown_table(columns: Sequence[str], rows: Iterable, float_format: str | None = None) -> str:
    """A Markdown table; each row a mapping (cells by column, missing ones empty) or a sequence of cells.

    Floats are written with `float_format` (str() without one); a `|` or line break in a cell is escaped.
    """
    lines = [_line(columns), "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row.get(c, "") for c in columns] if isinstance(row, Mapping) else row
        lines.append(
            _line(format(c, float_format) if float_format and isinstance(c, float) else c for c in cells)
        )
    return "\n".join(lines) + "\n"


def _line(cells: Iterable) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
