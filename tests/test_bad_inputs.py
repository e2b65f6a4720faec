"""A fresh user's bad inputs to every `spi` command: each ends with a non-zero status, exactly one line on stderr
(``Error: ...``), no traceback, and no output file left behind."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import spi

SMALL = """\
shots: 12
seed: 3
beam: {photon_energy: 1.6 keV, pulse_energy: 0.4 mJ}
detector: {preset: square, n_pixels: 24, pixel_size: 400 um, distance: 0.12 m}
particles: [{shape: sphere, radius: 25 nm}]
hits: balanced
output: {shard_size: 6}
"""
LATIN1 = "# Kommentar: Größe in Å\n".encode("latin-1")  # not UTF-8: a file saved by an old editor


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad input files, made once for the module (read-only for the cases)."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "m.yaml").write_text(SMALL)
    res = CliRunner().invoke(spi, ["simulate", str(d / "m.yaml"), "-o", str(d / "good.h5"), "-q"])
    assert res.exit_code == 0, res.output
    out: dict[str, Path] = {"dir": d, "good": d / "good.h5", "manifest": d / "m.yaml"}

    def variant(name: str, change) -> Path:
        path = d / name
        path.write_bytes(out["good"].read_bytes())
        with h5py.File(path, "r+") as f:
            change(f)
        return path

    def all_nan(f):
        data = f["/entry_1/data_1/data"]
        data[...] = np.full(data.shape, np.nan, np.float32)

    out["nan"] = variant("nan.h5", all_nan)
    out["nonames"] = variant("nonames.h5", lambda f: f["/entry_1/labels/hit_type"].attrs.__delitem__("names"))

    def short_labels(f):
        ht = f["/entry_1/labels/hit_type"][()]
        names = f["/entry_1/labels/hit_type"].attrs["names"]
        del f["/entry_1/labels/hit_type"]
        f["/entry_1/labels/hit_type"] = ht[:5]
        f["/entry_1/labels/hit_type"].attrs["names"] = names

    out["short_labels"] = variant("short_labels.h5", short_labels)
    with h5py.File(d / "nodata.h5", "w") as f:
        f["/entry_1/other"] = np.zeros(3)
    out["nodata"] = d / "nodata.h5"
    with h5py.File(d / "flat.h5", "w") as f:
        f["/entry_1/data_1/data"] = np.zeros((4, 5))
    out["flat"] = d / "flat.h5"
    with h5py.File(d / "empty.h5", "w") as f:
        f.create_dataset("/entry_1/data_1/data", (0, 1, 8, 8), np.float32)
    out["empty"] = d / "empty.h5"
    (d / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(3000))
    out["corrupt"] = d / "corrupt.h5"
    (d / "a folder").mkdir()
    out["folder"] = d / "a folder"
    out["checkpoint"] = _checkpoint_for(out["good"], d / "model.pt")
    with h5py.File(d / "flatrun.cxi", "w") as f:  # photons, but no geometry
        f.create_dataset("/entry_1/data_1/data", data=np.ones((3, 1, 8, 8), np.float32)).attrs["units"] = "photons"
        f["/entry_1/instrument_1/source_1/energy"] = 1600 * 1.602176634e-19
    out["flatrun"] = d / "flatrun.cxi"
    (d / "not_a_model.pt").write_bytes(b"PK\x03\x04 this is no checkpoint" * 10)
    out["not_model"] = d / "not_a_model.pt"
    (d / "latin1.yaml").write_bytes(LATIN1 + SMALL.encode())
    out["latin1_manifest"] = d / "latin1.yaml"
    (d / "latin1_config.yaml").write_bytes(LATIN1 + b"train: {epochs: 2}\n")
    out["latin1_config"] = d / "latin1_config.yaml"
    study = (Path(__file__).resolve().parents[1] / "studies" / "quick_cpu.yaml").read_bytes()
    (d / "latin1_study.yaml").write_bytes(LATIN1 + study)
    out["latin1_study"] = d / "latin1_study.yaml"
    (d / "latin1_labels.csv").write_bytes(b"index,label\n0,single\n1,multi\n" + "2,géant\n".encode("latin-1"))
    out["latin1_labels"] = d / "latin1_labels.csv"
    atoms = [f"ATOM  {i + 1:5d}  CA  GLY A{i + 1:4d}    {1.5 * i:8.3f}{0.0:8.3f}{0.0:8.3f}  1.00 10.00           C"
             for i in range(5)]
    atoms[3] = atoms[3][:30] + " abc.def" + atoms[3][38:]
    (d / "bad_coordinate.pdb").write_text("\n".join(atoms) + "\nEND\n")
    return out


def _checkpoint_for(dataset: Path, path: Path) -> Path:
    """An untrained but valid checkpoint for the detector of ``dataset`` (no training needed)."""
    import torch

    from spinet.checkpoint import save_checkpoint
    from spinet.config import Config
    from spinet.models import build_model
    from spinet.preprocess import Preprocessor, geometry_key
    from spisim.cxi import CXIReader

    cfg = Config.from_dict({"preprocess": {"input_size": 16}})
    with CXIReader(dataset) as r:
        shape, pos, mask = r.frame_shape, r.pixel_position, r.mask
    pre = Preprocessor.from_geometry(cfg.preprocess, shape, pos, mask)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.preprocess.input_size).eval()
    save_checkpoint(path, config=cfg, class_names=["no_hit", "single", "multi", "unintended"], model=model,
                    preprocessor=pre, geometry=geometry_key(shape, pos, mask), epoch=1, best_metric=0.0, history=[])
    return path


@dataclass
class Case:
    """One bad input: the arguments (``{name}`` is replaced by the path of file ``name``, ``{out}`` by a fresh output
    folder), a fragment the error line must hold, and the outputs that must not exist afterwards."""

    argv: list[str]
    fragment: str = ""
    outputs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    write: dict[str, bytes] = field(default_factory=dict)  # files written into {out} before the run


CASES: dict[str, Case] = {
    # ------------------------------------------------------------------ simulate
    "simulate: manifest not UTF-8": Case(["simulate", "{latin1_manifest}", "-o", "{out}/x.h5", "-q"], "UTF-8",
                                         ["x.h5", "x.h5.parts"]),
    "simulate: missing manifest": Case(["simulate", "{dir}/nope.yaml", "-o", "{out}/x.h5", "-q"],
                                       "no such manifest file", ["x.h5"]),
    "simulate: manifest is a folder": Case(["simulate", "{folder}", "-o", "{out}/x.h5", "-q"], "is a directory",
                                           ["x.h5"]),
    "simulate: unknown key": Case(["simulate", "{out}/m.yaml", "-o", "{out}/x.h5", "-q"], "unknown key",
                                  ["x.h5", "x.h5.parts"], write={"m.yaml": SMALL.encode() + b"detectr: {}\n"}),
    "simulate: wrong type": Case(["simulate", "{out}/m.yaml", "-o", "{out}/x.h5", "-q"], "shots",
                                 ["x.h5", "x.h5.parts"], write={"m.yaml": SMALL.replace("shots: 12", "shots: many")
                                                                .encode()}),
    "simulate: negative shots": Case(["simulate", "{out}/m.yaml", "-o", "{out}/x.h5", "-q"], "shots must be >= 1",
                                     ["x.h5", "x.h5.parts"], write={"m.yaml": SMALL.replace("shots: 12", "shots: -4")
                                                                    .encode()}),
    "simulate: a list, not a mapping": Case(["simulate", "{out}/m.yaml", "-o", "{out}/x.h5", "-q"],
                                            "expected a mapping", ["x.h5"], write={"m.yaml": b"- shots: 3\n"}),
    "simulate: non-numeric coordinate": Case(
        ["simulate", "{out}/m.yaml", "-o", "{out}/x.h5", "-q"], "line 4: coordinate x (columns 31-38) is 'abc.def'",
        ["x.h5", "x.h5.parts"],
        write={"m.yaml": SMALL.replace("{shape: sphere, radius: 25 nm}", "{structure: @DIR@/bad_coordinate.pdb}")
               .encode()}),
    "simulate: PDB ID offline, not found": Case(
        ["simulate", "{out}/m.yaml", "-o", "{out}/x.h5", "-q"], "structure 9ZZZ is not in $SPI_STRUCTURE_PATH",
        ["x.h5", "x.h5.parts"], env={"SPI_STRUCTURE_PATH": "{out}/none", "SPI_CACHE_DIR": "{out}/cache",
                                     "SPI_PDB_URL": "http://127.0.0.1:{port}/{{ID}}.cif.gz"},
        write={"m.yaml": SMALL.replace("{shape: sphere, radius: 25 nm}", "{structure: 9zzz}").encode()}),
    "simulate: output folder missing": Case(["simulate", "{manifest}", "-o", "{out}/no/x.h5", "-q"], "output folder",
                                            ["no"]),
    "simulate: output is a folder": Case(["simulate", "{manifest}", "-o", "{folder}", "-q"], "is a directory"),
    "simulate: zero workers": Case(["simulate", "{manifest}", "-o", "{out}/x.h5", "--workers", "0", "-q"],
                                   "--workers", ["x.h5"]),
    # ------------------------------------------------------------------ show
    "show: every frame NaN": Case(["show", "{nan}", "-o", "{out}/p.png", "-q"], "no shot has a finite unmasked pixel",
                                  ["p.png"]),
    "show: hit_type without names": Case(["show", "{nonames}", "-o", "{out}/p.png", "-q"], "names", ["p.png"]),
    "show: missing file": Case(["show", "{dir}/nope.h5", "-o", "{out}/p.png", "-q"], "no such file", ["p.png"]),
    "show: a folder as data": Case(["show", "{folder}", "-o", "{out}/p.png", "-q"], "is a directory", ["p.png"]),
    "show: corrupt HDF5": Case(["show", "{corrupt}", "-o", "{out}/p.png", "-q"], "not a readable HDF5 file",
                               ["p.png"]),
    "show: no frames dataset": Case(["show", "{nodata}", "-o", "{out}/p.png", "-q"], "has no dataset", ["p.png"]),
    "show: 2-D data": Case(["show", "{flat}", "-o", "{out}/p.png", "-q"], "must be 3-D or 4-D", ["p.png"]),
    "show: no shots": Case(["show", "{empty}", "-o", "{out}/p.png", "-q"], "holds no shots", ["p.png"]),
    "show: labels for fewer shots": Case(["show", "{short_labels}", "-o", "{out}/p.png", "-q"],
                                         "5 hit_type labels for 12 shots", ["p.png"]),
    "show: unknown picture suffix": Case(["show", "{good}", "-o", "{out}/p.txt", "-q"], "use .png, .pdf or .svg",
                                         ["p.txt"]),
    "show: picture folder missing": Case(["show", "{good}", "-o", "{out}/no/p.png", "-q"], "output folder", ["no"]),
    "show: existing picture": Case(["show", "{good}", "-o", "{out}/p.png", "-q"], "--overwrite",
                                   write={"p.png": b"an earlier picture"}),
    "show: negative per-class": Case(["show", "{good}", "-o", "{out}/p.png", "--per-class", "-2"], "--per-class",
                                     ["p.png"]),
    # ------------------------------------------------------------------ train
    "train: config not UTF-8": Case(["train", "{latin1_config}", "--data", "{good}", "--out", "{out}/run",
                                     "--no-progress"], "UTF-8", ["run"]),
    "train: config unknown key": Case(["train", "{out}/c.yaml", "--data", "{good}", "--out", "{out}/run",
                                       "--no-progress"], "epochz", ["run"], write={"c.yaml": b"train: {epochz: 2}\n"}),
    "train: config wrong type": Case(["train", "{out}/c.yaml", "--data", "{good}", "--out", "{out}/run",
                                      "--no-progress"], "train.epochs", ["run"],
                                     write={"c.yaml": b"train: {epochs: ten}\n"}),
    "train: missing data file": Case(["train", "--data", "{dir}/nope.h5", "--out", "{out}/run", "--no-progress"],
                                      "nope.h5", ["run"]),
    "train: a folder as data": Case(["train", "--data", "{folder}", "--out", "{out}/run", "--no-progress"],
                                     "a folder", ["run"]),
    "train: NaN frames": Case(["train", "--data", "{nan}", "--out", "{out}/run", "--no-progress", "--epochs",
                               "1"], "finite", ["run"]),
    "train: unknown source option": Case(["train", "--data", "{good},colour=red", "--out", "{out}/run",
                                          "--no-progress"], "bad source option", ["run"]),
    "train: --set without =": Case(["train", "--data", "{good}", "--set", "train.epochs", "--out", "{out}/run",
                                    "--no-progress"], "--set takes KEY=VALUE", ["run"]),
    "train: negative epochs": Case(["train", "--data", "{good}", "--epochs", "-1", "--out", "{out}/run"], "--epochs",
                                   ["run"]),
    # ------------------------------------------------------------------ classify
    "classify: not a checkpoint": Case(["classify", "{not_model}", "{good}", "--support-from", "{good}", "-k", "1",
                                        "-o", "{out}/p.csv"], "is not a spinet checkpoint", ["p.csv"]),
    "classify: missing model": Case(["classify", "{dir}/nope.pt", "{good}", "--support-from", "{good}", "-k", "1",
                                     "-o", "{out}/p.csv"], "no such model file", ["p.csv"]),
    "classify: missing data": Case(["classify", "{checkpoint}", "{dir}/nope.h5", "--support-from", "{good}", "-k",
                                     "1", "-o", "{out}/p.csv"], "nope.h5", ["p.csv"]),
    "classify: NaN frames": Case(["classify", "{checkpoint}", "{nan}", "--support-from", "{good}", "-k", "1",
                                   "-o", "{out}/p.csv"], "finite", ["p.csv"]),
    "classify: support labels not UTF-8": Case(["classify", "{checkpoint}", "{good}", "--support", "{good}",
                                                "--support-labels", "{latin1_labels}", "-o", "{out}/p.csv"],
                                               "utf-8", ["p.csv"]),
    "classify: a folder as model": Case(["classify", "{folder}", "{good}", "--support-from", "{good}", "-k", "1",
                                         "-o", "{out}/p.csv"], "without best.pt", ["p.csv"]),
    "classify: ratio below 1": Case(["classify", "{checkpoint}", "{good}", "--support-from", "{good}", "-k", "1",
                                     "--min-ratio", "0.5", "-o", "{out}/p.csv"], "--min-ratio", ["p.csv"]),
    "classify: corrupt data": Case(["classify", "{checkpoint}", "{corrupt}", "--support-from", "{good}", "-k", "1",
                                     "-o", "{out}/p.csv"], "not a readable HDF5 file", ["p.csv"]),
    "classify: support k of zero": Case(["classify", "{checkpoint}", "{good}", "--support", "{good},k=0",
                                         "-o", "{out}/p.csv"], "k must be >= 1", ["p.csv"]),
    "classify: support k beyond a class": Case(["classify", "{checkpoint}", "{good}", "--support", "{good},k=50",
                                                "-o", "{out}/p.csv"], "k", ["p.csv"]),
    # ------------------------------------------------------------------ evaluate
    "evaluate: study not UTF-8": Case(["evaluate", "{latin1_study}", "-o", "{out}/rep", "--dry-run"], "UTF-8",
                                      ["rep"]),
    "evaluate: missing study": Case(["evaluate", "{dir}/nope.yaml", "-o", "{out}/rep"], "nope.yaml", ["rep"]),
    "evaluate: a folder as study": Case(["evaluate", "{folder}", "-o", "{out}/rep"], "is a directory", ["rep"]),
    "evaluate: unknown top key": Case(["evaluate", "{out}/s.yaml", "-o", "{out}/rep"], "colour", ["rep"],
                                      write={"s.yaml": b"name: x\ncolour: red\n"}),
    "evaluate: --param without =": Case(["evaluate", "studies/quick_cpu.yaml", "-o", "{out}/rep", "--param", "seeds",
                                         "--dry-run"], "seeds", ["rep"]),
    "evaluate: unknown parameter": Case(["evaluate", "studies/quick_cpu.yaml", "-o", "{out}/rep", "--param",
                                         "colour=red", "--dry-run"], "colour", ["rep"]),
    # ------------------------------------------------------------------ label
    "label: corrupt HDF5": Case(["label", "{corrupt}", "--no-browser", "--labels", "{out}/l.csv"],
                                "not a readable HDF5 file", ["l.csv"]),
    "label: missing file": Case(["label", "{dir}/nope.h5", "--no-browser", "--labels", "{out}/l.csv"], "no such file",
                                ["l.csv"]),
    "label: a folder as data": Case(["label", "{folder}", "--no-browser", "--labels", "{out}/l.csv"], "is a directory",
                                    ["l.csv"]),
    "label: label file not UTF-8": Case(["label", "{good}", "--no-browser", "--labels", "{latin1_labels}"], "UTF-8"),
    "label: port out of range": Case(["label", "{good}", "--no-browser", "--port", "70000", "--labels", "{out}/l.csv"],
                                     "--port", ["l.csv"]),
    "label: game on a file without names": Case(["label", "{nonames}", "--no-browser", "--game", "--labels",
                                                 "{out}/l.csv"], "names", ["l.csv"]),
    # ------------------------------------------------------------------ import
    "import: missing source": Case(["import", "{dir}/nope.h5", "-o", "{out}/r.cxi", "-q"], "nope.h5", ["r.cxi"]),
    "import: no frames dataset": Case(["import", "{nodata}", "-o", "{out}/r.cxi", "-q"], "dataset", ["r.cxi"]),
    "import: unknown data path": Case(["import", "{good}", "--data", "/no/such", "-o", "{out}/r.cxi", "-q"],
                                      "/no/such", ["r.cxi"]),
    "import: energy that is a length": Case(["import", "{good}", "--pixel-size", "75um", "--distance", "0.5m",
                                             "--energy", "3 mm", "-o", "{out}/r.cxi", "-q"], "energy", ["r.cxi"]),
    "import: bad frames slice": Case(["import", "{good}", "--frames", "a:b", "-o", "{out}/r.cxi", "-q"], "--frames",
                                     ["r.cxi"]),
    "import: unknown class in the map": Case(["import", "{good}", "--labels", "/entry_1/labels/hit_type",
                                              "--label-map", "1=alien", "-o", "{out}/r.cxi", "-q"], "alien",
                                             ["r.cxi"]),
    # ------------------------------------------------------------------ match
    "match: missing run": Case(["match", "{dir}/nope.cxi", "-o", "{out}/m.yaml", "-q"], "no such file",
                               ["m.yaml", "m.detector.h5"]),
    "match: run without geometry": Case(["match", "{flatrun}", "-o", "{out}/m.yaml", "-q"], "pixel positions",
                                        ["m.yaml", "m.detector.h5"]),
    "match: corrupt run": Case(["match", "{corrupt}", "-o", "{out}/m.yaml", "-q"], "not a readable HDF5 file",
                               ["m.yaml", "m.detector.h5"]),
    "match: bad radius range": Case(["match", "{good}", "-o", "{out}/m.yaml", "--radius-range", "60nm,20nm", "-q"],
                                    "--radius-range", ["m.yaml", "m.detector.h5"]),
    "match: density that is a length": Case(["match", "{good}", "-o", "{out}/m.yaml", "--density", "3 nm", "-q"],
                                            "--density", ["m.yaml", "m.detector.h5"]),
    # ------------------------------------------------------------------ stream
    "stream: unknown source scheme": Case(["stream", "{checkpoint}", "--source", "ftp://x", "--support", "{good}",
                                           "-o", "{out}/log.csv"], "source", ["log.csv"]),
    "stream: replay of a missing file": Case(["stream", "{checkpoint}", "--source", "replay:{dir}/nope.h5",
                                              "--support", "{good}", "-o", "{out}/log.csv"], "nope.h5", ["log.csv"]),
    "stream: not a checkpoint": Case(["stream", "{not_model}", "--source", "replay:{good}", "--support", "{good}",
                                      "-o", "{out}/log.csv"], "is not a spinet checkpoint", ["log.csv"]),
    "stream: negative batch": Case(["stream", "{checkpoint}", "--source", "replay:{good}", "--support", "{good}",
                                    "--max-batch", "-1", "-o", "{out}/log.csv"], "--max-batch", ["log.csv"]),
    # ------------------------------------------------------------------ serve
    "serve: missing manifest": Case(["serve", "{dir}/nope.yaml", "--port", "{port}"], "nope.yaml"),
    "serve: port out of range": Case(["serve", "{manifest}", "--port", "70000"], "--port"),
    "serve: missing file to serve": Case(["serve", "--from", "{dir}/nope.h5", "--port", "{port}"], "nope.h5"),
    "serve: zero rate": Case(["serve", "{manifest}", "--port", "{port}", "--rate", "0"], "--rate"),
    # ------------------------------------------------------------------ bench
    "bench: negative --min-seconds": Case(["bench", "--default", "--min-seconds", "-1"], "--min-seconds"),
    "bench: not a checkpoint": Case(["bench", "{not_model}", "--json", "{out}/b.json"], "is not a spinet checkpoint",
                                    ["b.json"]),
    "bench: zero batch size": Case(["bench", "--default", "--batch-sizes", "8,0", "--json", "{out}/b.json"],
                                   "positive integers", ["b.json"]),
    "bench: unknown runtime": Case(["bench", "--default", "--runtime", "tensorflow", "--json", "{out}/b.json"],
                                   "--runtime", ["b.json"]),
    "bench: frame shape of two numbers": Case(["bench", "--default", "--frame-shape", "512,1024"], "M,SS,FS"),
    "bench: model and --default": Case(["bench", "{checkpoint}", "--default"], "not both"),
    "bench: existing --json": Case(["bench", "--default", "--json", "{out}/b.json"], "--overwrite",
                                   write={"b.json": b"{}"}),
    "bench: --json folder missing": Case(["bench", "--default", "--json", "{out}/no/b.json"], "output folder", ["no"]),
}


def _params():
    for name, case in CASES.items():
        yield pytest.param(case, id=name)


def test_there_are_enough_cases_for_every_command():
    from cli.main import SUBCOMMANDS

    assert len(CASES) >= 40
    per_command = {name: sum(key.startswith(f"{name}:") for key in CASES) for name in SUBCOMMANDS}
    assert all(n >= 4 for n in per_command.values()), per_command


@pytest.mark.parametrize("case", list(_params()))
def test_a_bad_input_is_one_line_and_leaves_nothing(case: Case, files, tmp_path, monkeypatch):
    import cli.label_server

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the README's commands run from the repository root
    monkeypatch.setattr(cli.label_server.LabelHTTPServer, "serve_forever", lambda self, *a, **kw: None)
    out = tmp_path / "out"
    out.mkdir()
    subst = {**{k: str(v) for k, v in files.items()}, "out": str(out), "port": str(_closed_port())}
    for name, data in case.write.items():
        (out / name).write_bytes(data.replace(b"@DIR@", str(files["dir"]).encode()))
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(**subst))
    argv = [a.format(**subst) for a in case.argv]
    res = CliRunner().invoke(spi, argv)
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)  # no traceback
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert case.fragment in lines[0], lines[0]
    assert "Traceback" not in res.output
    for name in case.outputs:
        assert not (out / name).exists(), name
    left = sorted(p.name for p in out.iterdir() if p.name not in case.write)
    assert not left, left  # no output, no temporary, no parts folder
    json.dumps(lines)  # printable
