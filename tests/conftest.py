"""Test configuration shared by the whole suite.

* numba.cuda kernels run under numba's CUDA simulator unless a real GPU run asks otherwise
  (``NUMBA_ENABLE_CUDASIM=0``); the variable must be set before numba is first imported.
* ``shared_data`` points at the read-only ``../shared/data`` folder of real structures and geometries
  (beside the repository, as in CI; ``$SPI_SHARED_DATA`` names another place, e.g. for a worktree).
* Structures named by PDB ID resolve from ``<shared data>/structures`` (added to ``$SPI_STRUCTURE_PATH``
  when that folder exists), and the PDB cache is a fresh folder of the session (``$SPI_CACHE_DIR``), so
  that no test reads or fills the user's cache.
* Tests marked ``gpu`` are skipped, with the reason, when no CUDA device is present.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPI_SHARED_DATA") or REPO.parent / "shared" / "data").resolve()
SHARED_STRUCTURES = SHARED_DATA / "structures"


def _add_to_structure_path(folder: Path) -> None:
    """Append ``folder`` to ``$SPI_STRUCTURE_PATH`` unless it is there (set at import: subprocesses inherit it)."""
    parts = [p for p in os.environ.get("SPI_STRUCTURE_PATH", "").split(os.pathsep) if p]
    if str(folder) not in parts:
        os.environ["SPI_STRUCTURE_PATH"] = os.pathsep.join([*parts, str(folder)])


if SHARED_STRUCTURES.is_dir():
    _add_to_structure_path(SHARED_STRUCTURES)


@pytest.fixture(scope="session", autouse=True)
def _private_pdb_cache() -> Iterator[Path]:
    """A PDB cache folder of this test session only (removed at the end)."""
    before = os.environ.get("SPI_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="spi-test-pdb-cache-") as folder:
        os.environ["SPI_CACHE_DIR"] = folder
        try:
            yield Path(folder)
        finally:
            if before is None:
                os.environ.pop("SPI_CACHE_DIR", None)
            else:
                os.environ["SPI_CACHE_DIR"] = before


def _have_real_gpu() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _have_real_gpu():
        return
    skip = pytest.mark.skip(reason="needs a real CUDA GPU (none present, or NUMBA_ENABLE_CUDASIM=1)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder (structures/, geometries/); skips clearly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (put a copy of shared/ beside the repository, "
                    f"or set SPI_SHARED_DATA)")
    return SHARED_DATA
