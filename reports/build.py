"""Assemble reports from the store: the full report (every study, speed, Pareto, claims) and the claims report.

`build_report` and `build_claims` read the store once, build tables, plots and sample grids, and write
each requested format (Markdown beside PNG files, one self-contained HTML file, CSV per table, LaTeX
booktabs tables). They never run anything: `genbench claims` / `genbench demo` fill the store first.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from genlib import records
from reports.claims import (AnalyticCheck, Claim, ClaimResult, Comparison, claims_frame, claims_in_store,
                            evaluate_claims, indicative_studies, studies_without_claims)
from reports.load import ReportError, StoreData, check_studies, open_store
from reports.pareto import pareto_report
from reports.precision import precision_report
from reports.plots import Plot, plot_forest, plot_latency_vs_batch, plot_regimes, study_plots
from reports.render import (Bullets, Column, Document, Gallery, Heading, Image, Para, Table, TableBlock, fmt_num,
                            document_html, document_markdown, table_latex, verdict_markup, write_bytes, write_text)
from reports.regimes import degradation_frame, has_regimes, show_setting, varied_settings
from reports.samples import MAX_GRIDS, SampleGrid, study_sample_grids
from reports.stats import RULE
from reports.tables import slug, speed_table, study_slug, study_tables

FORMATS = ("md", "html", "csv", "tex")
CLAIMS_FORMATS = ("md", "html", "csv")
PLOTS_DIR = "plots"
SAMPLES_DIR = "samples"


def _formats(formats: Iterable[str] | str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",")]
    out = []
    for f in formats:
        f = f.strip().lower()
        if f not in allowed:
            raise ReportError(f"unknown {what} format '{f}' (choose from: {', '.join(allowed)})")
        out.append(f)
    if not out:
        raise ReportError(f"no {what} format given (choose from: {', '.join(allowed)})")
    return tuple(dict.fromkeys(out))


# -- sections -------------------------------------------------------------------------------------------------
@dataclass
class StudySection:
    study: str
    tables: list[Table]
    plots: list[Plot]
    grids: list[SampleGrid]
    notes: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"study-{study_slug(self.study)}"

    @property
    def plots_anchor(self) -> str:
        return f"plots-{study_slug(self.study)}"

    @property
    def samples_anchor(self) -> str:
        return f"samples-{study_slug(self.study)}"


def study_section(data: StoreData, study: str, max_grids: int = MAX_GRIDS) -> StudySection:
    grids, notes = study_sample_grids(data, study, max_grids)
    return StudySection(study, study_tables(data, study), study_plots(data, study), grids, notes)


def _plot_image(plot: Plot) -> Image:
    return Image(f"{PLOTS_DIR}/{plot.name}.png", plot.png, plot.caption, plot.anchor)


def _grid_image(grid: SampleGrid) -> Image:
    return Image(f"{SAMPLES_DIR}/{study_slug(grid.study)}/{grid.name}.png", grid.png, grid.caption)


def section_blocks(sec: StudySection) -> list:
    blocks: list = [Heading(f"Study {sec.study}", 2, sec.anchor)]
    blocks += [TableBlock(t) for t in sec.tables]
    if sec.plots:
        blocks.append(Heading(f"Plots: {sec.study}", 3, sec.plots_anchor))
        blocks += [_plot_image(p) for p in sec.plots]
    blocks.append(Heading(f"Samples: {sec.study}", 3, sec.samples_anchor))
    if sec.grids:
        blocks.append(Para(f"One grid per setting, from the lowest seed that kept samples "
                           f"({len(sec.grids)} shown)."))
        blocks.append(Gallery([_grid_image(g) for g in sec.grids]))
    blocks += [Para(n) for n in sec.notes]
    return blocks


def provenance_blocks(data: StoreData) -> list:
    runs = data.runs
    kinds = Counter(runs["kind"])
    status = Counter(runs["status"])
    commits = sorted({str(c)[:10] for c in runs["git_commit"] if isinstance(c, str) and c})
    devices = sorted({d for d in runs["device"] if isinstance(d, str) and d})
    providers = sorted({p for p in runs["provider"] if isinstance(p, str) and p})
    versions = Counter(v for v in runs["versions_json"] if isinstance(v, str) and v not in ("", "{}"))
    items = [f"Store `{data.path.name}`: {len(runs)} runs ("
             + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + "); status: "
             + ", ".join(f"{k} {n}" for k, n in sorted(status.items())) + ".",
             f"Git commit(s): {', '.join(f'`{c}`' for c in commits) or 'not recorded'}.",
             f"Devices: {', '.join(devices) or 'not recorded'}; execution providers: "
             f"{', '.join(providers) or 'none recorded'}."]
    data_files: dict[str, set[str]] = {}  # idx:/npz: data by the content fingerprint in each run's config
    for config in runs["config"]:
        data = records.data_config(config) if isinstance(config, dict) else None
        if isinstance(data, dict) and data.get("fingerprint"):
            data_files.setdefault(str(data.get("name")), set()).add(str(data["fingerprint"]))
    if data_files:
        items.append("Data files (content fingerprints): " + "; ".join(
            f"`{name}` {', '.join(f'`{f}`' for f in sorted(prints))}"
            + (" (several contents: results of each are kept apart)" if len(prints) > 1 else "")
            for name, prints in sorted(data_files.items())) + ".")
    if versions:
        common = json.loads(versions.most_common(1)[0][0])
        if isinstance(common, dict) and common:
            items.append("Library versions (most runs): " + ", ".join(f"{k} {v}" for k, v in sorted(common.items()))
                         + ("." if len(versions) == 1 else f"; {len(versions) - 1} other version set(s) in the store."))
    return [Heading("Provenance", 2, "provenance"), Bullets(items)]


def _metric_info_text(data: StoreData, study: str, metric: str) -> str:
    m = data.metrics
    rows = m[(m["study"] == study) & (m["metric"] == metric)]
    if rows.empty:
        return ""
    dirs = {d for d in rows["higher_is_better"] if d is not None}
    unit = next((u for u in rows["unit"] if isinstance(u, str) and u), "")
    targets = {e.get("target") for e in rows["extra"] if isinstance(e.get("target"), (int, float))}
    direction = ("higher is better" if dirs == {True} else "lower is better" if dirs == {False}
                 else f"target {targets.pop():g}" if len(targets) == 1 else "no better direction")
    return f" ({direction}{', ' + unit if unit else ''})"


def _summary_effect(r) -> str:
    d = r.difference
    if d is None:
        return "n/a"
    iv = d.interval
    text = f"{iv.mean:+.4g}" if math.isfinite(iv.mean) else "n/a"
    if iv.defined or (iv.n >= 2 and math.isinf(iv.low)):
        text += f" [{fmt_num(iv.low)}, {fmt_num(iv.high)}]"
    return text


def claims_blocks(data: StoreData, results: list[ClaimResult], anchors: set[str]) -> list:
    """The claims section: rule, summary table, then one subsection per claim with links into the document."""
    blocks: list = [Heading("Claims", 2, "claims"),
                    Para("Each claim is decided by its pre-registered primary test, stored with its study. "
                         + RULE + " Analytic checks state their own rule. Tests without stored results are "
                         "**not measured**.")]
    forest = plot_forest(results)
    if forest is not None:
        blocks.append(_plot_image(forest))
    quick = indicative_studies(data, [r.claim for r in results])
    if quick:
        blocks.append(Para("**Indicative verdicts:** " + ", ".join(f"`{s}`" for s in quick)
                           + (" was" if len(quick) == 1 else " were") + " run with the `quick` profile (few seeds, "
                           "short training), so the verdicts of the claims resting on "
                           + ("it" if len(quick) == 1 else "them") + " are indicative; "
                           "`genbench claims --profile standard` decides them."))
    summary_rows = []
    for res in results:
        p = res.tests[0]
        summary_rows.append({"id": res.claim.id, "claim": res.claim.text, "verdict": res.verdict,
                             "effect": _summary_effect(p),
                             "margin": fmt_num(p.margin) if p.margin is not None else "",
                             "mde": fmt_num(p.mde) if p.mde is not None else "",
                             "seeds": str(p.seeds_needed) if p.seeds_needed is not None else "",
                             "test": (p.difference.test_label if p.difference is not None
                                      else "analytic" if p.role == "analytic" else ""),
                             "studies": ", ".join(res.claim.studies)})
    blocks.append(TableBlock(Table("claims-summary", "Claims: verdicts of the primary tests",
                                   [Column("id", "#"), Column("claim", "claim"), Column("verdict", "verdict"),
                                    Column("effect", "effect [95% CI]"), Column("margin", "margin"),
                                    Column("mde", "MDE"), Column("seeds", "seeds for margin"),
                                    Column("test", "decided by"),
                                    Column("studies", "studies")], summary_rows)))
    blocks += regime_blocks(data, results, quick)
    for res in results:
        claim = res.claim
        blocks.append(Heading(f"Claim {claim.id}: {verdict_markup(res.verdict)}", 3, f"claim-{slug(claim.id)}"))
        blocks.append(Para(f"*{claim.text}*"))
        items = []
        for test, r in zip(claim.tests, res.tests):
            links = _links(test, anchors)
            info = _metric_info_text(data, r.study, test.metric) if isinstance(test, Comparison) else ""
            items.append(f"{r.role}: {verdict_markup(r.verdict)} study `{r.study}`: {r.description}{info}. "
                         f"Measured: {r.measured}." + (f" See {links}." if links else ""))
        blocks.append(Bullets(items))
        if isinstance(claim.primary, AnalyticCheck):
            blocks.append(Para(f"Rule for the analytic check: {claim.primary.rule}."))
        elif set(claim.studies) & set(quick):
            blocks.append(Para("Indicative: run with the `quick` profile; `genbench claims --profile standard` "
                               "decides this claim."))
    missing = studies_without_claims(data)
    if missing:
        blocks.append(Para("Studies with results but no stored claims (written by an older genbench): "
                           + ", ".join(f"`{s}`" for s in missing) + ". Run `genbench grid run STUDY --store ...` "
                           "again to record them; finished cells are not recomputed."))
    return blocks


def regime_blocks(data: StoreData, results: list[ClaimResult], quick: list[str]) -> list:
    """Per study with a perturbation axis: the degradation Q(perturbed) - Q(clean) per setting (steps, sampler,
    data block) and perturbation, with its 95% interval (`reports.regimes`), for the metrics its claims test."""
    blocks: list = []
    for study in dict.fromkeys(s for r in results for s in r.claim.studies):
        if not has_regimes(data, study):
            continue
        metrics = list(dict.fromkeys(t.metric for r in results for t in r.claim.tests
                                     if isinstance(t, Comparison) and t.study == study))
        frame = degradation_frame(data, study, metrics)
        if frame.empty:
            continue
        settings = varied_settings(frame)
        rows = []
        order = settings + ["perturb", "metric"]
        for rec in frame.sort_values(order, key=lambda c: c.map(show_setting)).to_dict("records"):
            row = {k: show_setting(rec[k], k) for k in settings}
            measured = not rec.get("why")
            ci = (f"{rec['effect']:+.4g} [{fmt_num(rec['low'])}, {fmt_num(rec['high'])}]" if measured
                  else rec["why"])
            rows.append({**row, "perturb": rec["perturb"], "metric": rec["metric"],
                         "clean": fmt_num(rec["clean"]) if measured else "", "degradation": ci,
                         "n": str(rec["n"]) if measured else "", "test": rec["test"] if measured else ""})
        columns = ([Column(k, "S" if k == "eval.steps" else k) for k in settings]
                   + [Column("perturb", "perturbation"), Column("metric", "metric"), Column("clean", "clean"),
                      Column("degradation", "perturbed - clean [95% CI]"), Column("n", "seeds"),
                      Column("test", "test")])
        blocks.append(Para(f"**Degradation by regime (`{study}`)**: each row is one setting, sampled with the "
                           "clean denoiser and with the perturbed one (genlib.perturb), paired by seed; S = T where "
                           "the table says T." + (" Indicative: run with the `quick` profile." if study in quick
                                                  else "")))
        blocks.append(TableBlock(Table(f"regimes-{study_slug(study)}", f"Degradation by regime: {study}", columns,
                                       rows)))
        for metric in dict.fromkeys(frame["metric"]):
            heat = plot_regimes(frame, study, settings, metric)
            if heat is not None:
                blocks.append(_plot_image(heat))
    return blocks


def _links(test: Any, anchors: set[str]) -> str:
    if not isinstance(test, Comparison):
        return ""
    study = study_slug(test.study)
    group = test.where_dict.get("data.name")
    out = []
    for anchor in ([f"table-{study}-{slug(group)}"] if group else []) + [f"table-{study}"]:
        if anchor in anchors:
            out.append(f"[table](#{anchor})")
            break
    for label, anchor in (("plots", f"plots-{study}"), ("samples", f"samples-{study}")):
        if anchor in anchors:
            out.append(f"[{label}](#{anchor})")
    return ", ".join(out)


def _anchors(blocks: list) -> set[str]:
    out = set()
    for b in blocks:
        if isinstance(b, (Heading, Image, Gallery)) and b.anchor:
            out.add(b.anchor)
        elif isinstance(b, TableBlock):
            out.add(b.table.anchor)
    return out


# -- writing ------------------------------------------------------------------------------------------------
def _write_images(doc: Document, out_dir: Path) -> None:
    for im in doc.images():
        write_bytes(out_dir / im.rel_path, im.data)


def _write(doc: Document, tables: list[Table], out_dir: Path, stem: str, formats: tuple[str, ...],
           claims: list[ClaimResult] | None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    if "md" in formats or "html" in formats:
        _write_images(doc, out_dir)
        if doc.images():
            out["plots"] = out_dir / PLOTS_DIR
    if "md" in formats:
        out["md"] = write_text(out_dir / f"{stem}.md", document_markdown(doc))
    if "html" in formats:
        out["html"] = write_text(out_dir / f"{stem}.html", document_html(doc))
    if "csv" in formats:
        if stem == "claims":
            out["csv"] = write_text(out_dir / "claims.csv", claims_frame(claims or []).to_csv(index=False))
        else:
            csv_dir = out_dir / "csv"
            for t in tables:
                write_text(csv_dir / f"{t.name}.csv", t.frame().to_csv(index=False))
            if claims:
                write_text(csv_dir / "claims.csv", claims_frame(claims).to_csv(index=False))
            out["csv"] = csv_dir
    if "tex" in formats:
        header = ("% genbench tables: needs \\usepackage{booktabs} in the preamble; \\input{tables.tex} or copy "
                  "a table.\n")
        out["tex"] = write_text(out_dir / f"{stem}_tables.tex" if stem != "report" else out_dir / "tables.tex",
                                header + "\n\n".join(table_latex(t) for t in tables) + "\n")
    return out


def _claims_for(data: StoreData, studies: list[str] | None) -> list[Claim]:
    claims = claims_in_store(data)
    if studies is None:
        return claims
    return [c for c in claims if set(c.studies) & set(studies)]


def build_report(store: str | Path, out_dir: str | Path, formats: Iterable[str] | str = FORMATS,
                 studies: Iterable[str] | str | None = None, *, claims: bool = True,
                 max_grids: int = MAX_GRIDS) -> dict[str, Path]:
    """Write the full report of the store at `store` into `out_dir`.

    formats: any of md, html, csv, tex. studies: restrict to these grid studies (each must exist); the speed
    table is then left out, the Pareto tables kept for those of them with timed evaluations.
    claims: include the claims section. Returns {format: path} plus 'plots' (the PNG directory).
    Raises ReportError / StoreError with a one-line message for an empty or unreadable store.
    """
    formats = _formats(formats, FORMATS, "report")
    data = open_store(store)
    chosen = check_studies(data, list(studies) if studies is not None and not isinstance(studies, str)
                           else studies)
    has_bench = (data.runs["kind"] == "bench").any()
    if not chosen and not has_bench and not (data.runs["kind"] == "analytic").any():
        kinds = ", ".join(sorted(set(data.runs["kind"])))
        raise ReportError(f"results store '{data.path}' has no grid studies, benchmarks or analytic rows to report "
                          f"(kinds there: {kinds})")
    sections = [study_section(data, s, max_grids) for s in chosen]
    speed = speed_table(data) if studies is None else None  # timings belong to no study
    paretos, pareto_plots = pareto_report(data, None if studies is None else chosen)
    precisions, precision_plots = precision_report(data, None if studies is None else chosen)

    doc = Document("genbench report")
    contents = [f"[{sec.study}](#{sec.anchor})" for sec in sections]
    if speed is not None:
        contents.append("[speed](#speed)")
    if paretos:
        contents.append("[quality vs latency](#pareto)")
    if precisions:
        contents.append("[precision](#precision)")
    results = evaluate_claims(data, _claims_for(data, None if studies is None else chosen)) if claims else []
    if results:
        contents.insert(0, "[claims](#claims)")
    doc.add(Para("Quality tables show each metric as mean ± 95% confidence interval (Student t) over seeds, "
                 "with ↑ / ↓ for the direction stored with the metric and the best value in bold; the floor row "
                 "scores data against data. Every number comes from the results store below."))
    doc.add(*provenance_blocks(data), Heading("Contents", 2, "contents"), Bullets(contents))
    body: list = []
    for sec in sections:
        body += section_blocks(sec)
    tables = [t for sec in sections for t in sec.tables]
    if speed is not None:
        body += [Heading("Speed", 2, "speed"), TableBlock(speed)]
        body += [_plot_image(p) for p in plot_latency_vs_batch(data, None)]
        tables.append(speed)
    if paretos:
        body += [Heading("Quality vs latency", 2, "pareto")]
        body += [TableBlock(t) for t in paretos]
        body += [_plot_image(p) for p in pareto_plots]
        tables += paretos
    if precisions:
        body += [Heading("Precision", 2, "precision"),
                 Para("What the graph that ships costs and buys: each timed setting at fp32, fp16, int8_dynamic and "
                      "int8_static, its quality from samples drawn through that graph, its fidelity to the fp32 "
                      "graph from identical noise, and its speed-up over fp32 measured in the same process.")]
        body += [TableBlock(t) for t in precisions]
        body += [_plot_image(p) for p in precision_plots]
        tables += precisions
    if results:
        doc.add(*claims_blocks(data, results, _anchors(body)))
    doc.add(*body)
    return _write(doc, tables, Path(out_dir), "report", formats, results)


def build_claims(store: str | Path, out_dir: str | Path, formats: Iterable[str] | str = ("md", "html"), *,
                 max_grids: int = MAX_GRIDS) -> dict[str, Path]:
    """Write the claims report: each claim's tests, effects with intervals and verdicts, then the tables,
    plots and samples of the studies they read (so every link resolves inside the file).

    formats: any of md, html, csv. Returns {format: path} plus 'plots' when images were written.
    """
    formats = _formats(formats, CLAIMS_FORMATS, "claims report")
    data = open_store(store)
    results = evaluate_claims(data)
    present = set(data.studies())
    studies = [s for s in dict.fromkeys(st for r in results for st in r.claim.studies) if s in present]
    sections = [study_section(data, s, max_grids) for s in studies]
    body: list = []
    for sec in sections:
        body += section_blocks(sec)
    doc = Document("genbench claims report")
    doc.add(Para("Claims about autoencoders, VAEs, a naive denoiser chain and diffusion models, each tested "
                 "against the results store: the claims of every study stored there (the lecture's claims "
                 "come with the bundled studies) and the analytic checks the store holds rows for."))
    doc.add(*provenance_blocks(data))
    doc.add(*claims_blocks(data, results, _anchors(body)))
    doc.add(*body)
    tables = [t for sec in sections for t in sec.tables]
    return _write(doc, tables, Path(out_dir), "claims", formats, results)


__all__ = ["CLAIMS_FORMATS", "FORMATS", "StudySection", "build_claims", "build_report", "study_section"]
