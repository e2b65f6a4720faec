"""Toy diffraction shots of the four hit types, for tests, demos and benchmarks (numpy only, no physics
package needed, milliseconds per shot).

Patterns are computed in dimensionless units: a particle of size ~1 is a few Gaussian blobs whose
Fourier transform is analytic, F(q) = Σ_j a_j exp(−q²σ_j²/2) exp(−i q·r_j), sampled at q = 2π p / s for
pixel coordinate p (pixels from the beam) and speckle oversampling s. Hit types:

* ``no_hit``: background photons only;
* ``single``: one blob particle (speckles under a Gaussian envelope);
* ``multi``: two blob particles a few sizes apart (the same speckles crossed by fine fringes);
* ``unintended``: a large uniform sphere, [3(sin x − x cos x)/x³]², x = qR (strong, smooth, isotropic rings).

Expected photons are scaled to a random total and Poisson sampled. The detector is two panels one
above the other with a gap through the beam and a small masked beamstop, like a pnCCD.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spisim.cxi import HIT_TYPES, CXIWriter, ShotLabels


def toy_geometry(
    ss: int = 20, fs: int = 44, gap: int = 4, pixel_size: float = 75e-6, distance: float = 0.1, beamstop: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """Two panels of (ss, fs) pixels above and below the beam with a ``gap`` (pixels) between them.

    Returns:
        (pixel_position (2, ss, fs, 3) m, mask (2, ss, fs) bool with the pixels within ``beamstop``
        pixels of the beam masked).
    """
    cols = (np.arange(fs) - (fs - 1) / 2) * pixel_size
    top_rows = (gap / 2 + (ss - 1) - np.arange(ss) + 0.5) * pixel_size  # y of the upper panel, top row first
    bottom_rows = -(gap / 2 + np.arange(ss) + 0.5) * pixel_size
    pos = np.zeros((2, ss, fs, 3))
    for m, ys in enumerate((top_rows, bottom_rows)):
        pos[m, :, :, 0] = cols[None, :]
        pos[m, :, :, 1] = ys[:, None]
        pos[m, :, :, 2] = distance
    r = np.hypot(pos[..., 0], pos[..., 1]) / pixel_size
    return pos, r < beamstop


def _q(pixel_position: np.ndarray, oversampling: float) -> np.ndarray:
    """(M, SS, FS, 2) dimensionless q of each pixel (pixel coordinates from the beam, scaled)."""
    p = pixel_position[..., :2]
    step = np.median(np.linalg.norm(np.diff(pixel_position, axis=2), axis=-1))
    return 2 * np.pi * (p / step) / oversampling


def _blob_amplitude(q: np.ndarray, rng: np.random.Generator, offset: np.ndarray | None = None) -> np.ndarray:
    n = int(rng.integers(3, 7))
    centres = rng.uniform(-0.5, 0.5, size=(n, 2))
    if offset is not None:
        centres = centres + offset
    sig = rng.uniform(0.12, 0.25, size=n)
    amp = rng.uniform(0.5, 1.5, size=n)
    q2 = (q**2).sum(-1)
    phase = q @ centres.T  # (..., n)
    return (amp * np.exp(-0.5 * q2[..., None] * sig**2) * np.exp(-1j * phase)).sum(-1)


def toy_intensity(kind: str, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Relative (unnormalised) intensity of one shot of ``kind`` at dimensionless ``q`` (..., 2)."""
    if kind == "no_hit":
        return np.zeros(q.shape[:-1])
    if kind == "single":
        return np.abs(_blob_amplitude(q, rng)) ** 2
    if kind == "multi":
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(1.1, 1.6)
        d = dist * np.array([np.cos(ang), np.sin(ang)])
        f = _blob_amplitude(q, rng, -d / 2) + _blob_amplitude(q, rng, d / 2)
        return np.abs(f) ** 2
    if kind == "unintended":
        radius = rng.uniform(1.0, 1.6)
        x = np.sqrt((q**2).sum(-1)) * radius + 1e-9
        return (3 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2
    raise ValueError(f"unknown toy hit type {kind!r}")


def toy_frame(
    kind: str,
    pixel_position: np.ndarray,
    rng: np.random.Generator,
    *,
    oversampling: float = 4.0,
    background: float = 0.02,
) -> tuple[np.ndarray, float]:
    """One Poisson-sampled shot (M, SS, FS) float32 photons and its expected total (photons)."""
    q = _q(pixel_position, oversampling)
    inten = toy_intensity(kind, q, rng)
    if kind == "no_hit":
        total = 0.0
    else:
        lo, hi = (2e4, 8e4) if kind == "unintended" else (3e3, 2e4)
        total = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        inten = inten * (total / max(inten.sum(), 1e-30))
    expected = inten + background
    return rng.poisson(expected).astype(np.float32), total


_PARTICLES = {"no_hit": 0, "single": 1, "multi": 2, "unintended": 0}


def toy_shot(kind: str, pixel_position: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ShotLabels]:
    """A toy shot of ``kind`` and its labels (structure 0 = "toy" for each particle)."""
    frame, total = toy_frame(kind, pixel_position, rng)
    n = _PARTICLES[kind]
    labels = ShotLabels(
        hit_type=HIT_TYPES.index(kind),
        structure=np.zeros(n, dtype=np.int64),
        orientation=np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)),
        position=np.zeros((n, 3)),
        fluence=1e30 if n else 0.0,
        total_photons=total,
    )
    return frame, labels


class ToySimulator:
    """A stand-in live simulator: ``simulate_shot(index) -> (frame (M, SS, FS) float32, ShotLabels)``,
    the same shot for the same (seed, index).

    Args:
        seed: base seed.
        probabilities: hit type → probability (default: equal).
        geometry: keyword arguments of :func:`toy_geometry`.
    """

    def __init__(self, seed: int = 0, probabilities: dict[str, float] | None = None, **geometry) -> None:
        self.seed = int(seed)
        self.pixel_position, self.mask = toy_geometry(**geometry)
        probs = probabilities or dict.fromkeys(HIT_TYPES, 1.0)
        self.kinds = list(probs)
        p = np.array([probs[k] for k in self.kinds], dtype=float)
        self.p = p / p.sum()
        self.structure_names = ["toy"]
        self.class_names = list(HIT_TYPES)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.mask.shape)  # type: ignore[return-value]

    def simulate_shot(self, index: int) -> tuple[np.ndarray, ShotLabels]:
        rng = np.random.default_rng([self.seed, int(index)])
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.p))]
        return toy_shot(kind, self.pixel_position, rng)


def write_toy_dataset(
    path: str | Path,
    n_shots: int,
    seed: int = 0,
    kinds: Sequence[str] = HIT_TYPES,
    compression: str | None = None,
    **geometry,
) -> Path:
    """Write ``n_shots`` toy shots (hit types cycling through ``kinds`` in a shuffled order) as a CXI file.

    Returns:
        the path written.
    """
    sim = ToySimulator(seed, dict.fromkeys(kinds, 1.0), **geometry)
    with CXIWriter(
        path,
        n_shots,
        pixel_position=sim.pixel_position,
        solid_angle=np.full(sim.frame_shape, 5e-7),
        mask=sim.mask,
        photon_energy_ev=1700.0,
        pulse_energy_j=1e-3,
        structures=["toy"],
        max_particles=2,
        compression=compression,
        attrs={"spi_seed": seed},
    ) as w:
        order = np.random.default_rng([seed, 7]).permutation(np.arange(n_shots) % len(kinds))
        for i in range(n_shots):
            rng = np.random.default_rng([seed, i])
            kind = kinds[int(order[i])]
            w.write_shot(i, *toy_shot(kind, sim.pixel_position, rng))
    return Path(path)
