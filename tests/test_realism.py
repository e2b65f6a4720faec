"""What a simulation needs to match a real run: pixel-area integration, binning, static masks, size and shape
spread, core-shell capsids, background templates and aggregates; each against an independent formula."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from spisim.constants import R_E
from spisim.cxi import labels_block
from spisim.detector.binning import bin_mask, bin_sum
from spisim.errors import ConfigError
from spisim.generate import Simulator, build_detector, generate
from spisim.manifest import parse_manifest
from spisim.noise import pulse_scale
from spisim.orientation import quaternion_to_matrix, random_quaternions
from spisim.particles import UniformShell, UniformSphere, UniformSpheroid, make_particle, sphere_form_factor_shape
from spisim.scene import (
    AtomicBody,
    ContinuumBody,
    Kind,
    SceneModel,
    continuum_form_factor,
    deformed_amplitude,
    draw_deformation,
    place_aggregate,
)

BEAM = "beam: {photon_energy: 1.6 keV, pulse_energy: 0.4 mJ, focus_diameter: 1.5 um}\n"


def manifest(detector: str, body: str = "{name: s, shape: sphere, radius: 20 nm, model: continuum}",
             extra: str = "hits: {single: 1}\nnoise: none\n", **kw):
    text = f"{BEAM}detector: {{{detector}}}\nparticles: [{body}]\n{extra}"
    return parse_manifest(text, **kw)


# ---------------------------------------------------------------------------------------------------------
# pixel-area integration and binning


def _pixel_integral(sim: Simulator, fluence: float, radius: float, density: float, n: int = 24) -> np.ndarray:
    """Expected photons of a uniform sphere (radius Å, density e/Å³) integrated over each pixel's area by an
    n × n Gauss–Legendre rule: ∫ J r_e² P |F(q)|² cos α / r² dA, horizontal polarisation."""
    det = sim.detector
    k = 2.0 * math.pi / sim.beam.wavelength_angstrom
    x, w = np.polynomial.legendre.leggauss(n)
    u, w = (x + 1.0) / 2.0, w / 2.0
    uu, vv = np.meshgrid(u, u, indexing="ij")
    ww = np.outer(w, w)
    out = np.zeros(det.shape)
    for p in det.panels:
        i = np.arange(p.n_ss)[:, None, None, None]
        j = np.arange(p.n_fs)[None, :, None, None]
        pts = p.corner + (i + uu)[..., None] * p.ss_vec + (j + vv)[..., None] * p.fs_vec  # (ss, fs, n, n, 3) m
        r = np.linalg.norm(pts, axis=-1)
        normal = np.cross(p.fs_vec, p.ss_vec)
        area = np.linalg.norm(normal)
        d_omega = np.abs(pts @ (normal / area)) / r**3 * area
        d = pts / r[..., None]
        q = k * np.linalg.norm(d - np.array([0.0, 0.0, 1.0]), axis=-1)
        f = density * 4.0 / 3.0 * math.pi * radius**3 * sphere_form_factor_shape(q * radius)
        out[p.data_slice] = (fluence * R_E**2 * (1.0 - d[..., 0] ** 2) * d_omega * f**2 * ww).sum(axis=(-2, -1))
    return out


def test_oversampling_converges_to_the_pixel_area_integral():
    """A 20 nm sphere on 2 mm pixels at 0.3 m (a pixel spans a third of a fringe): centre sampling is off by
    percent, sub-pixels converge as 1/N² (midpoint rule) to an independent Gauss–Legendre integral."""
    errors = {}
    for n in (1, 4, 8):
        sim = Simulator(manifest(f"preset: square, n_pixels: 16, pixel_size: 2 mm, distance: 0.3 m, oversample: {n}"))
        photons, scene, fluence, _ = sim.expected_photons(0)
        assert photons.shape == (1, 16, 16) and sim.render_detector.shape == (1, 16 * n, 16 * n)
        ref = _pixel_integral(sim, fluence, 200.0, sim.spec.particles[0].density)
        errors[n] = float(np.abs(photons - ref).sum() / ref.sum())
    assert errors[8] < 1.5e-3, errors
    assert errors[1] > 2e-2, errors
    assert 3.0 < errors[4] / errors[8] < 5.0, errors  # the midpoint rule's 1/N²


def test_binned_detector_gives_the_bin_sum_of_the_unbinned_photons():
    """bin 2 rendered on 2 × 2 sub-pixels samples the very pixels of the unbinned detector: its expected photons
    are their bin_sum, multiple hits (coherent groups) included; the file holds the binned geometry."""
    det = "preset: square, n_pixels: 24, pixel_size: 400 um, distance: 0.12 m"
    body = ("{name: s, shape: sphere, radius: 30 nm, model: continuum}, "
            "{name: e, shape: spheroid, radius: 20 nm, polar_radius: 35 nm, model: continuum}")
    extra = "hits: {single: 1, multi: 1}\nnoise: none\n"
    fine = Simulator(manifest(det, body, extra))
    coarse = Simulator(manifest(det + ", bin: 2, oversample: 2", body, extra))
    centres = Simulator(manifest(det + ", bin: 2", body, extra))
    assert coarse.shape == (1, 12, 12) and coarse.detector.pixel_size == pytest.approx(800e-6)
    for i in range(6):
        a, scene_a, _, _ = fine.expected_photons(i)
        b, scene_b, _, _ = coarse.expected_photons(i)
        assert scene_a.hit_type == scene_b.hit_type
        np.testing.assert_allclose(b, bin_sum(a, 2), rtol=1e-10, atol=1e-12 * a.max())
    a = bin_sum(fine.expected_photons(0)[0], 2)
    c = centres.expected_photons(0)[0]
    assert np.abs(c - a).sum() > 1e-3 * a.sum()  # pixel centres alone are measurably off


def test_binned_dataset_writes_binned_frames_mask_and_geometry(tmp_path):
    m = manifest("preset: square, n_pixels: 24, pixel_size: 400 um, distance: 0.12 m, bin: 3",
                 extra="hits: {single: 1}\nshots: 2\nnoise: {beamstop: 1 mm}\n")
    generate(m, tmp_path / "b.h5")
    with h5py.File(tmp_path / "b.h5") as f:
        assert f["/entry_1/data_1/data"].shape == (2, 1, 8, 8)
        pos = f["/entry_1/instrument_1/detector_1/pixel_position"][()]
        assert pos.shape == (1, 8, 8, 3)
        np.testing.assert_allclose(np.diff(pos[0, 0, :, 0]), 1.2e-3, rtol=1e-9)
        assert f["/entry_1/instrument_1/detector_1/mask"][()].any()  # the beamstop, on the binned pixels


# ---------------------------------------------------------------------------------------------------------
# static masks


SQUARE16 = "preset: square, n_pixels: 16, pixel_size: 400 um, distance: 0.12 m"


def _bad_pixels(shape, seed=0, fraction=0.05):
    return np.random.default_rng(seed).random(shape) < fraction


def test_static_mask_from_npy_before_and_after_binning(tmp_path):
    before = _bad_pixels((16, 16), 1)
    np.save(tmp_path / "before.npy", before.astype(np.uint8))
    det = build_detector(manifest(SQUARE16 + ", bin: 2, mask: before.npy", base_dir=tmp_path))
    np.testing.assert_array_equal(det.mask[0], bin_mask(before, 2))
    after = _bad_pixels((1, 8, 8), 2, 0.2)
    np.save(tmp_path / "after.npy", after)
    det = build_detector(manifest(SQUARE16 + ", bin: 2, mask: after.npy", base_dir=tmp_path))
    np.testing.assert_array_equal(det.mask, after)
    # mask_value good: non-zero marks the good pixels, zeros are masked
    np.save(tmp_path / "good.npy", (~before).astype(np.float32) * 3.0)
    det = build_detector(manifest(SQUARE16 + ", mask: good.npy, mask_value: good", base_dir=tmp_path))
    np.testing.assert_array_equal(det.mask[0], before)
    # and the simulation's mask is it: the dataset's mask holds every masked pixel
    sim = Simulator(manifest(SQUARE16 + ", mask: good.npy, mask_value: good", base_dir=tmp_path))
    assert np.array_equal(sim.effects.mask[0], before)


def test_static_mask_from_a_cxi_file_and_a_named_dataset(tmp_path):
    bad = _bad_pixels((1, 16, 16), 3)
    with h5py.File(tmp_path / "run.cxi", "w") as f:
        f["/entry_1/instrument_1/detector_1/mask"] = bad.astype(np.uint16) * 7
        f["/my/good"] = (~bad[0]).astype(np.uint8)
    det = build_detector(manifest(SQUARE16 + ", mask: run.cxi", base_dir=tmp_path))
    np.testing.assert_array_equal(det.mask, bad)
    det = build_detector(manifest(SQUARE16 + ", mask: 'run.cxi:/my/good', mask_value: good", base_dir=tmp_path))
    np.testing.assert_array_equal(det.mask, bad)
    with pytest.raises(ConfigError, match=r"detector.mask: /nothing in .*run.cxi does not exist"):
        build_detector(manifest(SQUARE16 + ", mask: 'run.cxi:/nothing'", base_dir=tmp_path))


def test_static_mask_of_the_wrong_shape_is_a_one_line_error(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((10, 16)))
    with pytest.raises(ConfigError) as exc:
        build_detector(manifest(SQUARE16 + ", bin: 2, mask: m.npy", base_dir=tmp_path))
    message = str(exc.value)
    assert "\n" not in message and "(1, 10, 16)" in message and "(1, 16, 16)" in message and "(1, 8, 8)" in message
    with pytest.raises(ConfigError, match="detector.mask: no such file 'absent.npy'"):
        manifest(SQUARE16 + ", mask: absent.npy", base_dir=tmp_path).check_files()


def test_a_run_written_by_spi_simulate_is_a_detector_with_its_mask(tmp_path):
    bad = _bad_pixels((16, 16), 4)
    np.save(tmp_path / "bad.npy", bad)
    generate(manifest(SQUARE16 + ", mask: bad.npy", extra="shots: 1\nhits: {single: 1}\nnoise: none\n",
                      base_dir=tmp_path), tmp_path / "run.h5")
    again = Simulator(manifest("geometry: run.h5, bin: 2", base_dir=tmp_path))
    original = build_detector(manifest(SQUARE16, base_dir=tmp_path)).binned(2)
    np.testing.assert_allclose(again.detector.pixel_positions, original.pixel_positions, atol=1e-12)
    np.testing.assert_array_equal(again.detector.mask[0], bin_mask(bad, 2))


# ---------------------------------------------------------------------------------------------------------
# size and shape spread


def _random_q(n=500, q_max=0.08, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True) * (q_max * rng.random(n))[:, None]


def test_scaled_and_stretched_continuum_sphere_is_the_analytic_sphere_and_spheroid():
    q = _random_q()
    rot = quaternion_to_matrix(random_quaternions(1, np.random.default_rng(5))[0])
    sphere = ContinuumBody(UniformSphere(150.0, 0.43))
    big = ContinuumBody(UniformSphere(1.3 * 150.0, 0.43)).amplitude(q, rot)
    np.testing.assert_allclose(deformed_amplitude(sphere, q, rot, 1.3, 1.0), big, rtol=1e-10,
                               atol=1e-9 * abs(big).max())
    ellipsoid = ContinuumBody(UniformSpheroid(1.3 * 150.0, 1.3 * 0.7 * 150.0, 0.43)).amplitude(q, rot)
    np.testing.assert_allclose(deformed_amplitude(sphere, q, rot, 1.3, 0.7), ellipsoid, rtol=1e-10,
                               atol=1e-9 * abs(ellipsoid).max())
    assert deformed_amplitude(sphere, q[:1] * 0, rot, 1.3, 0.7)[0].real == pytest.approx(
        UniformSpheroid(195.0, 136.5, 0.43).n_electrons, rel=1e-12)
    # the stretch is along the particle's own z: turned with it
    spheroid = ContinuumBody(UniformSpheroid(100.0, 160.0, 0.43))
    want = ContinuumBody(UniformSpheroid(100.0, 160.0 * 0.8, 0.43)).amplitude(q, rot)
    np.testing.assert_allclose(deformed_amplitude(spheroid, q, rot, 1.0, 0.8), want, rtol=1e-10,
                               atol=1e-9 * abs(want).max())
    # s = a = 1: the body's own amplitude, bit for bit
    assert np.array_equal(deformed_amplitude(spheroid, q, rot), spheroid.amplitude(q, rot))


def test_deformed_atomistic_body_matches_the_deformed_coordinates_at_small_q():
    """det(D) F_body(D Rᵀ q) against the exact structure factor of the atoms moved to D r (times det D, the atoms
    a particle of the body's density would have more): equal but for the atomic form factors taken at |D Rᵀ q|."""
    from spisim.atoms import Atoms
    from spisim.scattering import structure_factor

    atoms = make_particle({"shape": "spheroid", "a_nm": 1.2, "c_nm": 1.8, "model": "atoms", "hydrogens": False})
    q = _random_q(300, 0.15, seed=2)
    rot = quaternion_to_matrix(random_quaternions(1, np.random.default_rng(7))[0])
    s, a = 1.15, 0.8
    d = s * np.array([1.0, 1.0, a])
    deformed = Atoms(atoms.positions * d, atoms.atomic_numbers, atoms.occupancies, "deformed")
    ref = s**3 * a * structure_factor(deformed, q, 1600.0, rotation=rot)
    exact = AtomicBody(atoms, "t-exact", 1600.0, 0.2, method="exact")
    got = deformed_amplitude(exact, q, rot, s, a)
    err = np.abs(got - ref) / np.abs(ref)
    assert err.max() < 5e-3 and err.max() > 1e-9  # bounded, and not the same formula
    # the fast path reaches the stretched q only with a volume built to q_max × the largest stretch
    fast = AtomicBody(atoms, "t-fast", 1600.0, 0.15 * s, method="fast")
    np.testing.assert_allclose(deformed_amplitude(fast, q, rot, s, a), got, rtol=2e-3, atol=2e-3 * abs(got).max())
    short = AtomicBody(atoms, "t-short", 1600.0, 0.15, method="fast")
    with pytest.raises(ConfigError, match="exceeds the volume's q_max"):
        deformed_amplitude(short, q * 0 + q[np.argmax(np.linalg.norm(q, axis=1))], rot, s, a)


def test_atomistic_volume_is_built_to_q_max_times_the_largest_stretch():
    m = manifest("preset: square, n_pixels: 16, pixel_size: 400 um, distance: 0.12 m",
                 "{name: b, shape: spheroid, radius: 2 nm, polar_radius: 3 nm, model: atoms, scale: 1.2, "
                 "size_sd: 0.1, aspect_sd: 0.05}")
    sim = Simulator(m)
    q_max = float(np.linalg.norm(sim._q[sim._render_covered], axis=1).max())
    body = sim.scene_model.particles[0].body
    assert body.q_max == pytest.approx(q_max * 1.2 * 1.3 * 1.15, rel=1e-12)
    for i in range(5):  # every drawn size slices inside the volume
        photons, scene, _, _ = sim.expected_photons(i)
        assert photons.sum() > 0 and scene.particles[0].scale != 1.2


def test_size_and_aspect_draws_have_the_asked_mean_and_sd():
    body = ContinuumBody(UniformSphere(100.0))
    model = SceneModel(np.array([0.0, 1.0, 0.0, 0.0]), [Kind(0, 1.0, body, 1.5, 0.1, 0.05)], [],
                       manifest(SQUARE16).spec.multi, manifest(SQUARE16).spec.unintended,
                       lambda rng: np.zeros(3), ["s", "droplet", "salt", "debris"])
    draws = np.array([(p.scale, p.aspect) for i in range(4000)
                      for p in model.draw(np.random.default_rng(i)).particles])
    s, a = draws[:, 0], draws[:, 1]
    truncation = math.sqrt(1 - 6 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / math.sqrt(2)))
    n = len(draws)
    assert s.mean() == pytest.approx(1.5, abs=4 * 0.15 / math.sqrt(n))
    assert s.std() == pytest.approx(0.15 * truncation, rel=0.05)
    assert a.mean() == pytest.approx(1.0, abs=4 * 0.05 / math.sqrt(n))
    assert a.std() == pytest.approx(0.05 * truncation, rel=0.05)
    assert s.min() >= 1.5 * (1 - 0.3) and s.max() <= 1.5 * 1.3 and a.min() >= 0.85 and a.max() <= 1.15


def test_sizes_are_stored_in_the_labels():
    text = (BEAM + f"detector: {{{SQUARE16}}}\nparticles: [{{name: s, shape: sphere, radius: 20 nm, size_sd: 0.1, "
            "aspect_sd: 0.1}]\nhits: balanced\nmulti: {n_min: 2, n_max: 3, same_species: true}\n"
            "unintended: {molecules: [{name: m, shape: sphere, radius: 5 nm, scale: 2}]}\nnoise: none\nshots: 24\n")
    sim = Simulator(parse_manifest(text))
    labels = [sim.shot(i)[1] for i in range(24)]
    block = labels_block(labels, sim.spec.max_particles)
    n, structure = block["n_particles"], block["structure"]
    real = structure >= 0
    assert np.isnan(block["scale"][~real]).all() and np.isnan(block["aspect"][~real]).all()
    sample = real & (structure == 0)
    assert sample.sum() >= 10 and len(np.unique(block["scale"][sample])) == sample.sum()  # each drawn
    molecule = structure == 1
    assert (block["scale"][molecule] == 2.0).all() and (block["aspect"][molecule] == 1.0).all()
    other = real & (structure >= 2)  # droplets, salt, debris: no spread
    assert (block["scale"][other] == 1.0).all() and (block["aspect"][other] == 1.0).all()
    multi = block["hit_type"] == 2
    assert multi.any() and all(len(set(block["scale"][i, : n[i]])) == n[i] for i in np.flatnonzero(multi))


def test_no_spread_draws_nothing_and_changes_nothing():
    kind = Kind(0, 1.0, ContinuumBody(UniformSphere(100.0)), 1.0, 0.0, 0.0)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    assert draw_deformation(rng, kind) == (1.0, 1.0)
    assert draw_deformation(rng, Kind(0, 1.0, kind.body, 2.0)) == (2.0, 1.0)
    assert pulse_scale(rng, 0.0) == 1.0
    assert rng.bit_generator.state == state


def test_a_manifest_without_the_new_keys_is_the_manifest_with_their_defaults():
    det = "preset: square, n_pixels: 20, pixel_size: 400 um, distance: 0.12 m"
    body = "{name: s, shape: sphere, radius: 25 nm}, {name: c, shape: shell, radius: 30 nm, thickness: 4 nm}"
    extra = ("hits: balanced\nshots: 12\nmulti: {same_species: false}\n"
             "noise: {background: {photons: 30}, jitter: 0.2, readout: 0.1}\n")
    plain = Simulator(manifest(det, body, extra))
    spelled = Simulator(manifest(det + ", bin: 1, oversample: 1, mask_value: bad",
                                 body.replace("}", ", scale: 1, size_sd: 0, aspect_sd: 0}"),
                                 extra.replace("photons: 30}", "photons: 30, jitter: 0}")
                                 .replace("same_species: false}", "same_species: false, placement: touching}")))
    for i in range(12):
        fa, la = plain.shot(i)
        fb, lb = spelled.shot(i)
        assert np.array_equal(fa, fb)
        for name, arr in labels_block([la], 4).items():
            np.testing.assert_array_equal(arr, labels_block([lb], 4)[name])


# ---------------------------------------------------------------------------------------------------------
# core-shell capsids


def _radial_integral(q: np.ndarray, rho, r_max: float, n: int = 400_001) -> np.ndarray:
    """F(q) = 4π ∫ ρ(r) r² sin(qr)/(qr) dr by the trapezoidal rule on a fine grid (independent of Φ)."""
    r = np.linspace(0.0, r_max, n)
    w = np.full(n, r[1] - r[0])
    w[[0, -1]] *= 0.5
    out = []
    for qi in q:
        out.append(4 * math.pi * np.sum(w * rho(r) * r**2 * np.sinc(qi * r / math.pi)))
    return np.array(out)


def test_core_shell_form_factor_against_the_radial_integral():
    outer, inner, rho, rho_c = 310.0, 250.0, 0.43, 0.55
    shell = UniformShell(outer, inner, rho, rho_c)
    q = np.linspace(0.0, 0.08, 41)
    qv = np.stack([q, np.zeros_like(q), np.zeros_like(q)], axis=1)
    ref = _radial_integral(q, lambda r: np.where(r < inner, rho_c, np.where(r <= outer, rho, 0.0)), outer + 1.0)
    got = shell.form_factor(qv).real
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * abs(ref).max())
    np.testing.assert_allclose(continuum_form_factor(shell, qv).real, got, rtol=1e-6)  # its Φ stops at x = 1e-3
    assert shell.n_electrons == pytest.approx(ref[0], rel=1e-5)
    r = np.linspace(0, outer, 200_001)
    dens = np.where(r < inner, rho_c, rho) * r**2
    assert shell.radius_of_gyration() == pytest.approx(math.sqrt(np.trapezoid(dens * r**2, r) / np.trapezoid(dens, r)),
                                                       rel=1e-6)
    # a core of the shell's density is the solid sphere; none is the hollow shell, bit for bit
    np.testing.assert_allclose(UniformShell(outer, inner, rho, rho).form_factor(qv),
                               UniformSphere(outer, rho).form_factor(qv), rtol=1e-9, atol=1e-6 * abs(got).max())
    assert np.array_equal(UniformShell(outer, inner, rho).form_factor(qv), UniformShell(outer, inner, rho, 0.0)
                          .form_factor(qv))


def test_core_density_in_a_manifest(tmp_path):
    body = "{name: c, shape: shell, radius: 30 nm, thickness: 5 nm, core_density: 0.5}"
    sim = Simulator(manifest(SQUARE16, body)).prepare()
    particle = sim.scene_model.particles[0].body.particle
    assert isinstance(particle, UniformShell) and particle.core_density == 0.5 and particle.inner == pytest.approx(250)
    with pytest.raises(ConfigError, match=r"core_density: only for a continuum shell"):
        manifest(SQUARE16, "{shape: sphere, radius: 3 nm, core_density: 0.5}")
    with pytest.raises(ConfigError, match=r"core_density: only for a continuum shell"):
        manifest(SQUARE16, "{shape: shell, radius: 3 nm, thickness: 1 nm, model: atoms, core_density: 0.5}")


# ---------------------------------------------------------------------------------------------------------
# background templates


def _template_manifest(tmp_path, background: str, detector: str = SQUARE16, extra: str = ""):
    text = (f"{BEAM}detector: {{{detector}}}\nparticles: [{{shape: sphere, radius: 20 nm}}]\nhits: {{no_hit: 1}}\n"
            f"shots: 40\nnoise: {{poisson: false, background: {background}{extra}}}\n")
    return parse_manifest(text, base_dir=tmp_path)


def test_template_background_total_and_per_shot_scaling(tmp_path):
    template = np.random.default_rng(0).uniform(0.0, 2.0, (16, 16))
    template[0, 0] = np.nan  # a masked pixel may hold no value
    np.save(tmp_path / "bg.npy", template)
    np.save(tmp_path / "mask.npy", np.isnan(template))
    det = SQUARE16 + ", mask: mask.npy"
    own = Simulator(_template_manifest(tmp_path, "{kind: template, template: bg.npy}", det))
    valid = ~own.effects.mask
    np.testing.assert_allclose(own.effects.background[0][valid[0]], template[valid[0]], rtol=1e-15)
    frame, labels = own.shot(0)
    assert labels.background_photons == pytest.approx(np.nansum(template), rel=1e-12)
    np.testing.assert_allclose(frame[valid], template[valid[0]].astype(np.float32), rtol=1e-6)
    scaled = Simulator(_template_manifest(tmp_path, "{kind: template, template: bg.npy, photons: 500}", det,
                                          ", jitter: 0.3"))
    assert scaled.effects.background[valid].sum() == pytest.approx(500, rel=1e-12)
    ratio = scaled.effects.background[valid] / template[valid[0]]
    assert np.ptp(ratio) < 1e-12 * ratio.mean()  # the shape is kept
    for i in range(5):  # scaled per shot by the pulse, as the other backgrounds are
        _, lab = scaled.shot(i)
        assert lab.background_photons == pytest.approx(500 * lab.pulse_scale, rel=1e-12)


def test_background_jitter_is_its_own_lognormal_factor(tmp_path):
    np.save(tmp_path / "bg.npy", np.ones((16, 16)))
    base = _template_manifest(tmp_path, "{kind: template, template: bg.npy, photons: 100}", extra=", jitter: 0.2")
    jit = _template_manifest(tmp_path, "{kind: template, template: bg.npy, photons: 100, jitter: 0.5}",
                             extra=", jitter: 0.2")
    a, b = Simulator(base), Simulator(jit)
    factors = []
    for i in range(40):
        la, lb = a.shot(i)[1], b.shot(i)[1]
        assert la.pulse_scale == lb.pulse_scale  # the pulse is untouched by the background's own draw
        factors.append(lb.background_photons / (100 * lb.pulse_scale))
    factors = np.array(factors)
    assert factors.std() > 0.2 and factors.min() > 0
    rng = np.random.default_rng(0)
    many = np.array([pulse_scale(rng, 0.5) for _ in range(20000)])
    assert many.mean() == pytest.approx(1.0, abs=0.02) and many.std() == pytest.approx(0.5, rel=0.05)
    # a gas background takes the jitter too
    gas = Simulator(_template_manifest(tmp_path, "{photons: 100, jitter: 0.5}"))
    assert np.std([gas.shot(i)[1].background_photons for i in range(10)]) > 5


def test_template_from_hdf5_and_its_errors(tmp_path):
    t = np.random.default_rng(1).uniform(0.0, 1.0, (1, 8, 8))
    with h5py.File(tmp_path / "bg.h5", "w") as f:
        f["background"] = t
        f["/other/pattern"] = 2 * t
    det = SQUARE16 + ", bin: 2"
    sim = Simulator(_template_manifest(tmp_path, "{kind: template, template: bg.h5}", det))
    np.testing.assert_allclose(sim.effects.background, t, rtol=1e-15)
    sim = Simulator(_template_manifest(tmp_path, "{kind: template, template: 'bg.h5:/other/pattern'}", det))
    np.testing.assert_allclose(sim.effects.background, 2 * t, rtol=1e-15)
    with pytest.raises(ConfigError, match=r"template: array of shape \(1, 8, 8\) does not fit .*\(1, 16, 16\)"):
        Simulator(_template_manifest(tmp_path, "{kind: template, template: bg.h5}"))
    np.save(tmp_path / "neg.npy", -t[0])
    with pytest.raises(ConfigError, match="64 unmasked pixels are negative"):
        Simulator(_template_manifest(tmp_path, "{kind: template, template: neg.npy}", det))
    with pytest.raises(ConfigError, match=r"template: missing value \(required for kind template\)"):
        _template_manifest(tmp_path, "{kind: template}")
    with pytest.raises(ConfigError, match="template: only for kind template"):
        _template_manifest(tmp_path, "{kind: gas, template: bg.h5, photons: 3}")


# ---------------------------------------------------------------------------------------------------------
# aggregates


def test_aggregate_centres_interpenetrate_by_up_to_the_overlap():
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(400):
        radii = rng.uniform(1.0, 3.0, 4)
        pos = place_aggregate(rng, radii, 0.4)
        for k in range(1, 4):
            d = np.linalg.norm(pos[:k] - pos[k], axis=1) / (radii[:k] + radii[k])
            ok = (d >= 0.6 - 1e-12) & (d <= 1.0 + 1e-12)
            assert ok.any()  # it sits at (r_j + r_k)(1 − u) from some earlier sphere j
        ratios.append(np.linalg.norm(pos[1] - pos[0]) / (radii[0] + radii[1]))
    ratios = np.array(ratios)  # the second sphere's distance: (1 − u), u uniform in [0, 0.4]
    assert ratios.min() >= 0.6 - 1e-12 and ratios.max() <= 1.0 + 1e-12
    assert ratios.mean() == pytest.approx(0.8, abs=4 * 0.4 / math.sqrt(12 * 400))
    assert ratios.std() == pytest.approx(0.4 / math.sqrt(12), rel=0.1)


def test_aggregate_multi_hits_with_their_own_sizes():
    text = (BEAM + f"detector: {{{SQUARE16}}}\nparticles: [{{name: s, shape: sphere, radius: 20 nm, size_sd: 0.2}}]\n"
            "hits: {multi: 1}\nmulti: {n_min: 3, n_max: 3, placement: aggregate, overlap: 0.5}\nnoise: none\n")
    sim = Simulator(parse_manifest(text))
    close = 0
    for i in range(20):
        scene = sim.expected_photons(i)[1]
        pos = np.array([p.position for p in scene.particles])
        radii = np.array([200e-10 * p.scale for p in scene.particles])
        assert len(set(radii)) == 3
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        touching = radii[:, None] + radii[None]
        assert (d[1, :1] <= touching[1, :1] * (1 + 1e-9)).all() and d[1, 0] >= 0.5 * touching[1, 0] * (1 - 1e-9)
        close += int((d[np.triu_indices(3, 1)] < touching[np.triu_indices(3, 1)] * (1 - 1e-9)).any())
    assert close >= 15  # they interpenetrate
    with pytest.raises(ConfigError, match="multi.overlap: only for placement aggregate"):
        parse_manifest(text.replace("placement: aggregate, ", ""))
    with pytest.raises(ConfigError, match=r"multi.overlap must be <= 0.9"):
        parse_manifest(text.replace("overlap: 0.5", "overlap: 0.95"))


# ---------------------------------------------------------------------------------------------------------
# the GPU paths


def test_deformed_atomistic_body_on_the_cuda_slicer_matches_the_cpu():
    """The numba.cuda slicer (the CUDA simulator in the tests) at deformed q gives the CPU's amplitudes."""
    atoms = make_particle({"shape": "sphere", "radius_nm": 1.0, "model": "atoms", "hydrogens": False})
    q = _random_q(40, 0.1, seed=4)
    rot = quaternion_to_matrix(random_quaternions(1, np.random.default_rng(1))[0])
    cpu = AtomicBody(atoms, "g", 1600.0, 0.1 * 1.3, method="fast", device="cpu")
    gpu = AtomicBody(atoms, "g", 1600.0, 0.1 * 1.3, method="fast", device="cuda")
    want = deformed_amplitude(cpu, q, rot, 1.1, 1.15)
    np.testing.assert_allclose(deformed_amplitude(gpu, q, rot, 1.1, 1.15), want, rtol=1e-9, atol=1e-9 * abs(want).max())


@pytest.mark.gpu
def test_gpu_pipeline_with_the_realism_keys_matches_the_cpu(tmp_path):
    """CuPy path: oversampling (reshape + sum on the device), binning, size spread, core-shell, aggregates and a
    template background give the CPU's expected photons (noise off)."""
    np.save(tmp_path / "bg.npy", np.random.default_rng(0).uniform(0, 1, (1, 12, 12)))
    text = (BEAM + "detector: {preset: square, n_pixels: 24, pixel_size: 400 um, distance: 0.12 m, bin: 2, "
            "oversample: 3}\nparticles: [{name: c, shape: shell, radius: 30 nm, thickness: 5 nm, core_density: 0.4, "
            "size_sd: 0.1, aspect_sd: 0.1}, {name: a, shape: spheroid, radius: 3 nm, polar_radius: 4 nm, "
            "model: atoms, size_sd: 0.05}]\nhits: {single: 1, multi: 1}\nmulti: {placement: aggregate}\n"
            "noise: {poisson: false, background: {kind: template, template: bg.npy, jitter: 0.2}}\n")
    cpu = Simulator(parse_manifest(text, base_dir=tmp_path), "cpu")
    gpu = Simulator(parse_manifest(text, base_dir=tmp_path), "cuda")
    for i in range(8):
        a, la = cpu.shot(i)
        b, lb = gpu.shot(i)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * max(a.max(), 1))
        assert la.total_photons == pytest.approx(lb.total_photons, rel=1e-6)
        np.testing.assert_array_equal(la.scale, lb.scale)
