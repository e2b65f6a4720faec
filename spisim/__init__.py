"""spisim: X-ray single-particle-imaging scattering simulator.

SI units inside (m, J, photons/m²); Å and eV at the user's edge. Every public
function states its units and array shapes in its docstring.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spi-toolkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
