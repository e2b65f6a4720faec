"""Dataset manifests: the YAML recipes of ``spi simulate``, validated with one-line errors.

A manifest names the beam, the detector, the particles, the mix of hit types and the noise of a dataset (see
``docs/manifest.md``, whose key table :func:`reference_markdown` generates from the sections). The package:

* :mod:`.sections` — the schema: one frozen dataclass per section (``BeamSpec``, ``DetectorSpec``, ...,
  ``ManifestSpec``), every key declared once with its kind, default, unit and documentation;
* :mod:`.load` — :func:`parse_manifest`, :func:`load_manifest` and :class:`Manifest` (the validated settings, their
  text, origin and overrides, and the files they name);
* :mod:`.reference` — the key table of the documentation;
* :mod:`.build` — what a manifest builds: beam, detector, particle bodies, noise and scene parameters (imported on
  its own: it needs the physics modules).

The validation engine is :mod:`spisim.schema` (shared with other configurations), quantities with units are
read by :mod:`spisim.units`; both are re-exported here for existing callers. An unknown key (with a
did-you-mean), a missing value, a wrong unit or an impossible value raises
:class:`~spisim.errors.ConfigError` naming the key path, e.g. ``manifest beam.photon_energy: unit 'kg' is not a
photon energy``.
"""

from ..schema import REQUIRED, did_you_mean, key
from ..units import DIMENSIONS, Dimension, format_quantity, parse_quantity
from .load import (
    BUILTIN_DEFAULT,
    HDF5_SUFFIXES,
    Manifest,
    load_manifest,
    parse_manifest,
    split_dataset,
)
from .reference import reference_markdown, reference_rows
from .sections import (
    ATOMS_ONLY_SHAPES,
    AUTO_ATOMS_SHAPES,
    DETECTOR_PRESETS,
    HIT_MIXES,
    MAX_PARTICLE_SIZE,
    MAX_PHOTON_ENERGY,
    MIN_PHOTON_ENERGY,
    NACL_DENSITY,
    PROTEIN_DENSITY,
    SHAPES,
    UNINTENDED_KINDS,
    WATER_DENSITY,
    BackgroundSpec,
    BeamSpec,
    DebrisSpec,
    DetectorSpec,
    DropletSpec,
    HitsSpec,
    ManifestSpec,
    MultiSpec,
    NoiseSpec,
    OutputSpec,
    ParticleSpec,
    SaltSpec,
    ScatteringSpec,
    UnintendedSpec,
)

__all__ = [
    "ATOMS_ONLY_SHAPES", "AUTO_ATOMS_SHAPES", "BUILTIN_DEFAULT", "DETECTOR_PRESETS", "DIMENSIONS", "HDF5_SUFFIXES",
    "HIT_MIXES", "MAX_PARTICLE_SIZE", "MAX_PHOTON_ENERGY", "MIN_PHOTON_ENERGY", "NACL_DENSITY", "PROTEIN_DENSITY",
    "REQUIRED", "SHAPES", "UNINTENDED_KINDS", "WATER_DENSITY", "BackgroundSpec", "BeamSpec", "DebrisSpec",
    "DetectorSpec", "Dimension", "DropletSpec", "HitsSpec", "Manifest", "ManifestSpec", "MultiSpec", "NoiseSpec",
    "OutputSpec", "ParticleSpec", "SaltSpec", "ScatteringSpec", "UnintendedSpec", "did_you_mean", "format_quantity",
    "key", "load_manifest", "parse_manifest", "parse_quantity", "reference_markdown", "reference_rows",
    "split_dataset",
]
