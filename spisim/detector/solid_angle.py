"""Exact solid angles of flat triangles and quadrilaterals seen from the origin.

Uses the Van Oosterom–Strackee formula (IEEE Trans. Biomed. Eng. 30, 125, 1983) for a triangle with
vertices a, b, c (vectors from the observer):

    tan(Ω/2) = |a · (b × c)| / (|a||b||c| + (a·b)|c| + (a·c)|b| + (b·c)|a|)

evaluated with ``atan2`` so that triangles subtending more than a hemisphere are handled. A pixel is
split into two triangles. Unlike A·cosα/R², this is exact for pixels of any size and obliquity.
"""

from __future__ import annotations

import numpy as np


def triangle_solid_angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Solid angle (sr) of triangles seen from the origin; inputs (..., 3) m, output (...).

    The triple product is formed from edge vectors, a · ((b − a) × (c − a)), which equals a · (b × c)
    but keeps its precision for small, distant triangles.
    """
    triple = np.abs(np.einsum("...i,...i->...", a, np.cross(b - a, c - a)))
    la = np.linalg.norm(a, axis=-1)
    lb = np.linalg.norm(b, axis=-1)
    lc = np.linalg.norm(c, axis=-1)
    den = (
        la * lb * lc
        + np.einsum("...i,...i->...", a, b) * lc
        + np.einsum("...i,...i->...", a, c) * lb
        + np.einsum("...i,...i->...", b, c) * la
    )
    return 2.0 * np.arctan2(triple, den)


def quad_solid_angle(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Solid angle (sr) of flat convex quadrilaterals a-b-c-d (corners in order), inputs (..., 3) m."""
    return triangle_solid_angle(a, b, c) + triangle_solid_angle(a, c, d)


def grid_solid_angles(grid: np.ndarray) -> np.ndarray:
    """Solid angle (sr) of every cell of a corner grid: (n + 1, m + 1, 3) m -> (n, m)."""
    a = grid[:-1, :-1]
    b = grid[:-1, 1:]
    c = grid[1:, 1:]
    d = grid[1:, :-1]
    return quad_solid_angle(a, b, c, d)
