"""Write a manifest whose simulation looks like a real run, and a realism report.

REAL is a run in the project's CXI layout in photons, with pixel positions and a photon energy (what
`spi import` writes). From its frames alone (and its labels, where it has them) the command fits the
particle size and its spread (uniform spheres, from the rings of the single-like hits), the peak
fluence and the spread of hit positions in a Gaussian focus (from their photon counts), the background
(from no-hit frames, or from the single hits' high-q tail), and takes the run's geometry, mask and read
noise. It writes OUTPUT (the manifest, YAML, every fitted value commented) and OUTPUT's companion
NAME.detector.h5 (the run's detector and the background template). With --report DIR it simulates
single hits of the new manifest and compares them with the run's: a montage on one colour scale, radial
profiles with 16-84 % bands, photon histograms, ring depth, high-q tail, and a two-sample score (ROC AUC
of a classifier telling real from simulated; 0.5 = indistinguishable).

\b
Example usage:
  spi import run.h5 -o run.cxi --gain auto --pixel-size 300um --distance 0.7m --energy 1.6keV --centre auto
  spi match run.cxi -o matched.yaml --report match-report
  spi simulate matched.yaml -o train.h5 --shots 4000
"""

from __future__ import annotations

from pathlib import Path

import click


def _quantity(dim: str, unit: str, name: str):  # noqa: ANN202
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
        if value is None:
            return None
        from spisim.units import parse_quantity

        return parse_quantity(value, dim, unit, name)

    return convert


def _radius_range(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    from spisim.errors import ConfigError
    from spisim.units import parse_quantity

    parts = value.split(",")
    if len(parts) != 2:
        raise ConfigError(f"--radius-range: expected LOW,HIGH (e.g. 20nm,60nm), got {value!r}")
    lo, hi = (parse_quantity(p.strip(), "length", "nm", "--radius-range") for p in parts)
    if not 0 < lo < hi:
        raise ConfigError(f"--radius-range: need 0 < LOW < HIGH, got {value!r}")
    return lo, hi


@click.command(name="match", help=__doc__)
@click.argument("real", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The matched manifest (YAML); NAME.detector.h5 is written beside it.")
@click.option("--report", "report", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the realism report (report.md, metrics.json, PNG figures).  [default: none]")
@click.option("--report-shots", type=click.IntRange(min=3), default=200, show_default=True,
              help="Simulated single hits the report compares with the run's.")
@click.option("--shape", default="sphere", show_default=True,
              help="The manifest's particle: 'sphere' (continuum, the fitted radius), 'icosahedron' (continuum, "
              "circumradius = fitted radius / 0.847; PR772 is icosahedral), or a structure, by PDB ID or file, "
              "scaled so that its orientation-averaged rings match the fitted sphere.")
@click.option("--density", default="0.43", show_default=True, callback=_quantity("electron_density", "e/A^3",
              "--density"), help="Electron density of the particle (e/Å³ for a bare number); photon counts fix "
              "fluence x density², so this is assumed. 0.43: protein.")
@click.option("--focus", default="1.5um", show_default=True, callback=_quantity("length", "um", "--focus"),
              help="FWHM of the Gaussian focus assumed (µm for a bare number); the hit radius is fitted "
              "relative to it.")
@click.option("--jitter", type=click.FloatRange(min=0, max=3), default=0.0, show_default=True,
              help="Relative rms pulse-energy jitter assumed (its share of the photon spread is not put down to "
              "hit positions).")
@click.option("--min-quality", type=click.FloatRange(max=1.0), default=0.5, show_default=True,
              help="Sphere-fit quality (share of a profile's ring structure a sphere explains) a frame needs to "
              "count as a single hit when the run has no labels.")
@click.option("--radius-range", callback=_radius_range, default=None,
              help="LOW,HIGH radii searched by the sphere fits (nm for bare numbers, e.g. 20,60).  [default: all "
              "the detector can measure]")
@click.option("--max-frames", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Frames analysed at most (evenly spread over the run).")
@click.option("--oversample", type=click.IntRange(min=1, max=8), default=None,
              help="Sub-pixels per pixel side of the manifest (pixel-area integration).  [default: chosen from "
              "the pixel size against the ring period]")
@click.option("--aspect-sd", type=click.FloatRange(min=0, max=1), default=None,
              help="rms stretch of the particles (the manifest's aspect_sd).  [default: calibrated so that simulated "
              "single hits have the run's ring depth]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the manifest "
              "(and of the report's simulation).")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT and its companion file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def command(real: Path, output: Path, report: Path | None, report_shots: int, shape: str, density: float, focus: float,
            jitter: float, min_quality: float, radius_range: tuple[float, float] | None, max_frames: int,
            oversample: int | None, aspect_sd: float | None, seed: int, overwrite: bool, quiet: bool) -> None:
    from cli.progress import Progress
    from spisim.errors import OutputFileError
    from spisim.realrun.match import MatchOptions, companion_path, match_run, write_match, write_report

    for p in (output, companion_path(output)):
        if p.exists() and not overwrite:
            raise OutputFileError(f"{p} exists: use --overwrite to replace it")
    if not output.parent.is_dir():
        raise OutputFileError(f"output folder {output.parent} does not exist")
    if report is not None and report.exists() and not report.is_dir():
        raise OutputFileError(f"--report {report} is a file, not a folder")
    options = MatchOptions(shape=shape, density=density, focus_fwhm=focus, jitter=jitter, min_quality=min_quality,
                           max_frames=max_frames, radius_range=radius_range, oversample=oversample,
                           aspect_sd=aspect_sd, seed=seed)
    from spisim.cxi import CXIReader

    with CXIReader(real) as r:
        n = min(len(r), max_frames)
    with Progress("analysing", n, unit="frames", quiet=quiet) as progress:
        result = match_run(real, options, progress=progress.advance)
    manifest, companion = write_match(result, output, overwrite=overwrite)
    click.echo(f"single-like hits: {len(result.single)} of {len(result.analysis.indices)} frames "
               f"({'labelled' if result.single_source == 'labels' else 'by sphere fit'})")
    click.echo(f"particle radius: {result.radius * 1e9:.2f} nm, spread {result.size_sd:.3f} (relative rms), "
               f"ring visibility {result.visibility:.2f}, stretch spread {result.aspect_sd:.3f}")
    click.echo(f"peak fluence: {result.peak_fluence * 1e-12:.3g} photons/um^2, hit radius "
               f"{result.hit_radius * 1e6:.3g} um (focus FWHM {focus * 1e6:.3g} um assumed)")
    click.echo(f"background: {result.background_photons:.4g} photons per shot ({result.background_method})")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"manifest: {manifest}  detector and background: {companion}")
    if report is not None:
        with Progress("simulating for the report", report_shots, quiet=quiet) as progress:
            metrics = write_report(result, manifest, report, shots=report_shots, progress=progress.advance)
        click.echo(f"report: {report / 'report.md'}  (photons sim/real {metrics['photons_ratio']:.2f}, ring radius "
                   f"sim/real {metrics['radius_ratio']:.3f}, two-sample AUC {metrics['auc']:.2f})")
