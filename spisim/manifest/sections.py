"""The sections of a manifest: one frozen dataclass per section, each key declared once with :func:`~spisim.schema.key`.

The engine that validates them (unknown keys with a did-you-mean, units, bounds, one-line errors naming the key
path) is :mod:`spisim.schema`; quantities are read by :mod:`spisim.units`. Values are stored in SI (m, J,
photons/m²), except photon energies (eV) and electron densities (electrons/Å³), which the physics modules take
as such. The sections hold settings, not physics: :mod:`spisim.manifest.build` turns them into the physics
modules' own types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..detector.presets import PRESET_NAMES
from ..errors import ConfigError
from ..particles import SHAPES
from ..schema import did_you_mean, key, key_path

PROTEIN_DENSITY = 0.43
"""Electron density of protein, electrons/Å³."""
WATER_DENSITY = 0.334
"""Electron density of liquid water, electrons/Å³."""
NACL_DENSITY = 0.625
"""Electron density of rock salt (2.165 g/cm³, 28 electrons per NaCl), electrons/Å³."""

MIN_PHOTON_ENERGY = 50.0
"""Lowest photon energy a manifest accepts, eV (FLASH imaged at 92 eV)."""
MAX_PHOTON_ENERGY = 200e3
"""Highest photon energy a manifest accepts, eV."""
MAX_PARTICLE_SIZE = 10e-6
"""Largest radius (or thickness) of a model particle, droplet or fragment, m: far beyond any X-ray focus."""

HIT_MIXES: dict[str, dict[str, float]] = {
    "realistic": {"no_hit": 0.90, "single": 0.05, "multi": 0.02, "unintended": 0.03},
    "balanced": {"no_hit": 0.25, "single": 0.25, "multi": 0.25, "unintended": 0.25},
}
"""Named mixes of hit types (weights, normalised when drawing)."""

DETECTOR_PRESETS = PRESET_NAMES
"""Detector presets a manifest may name (:data:`spisim.detector.presets.PRESET_NAMES`)."""

ATOMS_ONLY_SHAPES = ("lobed",)
"""Built-in shapes with no analytic form factor (always filled with atoms)."""

AUTO_ATOMS_SHAPES = ("icosahedron", "lobed")
"""Built-in shapes that ``model: auto`` fills with atoms (the icosahedron's continuum model must be asked for)."""


@dataclass(frozen=True)
class BeamSpec:
    """``beam``: the X-ray pulse."""

    photon_energy: float = key(kind="qty", dim="photon_energy", unit="eV", minimum=MIN_PHOTON_ENERGY,
                               maximum=MAX_PHOTON_ENERGY,
                               doc="photon energy (a wavelength such as '7.75 A' is converted); 50 eV to 200 keV")
    pulse_energy: float | None = key(None, kind="qty", dim="pulse_energy", unit="mJ", minimum=0, exclusive=True,
                                     nullable=True, doc="pulse energy at the sample; give exactly one of "
                                     "pulse_energy, photons_per_pulse and fluence")
    photons_per_pulse: float | None = key(None, kind="float", minimum=0, exclusive=True, nullable=True,
                                          doc="photons per pulse at the sample")
    fluence: float | None = key(None, kind="qty", dim="fluence", unit="photons/um^2", minimum=0, exclusive=True,
                                nullable=True, doc="peak fluence at the focus centre")
    focus_diameter: float = key(1e-6, kind="qty", dim="length", unit="um", minimum=0, exclusive=True,
                                doc="focus size: FWHM (gaussian) or diameter (flattop)")
    profile: str = key("gaussian", kind="choice", choices=("gaussian", "flattop"), doc="focal intensity profile")
    polarization: str = key("horizontal", kind="choice", choices=("horizontal", "vertical", "none"),
                            doc="linear polarisation direction, or none (unpolarised)")
    hit_radius: float | None = key(None, kind="qty", dim="length", unit="um", minimum=0, exclusive=True,
                                   nullable=True, doc="a hit's particle lies uniformly within this distance of the "
                                   "beam axis (its fluence follows the profile there); null: half the focus "
                                   "diameter")

    def check(self, where: str, raw: dict) -> None:
        given = [k for k in ("pulse_energy", "photons_per_pulse", "fluence") if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise ConfigError(f"{where}: give exactly one of pulse_energy, photons_per_pulse and fluence (got {what})")


@dataclass(frozen=True)
class DetectorSpec:
    """``detector``: a preset or a geometry file."""

    preset: str | None = key(None, kind="choice", choices=DETECTOR_PRESETS, nullable=True,
                             doc="built-in detector; give preset or geometry")
    geometry: str | None = key(None, kind="str", nullable=True,
                               doc="CrystFEL .geom, psana .data, or a CXI/HDF5 file written by spi simulate or spi "
                               "import (its pixel positions and mask: the detector of a real run); path relative to "
                               "the manifest's folder or the current directory")
    distance: float | None = key(None, kind="qty", dim="length", unit="m", minimum=0, exclusive=True, nullable=True,
                                 doc="sample-detector distance; null: the preset's or the file's")
    n_pixels: int = key(128, kind="int", minimum=1, maximum=4096, doc="pixels per side (square preset only)")
    pixel_size: float = key(75e-6, kind="qty", dim="length", unit="um", minimum=0, exclusive=True,
                            doc="pixel pitch (square preset only)")
    bin: int = key(1, kind="int", minimum=1, maximum=64,
                   doc="join bin x bin pixels into one (pitch x bin), after distance and geometry: frames, mask and "
                   "geometry of the dataset are the binned ones; every tile's size must divide by it")
    oversample: int = key(1, kind="int", minimum=1, maximum=32,
                          doc="pixel-area integration: each (binned) pixel is rendered as oversample x oversample "
                          "sub-pixels (own q, solid angle, polarisation) whose expected photons are summed; 1: "
                          "pixel centres only")
    mask: str | None = key(None, kind="str", nullable=True,
                           doc="static mask file: .npy, or HDF5/CXI (its /entry_1/instrument_1/detector_1/mask, or "
                           "FILE.h5:/path/to/dataset); the detector's data shape before or after `bin` (2-D for a "
                           "1-module detector); added to the detector's own mask")
    mask_value: str = key("bad", kind="choice", choices=("bad", "good"),
                          doc="what a non-zero value of the mask file means: bad (masked) or good (zeros are masked)")

    def check(self, where: str, raw: dict) -> None:
        if (self.preset is None) == (self.geometry is None):
            raise ConfigError(f"{where}: give exactly one of preset and geometry")
        for name in ("n_pixels", "pixel_size"):
            if name in raw and self.preset != "square":
                raise ConfigError(f"{key_path(where, name)}: only for the square preset")


@dataclass(frozen=True)
class ParticleSpec:
    """One entry of ``particles`` (or ``unintended.molecules``): a structure or a built-in shape."""

    name: str | None = key(None, kind="str", nullable=True,
                           doc="label stored in the dataset; default: file stem, PDB id or shape")
    structure: str | None = key(None, kind="str", nullable=True,
                                doc="PDB/mmCIF file (plain or .gz; relative to the manifest's folder, then to "
                                "the current directory) or a 4-character PDB id (fetched once, then cached)")
    shape: str | None = key(None, kind="choice", choices=SHAPES, nullable=True, doc="built-in model particle")
    radius: float | None = key(None, kind="qty", dim="length", unit="nm", minimum=0, maximum=MAX_PARTICLE_SIZE,
                               exclusive=True, nullable=True,
                               doc="shape radius (spheroid: equatorial semi-axis a; shell: outer radius)")
    polar_radius: float | None = key(None, kind="qty", dim="length", unit="nm", minimum=0, maximum=MAX_PARTICLE_SIZE,
                                     exclusive=True, nullable=True,
                                     doc="spheroid polar semi-axis c (along the particle z)")
    thickness: float | None = key(None, kind="qty", dim="length", unit="nm", minimum=0, maximum=MAX_PARTICLE_SIZE,
                                  exclusive=True, nullable=True, doc="shell thickness")
    lobes: int = key(3, kind="int", minimum=1, maximum=64,
                     doc="lobed shape: number of overlapping spheres (their layout is drawn from shape_seed)")
    shape_seed: int = key(0, kind="int", minimum=0,
                          doc="seed of a built-in atomistic shape: atom positions and the lobed layout")
    model: str = key("auto", kind="choice", choices=("auto", "atoms", "continuum"),
                     doc="shapes: atoms (filled with protein-like atoms) or continuum (analytic form factor); "
                     "auto: continuum where one exists, but atoms for the icosahedron (its continuum model, an "
                     "analytic polyhedron, must be asked for) and the lobed shape (atoms only)")
    density: float = key(PROTEIN_DENSITY, kind="qty", dim="electron_density", unit="e/A^3", minimum=0,
                         exclusive=True, doc="electron density of a continuum shape (shell: of the shell)")
    core_density: float | None = key(None, kind="qty", dim="electron_density", unit="e/A^3", minimum=0,
                                     nullable=True, doc="continuum shell: electron density of the core inside the "
                                     "inner radius (e.g. packed nucleic acid); null: hollow")
    scale: float = key(1.0, kind="float", minimum=0, exclusive=True, maximum=100,
                       doc="mean size factor: the particle is scaled by it at constant density (e.g. a structure "
                       "scaled to a run's particle size)")
    size_sd: float = key(0.0, kind="float", minimum=0, maximum=1,
                         doc="relative rms of a per-particle size factor s ~ N(scale, scale*size_sd), truncated "
                         "to +-3 sd and > 0; 0: every particle has size factor `scale`")
    aspect_sd: float = key(0.0, kind="float", minimum=0, maximum=1,
                           doc="rms of a per-particle stretch a ~ N(1, aspect_sd) of the particle's own z axis, "
                           "truncated to +-3 sd and > 0; 0: no stretch")
    assembly: str = key("auto", kind="str", doc="biological assembly: auto, none (the asymmetric unit) or an id")
    keep_waters: bool = key(False, kind="bool", doc="keep water molecules of a structure")
    keep_hydrogens: bool = key(False, kind="bool",
                               doc="keep hydrogen atoms of a structure; fill an atomistic shape with them too")
    weight: float = key(1.0, kind="float", minimum=0, doc="relative probability of this particle in a hit")

    def check(self, where: str, raw: dict) -> None:
        if (self.structure is None) == (self.shape is None):
            raise ConfigError(f"{where}: give exactly one of structure and shape")
        if self.shape is not None:
            if self.radius is None:
                raise ConfigError(f"{key_path(where, 'radius')}: missing value (required for shape {self.shape})")
            if self.shape == "spheroid" and self.polar_radius is None:
                raise ConfigError(f"{key_path(where, 'polar_radius')}: missing value (required for a spheroid)")
            if self.shape == "shell":
                if self.thickness is None:
                    raise ConfigError(f"{key_path(where, 'thickness')}: missing value (required for a shell)")
                if self.thickness >= self.radius:
                    raise ConfigError(f"{key_path(where, 'thickness')} must be < radius for a shell")
            if self.shape in ATOMS_ONLY_SHAPES and self.model == "continuum":
                raise ConfigError(f"{key_path(where, 'model')}: the {self.shape} shape has no continuum model "
                                  "(use atoms)")
            if self.core_density is not None and not (self.shape == "shell" and self.continuum):
                raise ConfigError(f"{key_path(where, 'core_density')}: only for a continuum shell (shape: shell, "
                                  f"model: continuum or auto)")
        else:
            for k in ("radius", "polar_radius", "thickness", "core_density"):
                if getattr(self, k) is not None:
                    raise ConfigError(f"{key_path(where, k)}: only for built-in shapes")

    @property
    def max_stretch(self) -> float:
        """Largest factor by which a drawn size and stretch can lengthen a particle-frame q (the largest
        singular value of D = s diag(1, 1, a) the truncations allow): scale (1 + 3 size_sd)(1 + 3 aspect_sd)."""
        return self.scale * (1.0 + 3.0 * self.size_sd) * (1.0 + 3.0 * self.aspect_sd)

    @property
    def label(self) -> str:
        """The particle's name in the dataset."""
        if self.name:
            return self.name
        if self.shape:
            return f"{self.shape}-{self.radius * 1e9:g}nm"
        stem = Path(str(self.structure)).name
        for suffix in (".gz", ".cif", ".pdb", ".ent", ".mmcif"):
            stem = stem.removesuffix(suffix)
        return stem

    @property
    def continuum(self) -> bool:
        """True when this particle uses an analytic form factor."""
        if self.shape is None or self.model == "atoms":
            return False
        return self.model == "continuum" or self.shape not in AUTO_ATOMS_SHAPES


@dataclass(frozen=True)
class HitsSpec:
    """``hits``: the mix of hit types (relative weights), or a named mix ``realistic`` / ``balanced``."""

    no_hit: float = key(HIT_MIXES["realistic"]["no_hit"], kind="float", minimum=0, doc="weight of shots that miss")
    single: float = key(HIT_MIXES["realistic"]["single"], kind="float", minimum=0, doc="weight of single hits")
    multi: float = key(HIT_MIXES["realistic"]["multi"], kind="float", minimum=0, doc="weight of multiple hits")
    unintended: float = key(HIT_MIXES["realistic"]["unintended"], kind="float", minimum=0,
                            doc="weight of hits on droplets, salt, debris or other molecules")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        if isinstance(raw, str):
            if raw not in HIT_MIXES:
                raise ConfigError(f"{where}: {raw!r} is not a named mix ({', '.join(HIT_MIXES)})"
                                  f"{did_you_mean(raw, HIT_MIXES)}")
            return dict(HIT_MIXES[raw])
        if isinstance(raw, dict):  # a given mapping: unnamed types get weight 0
            return {k: raw.get(k, 0.0) for k in ("no_hit", "single", "multi", "unintended")} | raw
        return raw

    def check(self, where: str, raw: dict) -> None:
        if self.no_hit + self.single + self.multi + self.unintended <= 0:
            raise ConfigError(f"{where}: the weights must not all be 0")

    def probabilities(self) -> dict[str, float]:
        """Normalised probabilities of the four hit types, in :data:`spisim.cxi.HIT_TYPES` order."""
        w = {"no_hit": self.no_hit, "single": self.single, "multi": self.multi, "unintended": self.unintended}
        total = sum(w.values())
        return {k: v / total for k, v in w.items()}


@dataclass(frozen=True)
class MultiSpec:
    """``multi``: multiple hits, 2 to N particles in a cluster."""

    n_min: int = key(2, kind="int", minimum=2, doc="fewest particles in a multiple hit")
    n_max: int = key(4, kind="int", minimum=2, maximum=64, doc="most particles in a multiple hit")
    distribution: str = key("uniform", kind="choice", choices=("uniform", "poisson"),
                            doc="how the number is drawn: uniform on n_min..n_max, or poisson with `mean`, "
                            "redrawn until inside n_min..n_max")
    mean: float = key(2.5, kind="float", minimum=0, exclusive=True, doc="mean of the poisson distribution")
    placement: str = key("touching", kind="choice", choices=("touching", "cluster", "aggregate"),
                         doc="touching: each particle touches one already placed (plus `gap`); cluster: "
                         "centres uniform in a sphere of cluster_radius, without overlaps; aggregate: compact "
                         "interpenetrating clusters, each particle at centre distance (r_j + r_k)(1 - u) from a "
                         "random placed one, u uniform in [0, overlap]")
    gap: float = key(0.0, kind="qty", dim="length", unit="nm", minimum=0,
                     doc="extra distance between the surfaces (bounding spheres) of touching particles")
    cluster_radius: float = key(100e-9, kind="qty", dim="length", unit="nm", minimum=0, exclusive=True,
                                doc="radius of the sphere that holds the centres (cluster placement)")
    overlap: float = key(0.3, kind="float", minimum=0, maximum=0.9,
                         doc="aggregate placement: largest fraction by which the centre distance of two neighbours "
                         "falls short of the sum of their (bounding) radii")
    same_species: bool = key(True, kind="bool", doc="all particles of a multiple hit are of one kind (their "
                             "sizes are drawn each)")
    coherence: str = key("auto", kind="choice", choices=("auto", "coherent", "incoherent"),
                         doc="auto: particles closer than the aliasing limit of the detector add coherently, "
                         "others incoherently (see docs/manifest.md)")

    def check(self, where: str, raw: dict) -> None:
        if self.n_max < self.n_min:
            raise ConfigError(f"{key_path(where, 'n_max')} must be >= n_min ({self.n_min}), got {self.n_max}")
        if "overlap" in raw and self.placement != "aggregate":
            raise ConfigError(f"{key_path(where, 'overlap')}: only for placement aggregate")


@dataclass(frozen=True)
class DropletSpec:
    """``unintended.droplet``: buffer or water droplets (continuum spheroids)."""

    radius: tuple[float, float] = key((20e-9, 80e-9), kind="range", dim="length", unit="nm", minimum=0,
                                      maximum=MAX_PARTICLE_SIZE, exclusive=True,
                                      doc="equatorial radius, uniform in [low, high]")
    aspect: tuple[float, float] = key((0.9, 1.1), kind="range", minimum=0, exclusive=True,
                                      doc="polar/equatorial axis ratio c/a, uniform in [low, high] (1: a sphere)")
    density: float = key(WATER_DENSITY, kind="qty", dim="electron_density", unit="e/A^3", minimum=0,
                         exclusive=True, doc="electron density")


@dataclass(frozen=True)
class SaltSpec:
    """``unintended.salt``: salt or contaminant particles (continuum spheroids)."""

    radius: tuple[float, float] = key((5e-9, 25e-9), kind="range", dim="length", unit="nm", minimum=0,
                                      maximum=MAX_PARTICLE_SIZE, exclusive=True,
                                      doc="equatorial radius, uniform in [low, high]")
    aspect: tuple[float, float] = key((0.6, 1.6), kind="range", minimum=0, exclusive=True,
                                      doc="axis ratio c/a, uniform in [low, high]")
    density: float = key(NACL_DENSITY, kind="qty", dim="electron_density", unit="e/A^3", minimum=0,
                         exclusive=True, doc="electron density (rock salt: 0.625)")


@dataclass(frozen=True)
class DebrisSpec:
    """``unintended.debris``: clusters of small irregular fragments (continuum spheroids)."""

    n: tuple[int, int] = key((3, 8), kind="int_range", minimum=1, maximum=64,
                             doc="number of fragments, uniform in [low, high]")
    radius: tuple[float, float] = key((3e-9, 12e-9), kind="range", dim="length", unit="nm", minimum=0,
                                      maximum=MAX_PARTICLE_SIZE, exclusive=True,
                                      doc="fragment equatorial radius, uniform in [low, high]")
    aspect: tuple[float, float] = key((0.4, 2.5), kind="range", minimum=0, exclusive=True,
                                      doc="fragment axis ratio c/a, uniform in [low, high]")
    density: float = key(0.5, kind="qty", dim="electron_density", unit="e/A^3", minimum=0, exclusive=True,
                         doc="fragment electron density")
    cluster_radius: float = key(60e-9, kind="qty", dim="length", unit="nm", minimum=0, exclusive=True,
                                doc="fragment centres lie uniformly in a sphere of this radius")


UNINTENDED_KINDS = ("droplet", "salt", "debris", "molecule")


@dataclass(frozen=True)
class UnintendedSpec:
    """``unintended``: hits on what is not the sample."""

    kinds: dict = key({"droplet": 0.4, "salt": 0.3, "debris": 0.2, "molecule": 0.1}, kind="weights",
                      names=UNINTENDED_KINDS, doc="relative weights of droplet, salt, debris and molecule "
                      "(molecule counts only where `molecules` are given)")
    droplet: DropletSpec = key(kind="section", cls=DropletSpec, doc="droplets")
    salt: SaltSpec = key(kind="section", cls=SaltSpec, doc="salt and contaminant particles")
    debris: DebrisSpec = key(kind="section", cls=DebrisSpec, doc="debris clusters")
    molecules: tuple = key((), kind="section_list", cls=ParticleSpec,
                           doc="other molecules (entries like those of `particles`; `weight` picks among them)")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("kinds"), dict):  # unnamed kinds get weight 0
            raw = dict(raw)
            raw["kinds"] = {k: 0.0 for k in UNINTENDED_KINDS} | raw["kinds"]
        return raw

    def check(self, where: str, raw: dict) -> None:
        explicit = isinstance(raw.get("kinds"), dict) and raw["kinds"].get("molecule", 0) > 0
        if explicit and not self.molecules:
            raise ConfigError(f"{key_path(where, 'kinds.molecule')}: weight > 0 needs unintended.molecules")
        if sum(self.weights().values()) <= 0:
            raise ConfigError(f"{key_path(where, 'kinds')}: the weights must not all be 0")

    def weights(self) -> dict[str, float]:
        """Weights of the kinds that can occur (molecule only with molecules given)."""
        return {k: (0.0 if k == "molecule" and not self.molecules else float(self.kinds.get(k, 0.0)))
                for k in UNINTENDED_KINDS}


@dataclass(frozen=True)
class BackgroundSpec:
    """``noise.background``: smooth scattering from gas, the jet or water around the sample."""

    kind: str = key("gas", kind="choice", choices=("gas", "water", "flat", "template"),
                    doc="radial profile per steradian: gas 1/(1+(q/q0)^2); water a broad ring at 2.0 1/A "
                    "(sigma 0.4 1/A) on a floor of 0.2; flat constant; template: the pattern of `template` (e.g. "
                    "measured on a run)")
    photons: float | None = key(0.0, kind="float", minimum=0, nullable=True,
                                doc="expected background photons per shot on the unmasked detector at the nominal "
                                "pulse energy (0: off); template: null (its default there) keeps the template's own "
                                "total, a number rescales it to that total")
    q0: float = key(0.05, kind="qty", dim="inverse_length", unit="1/A", minimum=0, exclusive=True,
                    doc="width of the gas profile")
    template: str | None = key(None, kind="str", nullable=True,
                               doc="kind template: expected background photons per pixel at the nominal pulse "
                               "energy, in the detector's data shape after detector.bin (2-D for a 1-module "
                               "detector): .npy, FILE.h5:/path/to/dataset, or an HDF5 file with /background")
    jitter: float = key(0.0, kind="float", minimum=0, maximum=3,
                        doc="relative rms of a per-shot log-normal factor (mean 1) of the background alone, on "
                        "top of the pulse-energy jitter; 0: none")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        if raw in ("none", False, "off"):
            return {"photons": 0.0}
        if isinstance(raw, dict) and str(raw.get("kind", "")).lower() == "template" and "photons" not in raw:
            return {**raw, "photons": None}  # a template keeps its own total unless told otherwise
        return raw

    def check(self, where: str, raw: dict) -> None:
        if self.kind == "template" and self.template is None:
            raise ConfigError(f"{key_path(where, 'template')}: missing value (required for kind template)")
        if self.kind != "template":
            if self.template is not None:
                raise ConfigError(f"{key_path(where, 'template')}: only for kind template")
            if self.photons is None:
                raise ConfigError(f"{key_path(where, 'photons')}: null only for kind template (0: off)")


@dataclass(frozen=True)
class NoiseSpec:
    """``noise``: background and detector effects, each off at its default except Poisson statistics.

    ``noise: none`` turns everything off (also Poisson): frames are then the expected photons (float).
    Detector values (pedestal, readout, common_mode, saturation, hot_level) are in ADU when ``gain`` is
    set, else in photons.
    """

    background: BackgroundSpec = key(kind="section", cls=BackgroundSpec, doc="background (`none`: off)")
    jitter: float = key(0.0, kind="float", minimum=0, maximum=3,
                        doc="relative rms shot-to-shot pulse-energy jitter (log-normal, mean 1; can go below "
                        "nominal)")
    poisson: bool = key(True, kind="bool", doc="Poisson photon statistics")
    gain: float | None = key(None, kind="float", minimum=0, exclusive=True, nullable=True,
                             doc="ADU per photon; null: frames stay in photons")
    pedestal: float = key(0.0, kind="float", doc="constant offset added to every pixel (ADU or photons)")
    readout: float = key(0.0, kind="float", minimum=0, doc="rms Gaussian readout noise per pixel (ADU or photons)")
    common_mode: float = key(0.0, kind="float", minimum=0,
                             doc="rms of an offset drawn per shot for each panel (or block) (ADU or photons)")
    common_mode_block: tuple | None = key(None, kind="int_list", minimum=1, nullable=True,
                                          doc="[ss, fs] pixels of one common-mode region (an ASIC); null: the "
                                          "whole panel")
    saturation: float | None = key(None, kind="float", minimum=0, exclusive=True, nullable=True,
                                   doc="largest value a pixel can read (ADU or photons); null: none")
    dead_pixels: float = key(0.0, kind="float", minimum=0, maximum=1,
                             doc="fraction of pixels that read no signal (fixed for the dataset)")
    hot_pixels: float = key(0.0, kind="float", minimum=0, maximum=1,
                            doc="fraction of pixels that read hot_level on top of their signal (fixed)")
    hot_level: float | None = key(None, kind="float", minimum=0, exclusive=True, nullable=True,
                                  doc="extra reading of a hot pixel (ADU or photons); null: saturation if set, "
                                  "else 100 photons")
    mask_bad_pixels: bool = key(True, kind="bool", doc="dead and hot pixels are marked in the dataset's mask")
    missing_panels: tuple = key((), kind="int_list", minimum=0,
                                doc="panel indices that read 0 in every shot (masked)")
    beamstop: float = key(0.0, kind="qty", dim="length", unit="mm", minimum=0,
                          doc="radius of a beamstop on the beam axis in the detector plane: no photons reach "
                          "the pixels behind it (masked); 0: none")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        if raw in ("none", False, "off"):
            return {"poisson": False, "background": "none"}
        if isinstance(raw, str):
            raise ConfigError(f"{where}: expected a mapping of noise settings or 'none', got {raw!r}")
        return raw

    def check(self, where: str, raw: dict) -> None:
        if self.common_mode_block is not None and len(self.common_mode_block) != 2:
            got = list(self.common_mode_block)
            raise ConfigError(f"{key_path(where, 'common_mode_block')}: expected [ss, fs], got {got}")
        if len(set(self.missing_panels)) != len(self.missing_panels):
            raise ConfigError(f"{key_path(where, 'missing_panels')}: a panel is listed twice")

    @property
    def is_off(self) -> bool:
        """True when frames are the expected photons (no effect at all)."""
        return self == NoiseSpec(poisson=False, background=BackgroundSpec(photons=0.0))


@dataclass(frozen=True)
class OutputSpec:
    """``output``: how frames are stored."""

    compression: str = key("gzip", kind="choice", choices=("none", "gzip", "lz4", "zstd", "bitshuffle"),
                           doc="filter of the frame chunks (lz4, zstd and bitshuffle through hdf5plugin)")
    shard_size: int = key(16, kind="int", minimum=1,
                          doc="shots per shard: the unit of work, of resuming and of parallelism")
    dtype: str = key("auto", kind="choice", choices=("auto", "float32", "int32"),
                     doc="frame type; auto: int32 when noise.gain is set, else float32")


@dataclass(frozen=True)
class ScatteringSpec:
    """``scattering``: how structure factors of atomistic particles are computed."""

    method: str = key("fast", kind="choice", choices=("fast", "exact"),
                      doc="fast: a reciprocal-space volume per particle, built once and sliced per shot; "
                      "exact: direct summation over atoms per shot")
    anomalous: bool = key(True, kind="bool", doc="include the anomalous terms f' + i f'' at the photon energy")


@dataclass(frozen=True)
class ManifestSpec:
    """A whole manifest (the root mapping)."""

    seed: int = key(0, kind="int", minimum=0, doc="seed of every random stream of the dataset")
    shots: int = key(100, kind="int", minimum=1, doc="number of shots")
    beam: BeamSpec = key(kind="section", cls=BeamSpec, doc="the X-ray pulse")
    detector: DetectorSpec = key(kind="section", cls=DetectorSpec, doc="the detector")
    particles: tuple = key((), kind="section_list", cls=ParticleSpec, doc="the sample particles")
    hits: HitsSpec = key(kind="section", cls=HitsSpec, doc="mix of hit types")
    multi: MultiSpec = key(kind="section", cls=MultiSpec, doc="multiple hits")
    unintended: UnintendedSpec = key(kind="section", cls=UnintendedSpec, doc="unintended hits")
    noise: NoiseSpec = key(kind="section", cls=NoiseSpec, doc="background and detector effects")
    scattering: ScatteringSpec = key(kind="section", cls=ScatteringSpec, doc="scattering method")
    output: OutputSpec = key(kind="section", cls=OutputSpec, doc="storage")

    def check(self, where: str, raw: dict) -> None:
        if (self.hits.single > 0 or self.hits.multi > 0) and not self.particles:
            raise ConfigError("particles: missing value (single and multiple hits need at least one particle)")
        if self.particles and sum(p.weight for p in self.particles) <= 0:
            raise ConfigError("particles: the weights must not all be 0")
        if self.unintended.molecules and sum(p.weight for p in self.unintended.molecules) <= 0:
            raise ConfigError("unintended.molecules: the weights must not all be 0")
        seen: set[str] = set(UNINTENDED_KINDS)
        for where_, plist in (("particles", self.particles), ("unintended.molecules", self.unintended.molecules)):
            for i, p in enumerate(plist):
                if p.label in seen:
                    raise ConfigError(f"{where_}[{i}].name: {p.label!r} is used twice (give each a distinct name)")
                seen.add(p.label)

    @property
    def max_particles(self) -> int:
        """P: the most particles a shot can hold."""
        return max(1, self.multi.n_max if self.hits.multi > 0 else 1,
                   self.unintended.debris.n[1] if self.hits.unintended > 0 else 1)

    @property
    def structure_names(self) -> list[str]:
        """Names the labels index: particles, then unintended molecules, droplet, salt, debris."""
        return [p.label for p in self.particles] + [m.label for m in self.unintended.molecules] + [
            "droplet", "salt", "debris"]
