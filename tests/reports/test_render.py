"""Number formatting, best marks and the four table renderers on a hand-made table."""
from __future__ import annotations

import math

import pytest

from reports.render import (Column, Document, Num, Para, Stat, Table, document_html, document_markdown, fmt_num,
                            inline_html, latex_escape, table_latex, table_markdown)
from reports.tables import mark_best


@pytest.mark.parametrize("value,text", [(0.0123, "0.01230"), (12345.6, "12346"), (1.5, "1.500"), (0, "0"),
                                        (-2.25, "-2.250"), (3e-7, "3.000e-07"), (None, "n/a"),
                                        (float("inf"), "inf")])
def test_fmt_num(value, text):
    assert fmt_num(value) == text


@pytest.mark.parametrize("mean,half,text", [
    (0.12345, 0.0043, "0.1235 ± 0.0043"),  # two significant digits of the half-width fix the decimals
    (1234.5, 56.0, "1234 ± 56"),
    (98.46, 13.79, "98 ± 14"),
    (0.5, 0.0, "0.5000 ± 0"),  # every seed agreed
])
def test_stat_text(mean, half, text):
    assert Stat(mean, mean - half, mean + half, 3).text() == text


def test_stat_text_without_interval():
    assert Stat(7.8333, math.nan, math.nan, 1).text() == "7.833"


def _table() -> Table:
    cols = [Column("method", "method"), Column("fd", "fd", "stat", "sq. feature units", False),
            Column("recall", "recall", "stat", "fraction", True),
            Column("sharp", "sharpness", "stat", "ratio", None, target=1.0), Column("kl", "kl", "stat", "nats")]
    rows = [{"method": "a_b", "fd": Stat(10, 9, 11, 3), "recall": Stat(0.5, 0.4, 0.6, 3),
             "sharp": Stat(0.7, 0.6, 0.8, 3), "kl": Stat(3, 2, 4, 3)},
            {"method": "c&d", "fd": Stat(8, 7, 9, 3), "recall": Stat(0.4, 0.3, 0.5, 3),
             "sharp": Stat(1.2, 1.1, 1.3, 3), "kl": Stat(1, 0, 2, 3)}]
    for c in cols[1:]:
        mark_best(rows, c)
    return Table("demo", "Demo 100% table", cols, rows,
                 reference_rows=[{"method": "floor", "fd": Stat(1, 0.5, 1.5, 3)}], notes=["See `x_y`."])


def test_mark_best_uses_direction_or_target():
    t = _table()
    best = {c: [r["method"] for r in t.rows if r[c].best] for c in ("fd", "recall", "sharp", "kl")}
    assert best == {"fd": ["c&d"], "recall": ["a_b"], "sharp": ["c&d"], "kl": []}  # |1.2-1| < |0.7-1|
    ties = [{"x": Num(1.0)}, {"x": Num(1.0)}, {"x": Num(2.0)}]
    mark_best(ties, Column("x", "x", "num", higher_is_better=False))
    assert [r["x"].best for r in ties] == [True, True, False]


def test_markdown_table():
    md = table_markdown(_table())
    lines = md.splitlines()
    assert lines[0] == "| method | fd ↓ | recall ↑ | sharpness →1.00 | kl |"
    assert lines[1] == "|:---|---:|---:|---:|---:|"
    assert "**8.0 ± 1.0**" in lines[3] and "**0.50 ± 0.10**" in lines[2]
    assert lines[-1].startswith("| *floor* | *1.00 ± 0.50* |")


def test_latex_table_is_booktabs_and_escaped():
    tex = table_latex(_table())
    assert tex.count(r"\toprule") == 1 and tex.count(r"\bottomrule") == 1
    assert tex.count(r"\midrule") == 2  # after the header, before the floor row
    assert r"\begin{tabular}{lrrrr}" in tex
    assert r"\caption{Demo 100\% table}" in tex
    assert r"a\_b" in tex and r"c\&d" in tex and r"\textbf{8.0 $\pm$ 1.0}" in tex
    assert r"$\downarrow$" in tex and r"\texttt{x\_y}" in tex
    assert tex.count("{") == tex.count("}")
    assert latex_escape("50% of $x_1$ & #2 ~ ^{}\\") == \
        r"50\% of \$x\_1\$ \& \#2 \textasciitilde{} \textasciicircum{}\{\}\textbackslash{}"


def test_csv_frame_has_interval_columns():
    df = _table().frame()
    assert list(df.columns[:6]) == ["row_type", "method", "fd_mean", "fd_ci_low", "fd_ci_high", "fd_n"]
    assert df["fd_best"].tolist() == [False, True, False]
    assert df["row_type"].tolist() == ["result", "result", "reference"]
    assert df.loc[2, "recall_n"] == 0


def test_inline_html_escapes_and_links():
    html = inline_html("a <script> **b** `c<d>` [e](#f) *g*")
    assert html == 'a &lt;script&gt; <b>b</b> <code>c&lt;d&gt;</code> <a href="#f">e</a> <i>g</i>'


def test_document_html_is_self_contained():
    doc = Document("T", [Para("x [[verdict:not measured]]")])
    html = document_html(doc)
    assert '<span class="verdict not-measured">not measured</span>' in html
    assert "<script" not in html and "http" not in html.replace('name="viewport"', "")
    assert document_markdown(doc) == "# T\n\nx **not measured**\n"
