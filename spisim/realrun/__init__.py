"""A real run in: any HDF5/npy layout → the project's CXI layout, ADU → photons, masks, geometry.

* :mod:`.source` — the run's frames (block access), masks and labels;
* :mod:`.gain` — ADU per photon, offset and read noise from the photon peaks of the pixel histogram;
* :mod:`.centre` — the beam centre of a pattern from its centrosymmetry (:func:`fit_centre`);
* :mod:`.options` — :class:`ImportOptions` and the parsers of its command-line strings;
* :mod:`.importer` — :func:`run_import`, the streaming import behind ``spi import``.

See ``docs/real-data.md``.
"""

from .centre import CentreFit, fit_centre, fit_centre_groups
from .gain import GainAccumulator, GainFit, estimate_gain
from .importer import ImportResult, flat_panel, run_import
from .options import ImportOptions

__all__ = ["CentreFit", "GainAccumulator", "GainFit", "ImportOptions", "ImportResult", "estimate_gain", "fit_centre",
           "fit_centre_groups", "flat_panel", "run_import"]
