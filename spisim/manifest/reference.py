"""The key table of ``docs/manifest.md``, generated from the sections (``python -m spisim.manifest`` prints it)."""

from __future__ import annotations

from ..schema import reference_rows as _rows
from ..schema import reference_table
from .sections import ManifestSpec


def reference_rows(cls: type = ManifestSpec, where: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, unit of a bare number or choices, default, meaning) of every manifest key, depth first."""
    return _rows(cls, where)


def reference_markdown() -> str:
    """The key table of ``docs/manifest.md`` (kept equal to the schema by a test)."""
    return reference_table(ManifestSpec)
