"""Rendering a report: blocks (headings, paragraphs, tables, figures) to Markdown and self-contained HTML,
and each table to CSV (its numbers) and LaTeX (its formatted cells)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from bench.report.figures import Figure
from bench.report.tables import Table
from grafs.files import write_text_atomic


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Paragraph | Code | Table | Figure


def _bold(table: Table, row: int, column: str) -> bool:
    return table.bold is not None and bool(table.bold.iloc[row][column])


def numbered(blocks: list[Block]) -> dict[int, str]:
    """'Table n' and 'Figure n' for each table and figure block (by position), in reading order."""
    names, counts = {}, {"Table": 0, "Figure": 0}
    for position, block in enumerate(blocks):
        kind = "Table" if isinstance(block, Table) else "Figure" if isinstance(block, Figure) else None
        if kind:
            counts[kind] += 1
            names[position] = f"{kind} {counts[kind]}"
    return names


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------
def _markdown_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    header = list(table.display.columns)
    lines = ["| " + " | ".join(_markdown_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    for row in range(len(table.display)):
        cells = []
        for column in header:
            text = _markdown_cell(table.display.iloc[row][column])
            cells.append(f"**{text}**" if _bold(table, row, column) else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(blocks: list[Block], root: Path) -> str:
    parts = []
    names = numbered(blocks)
    for position, block in enumerate(blocks):
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Code):
            parts.append("```\n" + block.text.rstrip("\n") + "\n```")
        elif isinstance(block, Table):
            parts.append(f"**{names[position]}. {block.title}** (`tables/{block.name}.csv`, `tables/{block.name}.tex`)")
            parts.append(markdown_table(block) if len(block.display) else "(no rows)")
            parts.extend(block.notes)
        else:
            relative = block.png.relative_to(root).as_posix()
            parts.append(f"![{block.name}]({relative})\n\n{names[position]}. {block.caption} (`{relative}`, PDF "
                         "alongside)")
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
div.table { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
td { white-space: nowrap; } td.long { white-space: normal; min-width: 24em; }
th { background: #f2f2f2; }
p.note { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 0.75em; overflow-x: auto; font-size: 0.8em; }
figure { margin: 1em 0; } img { max-width: 100%; width: auto; }
figcaption { font-size: 0.85em; color: #444; }
"""


LONG_CELL = 60  # characters: a cell this long (a formula, an error) wraps; shorter ones never break


def html_table(table: Table) -> str:
    header = list(table.display.columns)
    heading = "<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in header) + "</tr>"
    lines = ['<div class="table"><table>', heading]
    for row in range(len(table.display)):
        cells = []
        for column in header:
            raw = str(table.display.iloc[row][column])
            text = html.escape(raw)
            opening = '<td class="long">' if len(raw) > LONG_CELL else "<td>"
            cells.append(f"{opening}<b>{text}</b></td>" if _bold(table, row, column) else f"{opening}{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table></div>")
    return "\n".join(lines)


def render_html(blocks: list[Block], title: str) -> str:
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
    ]
    names = numbered(blocks)
    for position, block in enumerate(blocks):
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append("<p>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(block.text)) + "</p>")
        elif isinstance(block, Code):
            parts.append(f"<pre>{html.escape(block.text)}</pre>")
        elif isinstance(block, Table):
            parts.append(f"<p><b>{names[position]}. {html.escape(block.title)}</b></p>")
            parts.append(html_table(block) if len(block.display) else "<p>(no rows)</p>")
            parts.extend(f'<p class="note">{html.escape(note)}</p>' for note in block.notes)
        else:
            data = base64.b64encode(block.png.read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(block.name)}" src="data:image/png;base64,{data}">'
                f"<figcaption><b>{names[position]}.</b> {html.escape(block.caption)}</figcaption></figure>"
            )
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# LaTeX and CSV
# ----------------------------------------------------------------------------------------------
_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", "≥": r"$\geq$",
    "²": r"$^2$", "α": r"$\alpha$", "†": r"\dag{}", "<": r"$<$", ">": r"$>$",
}


def latex_escape(text: object) -> str:
    return "".join(_LATEX.get(character, character) for character in str(text))


def latex_table(table: Table) -> str:
    header = list(table.display.columns)
    lines = [
        f"% {latex_escape(table.title)}; generated by grafs-bench report (booktabs)",
        r"\begin{tabular}{" + "l" * len(header) + "}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in header) + r" \\",
        r"\midrule",
    ]
    for row in range(len(table.display)):
        cells = []
        for column in header:
            text = latex_escape(table.display.iloc[row][column])
            cells.append(rf"\textbf{{{text}}}" if _bold(table, row, column) else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(table: Table, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / f"{table.name}.csv", table.data.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(folder / f"{table.name}.tex", latex_table(table))
