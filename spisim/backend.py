"""Where work runs: the array module of an array, the GPU probes, and the one ``--device`` resolver.

Three GPU libraries mean three different things, and each probe says which it asks about:

* **CuPy** (:func:`cupy_available`): the simulator's GPU path (``spi simulate --device cuda``): pixel q,
  scene sums and detector noise live in CuPy arrays, and every function that takes them follows the
  array (:func:`get_array_module`), as sigpy does;
* **numba.cuda** (:func:`numba_cuda_available`, :func:`numba_cuda_simulated`): the custom kernels (direct
  sum, volume slicing), which also run under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, the tests);
* **torch.cuda** (:func:`torch_cuda_available`): the learner's device (``spinet``, ``spi bench``, ``spi stream``).

How a backend is chosen, everywhere: an array already on the GPU stays there (the function follows it);
otherwise an explicit ``cpu``/``cuda`` is obeyed (ConfigError when the GPU is missing) and ``auto`` asks the
probe of the library that will do the work. Probes import their library only when called, never at import
time, and never swallow anything but "not there".
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from .errors import ConfigError

DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")
"""Device names every ``--device`` option accepts (torch users may also name ``cuda:N``)."""

LIBRARIES: tuple[str, ...] = ("cupy", "torch")
"""GPU libraries :func:`resolve_device` can ask about."""

_INSTALL_HINT = {
    "cupy": "or CuPy is not installed: pip install cupy-cuda12x",
    "torch": "or torch was built without CUDA",
}


# ----------------------------------------------------------------------------------------------
# Arrays


def get_array_module(x: Any) -> Any:
    """``cupy`` for a CuPy array, else ``numpy`` (CuPy is imported only for a CuPy array)."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def is_device_array(x: object) -> bool:
    """True for an array in GPU memory: a numba device array or anything with ``__cuda_array_interface__``
    (CuPy, PyTorch CUDA tensors). numba.cuda is imported only for objects that are not numpy arrays."""
    if isinstance(x, np.ndarray):
        return False
    if hasattr(x, "__cuda_array_interface__"):
        return True
    from numba import cuda

    return bool(cuda.devicearray.is_cuda_ndarray(x))


# ----------------------------------------------------------------------------------------------
# Probes


def cupy_available() -> bool:
    """True when CuPy is installed and sees a CUDA device (the simulator's GPU path)."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - a CuPy without driver raises its own runtime errors
        return False


def numba_cuda_simulated() -> bool:
    """True when numba.cuda runs on its CPU simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def numba_cuda_available() -> bool:
    """True when a real CUDA device can run numba.cuda kernels (False under the simulator's fake device)."""
    if numba_cuda_simulated():
        return False
    from numba import cuda

    try:
        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - broken driver installs
        return False


def require_numba_cuda(what: str, instead: str) -> None:
    """ConfigError unless numba.cuda kernels can run (a real device, or the simulator).

    Args:
        what: what asked, e.g. ``"method 'cuda'"``.
        instead: what to use instead, e.g. ``"method='cpu' or 'auto'"``.
    """
    if not (numba_cuda_available() or numba_cuda_simulated()):
        raise ConfigError(f"{what} needs a CUDA GPU (none found); use {instead}")


def cufinufft_available() -> bool:
    """True when cupy and cufinufft are importable (the GPU NUFFT path)."""
    return importlib.util.find_spec("cufinufft") is not None and importlib.util.find_spec("cupy") is not None


def torch_cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (the learner's GPU)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def gpu_available(library: str) -> bool:
    """The probe of ``library`` (one of :data:`LIBRARIES`)."""
    if library == "cupy":
        return cupy_available()
    if library == "torch":
        return torch_cuda_available()
    raise ValueError(f"unknown GPU library {library!r}")  # internal misuse


# ----------------------------------------------------------------------------------------------
# --device


def resolve_device(name: str, *, library: str = "cupy", option: str = "--device") -> str:
    """``cpu`` or a CUDA device for a ``--device`` value.

    Args:
        name: ``cpu``, ``cuda`` or ``auto`` (``auto``: the GPU when ``library`` sees one); with
            ``library='torch'`` also ``cuda:N``.
        library: which GPU library will do the work: ``cupy`` (the simulator) or ``torch`` (the learner).
        option: how the value is named in messages.

    Returns:
        ``cpu``, ``cuda`` (or ``cuda:N`` as given).

    Raises:
        ConfigError: an unknown name, or a CUDA device that ``library`` cannot see (one line).
    """
    text = str(name)
    indexed = library == "torch" and text.startswith("cuda:") and text[5:].isdigit()
    if text not in DEVICES and not indexed:
        extra = ", cuda:N" if library == "torch" else ""
        raise ConfigError(f"unknown device {text!r}: use cpu, cuda{extra} or auto")
    if text == "auto":
        return "cuda" if gpu_available(library) else "cpu"
    if text != "cpu" and not gpu_available(library):
        raise ConfigError(f"{option} {text}: no CUDA GPU found ({_INSTALL_HINT[library]}); use {option} cpu")
    return text
