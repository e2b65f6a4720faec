"""Continuum model particles: bodies of uniform electron density with an analytic form factor F(q) in electrons
(:class:`UniformSphere`, :class:`UniformSpheroid`, :class:`UniformShell`, :class:`UniformPolyhedron`), for
particles too large to fill with atoms. Lengths in Å, densities in electrons/Å³.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backend import get_array_module
from .errors import ConfigError
from .materials import PROTEIN_ELECTRON_DENSITY
from .solids import check_density, check_length, icosahedron_faces, icosahedron_vertices


def sphere_form_factor_shape(x: np.ndarray) -> np.ndarray:
    """Normalised sphere amplitude Φ(x) = 3 (sin x − x cos x) / x³, Φ(0) = 1; `x` = q·R, any shape.

    Below x = 0.05 a Taylor series (to x⁶, error < 1e-16) replaces the cancelling closed form.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    small = np.abs(x) < 0.05
    xs = x[small] ** 2
    out[small] = 1.0 - xs / 10.0 + xs**2 / 280.0 - xs**3 / 15120.0
    xl = x[~small]
    out[~small] = 3.0 * (np.sin(xl) - xl * np.cos(xl)) / xl**3
    return out


def _as_q(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3:
        raise ConfigError(f"scattering vectors q must have shape (P, 3) in 1/Å, got {q.shape}")
    return q


@dataclass(frozen=True)
class ContinuumParticle(ABC):
    """A body of uniform electron density with an analytic form factor.

    Subclasses give the geometry; all lengths are Å and `electron_density` is electrons/Å³.
    """

    @property
    @abstractmethod
    def volume(self) -> float:
        """Volume (Å³)."""

    @property
    def n_electrons(self) -> float:
        """Total electrons, ρ·V = F(0)."""
        return self.electron_density * self.volume  # type: ignore[attr-defined]

    @abstractmethod
    def max_radius(self) -> float:
        """Largest distance (Å) of the body's surface from its centre."""

    @abstractmethod
    def radius_of_gyration(self) -> float:
        """Radius of gyration (Å) of the uniform body."""

    @abstractmethod
    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        """Real form factor (electrons) at q (P, 3), 1/Å."""

    def form_factor(self, q: np.ndarray) -> np.ndarray:
        """Form factor F(q) in electrons, complex128 of shape (P,), for `q` (P, 3) in 1/Å.

        `q` is in the particle frame (centre at the origin); F(0) = :attr:`n_electrons`. The bodies are
        centro-symmetric, so F is real (the imaginary part is zero).
        """
        return self._amplitude(_as_q(q)).astype(np.complex128)


@dataclass(frozen=True)
class UniformSphere(ContinuumParticle):
    """Uniform sphere: F(q) = ρ V Φ(qR), Φ(x) = 3 (sin x − x cos x) / x³.

    Attributes:
        radius_angstrom: radius R (Å).
        electron_density: ρ (electrons/Å³), default protein.
    """

    radius_angstrom: float
    electron_density: float = field(default=PROTEIN_ELECTRON_DENSITY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius_angstrom", check_length("radius_angstrom", self.radius_angstrom))
        object.__setattr__(self, "electron_density", check_density(self.electron_density))

    @property
    def volume(self) -> float:
        return 4.0 / 3.0 * math.pi * self.radius_angstrom**3

    def max_radius(self) -> float:
        return self.radius_angstrom

    def radius_of_gyration(self) -> float:
        return math.sqrt(3.0 / 5.0) * self.radius_angstrom

    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        return self.n_electrons * sphere_form_factor_shape(np.linalg.norm(q, axis=1) * self.radius_angstrom)


@dataclass(frozen=True)
class UniformSpheroid(ContinuumParticle):
    """Uniform spheroid with semi-axes a (x and y) and c (z), Å.

    It is a unit sphere stretched by S = diag(a, a, c), so F(q) = ρ V Φ(|S q|) with V = 4/3 π a² c:
    the sphere formula with the effective radius along q, R(q̂) = sqrt(a² (q̂x² + q̂y²) + c² q̂z²).

    Attributes:
        a: equatorial semi-axis (Å).
        c: polar semi-axis along z (Å).
        electron_density: ρ (electrons/Å³), default protein.
    """

    a: float
    c: float
    electron_density: float = field(default=PROTEIN_ELECTRON_DENSITY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", check_length("a", self.a))
        object.__setattr__(self, "c", check_length("c", self.c))
        object.__setattr__(self, "electron_density", check_density(self.electron_density))

    @property
    def volume(self) -> float:
        return 4.0 / 3.0 * math.pi * self.a**2 * self.c

    def max_radius(self) -> float:
        return max(self.a, self.c)

    def radius_of_gyration(self) -> float:
        return math.sqrt((2.0 * self.a**2 + self.c**2) / 5.0)

    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        x = np.sqrt(self.a**2 * (q[:, 0] ** 2 + q[:, 1] ** 2) + self.c**2 * q[:, 2] ** 2)
        return self.n_electrons * sphere_form_factor_shape(x)


@dataclass(frozen=True)
class UniformShell(ContinuumParticle):
    """Spherical shell of density ρ for inner < r < outer (Å) around a core of density ρ_c for r < inner.

    F(q) = ρ (V_o Φ(q R_o) − V_i Φ(q R_i)) + ρ_c V_i Φ(q R_i), V = 4/3 π R³ and Φ the sphere's normalised
    amplitude: a sphere of ρ minus the inner sphere of ρ − ρ_c. ``core_density = 0`` (default) is a hollow
    shell, as of a capsid without its genome; a capsid with packed nucleic acid has ρ_c > 0.

    Attributes:
        outer: outer radius (Å).
        inner: inner radius (Å), 0 ≤ inner < outer (0 gives a solid sphere).
        electron_density: ρ of the shell (electrons/Å³), default protein.
        core_density: ρ_c of the core (electrons/Å³), default 0 (hollow).
    """

    outer: float
    inner: float
    electron_density: float = field(default=PROTEIN_ELECTRON_DENSITY)
    core_density: float = 0.0

    def __post_init__(self) -> None:
        outer = check_length("outer", self.outer)
        inner = self.inner
        if isinstance(inner, bool) or not isinstance(inner, int | float | np.integer | np.floating):
            raise ConfigError(f"inner must be a number (Å), got {inner!r}")
        inner = float(inner)
        if not (math.isfinite(inner) and 0.0 <= inner < outer):
            raise ConfigError(f"shell radii must satisfy 0 ≤ inner < outer, got inner={inner}, outer={outer}")
        object.__setattr__(self, "outer", outer)
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "electron_density", check_density(self.electron_density))
        object.__setattr__(self, "core_density", check_density(self.core_density))

    @property
    def volume(self) -> float:
        """Volume of the shell material (Å³), without the core."""
        return 4.0 / 3.0 * math.pi * (self.outer**3 - self.inner**3)

    @property
    def n_electrons(self) -> float:
        """Electrons of shell and core, F(0)."""
        return self.electron_density * self.volume + self.core_density * 4.0 / 3.0 * math.pi * self.inner**3

    def max_radius(self) -> float:
        return self.outer

    def radius_of_gyration(self) -> float:
        """√(∫ρ r² dV / ∫ρ dV) of shell and core (Å)."""
        rho, rho_c, ro, ri = self.electron_density, self.core_density, self.outer, self.inner
        if rho_c == 0:
            return math.sqrt(3.0 / 5.0 * (ro**5 - ri**5) / (ro**3 - ri**3))
        second = rho * (ro**5 - ri**5) + rho_c * ri**5  # ∫ρ r² dV · 5 / (4π)
        first = rho * (ro**3 - ri**3) + rho_c * ri**3  # ∫ρ dV · 3 / (4π)
        return math.sqrt(3.0 / 5.0 * second / first)

    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        qn = np.linalg.norm(q, axis=1)
        rho = self.electron_density
        v_out = 4.0 / 3.0 * math.pi * self.outer**3
        v_in = 4.0 / 3.0 * math.pi * self.inner**3
        outer = v_out * sphere_form_factor_shape(qn * self.outer)
        inner = v_in * sphere_form_factor_shape(qn * self.inner)
        return rho * (outer - inner) + self.core_density * inner  # core 0: bit for bit the hollow shell


def polyhedron_amplitude(q: Any, vertices: np.ndarray, faces: tuple[tuple[int, ...], ...], density: float) -> Any:
    """Complex form factor (P,) of a uniform convex polyhedron at q (P, 3) Å⁻¹ (numpy or CuPy; result follows q).

    By the divergence theorem, twice: ∫_V e^{iq·r} dV = (−i/q²) Σ_faces (q·n_f) ∫_f e^{iq·r} dS, and a planar
    face's integral is (−i/|q_∥|²) Σ_edges (q·m_e) |t_e| e^{iq·c_e} sinc(q·t_e/2), with n_f the outward face
    normal, q_∥ = q − (q·n_f) n_f, m_e the outward in-plane normal of edge t_e = b − a and c_e its midpoint.
    Where |q_∥| L < 1e-4 (q along the face normal; L the face's size) the face integral is A_f e^{iq·c_f} (c_f the
    centroid, error ~(|q_∥|L)²), and where |q| R < 1e-3 F = ρV(1 − q²R_g²/6). Lengths in Å, density in e/Å³.
    """
    xp = get_array_module(q)
    q = xp.asarray(q, dtype=xp.float64)
    v = np.asarray(vertices, dtype=np.float64)
    q2 = xp.sum(q * q, axis=1)
    total = xp.zeros(q.shape[0], dtype=xp.complex128)
    size = float(np.linalg.norm(v, axis=1).max())
    for face in faces:
        pts = v[list(face)]
        normal = np.cross(pts[1] - pts[0], pts[2] - pts[0])
        area2 = np.linalg.norm(normal)
        normal = normal / area2
        centroid, area = _polygon_centroid_area(pts, normal)
        qn = q @ xp.asarray(normal)
        qpar2 = xp.maximum(q2 - qn * qn, 0.0)
        edge_sum = xp.zeros(q.shape[0], dtype=xp.complex128)
        for k in range(len(pts)):
            a, b = pts[k], pts[(k + 1) % len(pts)]
            t = b - a
            m = np.cross(t, normal) / np.linalg.norm(t)
            half = (q @ xp.asarray(t)) / 2.0
            sinc = xp.where(xp.abs(half) < 1e-8, 1.0, xp.sin(half) / xp.where(half == 0, 1.0, half))
            edge_sum += (q @ xp.asarray(m)) * np.linalg.norm(t) * xp.exp(1j * (q @ xp.asarray((a + b) / 2.0))) * sinc
        flat = qpar2 * size * size < 1e-8
        face_int = xp.where(flat, area * xp.exp(1j * (q @ xp.asarray(centroid))),
                            -1j * edge_sum / xp.where(flat, 1.0, qpar2))
        total += qn * face_int
    small = q2 * size * size < 1e-6
    amp = -1j * total / xp.where(small, 1.0, q2)
    volume, rg2 = _polyhedron_volume_rg2(v, faces)
    return density * xp.where(small, volume * (1.0 - q2 * rg2 / 6.0), amp)


def _polygon_centroid_area(pts: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, float]:
    """Centroid (3,) and area of a planar convex polygon (vertices in order), by a fan of triangles."""
    tri = [(pts[0], pts[k], pts[k + 1]) for k in range(1, len(pts) - 1)]
    areas = np.array([0.5 * np.dot(np.cross(b - a, c - a), normal) for a, b, c in tri])
    centres = np.array([(a + b + c) / 3.0 for a, b, c in tri])
    return (areas[:, None] * centres).sum(0) / areas.sum(), float(areas.sum())


def _polyhedron_volume_rg2(v: np.ndarray, faces: tuple[tuple[int, ...], ...]) -> tuple[float, float]:
    """Volume (Å³) and squared radius of gyration about the origin (Å²) of a polyhedron containing the origin.

    Tetrahedra (origin, a, b, c) of a fan over each face: V = a·(b × c)/6, ∫|r|² dV = V/20 (Σ|v_k|² + |Σ v_k|²)
    over the four vertices (the origin adds nothing).
    """
    volume = second = 0.0
    for face in faces:
        pts = v[list(face)]
        for k in range(1, len(pts) - 1):
            a, b, c = pts[0], pts[k], pts[k + 1]
            vol = float(np.dot(a, np.cross(b, c))) / 6.0
            s = a + b + c
            volume += vol
            second += vol / 20.0 * (a @ a + b @ b + c @ c + s @ s)
    return volume, second / volume


@dataclass(frozen=True)
class UniformPolyhedron(ContinuumParticle):
    """A uniform convex polyhedron with its analytic form factor (:func:`polyhedron_amplitude`).

    Attributes:
        vertices: (V, 3) Å, about the centre (the origin lies inside).
        faces: tuples of vertex indices, counter-clockwise seen from outside.
        electron_density: electrons/Å³.
    """

    vertices: np.ndarray
    faces: tuple
    electron_density: float = field(default=PROTEIN_ELECTRON_DENSITY)

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 3 or not np.all(np.isfinite(v)):
            raise ConfigError(f"polyhedron vertices must be finite (V, 3) Å, got shape {v.shape}")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", tuple(tuple(int(i) for i in f) for f in self.faces))
        object.__setattr__(self, "electron_density", check_density(self.electron_density))
        vol, _ = _polyhedron_volume_rg2(v, self.faces)
        if not vol > 0:
            raise ConfigError("polyhedron faces must be ordered counter-clockwise seen from outside (volume <= 0)")

    @classmethod
    def icosahedron(cls, circumradius: float, electron_density: float = PROTEIN_ELECTRON_DENSITY) -> UniformPolyhedron:
        """The regular icosahedron of :func:`icosahedron_vertices` (two-fold axes along x, y, z), radius in Å."""
        r = check_length("circumradius", circumradius)
        verts = icosahedron_vertices(r)
        faces = []
        for tri in icosahedron_faces(verts):
            idx = [int(np.flatnonzero(np.all(np.isclose(verts, p, atol=1e-9 * r), axis=1))[0]) for p in tri]
            a, b, c = verts[idx]
            if np.dot(np.cross(b - a, c - a), a + b + c) < 0:
                idx = [idx[0], idx[2], idx[1]]
            faces.append(tuple(idx))
        return cls(verts, tuple(faces), electron_density)

    @property
    def volume(self) -> float:
        return _polyhedron_volume_rg2(self.vertices, self.faces)[0]

    def max_radius(self) -> float:
        return float(np.linalg.norm(self.vertices, axis=1).max())

    def radius_of_gyration(self) -> float:
        return math.sqrt(_polyhedron_volume_rg2(self.vertices, self.faces)[1])

    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        return polyhedron_amplitude(q, self.vertices, self.faces, self.electron_density)

    def form_factor(self, q: np.ndarray) -> np.ndarray:
        """Form factor F(q) in electrons, complex128 (P,), for particle-frame q (P, 3) Å⁻¹ (real for a body with
        a centre of symmetry, such as the icosahedron)."""
        return np.asarray(self._amplitude(_as_q(q)), dtype=np.complex128)
