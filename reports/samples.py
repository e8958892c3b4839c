"""Sample grids for reports: find the samples an evaluation kept beside its metrics and render them as PNG.

Where samples are looked for, in this order, inside an evaluation row's artifact directory (its
`artifact_path`, resolved as absolute, else relative to the store's directory, else to the working
directory); a training row's directory is searched the same way when its evaluations kept nothing:
  1. samples.npy             array (N, C, H, W) or (N, H, W) images in [0, 1], or (N, 2) points
  2. samples.npz             array 'samples', else 'x', else the first array (same shapes)
  3. samples.png, else the first *.png (sorted by name), embedded as is
Arrays are read with allow_pickle=False. Images are tiled into a grid; 2-D points become a scatter plot.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

from reports.load import MISSING, StoreData, data_name, is_scalar
from reports.render import cell_text
from reports.tables import grid_metrics, slug, training_first, varying_axes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SAMPLES = 64  # samples drawn per grid
MAX_GRIDS = 48  # grids per study; the rest are counted in a note
MIN_PIXELS = 160  # small images (8x8 digits) are upscaled by an integer factor to at least this width


@dataclass(frozen=True)
class SampleGrid:
    name: str
    caption: str
    png: bytes
    study: str
    source: str  # the file the samples came from, relative to the store's directory when possible


def _load_array(path: Path) -> np.ndarray:
    """The samples array of a .npy / .npz file; raises ValueError naming the file when it is unreadable."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as npz:
            if not npz.files:
                raise ValueError("no arrays in the archive")
            for key in ("samples", "x", *npz.files):
                if key in npz.files:
                    return np.asarray(npz[key])
    except Exception as exc:  # truncated, empty, pickled or foreign files all end up here
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ValueError(f"'{path}' is not a readable sample array ({reason})") from None
    raise ValueError(f"'{path}' holds no sample array")


def find_samples(run_dir: Path, problems: list[str] | None = None) -> tuple[Path, np.ndarray | bytes] | None:
    """The first readable sample file of the lookup order in the module docstring: (path, array or PNG bytes).
    Unreadable files are skipped; their reasons are appended to `problems` when given."""
    for name in ("samples.npy", "samples.npz"):
        path = run_dir / name
        if path.is_file():
            try:
                return path, _load_array(path)
            except ValueError as exc:
                if problems is not None:
                    problems.append(str(exc))
    pngs = ([run_dir / "samples.png"] if (run_dir / "samples.png").is_file() else []) + sorted(run_dir.glob("*.png"))
    for path in pngs:
        data = path.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            return path, data
    return None


def tile_images(x: np.ndarray, max_n: int = MAX_SAMPLES) -> np.ndarray:
    """Images (N, C, H, W) | (N, H, W) in [0, 1] tiled into a (rows*H', cols*W'[, 3]) array with 1 px gaps."""
    x = np.asarray(x, dtype=np.float32)[:max_n]
    if x.ndim == 3:
        x = x[:, None]
    n, c, h, w = x.shape
    x = np.clip(x, 0.0, 1.0)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((c, rows * (h + 1) - 1, cols * (w + 1) - 1), 0.5, dtype=np.float32)  # grey gaps
    for i in range(n):
        r, col = divmod(i, cols)
        grid[:, r * (h + 1): r * (h + 1) + h, col * (w + 1): col * (w + 1) + w] = x[i]
    scale = max(1, int(math.ceil(MIN_PIXELS / grid.shape[2])))
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def render_samples(samples: np.ndarray | bytes, title: str = "") -> bytes | None:
    """PNG bytes for samples: PNG input as is, images as a grid, (N, 2) points as a scatter; None otherwise."""
    if isinstance(samples, bytes):
        return samples
    x = np.asarray(samples)
    if not np.issubdtype(x.dtype, np.number) or x.size == 0:
        return None
    if x.ndim == 2 and x.shape[1] == 2:
        fig = Figure(figsize=(2.6, 2.6))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.scatter(x[:, 0], x[:, 1], s=4, alpha=0.6)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=6)
        if title:
            ax.set_title(title, fontsize=7)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
        return buf.getvalue()
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if x.ndim == 3 or (x.ndim == 4 and x.shape[1] in (1, 3)):
        grid = tile_images(x)
        buf = io.BytesIO()
        imsave(buf, grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, format="png",
               metadata={"Software": None})
        return buf.getvalue()
    return None


def _setting_caption(axes: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={cell_text(axes[k]) if k in axes else '-'}" for k in keys) or "all cells"


def study_sample_grids(data: StoreData, study: str, max_grids: int = MAX_GRIDS) -> tuple[list[SampleGrid], list[str]]:
    """One grid per setting of `study` (its lowest seed that kept samples), and notes on what is missing."""
    ev = grid_metrics(data, study, "eval").drop_duplicates("run_key")
    runs = data.runs[(data.runs["study"] == study) & (data.runs["kind"] == "eval") & (data.runs["status"] == "done")]
    if runs.empty:
        return [], []
    configs = list(runs["config"])
    keys = training_first(data, runs["parent_key"], varying_axes(configs))
    groups = list(dict.fromkeys(ev["data_name"])) if not ev.empty else [""]
    by_setting: dict[tuple, list[dict]] = {}
    for rec in runs.to_dict("records"):
        axes = rec["config"].get("axes") or {}
        setting = tuple(repr(axes.get(k, MISSING)) if is_scalar(axes.get(k)) else "" for k in keys)
        by_setting.setdefault(setting, []).append(rec)
    grids, skipped, problems = [], 0, []
    for setting, recs in by_setting.items():
        recs.sort(key=lambda r: (r["seed"] is None, r["seed"] or 0))
        found = None
        for rec in recs:
            for art in (rec["artifact_path"], (data.run(rec["parent_key"]) or {}).get("artifact_path")):
                run_dir = data.artifact_dir(art)
                hit = find_samples(run_dir, problems) if run_dir is not None and run_dir.is_dir() else None
                if hit is not None:
                    found = (rec, hit)
                    break
            if found:
                break
        if found is None:
            continue
        if len(grids) >= max_grids:
            skipped += 1
            continue
        rec, (path, samples) = found
        axes = rec["config"].get("axes") or {}
        caption = _setting_caption(axes, keys) + f" (seed {rec['seed']})"
        if len(groups) > 1:
            caption = f"{data_name(rec['config'])}: {caption}"
        png = render_samples(samples)
        if png is None:
            continue
        try:
            source = str(path.relative_to(data.path.parent))
        except ValueError:
            source = str(path)
        grids.append(SampleGrid(slug(f"{study}-{caption}"), caption, png, study, source))
    notes = []
    if not grids:
        notes.append(f"No sample files found for study {study}: looked for samples.npy, samples.npz or *.png in "
                     f"the artifact directories of its evaluations (and their trainings).")
    if problems:
        notes.append(f"{len(problems)} sample file(s) could not be read, e.g. {problems[0]}.")
    if skipped:
        notes.append(f"{skipped} more setting(s) kept samples; only the first {max_grids} are shown.")
    return grids, notes


__all__ = ["MAX_GRIDS", "SampleGrid", "find_samples", "render_samples", "study_sample_grids", "tile_images"]
