"""Test configuration shared by the whole suite.

* numba.cuda kernels run under numba's CUDA simulator unless a real GPU run asks otherwise
  (``NUMBA_ENABLE_CUDASIM=0``); the variable must be set before numba is first imported.
* ``shared_data`` points at the read-only ``../shared/data`` folder of real structures and geometries.
* Tests marked ``gpu`` are skipped, with the reason, when no CUDA device is present.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA
