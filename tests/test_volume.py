"""The reciprocal volume (fast path): grid build, slicing on CPU and CUDA (simulator), accuracy on a protein."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from spisim.atoms import Atoms
from spisim.errors import ConfigError
from spisim.orientation import random_rotations
from spisim.scattering import (
    DEFAULT_OVERSAMPLING,
    ReciprocalVolume,
    first_minimum_q,
    relative_error,
    structure_factor,
)
from spisim.structure import load_structure

ENERGY = 6000.0  # eV
K = 2 * np.pi / (12398.419843320026 / ENERGY)  # Å⁻¹


def _detector_q(q_max: float, n: int = 48, centre=(0.13, -0.21)) -> np.ndarray:
    """q (n², 3) Å⁻¹ of a flat detector normal to the beam whose corner pixels reach just under q_max.

    The beam hits the detector off its centre (`centre`, in units of the half-width) so that the
    pattern is not symmetric about the pixel grid.
    """
    two_theta = 2 * np.arcsin(q_max / (2 * K))
    half = np.tan(two_theta) / (np.sqrt(2) * (1 + max(abs(c) for c in centre))) * 0.999
    u = np.linspace(-1, 1, n)
    x, y = np.meshgrid((u + centre[0]) * half, (u + centre[1]) * half, indexing="ij")
    pos = np.stack([x.ravel(), y.ravel(), np.ones(n * n)], axis=1)
    k_out = pos / np.linalg.norm(pos, axis=1)[:, None] * K
    q = k_out - np.array([0.0, 0.0, K])
    assert np.linalg.norm(q, axis=1).max() <= q_max
    return q


@pytest.fixture(scope="module")
def protein(shared_data) -> Atoms:
    return load_structure(shared_data / "structures" / "2cex_skopi.pdb", keep_waters=True)  # 2,452 atoms


def _small_particle(rng: np.random.Generator, n: int = 40, offset=(30.0, -12.0, 7.0)) -> Atoms:
    return Atoms(rng.normal(size=(n, 3)) * 6 + np.asarray(offset), rng.choice([1, 6, 7, 8, 16, 26], n))


def test_default_volume_is_within_one_percent_on_a_protein(protein: Atoms) -> None:
    """Accuracy: ‖F_slice − F_exact‖₂/‖F_exact‖₂ over q_first_min ≤ |q| ≤ q_max, random orientation."""
    assert len(protein) == 2452
    q_max = 0.5
    rotation = random_rotations(1, np.random.default_rng(21))[0]
    q = _detector_q(q_max)
    q_abs = np.linalg.norm(q, axis=1)
    exact = structure_factor(protein, q, ENERGY, rotation=rotation, method="cpu")
    volume = ReciprocalVolume.build(protein, ENERGY, q_max)
    assert volume.oversampling == pytest.approx(DEFAULT_OVERSAMPLING["cubic"])
    assert volume.dq == pytest.approx(2 * np.pi / (volume.oversampling * volume.diameter))
    fast = volume.slice(q, rotation)
    q_low = first_minimum_q(protein)
    assert 0.1 < q_low < 0.3 and (q_abs > q_low).mean() > 0.5
    err_f = relative_error(fast, exact, q_abs, q_low, q_max)
    err_i = relative_error(np.abs(fast) ** 2, np.abs(exact) ** 2, q_abs, q_low, q_max)
    assert err_f < 0.01 and err_i < 0.01, (err_f, err_i)
    # the whole pattern, central speckle included, is as good
    assert relative_error(fast, exact, q_abs, 0.0, q_max) < 0.01


@pytest.mark.slow
def test_interpolation_error_falls_with_oversampling(protein: Atoms) -> None:
    q_max = 0.3
    rotation = random_rotations(1, np.random.default_rng(22))[0]
    q = _detector_q(q_max, n=32)
    q_abs = np.linalg.norm(q, axis=1)
    exact = structure_factor(protein, q, ENERGY, rotation=rotation, method="cpu")
    q_low = first_minimum_q(protein)

    def err(os_: float, interpolation: str) -> float:
        v = ReciprocalVolume.build(protein, ENERGY, q_max, oversampling=os_, interpolation=interpolation)
        return relative_error(v.slice(q, rotation), exact, q_abs, q_low, q_max)

    # cubic B-spline: error ∝ (Δq·D)⁴; trilinear: ∝ (Δq·D)²
    assert err(2.0, "cubic") / err(4.0, "cubic") > 8
    assert err(3.0, "linear") / err(6.0, "linear") > 3
    assert err(DEFAULT_OVERSAMPLING["linear"], "linear") < 0.01


def test_slice_reproduces_exact_values_at_grid_nodes() -> None:
    rng = np.random.default_rng(23)
    atoms = _small_particle(rng)
    volume = ReciprocalVolume.build(atoms, ENERGY, 0.6)
    h = volume.half
    nodes = rng.integers(-int(0.6 / volume.dq / 1.8), int(0.6 / volume.dq / 1.8) + 1, size=(30, 3))
    q = nodes * volume.dq
    np.testing.assert_allclose(
        volume.slice(q, method="cpu"), structure_factor(atoms, q, ENERGY, method="cpu"), rtol=1e-7, atol=1e-7
    )
    assert h == (volume.n - 1) // 2


def test_grid_filled_by_nufft_equals_direct_sum() -> None:
    rng = np.random.default_rng(24)
    atoms = _small_particle(rng, n=15)
    kw = dict(oversampling=2.0, interpolation="linear")
    v_nufft = ReciprocalVolume.build(atoms, ENERGY, 0.25, method="nufft", **kw)
    v_cpu = ReciprocalVolume.build(atoms, ENERGY, 0.25, method="cpu", **kw)
    assert v_nufft.grid.shape == v_cpu.grid.shape and v_cpu.n <= 11
    np.testing.assert_allclose(v_nufft.grid, v_cpu.grid, rtol=1e-7, atol=1e-7 * np.abs(v_cpu.grid).max())
    v_cuda = ReciprocalVolume.build(atoms, ENERGY, 0.25, method="cuda", **kw)  # simulator in the tests
    np.testing.assert_allclose(v_cuda.grid, v_cpu.grid, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("interpolation", ["cubic", "linear"])
def test_cuda_slice_equals_cpu_slice(interpolation: str) -> None:
    rng = np.random.default_rng(25)
    atoms = _small_particle(rng)
    volume = ReciprocalVolume.build(atoms, ENERGY, 0.5, interpolation=interpolation)
    rotation = random_rotations(1, rng)[0]
    q = _detector_q(0.5, n=7)
    f_cpu = volume.slice(q, rotation, method="cpu")
    f_cuda = volume.slice(q, rotation, method="cuda")  # simulator in the tests
    np.testing.assert_allclose(f_cuda, f_cpu, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(f_cpu))
    assert relative_error(f_cpu, structure_factor(atoms, q, ENERGY, rotation=rotation), np.ones(len(q)), 0, 2) < 0.01
    # a volume sliced on the GPU still pickles (the volume store), without its device copy (found on an H100:
    # a CUDA context cannot be pickled), and the copy slices the same
    restored = pickle.loads(pickle.dumps(volume))
    assert volume._device_grid is not None and restored._device_grid is None
    np.testing.assert_array_equal(restored.slice(q, rotation, method="cpu"), f_cpu)


def test_cuda_slice_of_q_already_on_the_device() -> None:
    """q in GPU memory is sliced there and F stays there (the simulator's GPU path moves no pixel data)."""
    from numba import cuda

    rng = np.random.default_rng(27)
    volume = ReciprocalVolume.build(_small_particle(rng), ENERGY, 0.5)
    rotation = random_rotations(1, rng)[0]
    q = _detector_q(0.5, n=6)
    d_q = cuda.to_device(q)
    f_dev = volume.slice(d_q, rotation)  # "auto" follows the array onto the GPU
    assert not isinstance(f_dev, np.ndarray)
    np.testing.assert_allclose(f_dev.copy_to_host(), volume.slice(q, rotation, method="cpu"), rtol=1e-12, atol=1e-12)
    assert volume._device_q is d_q  # checked once; a volume with a device q still pickles, without it
    assert pickle.loads(pickle.dumps(volume))._device_q is None
    state = volume.__getstate__()  # a volume stored before device q existed loads too
    del state["_device_q"]
    old = ReciprocalVolume.__new__(ReciprocalVolume)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.slice(q, rotation, method="cpu"), volume.slice(q, rotation, method="cpu"))
    with pytest.raises(ConfigError, match="q is a GPU array: slice it with method 'cuda'"):
        volume.slice(d_q, rotation, method="cpu")
    with pytest.raises(ConfigError, match="exceeds the volume's q_max"):
        volume.slice(cuda.to_device(q * 1.5), rotation)
    with pytest.raises(ConfigError, match=r"GPU q vectors must be float64 \(P, 3\)"):
        volume.slice(cuda.to_device(q.astype(np.float32)), rotation)
    assert volume.slice(cuda.to_device(q[:0]), rotation).shape == (0,)


@pytest.mark.gpu
def test_real_gpu_slice_of_cupy_q_returns_without_a_copy() -> None:
    cp = pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x)")
    rng = np.random.default_rng(28)
    volume = ReciprocalVolume.build(_small_particle(rng), ENERGY, 0.5)
    rotation = random_rotations(1, rng)[0]
    q = _detector_q(0.5, n=64)
    f = cp.asarray(volume.slice(cp.asarray(q), rotation, method="cuda"))
    np.testing.assert_allclose(cp.asnumpy(f), volume.slice(q, rotation, method="cpu"), rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_real_gpu_slice_of_a_protein_equals_cpu(protein: Atoms) -> None:
    volume = ReciprocalVolume.build(protein, ENERGY, 0.5)
    rotation = random_rotations(1, np.random.default_rng(29))[0]
    q = _detector_q(0.5, n=256)
    np.testing.assert_allclose(volume.slice(q, rotation, method="cuda"), volume.slice(q, rotation, method="cpu"),
                               rtol=1e-10, atol=1e-10 * np.abs(volume.grid).max())  # fmt: skip


def test_off_centre_particle_and_rotation_convention() -> None:
    rng = np.random.default_rng(26)
    atoms = _small_particle(rng, offset=(250.0, -90.0, 40.0))  # far from the origin: a fast phase ramp
    volume = ReciprocalVolume.build(atoms, ENERGY, 0.8)
    np.testing.assert_allclose(volume.centre, (atoms.positions.min(0) + atoms.positions.max(0)) / 2)
    rotation = random_rotations(1, rng)[0]
    q = _detector_q(0.8, n=24)
    fast = volume.slice(q, rotation)
    assert relative_error(fast, structure_factor(atoms, q, ENERGY, rotation=rotation), np.ones(len(q)), 0, 2) < 0.01
    # slicing at Rᵀq with no rotation is the same
    np.testing.assert_allclose(volume.slice(q @ rotation), fast, rtol=1e-10, atol=1e-10)


def test_anomalous_flag_is_honoured() -> None:
    rng = np.random.default_rng(27)
    atoms = _small_particle(rng)
    q = _detector_q(0.4, n=10)
    v_plain = ReciprocalVolume.build(atoms, 7150.0, 0.4, anomalous=False)
    f_plain = structure_factor(atoms, q, 7150.0, anomalous=False)
    assert relative_error(v_plain.slice(q), f_plain, np.ones(len(q)), 0, 2) < 0.01
    v_anom = ReciprocalVolume.build(atoms, 7150.0, 0.4)
    assert relative_error(v_anom.slice(q), f_plain, np.ones(len(q)), 0, 2) > 0.02


def test_memory_guard_and_bad_options(protein: Atoms) -> None:
    with pytest.raises(ConfigError, match="exact path"):
        ReciprocalVolume.build(protein, ENERGY, 2.0, max_bytes=2**20)
    n = ReciprocalVolume.grid_size(2 * protein.max_radius(), 2.0, DEFAULT_OVERSAMPLING["cubic"])
    assert n**3 * 16 > 2**20
    atoms = _small_particle(np.random.default_rng(28))
    with pytest.raises(ConfigError, match="oversampling"):
        ReciprocalVolume.build(atoms, ENERGY, 0.5, oversampling=0.8)
    with pytest.raises(ConfigError, match="interpolation"):
        ReciprocalVolume.build(atoms, ENERGY, 0.5, interpolation="sinc")
    with pytest.raises(ConfigError, match="q_max"):
        ReciprocalVolume.build(atoms, ENERGY, -1.0)
    with pytest.raises(ConfigError, match="without atoms"):
        ReciprocalVolume.build(Atoms(np.zeros((0, 3)), np.zeros(0, dtype=int)), ENERGY, 0.5)
    volume = ReciprocalVolume.build(atoms, ENERGY, 0.5)
    with pytest.raises(ConfigError, match="q_max"):
        volume.slice(np.array([[0.0, 0.0, 0.51]]))
    with pytest.raises(ConfigError, match="slice method"):
        volume.slice(np.zeros((1, 3)), method="fast")
    with pytest.raises(ConfigError, match="rotation"):
        volume.slice(np.zeros((1, 3)), rotation=-np.eye(3))


def test_volume_build_is_bitwise_reproducible_across_processes(shared_data):
    """Datasets must be byte-identical run to run: the NUFFT grid fill may not depend on thread timing."""
    import subprocess
    import sys

    script = (
        "import hashlib, sys\n"
        "from spisim.structure import load_structure\n"
        "from spisim.scattering import ReciprocalVolume\n"
        "a = load_structure(sys.argv[1])\n"
        "v = ReciprocalVolume.build(a, 6000.0, 0.4)\n"
        "print(hashlib.sha256(v.grid.tobytes()).hexdigest())\n"
    )
    path = str(shared_data / "structures" / "2cex_skopi.pdb")
    digests = {
        subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, check=True).stdout
        for _ in range(3)
    }
    assert len(digests) == 1
