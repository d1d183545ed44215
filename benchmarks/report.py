"""Rows of benchmark results and their printing as a Markdown table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Row:
    """One figure: where it belongs, what it is, its value as text, and how it was measured.

    ``numbers`` keeps the raw values (seconds, ratios, bytes) for JSON output and tests.
    """

    section: str
    item: str
    value: str
    detail: str = ""
    numbers: dict = field(default_factory=dict)


def markdown_table(rows: list[Row]) -> str:
    """A Markdown table with one line per row, the section named once per block."""
    lines = ["| section | measurement | value | how / note |", "|---|---|---|---|"]
    previous = None
    for row in rows:
        section = row.section if row.section != previous else ""
        previous = row.section
        lines.append(f"| {section} | {row.item} | {row.value} | {row.detail} |")
    return "\n".join(lines)


def as_json_ready(rows: list[Row]) -> list[dict]:
    return [asdict(row) for row in rows]


def ratio(text_numerator: float, denominator: float) -> str:
    """'0.31x' style ratio text; '-' when the denominator is zero."""
    if denominator == 0:
        return "-"
    return f"{text_numerator / denominator:.2f}x"
