"""Shipped manifests, studies and README examples run from a clone: structures are named by PDB ID, resolved
from ``$SPI_STRUCTURE_PATH``, the cache or the network, with one clear line when none has them."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli.main import spi
from spisim.manifest import load_manifest, parse_manifest
from spisim.pdb_cache import fetch_pdb, find_local, is_pdb_id

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((REPO / "data_manifests").glob("*.yaml"))
STUDIES = sorted((REPO / "studies").glob("*.yaml"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _file_params(study: Path, real: Path) -> dict[str, str]:
    """Values for the study's parameters that name a user's files (a real run, its labels, the manifest spi match
    wrote for it): `real` (an empty file) for data and labels, a shipped manifest for the matched one."""
    files = {"real_data": str(real), "real_labels": str(real), "pnccd10": str(real),
             "sim_manifest": str(REPO / "data_manifests" / "pr772_pnccd.yaml")}
    text = study.read_text()
    return {name: value for name, value in files.items() if re.search(rf"^\s+{name}:", text, re.M)}


def _study_manifests(tmp_path: Path) -> list[tuple[str, object]]:
    """(where, Manifest) of every simulated dataset of every shipped study."""
    from spinet.study import load_study

    real = tmp_path / "real.cxi"
    real.write_bytes(b"")
    out = []
    for path in STUDIES:
        params = _file_params(path, real) or None
        for name, spec in load_study(path, params).datasets.items():
            if spec.simulated:
                m = parse_manifest(spec.manifest or "", source=spec.manifest_source, base_dir=spec.manifest_dir,
                                   overrides=spec.overrides)
                out.append((f"{path.name}:{name}", m))
    return out


def _structures(m) -> list[str]:
    spec = m.spec
    return [str(p.structure) for p in [*spec.particles, *spec.unintended.molecules] if p.structure is not None]


def test_shipped_manifests_and_studies_name_structures_by_pdb_id(tmp_path, monkeypatch):
    """No shipped manifest, study or README example reaches into ../shared: every structure is a PDB ID."""
    monkeypatch.chdir(tmp_path)  # not the repository root
    named = [(f.name, load_manifest(f)) for f in MANIFESTS] + _study_manifests(tmp_path)
    assert len(named) >= len(MANIFESTS) + len(STUDIES)
    ids = set()
    for where, m in named:
        m.check_files()  # IDs are not fetched here, and no path is left to go missing
        for s in _structures(m):
            assert is_pdb_id(s), (where, s)
            ids.add(s.lower())
    assert {"1aki", "1ubi", "1crn", "2buk", "1f2n", "3j6r", "6zu5"} == ids
    for path in [*MANIFESTS, *STUDIES, REPO / "README.md"]:  # no structure file by its path in ../shared
        assert not re.search(r"shared/data/structures/\S+\.(pdb|cif|ent)", path.read_text()), path.name


def test_every_shipped_structure_id_is_in_the_shared_folder(shared_data, tmp_path, monkeypatch):
    """With the shared folder on SPI_STRUCTURE_PATH (as tests/conftest.py and .ci/run set it), every ID resolves
    offline to its file there: no test and no CI run downloads anything."""
    monkeypatch.setenv("SPI_PDB_URL", f"http://127.0.0.1:{_closed_port()}/{{ID}}.cif.gz")  # offline
    structures = (shared_data / "structures").resolve()
    assert structures in [Path(p).resolve() for p in os.environ["SPI_STRUCTURE_PATH"].split(os.pathsep)]
    ids = {s.lower() for _, m in [(f.name, load_manifest(f)) for f in MANIFESTS] + _study_manifests(tmp_path)
           for s in _structures(m)}
    for pdb_id in sorted(ids):
        path = fetch_pdb(pdb_id, cache_dir=tmp_path / "empty-cache")
        assert path.parent.resolve() == structures and path.name.lower().startswith(pdb_id), (pdb_id, path)
    assert not (tmp_path / "empty-cache").exists()


def test_offline_without_the_files_a_shipped_manifest_says_what_to_fetch(tmp_path, monkeypatch):
    """A clone with neither the data folder nor network: `spi simulate` of a shipped manifest stops at once with
    one line naming the ID, the URL to get it from and the folder to put it in, and leaves no output."""
    cache = tmp_path / "cache"
    port = _closed_port()
    monkeypatch.setenv("SPI_STRUCTURE_PATH", str(tmp_path / "no-such-folder"))
    monkeypatch.setenv("SPI_CACHE_DIR", str(cache))
    monkeypatch.setenv("SPI_PDB_URL", f"http://127.0.0.1:{port}/{{ID}}.cif.gz")
    out = tmp_path / "pr772.h5"
    res = CliRunner().invoke(spi, ["simulate", str(REPO / "data_manifests" / "pr772_pnccd.yaml"), "-o", str(out),
                                   "--shots", "2", "-q"])
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    line = lines[0]
    assert "structure 3J6R is not in $SPI_STRUCTURE_PATH" in line and str(tmp_path / "no-such-folder") in line
    assert f"download http://127.0.0.1:{port}/3J6R.cif.gz by hand and put it in {cache} as 3j6r.cif.gz" in line
    assert "or in a folder of $SPI_STRUCTURE_PATH" in line
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("pr772")]  # no output, no parts folder


def test_structure_path_names_are_case_insensitive_and_ordered(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    crn = b"ATOM      1  CA  GLY A   1       1.000   2.000   3.000  1.00 10.00           C\nEND\n"
    (b / "1CRN.PDB").write_bytes(crn)
    assert find_local("1crn", [a, b]) == b / "1CRN.PDB"
    (a / "pdb1crn.ent").write_bytes(crn)
    assert find_local("1CRN", [a, b]) == a / "pdb1crn.ent"  # the first folder wins
    (a / "1crn.cif").write_bytes(b"")  # empty files are passed over
    assert find_local("1crn", [a, b]) == a / "pdb1crn.ent"
    (a / "1crn_clean.pdb").write_bytes(crn)  # not an ID's file name
    assert find_local("1abc", [a, b, tmp_path / "missing"]) is None


@pytest.mark.slow
def test_readme_python_example_runs(shared_data):
    """The README's Python snippet, as written (its structure by PDB ID, found on SPI_STRUCTURE_PATH)."""
    import numpy as np

    text = (REPO / "README.md").read_text()
    code = re.search(r"From Python:\n\n```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own documentation
    photons = scope["photons"]
    assert photons.shape == (2 * 512 * 1024,) and np.isfinite(photons).all() and photons.sum() > 10


def test_readme_worked_example_one_names_a_shipped_manifest():
    text = (REPO / "README.md").read_text()
    block = re.search(r"# 1\. Simulate.*?\n# 2\.", text, re.S).group(0)
    written = set(re.findall(r"spi match \S+ -o (\S+\.yaml)", block))  # made by the example itself (spi match)
    names = [n for n in re.findall(r"spi simulate (\S+\.yaml)", block) if n not in written]
    assert names
    for name in names:
        assert (REPO / name).is_file(), name
        raw = yaml.safe_load((REPO / name).read_text())
        assert all(is_pdb_id(str(p["structure"])) for p in raw["particles"] if "structure" in p)


def test_every_shipped_study_takes_param_seeds(tmp_path):
    """The README's `--param seeds=1` for a first look works on every shipped study."""
    from spinet.study import load_study

    real = tmp_path / "real.cxi"
    real.write_bytes(b"")
    for path in STUDIES:
        params = _file_params(path, real)
        assert load_study(path, {**params, "seeds": 1}).seeds == [0], path.name
        assert len(load_study(path, params or None).seeds) >= 2, path.name


@pytest.mark.slow
def test_sim_to_real_recipe_makes_what_the_study_reads(shared_data, tmp_path):
    """studies/sim_to_real/make_standin.sh (40 shots instead of 800) runs the user's commands end to end and leaves
    every file studies/sim_to_real.yaml reads; the study validates against them (--dry-run)."""
    import subprocess
    import sys

    out = tmp_path / "s2r"
    env = {**os.environ, "SPI": f"{sys.executable} -m cli", "PYTHON": sys.executable, "SHARED": str(shared_data)}
    run = subprocess.run(["bash", str(REPO / "studies/sim_to_real/make_standin.sh"), str(out), "40"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith(f"stand-in ready in {out}")
    labels = (out / "standin.labels.csv").read_text().splitlines()
    assert labels[0] == "index,label" and len(labels) == 41
    assert {line.split(",")[1] for line in labels[1:]} <= {"single", "not_single"}
    params = [f"real_data={out / 'standin.cxi'}", f"real_labels={out / 'standin.labels.csv'}",
              f"sim_manifest={out / 'matched.yaml'}", f"pnccd10={out / 'pnccd10.cxi'}"]
    res = CliRunner().invoke(spi, ["evaluate", str(REPO / "studies/sim_to_real.yaml"), "-o", str(tmp_path / "r"),
                                   "--dry-run", *[a for p in params for a in ("--param", p)]])
    assert res.exit_code == 0, res.output
    assert "7 models" in res.output and "dataset pnccd10:" in res.output and "dataset sim:" in res.output
