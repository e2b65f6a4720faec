"""The realism report of a match: fresh simulated single hits of the written manifest against the run's."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from ..atomic import write_text_atomic
from ..cxi import CXIReader
from ..detector import Detector
from ..jsonutil import json_safe
from .analysis import MatchResult
from .calibrate import simulate_profiles
from .matchfile import companion_path
from .realism import ShotSet, compare, write_figures


def write_report(result: MatchResult, manifest: str | Path, folder: str | Path, *, shots: int = 100,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Simulate ``shots`` single hits of the written ``manifest`` and compare them with the run's single-like hits.

    The shots are drawn with the manifest's seed + 1: none of them served the calibrations of :func:`match_run`.

    Writes into ``folder``: ``report.md`` (settings, realism table, pictures), ``metrics.json`` and the PNG
    figures of :func:`spisim.realrun.realism.write_figures`. Returns the metrics.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    a = result.analysis
    sim = simulate_profiles(result, shots, seed=result.options.seed + 1, keep=6, progress=progress)
    with CXIReader(a.path) as reader:
        real_frames = reader.frames(a.indices[result.single])
    radius_range = (0.5 * result.radius * 1e10, 2.0 * result.radius * 1e10)
    real = ShotSet.from_frames("real", real_frames, a.bins, a.read_noise, radius_range=radius_range)
    simulated = ShotSet.from_profiles("simulated", sim.profiles, sim.totals, sim.examples, a.bins, a.read_noise,
                                      radius_range=radius_range)
    metrics = compare(real, simulated, a.bins, seed=result.options.seed)
    detector = Detector.from_cxi(companion_path(manifest))
    figures = write_figures(folder, real, simulated, a.bins, detector)
    write_text_atomic(folder / "metrics.json", json.dumps(json_safe(metrics), indent=2) + "\n")
    write_text_atomic(folder / "report.md", report_markdown(result, metrics, figures, Path(manifest)))
    return metrics


def report_markdown(result: MatchResult, metrics: dict, figures: dict[str, Path], manifest: Path) -> str:
    """The realism report as markdown (figures linked by file name)."""
    a = result.analysis

    def row(name: str, key: str, fmt: str = "{:.3g}") -> str:
        cells = []
        for side in ("real", "simulated"):
            v, lo, hi = metrics[f"{key}_{side}"], metrics[f"{key}_{side}_16"], metrics[f"{key}_{side}_84"]
            cells.append(f"{fmt.format(v)} ({fmt.format(lo)}–{fmt.format(hi)})")
        return f"| {name} | {cells[0]} | {cells[1]} |"

    auc = metrics["auc"]
    auc_text = ("not computed (fewer than 3 shots per set)" if not math.isfinite(auc) else
                f"{auc:.2f} ± {metrics['auc_sd']:.2f} ({metrics['auc_rows_per_class']} shots per set per repeat)")
    lines = [
        f"# Realism report: {a.path.name} against {manifest.name}",
        "",
        f"Real: {len(result.single)} single-like hits of {len(a.indices)} frames analysed "
        f"({'labelled single' if result.single_source == 'labels' else 'found by sphere fits'}). "
        f"Simulated: {metrics['n_sim']} single hits of the matched manifest.",
        "",
        "## Fitted settings",
        "",
        f"- particle radius {result.radius * 1e9:.2f} nm, relative spread {result.size_sd:.3f} "
        f"(median ring visibility of the real hits {result.visibility:.2f}; 1 = as deep as a perfect sphere's)",
        f"- peak fluence {result.peak_fluence * 1e-12:.3g} photons/µm², hit radius {result.hit_radius * 1e6:.3g} µm "
        f"for an assumed {result.options.focus_fwhm * 1e6:.3g} µm FWHM focus",
        f"- background {result.background_photons:.4g} photons per shot: {result.background_method}",
        f"- read noise {a.read_noise:.3g} photons rms ({a.read_noise_source}); oversample {result.oversample}",
        *(f"- note: {n}" for n in result.notes),
        "",
        "## Real and simulated single hits (median, 16–84 % in brackets)",
        "",
        "| quantity | real | simulated |",
        "|---|---|---|",
        row("photons per shot", "photons", "{:.4g}"),
        row("fitted sphere radius (nm): ring positions", "radius_nm", "{:.2f}"),
        row("first ring minimum / next maximum", "first_min_contrast"),
        row("ring visibility of the sphere fit", "ring_visibility", "{:.2f}"),
        row("photons per pixel, outer quarter of |q|", "high_q_photons_per_pixel"),
        "",
        f"Two-sample score (a logistic regression telling real from simulated by normalised log profile and "
        f"photons, cross-validated ROC AUC; 0.5 = indistinguishable): **{auc_text}**.",
        "",
        "![real and simulated shots](montage.png)",
        "",
        "![radial profiles](profiles.png)",
        "",
        "![photons, ring depth, high-q tail](distributions.png)",
        "",
    ]
    return "\n".join(lines)
