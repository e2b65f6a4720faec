"""Shots as scenes: which particles are in the beam, where, how they are oriented, and their pattern.

A :class:`SceneModel` draws a :class:`Scene` for one shot from that shot's random stream: the hit type
(no hit, single, multi or unintended, by the manifest's mix), the particles (kind, orientation as a
unit quaternion, position in metres relative to the focus centre, size factor s and stretch a) and
nothing else. A :class:`PatternModel` turns a scene into expected photons per pixel:

* each particle scatters F_i(q) = det(D_i) F(D_i R_iᵀ q) with D_i = s_i diag(1, 1, a_i) (electrons;
  :mod:`spisim.scattering` for atoms, an analytic form factor for continuum bodies): the body, scaled
  by s and stretched by a along its own z at constant density, then turned by R (r_lab = R D r_body;
  :func:`deformed_amplitude`); s = a = 1 unless the particle's manifest entry asks for a size spread;
* its amplitude is weighted by √(J_i / J₀), J_i the fluence at its position (the focal profile times
  the shot's pulse scale), J₀ the largest of them, and shifted by the phase e^{i q·t_i} of its
  position t_i;
* particles closer than the aliasing limit d = π / Δq (Δq the largest step of q between neighbouring
  pixels) add coherently, |Σ F_i|²; groups farther apart add incoherently. Their interference fringes
  would be finer than two pixels: evaluated at pixel centres they alias into false speckle, while a
  real pixel integrates them out, which is what the incoherent sum gives (REFERENCE.md; skopi's pitfall);
* N = J₀ r_e² P ΔΩ |F|² (:func:`spisim.photons.expected_photons`) per coherent group, summed.

All random draws of a shot come from the generator passed in, so a shot depends only on (seed, index).
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .atoms import Atoms
from .backend import get_array_module
from .continuum import (
    ContinuumParticle,
    UniformPolyhedron,
    UniformShell,
    UniformSphere,
    UniformSpheroid,
    polyhedron_amplitude,
)
from .cxi import HIT_TYPES
from .orientation import quaternion_to_matrix, random_quaternions
from .photons import expected_photons


class Body(Protocol):
    """Anything that scatters: a complex amplitude F(Rᵀq) in electrons and a bounding radius."""

    radius_angstrom: float

    def amplitude(self, q: Any, rotation: np.ndarray) -> Any:
        """F(Rᵀq), complex (P,), electrons, for lab-frame q (P, 3) Å⁻¹ and rotation R (3, 3)."""


@dataclass
class ContinuumBody:
    """A continuum particle (uniform density, analytic form factor) as a :class:`Body`."""

    particle: ContinuumParticle
    radius_angstrom: float = field(init=False)

    def __post_init__(self) -> None:
        self.radius_angstrom = float(self.particle.max_radius())

    def amplitude(self, q: Any, rotation: np.ndarray) -> Any:
        """F(Rᵀq) (P,) complex128; numpy or CuPy ``q`` (P, 3) Å⁻¹ (the result follows it)."""
        xp = get_array_module(q)
        q_particle = q @ xp.asarray(rotation)  # row i: (Rᵀ q_i)ᵀ
        if xp is np:
            return self.particle.form_factor(q_particle)
        return continuum_form_factor(self.particle, q_particle)


def continuum_form_factor(particle: ContinuumParticle, q: Any) -> Any:
    """Form factor (P,) complex of a sphere, spheroid or shell for particle-frame q (P, 3) Å⁻¹.

    The array-module-generic twin of ``particle.form_factor`` (numpy or CuPy), used on the GPU.
    """
    xp = get_array_module(q)

    def phi(x: Any) -> Any:
        x = xp.where(x < 1e-3, 1e-3, x)  # below 1e-3 the closed form keeps ~1e-10 relative accuracy
        return 3.0 * (xp.sin(x) - x * xp.cos(x)) / x**3

    if isinstance(particle, UniformSphere):
        amp = particle.n_electrons * phi(xp.linalg.norm(q, axis=1) * particle.radius_angstrom)
    elif isinstance(particle, UniformSpheroid):
        x = xp.sqrt(particle.a**2 * (q[:, 0] ** 2 + q[:, 1] ** 2) + particle.c**2 * q[:, 2] ** 2)
        amp = particle.n_electrons * phi(x)
    elif isinstance(particle, UniformShell):
        qn = xp.linalg.norm(q, axis=1)
        v_out = 4.0 / 3.0 * math.pi * particle.outer**3
        inner = 4.0 / 3.0 * math.pi * particle.inner**3 * phi(qn * particle.inner)
        amp = particle.electron_density * (v_out * phi(qn * particle.outer) - inner) + particle.core_density * inner
    elif isinstance(particle, UniformPolyhedron):
        return polyhedron_amplitude(q, particle.vertices, particle.faces, particle.electron_density)
    else:
        raise TypeError(f"no array-generic form factor for {type(particle).__name__}")
    return amp.astype(xp.complex128)


_VOLUMES: dict[tuple, Any] = {}
"""Reciprocal volumes built in this process, by (particle key, photon energy, q_max, anomalous)."""


@dataclass
class AtomicBody:
    """An atomistic particle as a :class:`Body`: fast (reciprocal volume, built once) or exact scattering.

    Attributes:
        atoms: the particle (Å, centred).
        key: identifies the particle for the per-process volume cache (e.g. its manifest label and source).
        photon_energy_ev: eV.
        q_max: largest |q| the detector sees (Å⁻¹), the extent of the volume.
        method: ``fast`` or ``exact``.
        anomalous: include f' + i f''.
        device: ``cpu`` or ``cuda``: where the volume is sliced (numba CPU or numba.cuda kernels).
        store: folder where the volume is saved once built and loaded from by later users (other
            worker processes, resumed runs), so that every shot of a dataset slices the very same
            grid whatever the process (a multithreaded NUFFT build is not bit-reproducible).
    """

    atoms: Atoms
    key: str
    photon_energy_ev: float
    q_max: float
    method: str = "fast"
    anomalous: bool = True
    device: str = "cpu"
    store: Path | None = None
    radius_angstrom: float = field(init=False)

    def __post_init__(self) -> None:
        self.radius_angstrom = float(self.atoms.max_radius())
        self._q_host: tuple[Any, np.ndarray] | None = None

    def volume(self) -> Any:
        """The :class:`~spisim.scattering.ReciprocalVolume` of this particle (built on first use, cached)."""
        from .scattering import ReciprocalVolume

        k = (self.key, len(self.atoms), float(self.photon_energy_ev), float(self.q_max), self.anomalous)
        path = None
        if self.store is not None:
            path = Path(self.store) / (hashlib.sha256(repr(k).encode()).hexdigest()[:24] + ".pkl")
            if k not in _VOLUMES and path.is_file():
                with open(path, "rb") as fh:
                    _VOLUMES[k] = pickle.load(fh)
        if k not in _VOLUMES:
            _VOLUMES[k] = build_volume(ReciprocalVolume, self.atoms, self.photon_energy_ev, self.q_max, self.anomalous)
        if path is not None and not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
            with open(tmp, "wb") as fh:
                pickle.dump(_VOLUMES[k], fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        return _VOLUMES[k]

    def amplitude(self, q: Any, rotation: np.ndarray) -> Any:
        """F(Rᵀq) (P,) complex128 for lab-frame q (P, 3) Å⁻¹ (numpy, or CuPy: the result follows it)."""
        xp = get_array_module(q)
        if xp is not np and self.method == "fast" and self.device == "cuda":  # q stays on the GPU, F too
            return xp.asarray(self.volume().slice(q, rotation, method="cuda"))
        q_host = q
        if xp is not np:  # the exact kernels take host q; keep one host copy of the (fixed) pixel q
            if self._q_host is None or self._q_host[0] is not q:
                self._q_host = (q, xp.asnumpy(q))
            q_host = self._q_host[1]
        if self.method == "fast":
            f = self.volume().slice(q_host, rotation, method=self.device)
        else:
            from .scattering import structure_factor

            f = structure_factor(self.atoms, q_host, self.photon_energy_ev, rotation=rotation,
                                 anomalous=self.anomalous)
        return f if xp is np else xp.asarray(f)


def deformation_matrix(rotation: np.ndarray, scale: float, aspect: float) -> np.ndarray:
    """M = R D Rᵀ (3, 3), D = ``scale`` · diag(1, 1, ``aspect``): lab q ↦ the lab q whose particle-frame
    image Rᵀ(M q) = D Rᵀ q is where the undeformed body is evaluated (M is symmetric)."""
    r = np.asarray(rotation, dtype=np.float64)
    return (r * (scale * np.array([1.0, 1.0, aspect]))) @ r.T


def deformed_amplitude(body: Body, q: Any, rotation: np.ndarray, scale: float = 1.0, aspect: float = 1.0) -> Any:
    """F (P,) complex, electrons, of ``body`` scaled by ``scale`` and stretched by ``aspect`` along its own z,
    then turned by ``rotation``, at lab-frame q (P, 3) Å⁻¹ (numpy or CuPy; the result follows q).

    The particle's points are r_lab = R D r_body with D = s · diag(1, 1, a), at the body's density, so
    F_lab(q) = det(D) · F_body(Dᵀ Rᵀ q) (det D = s³ a electrons more per electron of the body). Exact for
    continuum bodies (a sphere becomes the analytic spheroid of semi-axes sR, sR, saR). For atomistic
    bodies the atoms' form factors are then taken at |D Rᵀ q| rather than |q|: their slow change with q
    is neglected (small where |D Rᵀ q| ≈ |q|), and the reciprocal volume must reach the largest |D Rᵀ q|,
    i.e. q_max times the largest stretch (:attr:`spisim.manifest.ParticleSpec.max_stretch`).

    ``scale = aspect = 1`` calls ``body.amplitude(q, rotation)`` as it is (same bits).
    """
    if scale == 1.0 and aspect == 1.0:
        return body.amplitude(q, rotation)
    xp = get_array_module(q)
    m = deformation_matrix(rotation, scale, aspect)
    q_deformed = q @ (m if xp is np else xp.asarray(m))  # rows (M q_i)ᵀ, M symmetric
    return body.amplitude(q_deformed, rotation) * (scale**3 * aspect)


def build_volume(cls: Any, atoms: Atoms, photon_energy_ev: float, q_max: float, anomalous: bool) -> Any:
    """``cls.build(atoms, photon_energy_ev, q_max)``, passing ``anomalous`` where the build takes it."""
    import inspect

    params = inspect.signature(cls.build).parameters
    kw = {"anomalous": anomalous} if "anomalous" in params else {}
    return cls.build(atoms, photon_energy_ev, q_max, **kw)


# ----------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class PlacedParticle:
    """One particle of a shot.

    Attributes:
        structure: index into the dataset's structure names.
        quaternion: (4,) unit quaternion (w, x, y, z) of its rotation R.
        position: (3,) m, relative to the focus centre (x, y across the beam, z along it).
        body: what scatters.
        scale: size factor s of the body (dimensionless).
        aspect: stretch a of the body along its own z (dimensionless); see :func:`deformed_amplitude`.
    """

    structure: int
    quaternion: np.ndarray
    position: np.ndarray
    body: Body
    scale: float = 1.0
    aspect: float = 1.0

    @property
    def radius_angstrom(self) -> float:
        """Bounding radius of the scaled and stretched body (Å): R s max(1, a)."""
        return self.body.radius_angstrom * self.scale * max(1.0, self.aspect)


@dataclass(frozen=True)
class Scene:
    """What is in the beam in one shot: a hit type code and its particles (none for a no-hit)."""

    hit_type: int
    particles: tuple[PlacedParticle, ...] = ()


@dataclass(frozen=True)
class Kind:
    """A particle the scene may place: its structure index, relative weight and body, and the law of its
    per-particle size factor s ~ N(scale, scale·size_sd) and stretch a ~ N(1, aspect_sd) (both truncated
    to ±3 sd and > 0; see :func:`draw_deformation`)."""

    structure: int
    weight: float
    body: Body
    scale: float = 1.0
    size_sd: float = 0.0
    aspect_sd: float = 0.0


TRUNCATION_SD = 3.0
"""Size factors and stretches are drawn from normal laws truncated to ± this many standard deviations."""


def truncated_normal(rng: np.random.Generator, mean: float, sd: float) -> float:
    """One draw of N(mean, sd²) truncated to mean ± 3 sd and > 0 (redrawn while outside; mean > 0)."""
    for _ in range(1000):
        z = float(rng.standard_normal())
        value = mean + sd * z
        if abs(z) <= TRUNCATION_SD and value > 0:
            return value
    return mean  # pragma: no cover - only for sd ≫ mean, where 1000 draws all fall at or below 0


def draw_deformation(rng: np.random.Generator, kind: Kind) -> tuple[float, float]:
    """(size factor s, stretch a) of one particle of ``kind``: drawn only where its spread is > 0 (no draw
    otherwise, so streams without spreads are unchanged): s = scale and a = 1 then."""
    s = truncated_normal(rng, kind.scale, kind.scale * kind.size_sd) if kind.size_sd > 0 else kind.scale
    a = truncated_normal(rng, 1.0, kind.aspect_sd) if kind.aspect_sd > 0 else 1.0
    return s, a


def _pick(rng: np.random.Generator, weights: Sequence[float]) -> int:
    """Index drawn with probability proportional to ``weights`` (one uniform draw)."""
    w = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(w / w.sum())
    return int(min(np.searchsorted(cdf, rng.random(), side="right"), len(w) - 1))


def uniform_in_ball(rng: np.random.Generator, radius: float) -> np.ndarray:
    """(3,) point uniform in a ball of ``radius``."""
    v = rng.standard_normal(3)
    v /= np.linalg.norm(v)
    return v * radius * rng.random() ** (1.0 / 3.0)


def place_touching(rng: np.random.Generator, radii: Sequence[float], gap: float = 0.0) -> np.ndarray:
    """(n, 3) centres of spheres of ``radii`` where each new one touches a random earlier one.

    Sphere k is put at distance r_j + r_k + ``gap`` from a randomly chosen placed sphere j in a uniformly
    random direction, redrawn (up to 200 times) while it would overlap another. The first sphere is at
    the origin. Units as given.
    """
    pos = np.zeros((len(radii), 3))
    for k in range(1, len(radii)):
        for _ in range(200):
            j = int(rng.integers(k))
            d = rng.standard_normal(3)
            d /= np.linalg.norm(d)
            cand = pos[j] + d * (radii[j] + radii[k] + gap)
            dist = np.linalg.norm(pos[:k] - cand, axis=1)
            if np.all(dist >= (np.asarray(radii[:k]) + radii[k] + gap) * (1 - 1e-9)):
                break
        pos[k] = cand
    return pos


def place_in_cluster(rng: np.random.Generator, radii: Sequence[float], cluster_radius: float) -> np.ndarray:
    """(n, 3) centres uniform in a ball of ``cluster_radius`` without overlaps of spheres of ``radii``.

    Each centre is redrawn up to 200 times while it overlaps an earlier sphere; after that it stays
    (crowded clusters may overlap). The first centre is at the origin.
    """
    pos = np.zeros((len(radii), 3))
    for k in range(1, len(radii)):
        for _ in range(200):
            cand = uniform_in_ball(rng, cluster_radius)
            if np.all(np.linalg.norm(pos[:k] - cand, axis=1) >= np.asarray(radii[:k]) + radii[k]):
                break
        pos[k] = cand
    return pos


def place_aggregate(rng: np.random.Generator, radii: Sequence[float], overlap: float) -> np.ndarray:
    """(n, 3) centres of a compact aggregate of spheres of ``radii``, interpenetrating by up to ``overlap``.

    Sphere k is put in a uniformly random direction from a randomly chosen placed sphere j, at centre
    distance (r_j + r_k)(1 − u) with u uniform in [0, ``overlap``] (0 ≤ overlap < 1): touching at u = 0,
    overlapping otherwise. Other spheres are not avoided (aggregates interpenetrate). The first sphere is
    at the origin. Units as given.
    """
    pos = np.zeros((len(radii), 3))
    for k in range(1, len(radii)):
        j = int(rng.integers(k))
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        u = rng.uniform(0.0, overlap)
        pos[k] = pos[j] + d * (radii[j] + radii[k]) * (1.0 - u)
    return pos


@dataclass(frozen=True)
class MultiHits:
    """How a multiple hit is made: 2 to N particles in a cluster.

    Attributes:
        n_min, n_max: fewest and most particles.
        distribution: ``uniform`` on n_min..n_max, or ``poisson`` with ``mean``, redrawn until inside.
        mean: mean of the poisson law.
        placement: ``touching`` (each particle touches one placed before, plus ``gap``), ``cluster`` (centres
            uniform in a ball of ``cluster_radius``, no overlaps) or ``aggregate`` (see :func:`place_aggregate`).
        gap: m, extra distance between the bounding spheres of touching particles.
        cluster_radius: m, radius of the ball of centres (``cluster``).
        overlap: largest fraction by which neighbours of an aggregate interpenetrate.
        same_species: all particles of one hit are of one kind.
        coherence: ``auto``, ``coherent`` or ``incoherent`` (see :func:`coherent_groups`).
    """

    n_min: int
    n_max: int
    distribution: str
    mean: float
    placement: str
    gap: float
    cluster_radius: float
    overlap: float
    same_species: bool
    coherence: str


@dataclass(frozen=True)
class SpheroidLaw:
    """Continuum spheroids of an unintended hit: equatorial radius (m) uniform in ``radius``, axis ratio c/a
    uniform in ``aspect``, electron density ``density`` (e/Å³)."""

    radius: tuple[float, float]
    aspect: tuple[float, float]
    density: float


@dataclass(frozen=True)
class DebrisLaw:
    """A debris cluster: ``n`` fragments (uniform in [low, high]), each a spheroid as :class:`SpheroidLaw` says,
    their centres uniform in a ball of ``cluster_radius`` (m)."""

    n: tuple[int, int]
    radius: tuple[float, float]
    aspect: tuple[float, float]
    density: float
    cluster_radius: float


@dataclass(frozen=True)
class UnintendedHits:
    """Hits on what is not the sample.

    Attributes:
        weights: relative weights of ``droplet``, ``salt``, ``debris`` and ``molecule`` (0 for a kind that cannot
            occur, e.g. molecule without molecules).
        droplet, salt: their spheroid laws.
        debris: the debris law.
    """

    weights: dict[str, float]
    droplet: SpheroidLaw
    salt: SpheroidLaw
    debris: DebrisLaw


def _draw_count_multi(rng: np.random.Generator, spec: MultiHits) -> int:
    if spec.distribution == "uniform":
        return int(rng.integers(spec.n_min, spec.n_max + 1))
    for _ in range(1000):
        n = int(rng.poisson(spec.mean))
        if spec.n_min <= n <= spec.n_max:
            return n
    return spec.n_min


@dataclass
class SceneModel:
    """Draws the scene of each shot (see the module doc).

    Attributes:
        hit_probabilities: (4,) in :data:`spisim.cxi.HIT_TYPES` order.
        particles: the sample kinds (single and multiple hits).
        molecules: other molecules (unintended hits).
        multi, unintended: how multiple and unintended hits are made.
        sample_position: rng -> (3,) m, where a hit happens (e.g. :meth:`spisim.beam.Beam.sample_position`).
        names: structure names the labels index; droplet, salt and debris must be among them.
    """

    hit_probabilities: np.ndarray
    particles: Sequence[Kind]
    molecules: Sequence[Kind]
    multi: MultiHits
    unintended: UnintendedHits
    sample_position: Callable[[np.random.Generator], np.ndarray]
    names: Sequence[str]

    def draw(self, rng: np.random.Generator) -> Scene:
        """The scene of one shot, from that shot's stream."""
        code = _pick(rng, self.hit_probabilities)
        name = HIT_TYPES[code]
        if name == "no_hit":
            return Scene(code)
        centre = np.asarray(self.sample_position(rng), dtype=np.float64)
        if name == "single":
            kind = self.particles[_pick(rng, [k.weight for k in self.particles])]
            return Scene(code, (self._place(rng, kind.structure, kind.body, centre, draw_deformation(rng, kind)),))
        if name == "multi":
            n = _draw_count_multi(rng, self.multi)
            weights = [k.weight for k in self.particles]
            if self.multi.same_species:
                kinds = [self.particles[_pick(rng, weights)]] * n
            else:
                kinds = [self.particles[_pick(rng, weights)] for _ in range(n)]
            sizes = [draw_deformation(rng, k) for k in kinds]  # each particle its own size, also of one kind
            radii = [k.body.radius_angstrom * s * max(1.0, a) * 1e-10 for k, (s, a) in zip(kinds, sizes, strict=True)]
            if self.multi.placement == "touching":
                offsets = place_touching(rng, radii, self.multi.gap)
            elif self.multi.placement == "aggregate":
                offsets = place_aggregate(rng, radii, self.multi.overlap)
            else:
                offsets = place_in_cluster(rng, radii, self.multi.cluster_radius)
            placed = (self._place(rng, k.structure, k.body, centre + o, d)
                      for k, o, d in zip(kinds, offsets, sizes, strict=True))
            return Scene(code, tuple(placed))
        return Scene(code, self._draw_unintended(rng, centre))

    def _place(self, rng: np.random.Generator, structure: int, body: Body, position: np.ndarray,
               deformation: tuple[float, float] = (1.0, 1.0)) -> PlacedParticle:
        s, a = deformation
        return PlacedParticle(structure, random_quaternions(1, rng)[0], np.asarray(position, float), body, s, a)

    def _draw_unintended(self, rng: np.random.Generator, centre: np.ndarray) -> tuple[PlacedParticle, ...]:
        u = self.unintended
        weights = u.weights
        kind = list(weights)[_pick(rng, list(weights.values()))]
        if kind == "molecule":
            m = self.molecules[_pick(rng, [k.weight for k in self.molecules])]
            return (self._place(rng, m.structure, m.body, centre, draw_deformation(rng, m)),)
        index = list(self.names).index(kind)
        if kind in ("droplet", "salt"):
            spec = u.droplet if kind == "droplet" else u.salt
            body = _random_spheroid(rng, spec.radius, spec.aspect, spec.density)
            return (self._place(rng, index, body, centre),)
        return self._draw_debris(rng, centre, index, u.debris)

    def _draw_debris(self, rng: np.random.Generator, centre: np.ndarray, index: int, spec: DebrisLaw) -> tuple:
        n = int(rng.integers(spec.n[0], spec.n[1] + 1))
        bodies = [_random_spheroid(rng, spec.radius, spec.aspect, spec.density) for _ in range(n)]
        offsets = place_in_cluster(rng, [b.radius_angstrom * 1e-10 for b in bodies], spec.cluster_radius)
        return tuple(self._place(rng, index, b, centre + o) for b, o in zip(bodies, offsets, strict=True))


def _random_spheroid(
    rng: np.random.Generator, radius: tuple[float, float], aspect: tuple[float, float], density: float
) -> ContinuumBody:
    """A continuum spheroid: equatorial radius uniform in ``radius`` (m), c/a uniform in ``aspect``."""
    a = rng.uniform(*radius) * 1e10
    c = a * rng.uniform(*aspect)
    particle = UniformSphere(a, density) if c == a else UniformSpheroid(a, c, density)
    return ContinuumBody(particle)


# ----------------------------------------------------------------------------------------------
# Patterns


def alias_distance(q: np.ndarray, covered: np.ndarray) -> float:
    """Largest centre distance (m) at which two particles still add coherently: π / Δq_max.

    Args:
        q: (M, SS, FS, 3) Å⁻¹ per pixel.
        covered: (M, SS, FS) bool, pixels that exist.

    Δq_max is the largest |q| step between neighbouring covered pixels along slow or fast scan (Å⁻¹).
    Fringes of two particles a distance d apart have a q period 2π/d; below two samples per period
    (d > π/Δq) they alias at pixel centres.
    """
    steps = []
    for axis in (1, 2):
        if q.shape[axis] < 2:
            continue
        dq = np.linalg.norm(np.diff(q, axis=axis), axis=-1)
        both = np.logical_and(np.take(covered, range(1, q.shape[axis]), axis=axis),
                              np.take(covered, range(q.shape[axis] - 1), axis=axis))
        if both.any():
            steps.append(float(dq[both].max()))
    if not steps:
        return math.inf
    return math.pi / max(steps) * 1e-10


def coherent_groups(positions: np.ndarray, limit: float, mode: str = "auto") -> list[list[int]]:
    """Partition particles (positions (n, 3) m) into groups that add coherently.

    ``auto``: linked when closer than ``limit`` (m), groups are the connected components;
    ``coherent``: one group; ``incoherent``: one group per particle.
    """
    n = len(positions)
    if mode == "coherent" or n <= 1:
        return [list(range(n))] if n else []
    if mode == "incoherent":
        return [[i] for i in range(n)]
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    d = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    for i in range(n):
        for j in range(i + 1, n):
            if d[i, j] < limit:
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


@dataclass
class PatternModel:
    """Expected photons of a scene on the detector's covered pixels.

    Attributes:
        q: (P, 3) Å⁻¹, lab frame, the covered pixels (numpy or CuPy).
        solid_angle: (P,) sr.
        polarization: (P,) polarisation factor.
        fluence_at: callable (2,) m -> nominal fluence (photons/m²) at a position across the beam.
        alias_limit: m, see :func:`alias_distance`.
        coherence: ``auto``, ``coherent`` or ``incoherent``.
    """

    q: Any
    solid_angle: Any
    polarization: Any
    fluence_at: Any
    alias_limit: float
    coherence: str = "auto"

    def render(self, scene: Scene, pulse_scale: float = 1.0) -> tuple[Any, float]:
        """(photons (P,) float64, fluence J₀ at the first particle in photons/m²); zeros and 0 for a no-hit."""
        xp = get_array_module(self.q)
        if not scene.particles:
            return xp.zeros(self.q.shape[0]), 0.0
        pos = np.array([p.position for p in scene.particles])
        fluences = np.array([float(self.fluence_at(p[:2])) for p in pos]) * pulse_scale
        j_ref = float(fluences.max())
        total = xp.zeros(self.q.shape[0])
        if j_ref <= 0:
            return total, float(fluences[0])
        for group in coherent_groups(pos, self.alias_limit, self.coherence):
            amp = None
            centre = pos[group].mean(axis=0)
            for i in group:
                p = scene.particles[i]
                f = deformed_amplitude(p.body, self.q, quaternion_to_matrix(p.quaternion), p.scale, p.aspect)
                if len(group) > 1:
                    t = xp.asarray((pos[i] - centre) * 1e10)  # Å
                    f = f * xp.exp(1j * (self.q @ t))
                if fluences[i] != j_ref:
                    f = f * math.sqrt(fluences[i] / j_ref)
                amp = f if amp is None else amp + f
            total = total + expected_photons(amp, j_ref, self.solid_angle, self.polarization)
        return total, float(fluences[0])
