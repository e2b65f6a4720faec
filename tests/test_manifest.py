"""Manifest validation: units, unknown keys, missing and impossible values, shipped manifests, docs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spisim.constants import HC_EV_ANGSTROM
from spisim.errors import ConfigError, InputFileError
from spisim.manifest import (
    BUILTIN_DEFAULT,
    load_manifest,
    parse_manifest,
    parse_quantity,
    reference_markdown,
)

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
beam: {photon_energy: 1.6 keV, pulse_energy: 2 mJ}
detector: {preset: square, n_pixels: 16, distance: 0.1 m}
particles: [{shape: sphere, radius: 20 nm}]
"""


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_manifest(text)
    msg = str(info.value)
    assert "\n" not in msg, "errors must be one line"
    return msg


@pytest.mark.parametrize(
    ("value", "dim", "unit", "expected"),
    [
        ("1.6 keV", "photon_energy", "eV", 1600.0),
        (1600, "photon_energy", "eV", 1600.0),
        ("7.75 Å", "photon_energy", "eV", HC_EV_ANGSTROM / 7.75),  # a wavelength
        ("0.775 nm", "photon_energy", "eV", HC_EV_ANGSTROM / 7.75),
        ("2 mJ", "pulse_energy", "mJ", 2e-3),
        (2, "pulse_energy", "mJ", 2e-3),
        ("150 uJ", "pulse_energy", "mJ", 150e-6),
        ("100 nm", "length", "nm", 100e-9),
        ("0.74 m", "length", "m", 0.74),
        ("75 µm", "length", "um", 75e-6),
        ("75um", "length", "m", 75e-6),
        ("12 Å", "length", "nm", 1.2e-9),
        ("1e12 photons/um^2", "fluence", "photons/um^2", 1e24),
        ("3e20 photons/m²", "fluence", "photons/um^2", 3e20),
        ("0.43 e/A^3", "electron_density", "e/A^3", 0.43),
        ("430 e/nm^3", "electron_density", "e/A^3", 0.43),
        ("0.5 1/nm", "inverse_length", "1/A", 0.05),
        ("1e3", "length", "nm", 1e-6),  # YAML 1.1 reads 1e3 as a string: still a number
    ],
)
def test_quantities(value, dim, unit, expected):
    assert parse_quantity(value, dim, unit, "x") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("value", "dim", "fragment"),
    [
        ("1.6 kg", "photon_energy", "unit 'kg' is not a photon energy"),
        ("2 mm", "pulse_energy", "unit 'mm' is not a pulse energy"),
        ("3 keV", "length", "unit 'keV' is not a length"),
        ("fast", "length", "cannot read 'fast'"),
        (True, "length", "expected a length"),
        ("1e12 photons/kg^2", "fluence", "not a fluence"),
    ],
)
def test_wrong_units(value, dim, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_quantity(value, dim, "m", "beam.x")


def test_minimal_manifest_and_defaults():
    m = parse_manifest(MINIMAL)
    s = m.spec
    assert s.seed == 0 and s.shots == 100
    assert s.beam.photon_energy == 1600.0 and s.beam.pulse_energy == pytest.approx(2e-3)
    assert s.detector.distance == 0.1 and s.detector.n_pixels == 16
    assert s.particles[0].radius == pytest.approx(20e-9) and s.particles[0].continuum
    assert s.particles[0].label == "sphere-20nm"
    assert s.hits.probabilities()["no_hit"] == pytest.approx(0.9)  # realistic by default
    assert s.noise.poisson and s.noise.gain is None and not s.noise.is_off
    assert s.structure_names == ["sphere-20nm", "droplet", "salt", "debris"]
    assert s.max_particles == s.unintended.debris.n[1]


def test_unknown_key_with_did_you_mean():
    msg = _error(MINIMAL.replace("pulse_energy: 2 mJ", "pulse_energy: 2 mJ, photon_enrgy: 3"))
    assert "beam.photon_enrgy: unknown key (did you mean photon_energy?)" in msg
    msg = _error(MINIMAL + "nosie: none\n")
    assert "nosie: unknown key (did you mean noise?)" in msg
    msg = _error(MINIMAL + "particle: []\n")
    assert "did you mean particles?" in msg
    assert "unknown key" in _error(MINIMAL + "noise: {poison: true}\n")
    assert "unintended.kinds.dropplet" in _error(MINIMAL + "unintended: {kinds: {dropplet: 1}}\n")


def test_missing_values():
    assert "beam.photon_energy: missing value" in _error(MINIMAL.replace("photon_energy: 1.6 keV", "photon_energy:"))
    assert "beam.photon_energy: missing value" in _error(MINIMAL.replace("photon_energy: 1.6 keV, ", ""))
    assert "particles[0].radius: missing value" in _error(MINIMAL.replace(", radius: 20 nm", ""))
    assert "give exactly one of pulse_energy" in _error(MINIMAL.replace("pulse_energy: 2 mJ", "focus_diameter: 1 um"))
    msg = _error(MINIMAL.replace("particles: [{shape: sphere, radius: 20 nm}]", "hits: balanced"))
    assert msg.startswith("manifest <string>: particles: missing value")
    assert "give exactly one of preset and geometry" in _error(MINIMAL.replace("preset: square, n_pixels: 16, ", ""))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (("radius: 20 nm", "radius: -5 nm"), "particles[0].radius must be > 0 nm, got '-5 nm'"),
        (("distance: 0.1 m", "distance: 0 m"), "detector.distance must be > 0 m"),
        (("photon_energy: 1.6 keV", "photon_energy: 1.6 kg"), "beam.photon_energy: unit 'kg' is not a photon energy"),
        (("n_pixels: 16", "n_pixels: 2.5"), "detector.n_pixels: expected a whole number"),
        (("preset: square", "preset: pnccd"), "detector.n_pixels: only for the square preset"),
        (("preset: square", "preset: pncd"), "did you mean pnccd?"),
        (("n_pixels: 16", "n_pixels: 16, bin: 0"), "detector.bin must be >= 1, got 0"),
        (("n_pixels: 16", "n_pixels: 16, oversample: 1.5"), "detector.oversample: expected a whole number"),
        (("n_pixels: 16", "n_pixels: 16, mask: m.npy, mask_value: ok"), "detector.mask_value: 'ok' is not one of"),
    ],
)
def test_impossible_values(change, fragment):
    assert fragment in _error(MINIMAL.replace(*change))


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("shots: 0\n", "shots must be >= 1, got 0"),
        ("multi: {n_min: 4, n_max: 3}\n", "multi.n_max must be >= n_min (4), got 3"),
        ("multi: {n_min: 1}\n", "multi.n_min must be >= 2"),
        ("hits: {single: 0}\n", "hits: the weights must not all be 0"),
        ("hits: balance\n", "did you mean balanced?"),
        ("noise: {dead_pixels: 1.5}\n", "noise.dead_pixels must be <= 1"),
        ("noise: {jitter: -0.1}\n", "noise.jitter must be >= 0"),
        ("noise: loud\n", "noise: expected a mapping of noise settings or 'none'"),
        ("noise: {common_mode_block: [64]}\n", "noise.common_mode_block: expected [ss, fs]"),
        ("unintended: {droplet: {radius: [80 nm, 20 nm]}}\n", "low end '80 nm' is above high end '20 nm'"),
        ("unintended: {kinds: {molecule: 1}}\n", "needs unintended.molecules"),
        ("output: {compression: zip}\n", "output.compression: 'zip' is not one of"),
        ("seed: -1\n", "seed must be >= 0"),
        ("multi: {overlap: 0.2}\n", "multi.overlap: only for placement aggregate"),
        ("multi: {placement: aggregate, overlap: 1}\n", "multi.overlap must be <= 0.9"),
        ("noise: {background: {kind: template}}\n", "noise.background.template: missing value"),
        ("noise: {background: {photons: null}}\n", "noise.background.photons: null only for kind template"),
        ("noise: {background: {photons: 3, jitter: -1}}\n", "noise.background.jitter must be >= 0"),
    ],
)
def test_impossible_values_more(extra, fragment):
    assert fragment in _error(MINIMAL + extra)


def test_particle_checks():
    shell = MINIMAL.replace("{shape: sphere, radius: 20 nm}", "{shape: shell, radius: 20 nm, thickness: 25 nm}")
    assert "particles[0].thickness must be < radius" in _error(shell)
    both = MINIMAL.replace("{shape: sphere, radius: 20 nm}", "{shape: sphere, radius: 20 nm, structure: 1crn}")
    assert "give exactly one of structure and shape" in _error(both)
    twice = MINIMAL.replace("[{shape: sphere, radius: 20 nm}]", "[{shape: sphere, radius: 20 nm, name: a}, "
                            "{shape: sphere, radius: 30 nm, name: a}]")
    assert "'a' is used twice" in _error(twice)
    lobed = MINIMAL.replace("{shape: sphere, radius: 20 nm}", "{shape: lobed, radius: 5 nm, lobes: 0}")
    assert "lobes" in _error(lobed)
    lobed = MINIMAL.replace("{shape: sphere, radius: 20 nm}", "{shape: lobed, radius: 5 nm, model: continuum}")
    assert "the lobed shape has no continuum model" in _error(lobed)
    for bad, fragment in (("scale: 0", "scale must be > 0"), ("size_sd: -0.1", "size_sd must be >= 0"),
                          ("aspect_sd: 2", "aspect_sd must be <= 1"), ("core_density: 0.5", "core_density: only for")):
        text = MINIMAL.replace("{shape: sphere, radius: 20 nm}", f"{{shape: sphere, radius: 20 nm, {bad}}}")
        assert fragment in _error(text)


def test_realism_keys_parse_with_units_and_defaults():
    text = MINIMAL.replace("{shape: sphere, radius: 20 nm}", "{shape: shell, radius: 30 nm, thickness: 3 nm, "
                           "core_density: 0.5 e/nm^3, scale: 1.2, size_sd: 0.05, aspect_sd: 0.02}")
    text += ("multi: {placement: aggregate}\nnoise: {background: {kind: template, template: 'bg.h5:/x', "
             "jitter: 0.1}}\n")
    spec = parse_manifest(text.replace("n_pixels: 16", "n_pixels: 16, bin: 2, oversample: 3, mask: m.npy")).spec
    p = spec.particles[0]
    assert p.core_density == pytest.approx(5e-4) and p.scale == 1.2
    assert p.max_stretch == pytest.approx(1.2 * 1.15 * 1.06)
    assert spec.multi.placement == "aggregate" and spec.multi.overlap == 0.3
    assert spec.noise.background.photons is None and spec.noise.background.jitter == 0.1  # a template keeps its total
    d = spec.detector
    assert (d.bin, d.oversample, d.mask, d.mask_value) == (2, 3, "m.npy", "bad")
    plain = parse_manifest(MINIMAL).spec
    assert plain.noise.background.photons == 0.0 and plain.particles[0].max_stretch == 1.0
    assert (plain.detector.bin, plain.detector.oversample, plain.detector.mask) == (1, 1, None)


def test_yaml_error_and_non_mapping():
    assert "not valid YAML at line" in _error("beam: {photon_energy: [1, 2\n")
    assert "expected a mapping of keys at the top" in _error("- a\n- b\n")


def test_named_mixes_and_partial_hits():
    m = parse_manifest(MINIMAL + "hits: balanced\n")
    assert set(m.spec.hits.probabilities().values()) == {0.25}
    m = parse_manifest(MINIMAL + "hits: {single: 3, no_hit: 1}\n")
    assert m.spec.hits.probabilities() == {"no_hit": 0.25, "single": 0.75, "multi": 0.0, "unintended": 0.0}


def test_noise_none_is_off():
    m = parse_manifest(MINIMAL + "noise: none\n")
    assert m.spec.noise.is_off and not m.spec.noise.poisson and m.spec.noise.background.photons == 0
    assert not parse_manifest(MINIMAL).spec.noise.is_off


def test_overrides_merge_deeply():
    m = parse_manifest(MINIMAL + "output: {shard_size: 5}\n", overrides={"shots": 7, "seed": None,
                                                                         "output": {"compression": "lz4"}})
    assert m.spec.shots == 7 and m.spec.seed == 0
    assert m.spec.output.compression == "lz4" and m.spec.output.shard_size == 5
    assert m.overrides == {"shots": 7, "output": {"compression": "lz4"}}


def test_paths_resolve_relative_to_manifest_then_cwd(tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "a.pdb").write_text("x")
    (tmp_path / "b.pdb").write_text("x")
    entries = "{structure: a.pdb}, {structure: b.pdb}, {structure: 1abc}"
    text = MINIMAL.replace("{shape: sphere, radius: 20 nm}", entries)
    (tmp_path / "here" / "m.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    m = load_manifest(tmp_path / "here" / "m.yaml")
    m.check_files()
    assert m.structure_source("a.pdb", "x") == tmp_path / "here" / "a.pdb"
    assert m.structure_source("b.pdb", "x") == tmp_path / "b.pdb"
    assert m.structure_source("1ABC", "x") == "1abc"  # a PDB id
    with pytest.raises(ConfigError, match=r"particles\[0\].structure: no such file 'c.pdb' \(looked in"):
        m.resolve_path("c.pdb", "particles[0].structure")
    with pytest.raises(InputFileError, match="no such manifest file"):
        load_manifest(tmp_path / "none.yaml")


def test_builtin_default():
    m = load_manifest()
    assert m.source == "<built-in default>" and m.text == BUILTIN_DEFAULT.read_text()
    probs = m.spec.hits.probabilities()
    assert all(p > 0 for p in probs.values()), "the default must produce all four hit types"
    assert m.spec.unintended.weights()["molecule"] > 0
    m.check_files()  # names no file at all


def test_shipped_manifests_validate():
    files = sorted((REPO / "data_manifests").glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"pr772_pnccd", "proteins_jungfrau4m", "agipd_spb", "study_shapes_same_size",
            "study_sizes_same_shape"} <= names
    for f in files:  # from the repository root (the README's commands)
        m = load_manifest(f.relative_to(REPO) if Path.cwd() == REPO else f)
        m.check_files()
        assert m.spec.shots >= 1
    pr772 = load_manifest(REPO / "data_manifests" / "pr772_pnccd.yaml").spec
    assert pr772.beam.photon_energy == pytest.approx(1600) and pr772.detector.preset == "pnccd"
    assert any(p.shape == "sphere" for p in pr772.particles) and any(p.structure for p in pr772.particles)


def test_docs_list_every_key():
    doc = (REPO / "docs" / "manifest.md").read_text()
    assert reference_markdown() in doc, "docs/manifest.md is out of date: paste `python -m spisim.manifest`"


def test_paths_expand_variables_and_say_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.pdb").write_text("x")
    m = load_manifest(_write_manifest(tmp_path / "m.yaml"))
    monkeypatch.setenv("SPI_TEST_DATA", str(tmp_path / "s"))
    assert m.resolve_path("$SPI_TEST_DATA/a.pdb", "x") == tmp_path / "s" / "a.pdb"
    assert m.resolve_path("${SPI_TEST_DATA}/a.pdb", "x") == tmp_path / "s" / "a.pdb"
    monkeypatch.delenv("SPI_TEST_DATA")
    with pytest.raises(ConfigError, match=r"^p\[0\]: environment variable SPI_TEST_DATA in '\$SPI_TEST_DATA/a.pdb' "
                       "is not set$"):
        m.resolve_path("$SPI_TEST_DATA/a.pdb", "p[0]")
    with pytest.raises(ConfigError, match=r"is not a file$"):
        m.resolve_path("s", "p[0]")


def _write_manifest(path: Path) -> Path:
    path.write_text(MINIMAL)
    return path


def test_a_key_given_twice_is_an_error():
    assert _error(MINIMAL + "shots: 4\nshots: 5\n") == (
        "manifest <string>: key 'shots' is given twice (lines 5 and 6): keep one")
    nested = MINIMAL.replace("pulse_energy: 2 mJ", "pulse_energy: 2 mJ, pulse_energy: 3 mJ")
    assert "key 'pulse_energy' is given twice (on line 2)" in _error(nested)
    merged = MINIMAL + "unintended:\n  droplet: &d {radius: [20 nm, 30 nm]}\n  salt: {<<: *d, density: 0.5}\n"
    ok = parse_manifest(merged)  # YAML merge keys are not duplicates
    assert ok.spec.unintended.salt.radius == pytest.approx((20e-9, 30e-9))
    assert ok.spec.unintended.salt.density == 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("1.6 keV", "1 eV"), "beam.photon_energy must be >= 50 eV, got '1 eV'"),
        (("1.6 keV", "10 MeV"), "beam.photon_energy must be <= 200000 eV, got '10 MeV'"),
        (("radius: 20 nm", "radius: 2 m"), "particles[0].radius must be <= 10000 nm, got '2 m'"),
        (("n_pixels: 16", "n_pixels: 100000"), "detector.n_pixels must be <= 4096, got 100000"),
        (("2 mJ", "lots"), "beam.pulse_energy: cannot read 'lots' as a pulse energy (e.g. '0.4 mJ')"),
    ],
)
def test_impossible_values_are_refused(change, message):
    assert _error(MINIMAL.replace(*change)) == f"manifest <string>: {message}"


def test_droplet_sizes_are_bounded():
    text = MINIMAL + "unintended: {droplet: {radius: [20 nm, 1 cm]}}\n"
    assert "unintended.droplet.radius must be <= 10000 nm" in _error(text)


def test_shipped_beams_are_within_what_xfels_deliver():
    """Pulse energies at the sample of at most a few mJ, peak fluences at most ~1e14 photons/um^2."""
    from spisim.generate import build_beam

    for f in sorted((REPO / "data_manifests").glob("*.yaml")):
        beam = build_beam(load_manifest(f))
        assert beam.pulse_energy <= 5e-3, f.name
        assert 1e22 < beam.peak_fluence <= 1.5e26, (f.name, beam.peak_fluence)  # photons/m^2


def test_pr772_manifest_gives_the_photon_counts_of_the_experiments():
    """The sphere of the PR772 manifest on the pnCCD: counts equal J r_e² Σ P ΔΩ (N_e Φ(qR))², computed here
    from the detector alone, and lie in the 1e4-1e5 range reported for PR772 single hits at AMO."""
    import yaml

    from spisim.constants import R_E, wavelength_angstrom
    from spisim.generate import Simulator

    path = REPO / "data_manifests" / "pr772_pnccd.yaml"
    raw = yaml.safe_load(path.read_text())
    sphere = next(p for p in raw["particles"] if p.get("shape") == "sphere")
    raw.update(particles=[sphere], hits={"single": 1}, noise="none", shots=2)
    sim = Simulator(parse_manifest(yaml.safe_dump(raw), base_dir=path.parent))
    det = sim.detector
    k = 2 * np.pi / wavelength_angstrom(sim.spec.beam.photon_energy)
    radius = sim.spec.particles[0].radius * 1e10  # Å
    n_e = sim.spec.particles[0].density * 4 / 3 * np.pi * radius**3
    q = np.linalg.norm(np.nan_to_num(det.q_vectors(2 * np.pi / k)), axis=-1)
    x = np.maximum(q * radius, 1e-9)
    phi = 3 * (np.sin(x) - x * np.cos(x)) / x**3
    good = det.covered & ~det.mask
    per_fluence = R_E**2 * float((det.polarization_factor("horizontal") * det.solid_angles()
                                  * (n_e * phi) ** 2)[good].sum())
    for i in range(2):
        photons, scene, fluence, _ = sim.expected_photons(i)
        assert len(scene.particles) == 1
        total = float(np.asarray(photons)[good].sum())
        assert total == pytest.approx(fluence * per_fluence, rel=0.02)
        assert 1e4 < total < 2e5
    assert 1e5 < sim.beam.peak_fluence * per_fluence < 2e5  # 1.35e5 at the peak, as the manifest says
