"""Tables and documents as text: Markdown, one self-contained HTML file, CSV and LaTeX (booktabs).

A `Table` holds typed cells (`Stat`: mean with its interval over seeds; `Num`: one number; text); a
`Document` is a list of blocks (headings, paragraphs in a small Markdown subset, tables, images,
galleries). Each renderer walks the same structure, so the four formats cannot disagree. Numbers are
printed to the precision their interval supports. No jinja2: the booktabs LaTeX is written here.
"""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

# -- numbers -------------------------------------------------------------------------------------------------


def fmt_num(value: float | None, digits: int = 4) -> str:
    """`digits` significant digits without exponent for everyday magnitudes (12346, 0.01230, 1.500)."""
    if value is None or not math.isfinite(value):
        return "n/a" if value is None or math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    if mag >= 7 or mag <= -5:
        return f"{value:.{digits - 1}e}"
    decimals = max(0, digits - 1 - mag)
    return f"{value:.{decimals}f}"


def stat_decimals(half_width: float) -> int:
    """Decimals that show the interval's half-width to two significant digits (0..6)."""
    if not math.isfinite(half_width) or half_width <= 0:
        return -1
    return int(min(6, max(0, 1 - math.floor(math.log10(half_width)))))


@dataclass(frozen=True)
class Stat:
    """A metric over seeds: mean and its interval [low, high] (NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    best: bool = False

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def text(self, pm: str = "±") -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        d = stat_decimals(self.half_width)
        if d < 0:
            if math.isfinite(self.half_width):  # zero spread: every seed gave the same value
                return f"{fmt_num(self.mean)} {pm} 0"
            return fmt_num(self.mean)
        return f"{self.mean:.{d}f} {pm} {self.half_width:.{d}f}"


@dataclass(frozen=True)
class Num:
    """One number (a timing, a count); `best` marks the winner of its comparison group."""

    value: float | None
    best: bool = False
    digits: int = 4

    def text(self) -> str:
        return fmt_num(self.value, self.digits)


Cell = Stat | Num | str | int | float | bool | None


def cell_text(value: Cell) -> str:
    if isinstance(value, Stat):
        return value.text()
    if isinstance(value, Num):
        return value.text()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else fmt_num(value)
    return str(value)


def is_best(value: Cell) -> bool:
    return isinstance(value, (Stat, Num)) and value.best


# -- tables ----------------------------------------------------------------------------------------------------
@dataclass
class Column:
    key: str
    label: str
    kind: Literal["setting", "stat", "num", "text"] = "setting"
    unit: str = ""
    higher_is_better: bool | None = None
    target: float | None = None  # neither direction, but a target value (sharpness: 1 = as sharp as the data)

    @property
    def arrow(self) -> str:
        if self.higher_is_better is True:
            return "↑"
        if self.higher_is_better is False:
            return "↓"
        if self.target is not None:
            return f"→{fmt_num(self.target, 3)}"
        return ""

    @property
    def numeric(self) -> bool:
        return self.kind in ("stat", "num")

    def header(self) -> str:
        return f"{self.label} {self.arrow}".strip()


@dataclass
class Table:
    """A rendered-anywhere table. `reference_rows` (e.g. the data-versus-data floor) follow a rule."""

    name: str  # slug: file names and anchors
    title: str
    columns: list[Column]
    rows: list[dict[str, Cell]]
    reference_rows: list[dict[str, Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"table-{self.name}"

    def units_note(self) -> str:
        parts = [f"{c.label}: {c.unit}" for c in self.columns if c.numeric and c.unit]
        return "Units: " + "; ".join(parts) + "." if parts else ""

    def frame(self) -> pd.DataFrame:
        """The table as a flat DataFrame for CSV: stats become mean / ci_low / ci_high / n / best columns."""
        records = []
        for row_type, rows in (("result", self.rows), ("reference", self.reference_rows)):
            for row in rows:
                rec: dict[str, Any] = {"row_type": row_type}
                for col in self.columns:
                    v = row.get(col.key)
                    if col.kind == "stat":
                        s = v if isinstance(v, Stat) else None
                        rec[f"{col.key}_mean"] = s.mean if s else None
                        rec[f"{col.key}_ci_low"] = s.low if s and math.isfinite(s.low) else None
                        rec[f"{col.key}_ci_high"] = s.high if s and math.isfinite(s.high) else None
                        rec[f"{col.key}_n"] = s.n if s else 0
                        rec[f"{col.key}_best"] = bool(s and s.best)
                    elif col.kind == "num":
                        rec[col.key] = v.value if isinstance(v, Num) else v
                        if any(is_best(r.get(col.key)) for r in self.rows):
                            rec[f"{col.key}_best"] = is_best(v)
                    else:
                        rec[col.key] = v
                records.append(rec)
        return pd.DataFrame.from_records(records)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown; best values in bold, reference rows in italics after the results."""
    cols = table.columns
    lines = ["| " + " | ".join(_md_escape(c.header()) for c in cols) + " |",
             "|" + "|".join("---:" if c.numeric else ":---" for c in cols) + "|"]
    for rows, italic in ((table.rows, False), (table.reference_rows, True)):
        for row in rows:
            cells = []
            for c in cols:
                text = _md_escape(cell_text(row.get(c.key, "")) if c.key in row else "")
                if text and is_best(row.get(c.key)):
                    text = f"**{text}**"
                if text and italic:
                    text = f"*{text}*"
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_html(table: Table) -> str:
    cols = table.columns
    out = [f'<table class="results" id="{html.escape(table.anchor)}">', "<thead><tr>"]
    for c in cols:
        title = f' title="{html.escape(c.unit)}"' if c.unit else ""
        out.append(f'<th class="{"num" if c.numeric else "txt"}"{title}>{html.escape(c.header())}</th>')
    out.append("</tr></thead>")
    for rows, cls in ((table.rows, ""), (table.reference_rows, "reference")):
        if not rows:
            continue
        out.append(f'<tbody class="{cls}">' if cls else "<tbody>")
        for row in rows:
            out.append("<tr>")
            for c in cols:
                v = row.get(c.key, "")
                text = html.escape(cell_text(v) if c.key in row else "")
                if c.key == "verdict" and v in VERDICTS:
                    text = f'<span class="verdict {v.replace(" ", "-")}">{text}</span>'
                klass = ["num" if c.numeric else "txt"] + (["best"] if is_best(v) else [])
                out.append(f'<td class="{" ".join(klass)}">{"<b>" + text + "</b>" if is_best(v) else text}</td>')
            out.append("</tr>")
        out.append("</tbody>")
    out.append("</table>")
    return "\n".join(out)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "→": r"$\to$", "—": "---", "–": "--",
                  "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$", "α": r"$\alpha$", "β": r"$\beta$"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    for k, v in _LATEX_UNICODE.items():
        out = out.replace(k, v)
    return out


def table_latex(table: Table) -> str:
    """A booktabs `table` float (needs \\usepackage{booktabs}); best values in bold, floor after a midrule."""
    cols = table.columns
    spec = "".join("r" if c.numeric else "l" for c in cols)
    lines = [r"\begin{table}[ht]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}}}", rf"\label{{tab:{latex_escape(table.name)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c.header()) for c in cols) + r" \\", r"\midrule"]
    for rows, is_ref in ((table.rows, False), (table.reference_rows, True)):
        if is_ref and rows:
            lines.append(r"\midrule")
        for row in rows:
            cells = []
            for c in cols:
                v = row.get(c.key, "")
                text = latex_escape(cell_text(v) if c.key in row else "")
                if text and is_best(v):
                    text = rf"\textbf{{{text}}}"
                if text and is_ref:
                    text = rf"\textit{{{text}}}"
                cells.append(text)
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = " ".join(n for n in [table.units_note(), *table.notes] if n)
    if notes:
        notes = re.sub(r"`([^`]+)`", r"\\texttt{\1}", latex_escape(notes))
        lines.append(rf"\par\smallskip\footnotesize {notes}")
    lines.append(r"\end{table}")
    return "\n".join(lines)


# -- documents -----------------------------------------------------------------------------------------------
@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str | None = None


@dataclass
class Para:
    text: str  # Markdown inline subset: **bold**, *italic*, `code`, [label](href)


@dataclass
class Bullets:
    items: list[str]


@dataclass
class TableBlock:
    table: Table


@dataclass
class Image:
    """A PNG shown in the document: written to `rel_path` beside the Markdown, embedded in the HTML."""

    rel_path: str
    data: bytes
    caption: str
    anchor: str | None = None


@dataclass
class Gallery:
    images: list[Image]
    anchor: str | None = None


Block = Heading | Para | Bullets | TableBlock | Image | Gallery


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def images(self) -> list[Image]:
        out = []
        for b in self.blocks:
            if isinstance(b, Image):
                out.append(b)
            elif isinstance(b, Gallery):
                out.extend(b.images)
        return out


def _anchor_md(anchor: str | None) -> str:
    return f'<a id="{anchor}"></a>\n\n' if anchor else ""


def document_markdown(doc: Document) -> str:
    parts = [f"# {doc.title}"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            parts.append(_anchor_md(b.anchor) + "#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, TableBlock):
            t = b.table
            text = _anchor_md(t.anchor) + f"**{t.title}**\n\n" + table_markdown(t)
            notes = [n for n in [t.units_note(), *t.notes] if n]
            if notes:
                text += "\n\n" + " ".join(notes)
            parts.append(text)
        elif isinstance(b, Image):
            parts.append(_anchor_md(b.anchor) + f"![{b.caption}]({b.rel_path})\n\n*{b.caption}*")
        elif isinstance(b, Gallery):
            cells = [f"![{im.caption}]({im.rel_path})" for im in b.images]
            caps = [im.caption for im in b.images]
            rows = []
            for i in range(0, len(cells), 4):
                rows.append("| " + " | ".join(caps[i:i + 4]) + " |")
                rows.append("| " + " | ".join(cells[i:i + 4]) + " |")
            header = "| " + " | ".join([" "] * min(4, len(cells))) + " |\n|" + "|".join([":---:"] * min(4, len(cells))) + "|"
            parts.append(_anchor_md(b.anchor) + header + "\n" + "\n".join(rows))
    return strip_verdict_markup("\n\n".join(parts)) + "\n"


_MD_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_MD_BOLD = re.compile(r"\*\*(.+?)\*\*")
_MD_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_MD_CODE = re.compile(r"`([^`]+)`")


def inline_html(text: str) -> str:
    """The Markdown inline subset used in paragraphs, as HTML (text is escaped first)."""
    codes: list[str] = []

    def keep_code(m: re.Match) -> str:
        codes.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    out = html.escape(text, quote=False)
    out = _MD_CODE.sub(keep_code, out)
    out = _MD_LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', out)
    out = _MD_BOLD.sub(r"<b>\1</b>", out)
    out = _MD_ITALIC.sub(r"<i>\1</i>", out)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], out)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table.results { border-collapse: collapse; margin: .6em 0 .3em; font-size: .9em; }
table.results th { border-top: 2px solid #333; border-bottom: 1px solid #333; padding: .25em .6em; }
table.results td { padding: .2em .6em; border-bottom: 1px solid #eee; }
table.results tbody:last-child tr:last-child td { border-bottom: 2px solid #333; }
table.results tbody.reference td { font-style: italic; color: #555; border-top: 1px solid #333; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; } td.txt, th.txt { text-align: left; }
td.best { background: #eef6ee; }
.caption { font-weight: 600; margin-top: 1.2em; } .note { color: #555; font-size: .85em; }
figure { margin: .8em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #444; }
.gallery { display: flex; flex-wrap: wrap; gap: .8em; }
.gallery figure { margin: 0; width: 14em; } .gallery img { width: 100%; image-rendering: pixelated; }
.verdict { font-weight: 700; padding: 0 .35em; border-radius: .25em; }
.supported { background: #d9f2d9; } .contradicted { background: #f7d4d4; }
.inconclusive { background: #f5ecc9; } .not-measured { background: #e8e8e8; } .no-effect { background: #dde6f5; }
"""

VERDICTS = ("supported", "contradicted", "no effect", "inconclusive", "not measured")
_VERDICT_SPAN = re.compile(r"\[\[verdict:([a-z ]+)\]\]")


def document_html(doc: Document) -> str:
    """One self-contained HTML file: inline CSS, every image a base64 data URI, no scripts, no fetches."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(doc.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{html.escape(doc.title)}</h1>"]

    def inline(text: str) -> str:
        rendered = inline_html(text)
        return _VERDICT_SPAN.sub(lambda m: f'<span class="verdict {m.group(1).replace(" ", "-")}">'
                                           f'{m.group(1)}</span>', rendered)

    def figure(im: Image) -> str:
        ident = f' id="{html.escape(im.anchor)}"' if im.anchor else ""
        return (f"<figure{ident}><img src=\"{data_uri(im.data)}\" alt=\"{html.escape(im.caption)}\">"
                f"<figcaption>{html.escape(im.caption)}</figcaption></figure>")

    for b in doc.blocks:
        if isinstance(b, Heading):
            ident = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            out.append(f"<h{b.level}{ident}>{inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, TableBlock):
            t = b.table
            out.append(f'<div class="caption">{html.escape(t.title)}</div>')
            out.append(table_html(t))
            notes = [n for n in [t.units_note(), *t.notes] if n]
            if notes:
                out.append(f'<p class="note">{inline(" ".join(notes))}</p>')
        elif isinstance(b, Image):
            out.append(figure(b))
        elif isinstance(b, Gallery):
            ident = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            out.append(f'<div class="gallery"{ident}>' + "".join(figure(im) for im in b.images) + "</div>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def verdict_markup(verdict: str) -> str:
    """A verdict badge: bold in Markdown, a coloured span in HTML."""
    return f"[[verdict:{verdict}]]"


def strip_verdict_markup(text: str) -> str:
    return _VERDICT_SPAN.sub(lambda m: f"**{m.group(1)}**", text)


def write_text(path: Path, text: str) -> Path:
    """Write through a temporary file and rename, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


__all__ = ["Bullets", "Column", "Document", "Gallery", "Heading", "Image", "Num", "Para", "Stat", "Table",
           "TableBlock", "cell_text", "data_uri", "document_html", "document_markdown", "fmt_num", "inline_html",
           "latex_escape", "stat_decimals", "table_html", "table_latex", "table_markdown", "verdict_markup",
           "write_bytes", "write_text"]
