"""Import a real run (frames in any HDF5 layout or a .npy stack) into the CXI layout the other commands read.

SRC is an HDF5 file (frames found at /entry_1/data_1/data, else the only 3-D/4-D dataset, else name it
with --data) or a .npy stack (N, SS, FS) or (N, M, SS, FS). Frames are streamed in blocks, divided by the
gain (float32 photons; without --gain they are taken as photons), optionally binned, and written with
the masks, geometry, labels and a provenance record (root attribute spi_import) to OUT, which appears
only when complete. Non-finite pixels are masked (values written as 0); a frame without any finite good
pixel is kept as NaN. Lengths and energies take units: bare numbers are um (--pixel-size), m (--distance)
and eV (--energy). See docs/real-data.md.

\b
Example usage:
  spi import run.h5 -o run.cxi --data /frames --mask /mask --labels /labels --label-map 1=single,0=not_single
  spi import test_adu.npy -o real.cxi --gain auto --mask mask.npy --mask artifacts.npy \\
      --pixel-size 75um --distance 0.58m --energy 1.6keV --centre auto
  spi import run.cxi -o run_bin2.cxi --geometry pnccd.geom --bin 2 --frames 1000:5000
"""

from __future__ import annotations

import contextlib
import sys

import click

COMPRESSIONS = ("none", "gzip", "lz4", "zstd", "bitshuffle")


@click.command(help=__doc__)
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output CXI file (docs/data-format.md); its folder must exist. An existing file needs --overwrite.")
@click.option("--data", "data", metavar="PATH",
              help="Frame dataset in SRC (HDF5).  [default: /entry_1/data_1/data if present, else the only "
                   "rank-3/4 dataset]")
@click.option("--frames", metavar="START:STOP",
              help="Source frames to import, Python slice semantics (either end optional, negative counts from "
                   "the end; an optional :STEP).  [default: all]")
@click.option("--mask", "mask", multiple=True, metavar="PATH_OR_FILE",
              help="A static mask (SS, FS) or (M, SS, FS): a dataset in SRC, an .npy file, FILE.h5:/path or an "
                   "HDF5 file's only 2-D/3-D dataset. Repeat to OR several masks.")
@click.option("--mask-value", type=click.Choice(["bad", "good"]), default="bad", show_default=True,
              help="What a non-zero mask entry means.")
@click.option("--gain", metavar="ADU_PER_PHOTON|auto",
              help="Divide frames by this many ADU per photon, or 'auto': estimate it from the 0-, 1- and "
                   "2-photon peaks of the pixel histogram (printed with its uncertainty, zero-peak offset and "
                   "read noise).  [default: frames are already photons]")
@click.option("--geometry", type=click.Path(dir_okay=False),
              help="Detector geometry: CrystFEL .geom, psana .data, or a CXI/HDF5 file's pixel_position and "
                   "mask; its data shape must be the frames'. Not with --pixel-size or --centre.")
@click.option("--pixel-size", metavar="LENGTH",
              help="Pixel pitch of a flat panel normal to the beam, e.g. '75 um' (bare number: um). Needs --distance.")
@click.option("--distance", metavar="LENGTH",
              help="Sample-to-detector distance, e.g. '0.58 m' or '580 mm' (bare number: m). With --geometry it "
                   "moves the file's detector to this mean distance.")
@click.option("--energy", metavar="ENERGY",
              help="Photon energy, e.g. '1.6 keV' (bare number: eV); needed where the geometry file has none.  "
                   "[default: the geometry file's, else not written]")
@click.option("--centre", metavar="X,Y|auto",
              help="Beam position on the flat panel in pixels: X along fast scan (column), Y along slow scan "
                   "(row), 0-based pixel centres, may be fractional; or 'auto': fitted to the centrosymmetry of "
                   "the run's mean pattern (unbinned).  [default: the panel centre]")
@click.option("--bin", "bin_", type=click.IntRange(min=1), default=1, show_default=True,
              help="Join N x N pixels on import (photons add; a binned pixel is bad if any of its pixels is). A "
                   "flat panel's trailing rows/columns that do not fill a bin are cropped; a geometry file's "
                   "panels must divide by N.")
@click.option("--labels", metavar="PATH",
              help="Per-frame labels: a 1-D dataset in SRC (one per source frame), or a label file (CSV "
                   "index,label; spi label logs; HDF5 index+label) indexed by source frame.")
@click.option("--label-map", metavar="RAW=CLASS,...",
              help="Raw label value -> class (no_hit, single, multi, unintended, not_single, or unlabelled), "
                   "e.g. '1=single,0=not_single'; needed for numeric labels.")
@click.option("--compression", type=click.Choice(COMPRESSIONS), default="gzip", show_default=True,
              help="Frame compression (lz4, zstd, bitshuffle through hdf5plugin).")
@click.option("--first-pass-frames", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Most frames (evenly spaced) read to estimate --gain auto and --centre auto.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Also append progress lines to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display (the summary is still printed).")
def command(src: str, out: str, data: str | None, frames: str | None, mask: tuple[str, ...], mask_value: str,
            gain: str | None, geometry: str | None, pixel_size: str | None, distance: str | None, energy: str | None,
            centre: str | None, bin_: int, labels: str | None, label_map: str | None, compression: str,
            first_pass_frames: int, overwrite: bool, log_file: str | None, quiet: bool) -> None:
    from cli.progress import Progress
    from spisim.errors import one_line_warnings
    from spisim.realrun import ImportOptions, run_import

    one_line_warnings()
    opts = ImportOptions.from_strings(src, out, data=data, frames=frames, mask=mask, mask_value=mask_value, gain=gain,
                                      geometry=geometry, pixel_size=pixel_size, distance=distance, energy=energy,
                                      centre=centre, bin=bin_, labels=labels, label_map=label_map,
                                      compression=compression, overwrite=overwrite,
                                      first_pass_frames=first_pass_frames)
    with contextlib.ExitStack() as stack:
        bars: list[Progress] = []

        def phase(description: str, total: int) -> None:
            if bars:
                bars[-1].__exit__(None, None, None)
                stack.pop_all()
            bar = Progress(description, total, unit="frames", quiet=quiet, log_file=log_file)
            bars.append(bar)
            stack.enter_context(bar)

        def advance(n: int) -> None:
            if bars:
                bars[-1].advance(n)

        try:
            result = run_import(opts, progress=advance, phase=phase, say=click.echo)
        except KeyboardInterrupt:
            stack.close()
            click.echo(f"interrupted: {out} not written", err=True)
            sys.exit(130)
    for note in result.notes:
        click.echo(note)
    m, ss, fs = result.frame_shape
    p = result.provenance
    masked = p["mask"]["masked_pixels_written"]
    click.echo(f"wrote {result.path}: {result.n_frames} frames of {m} x {ss} x {fs} pixels (photons), "
               f"{masked} of {m * ss * fs} pixels masked, in {result.seconds:.1f} s")
