"""The inputs of an import: a run's frames (any HDF5 layout, or a ``.npy`` stack), its masks and labels.

:func:`open_source` finds the frame dataset and gives block access to it as (n, M, SS, FS) float32
without reading the run into memory (h5py slices, or a memory-mapped ``.npy``). :func:`load_mask` reads a
mask from the source file, an ``.npy`` file or an HDF5 file; :func:`load_labels` reads per-frame labels
from the source file or a label file and turns them into class codes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..cxi import DATA_PATH, LABEL_CLASSES
from ..errors import ConfigError, InputFileError

UNLABELLED = "unlabelled"
"""Target of ``--label-map`` for raw values that mean "no label" (written as −1)."""


def _register_filters() -> None:
    with contextlib.suppress(ImportError):  # lz4, zstd, bitshuffle filters for h5py
        import hdf5plugin  # noqa: F401


def _is_hdf5(path: Path) -> bool:
    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _datasets(f: h5py.File) -> list[tuple[str, tuple[int, ...]]]:
    """Every dataset of a file: (path, shape), in file order (soft links to datasets included once)."""
    found: list[tuple[str, tuple[int, ...]]] = []
    seen: set = set()

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and obj.id not in seen:
            seen.add(obj.id)
            found.append(("/" + name, tuple(obj.shape)))

    f.visititems(visit)
    return found


def _listing(items: Sequence[tuple[str, tuple[int, ...]]], limit: int = 8) -> str:
    text = ", ".join(f"{p} {s}" for p, s in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "") if items else "none"


@dataclass
class FrameSource:
    """Frames of a run, read in blocks.

    Attributes:
        path: the file.
        kind: ``hdf5`` or ``npy``.
        data_path: the dataset path (HDF5), or None.
        raw_shape: the stored shape, (N, SS, FS) or (N, M, SS, FS).
        dtype: the stored dtype.
    """

    path: Path
    kind: str
    data_path: str | None
    raw_shape: tuple[int, ...]
    dtype: np.dtype
    _array: object
    _file: h5py.File | None = None

    @property
    def n_frames(self) -> int:
        return int(self.raw_shape[0])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(M, SS, FS): M = 1 for a 3-D stack."""
        s = self.raw_shape[1:]
        return (1, *s) if len(s) == 2 else tuple(s)  # type: ignore[return-value]

    @property
    def is_integer(self) -> bool:
        return bool(np.issubdtype(self.dtype, np.integer))

    def read(self, start: int, stop: int, step: int = 1) -> np.ndarray:
        """Frames ``start:stop:step`` (source indices) as float32 (n, M, SS, FS)."""
        try:
            block = self._array[start:stop:step]  # type: ignore[index]
        except OSError as exc:
            where = f"{self.path}:{self.data_path}" if self.data_path else str(self.path)
            raise InputFileError(f"cannot read frames {start}..{stop - 1} of {where}: {exc}") from None
        if self.kind == "npy":  # a view of the read-only memory map: copy
            return np.array(block, dtype=np.float32).reshape(-1, *self.frame_shape)
        return np.asarray(block, dtype=np.float32).reshape(-1, *self.frame_shape)

    def read_one(self, index: int) -> np.ndarray:
        """Frame ``index`` as float32 (M, SS, FS)."""
        return self.read(index, index + 1)[0]

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.close()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_frames(shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    if len(shape) not in (3, 4):
        raise InputFileError(f"{where} has shape {shape}: frames must be (N, SS, FS) or (N, M, SS, FS)")
    if min(shape) < 1:
        raise InputFileError(f"{where} has shape {shape}: no frames")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise InputFileError(f"{where} holds {dtype} values: frames must be integers or floats")


def open_source(path: str | Path, data_path: str | None = None) -> FrameSource:
    """Open the frames of a run.

    Args:
        path: an HDF5 file (any layout) or a ``.npy`` stack (memory-mapped).
        data_path: the frame dataset in an HDF5 file; default ``/entry_1/data_1/data`` if present, else the
            only dataset of rank 3 or 4.

    Raises:
        InputFileError: a missing or unreadable file, a missing dataset, a wrong rank or dtype, or no
            single candidate for the frames.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"no such file: {path}")
    if path.suffix.lower() == ".npy":
        if data_path is not None:
            raise ConfigError(f"--data names a dataset in an HDF5 file; {path} is a .npy stack")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputFileError(f"{path} is not a readable .npy array ({exc})") from None
        _check_frames(tuple(arr.shape), arr.dtype, str(path))
        return FrameSource(path, "npy", None, tuple(arr.shape), arr.dtype, arr)
    if not _is_hdf5(path):
        raise InputFileError(f"{path} is neither an HDF5 file nor a .npy stack")
    _register_filters()
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(f"{path} is not a readable HDF5 file ({exc.__class__.__name__})") from None
    try:
        if data_path is None:
            if DATA_PATH in f and isinstance(f[DATA_PATH], h5py.Dataset):
                data_path = DATA_PATH
            else:
                candidates = [(p, s) for p, s in _datasets(f) if len(s) in (3, 4)]
                if len(candidates) != 1:
                    what = "no dataset" if not candidates else f"{len(candidates)} datasets"
                    listing = _listing(candidates or _datasets(f))
                    raise InputFileError(f"{path}: {what} of rank 3 or 4 to take as frames ({listing}): "
                                         f"name one with --data")
                data_path = candidates[0][0]
        key = data_path if data_path.startswith("/") else "/" + data_path
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise InputFileError(f"{path} has no dataset {key} (datasets: {_listing(_datasets(f))})")
        dset = f[key]
        _check_frames(tuple(dset.shape), dset.dtype, f"{path}:{key}")
        return FrameSource(path, "hdf5", key, tuple(dset.shape), dset.dtype, dset, f)
    except BaseException:
        f.close()
        raise


# ------------------------------------------------------------------------------------------------ masks


def _read_hdf5_array(path: Path, key: str | None, what: str, ranks: tuple[int, ...]) -> tuple[np.ndarray, str]:
    _register_filters()
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputFileError(f"{what}: {path} is not a readable HDF5 file") from None
    with f:
        if key is None:
            found = [(p, s) for p, s in _datasets(f) if len(s) in ranks]
            if len(found) != 1:
                raise InputFileError(f"{what}: {path} has {len(found)} datasets of rank "
                                     f"{' or '.join(map(str, ranks))} ({_listing(found)}): name one as FILE:/path")
            key = found[0][0]
        key = key if key.startswith("/") else "/" + key
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise InputFileError(f"{what}: {path} has no dataset {key}")
        return np.asarray(f[key][()]), f"{path}:{key}"


def resolve_array(spec: str, source: FrameSource, what: str, ranks: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """An array named on the command line: a dataset of the source file, an ``.npy`` file, ``FILE.h5:/path``,
    or an HDF5 file's only dataset of one of ``ranks``. Returns (array, where it came from)."""
    text = str(spec)
    if source.kind == "hdf5" and source._file is not None:
        key = text if text.startswith("/") else "/" + text
        if key in source._file and isinstance(source._file[key], h5py.Dataset):
            return np.asarray(source._file[key][()]), f"{source.path}:{key}"
    path = Path(text)
    if path.is_file():
        if path.suffix.lower() == ".npy":
            try:
                return np.load(path, allow_pickle=False), str(path)
            except (OSError, ValueError) as exc:
                raise InputFileError(f"{what}: {path} is not a readable .npy array ({exc})") from None
        if _is_hdf5(path):
            return _read_hdf5_array(path, None, what, ranks)
        raise InputFileError(f"{what}: {path} is neither a .npy nor an HDF5 file")
    if ":" in text:
        file_part, key = text.rsplit(":", 1)
        fp = Path(file_part)
        if fp.is_file() and _is_hdf5(fp):
            return _read_hdf5_array(fp, key or None, what, ranks)
        if fp.is_file():
            raise InputFileError(f"{what}: {fp} is not an HDF5 file")
    in_source = f" nor a dataset of {source.path}" if source.kind == "hdf5" else ""
    raise InputFileError(f"{what} {text!r}: no such file{in_source}")


def load_mask(spec: str, source: FrameSource, *, value: str = "bad") -> tuple[np.ndarray, str]:
    """A static mask (M, SS, FS) bool, True = bad, from ``spec`` (see :func:`resolve_array`).

    Args:
        spec: where the mask is.
        source: the run (its frame shape; its file for dataset paths).
        value: what a non-zero entry means: ``bad`` (CXI convention) or ``good``.

    Raises:
        InputFileError: not found, or a shape that is not the frames' (SS, FS) or (M, SS, FS).
        ConfigError: ``value`` not bad/good.
    """
    if value not in ("bad", "good"):
        raise ConfigError(f"--mask-value must be bad or good, got {value!r}")
    arr, where = resolve_array(spec, source, f"mask {spec}", (2, 3))
    shape = source.frame_shape
    if arr.shape == shape[1:] and shape[0] == 1:
        arr = arr[None]
    if arr.shape != shape:
        per_frame = shape[1:] if shape[0] == 1 else shape
        raise InputFileError(f"mask {where} has shape {arr.shape}, the frames are {per_frame} per frame "
                             f"(a mask of another detector?)")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputFileError(f"mask {where} holds {arr.dtype} values, expected numbers or booleans")
    nonzero = np.asarray(arr) != 0
    return (nonzero if value == "bad" else ~nonzero), where


# ------------------------------------------------------------------------------------------------ labels


def parse_label_map(text: str | None) -> dict[str, str] | None:
    """``"1=single,0=not_single"`` → ``{"1": "single", "0": "not_single"}`` (raw value → class name).

    Class names must be in :data:`spisim.cxi.LABEL_CLASSES` or be ``unlabelled`` (written as −1).
    """
    if text is None:
        return None
    out: dict[str, str] = {}
    for item in str(text).split(","):
        if not item.strip():
            continue
        if item.count("=") != 1:
            raise ConfigError(f"--label-map: {item.strip()!r} is not RAW=CLASS (e.g. 1=single,0=not_single)")
        raw, name = (t.strip() for t in item.split("="))
        if not raw or not name:
            raise ConfigError(f"--label-map: {item.strip()!r} is not RAW=CLASS (e.g. 1=single,0=not_single)")
        if name not in LABEL_CLASSES and name != UNLABELLED:
            raise ConfigError(f"--label-map: unknown class {name!r}: use {', '.join(LABEL_CLASSES)} or {UNLABELLED}")
        key = _raw_key(raw)
        if key in out:
            raise ConfigError(f"--label-map gives raw value {raw!r} twice")
        out[key] = name
    if not out:
        raise ConfigError("--label-map is empty: give RAW=CLASS pairs, e.g. 1=single,0=not_single")
    return out


def _raw_key(value: object) -> str:
    """A raw label as map key: whole numbers as integers ('1.0' and 1 → '1'), text stripped."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else repr(number)


def _is_numeric(key: str) -> bool:
    try:
        float(key)
    except ValueError:
        return False
    return True


def label_codes(raw: Mapping[int, object], n_frames: int, label_map: Mapping[str, str] | None,
                where: str) -> np.ndarray:
    """(n_frames,) int8 codes into :data:`LABEL_CLASSES` (−1 = unlabelled) from raw labels by source index.

    Raises:
        ConfigError: numeric labels without a map, a raw value the map lacks, or an unknown class name.
    """
    codes = np.full(int(n_frames), -1, dtype=np.int8)
    position = {name: k for k, name in enumerate(LABEL_CLASSES)}
    for index, value in raw.items():
        key = _raw_key(value)
        if label_map is not None:
            if key not in label_map:
                known = ", ".join(sorted(label_map))
                raise ConfigError(f"labels {where}: value {key!r} (frame {index}) is not in --label-map ({known})")
            name = label_map[key]
        elif _is_numeric(key):
            raise ConfigError(f"labels {where} are numbers (e.g. {key!r} for frame {index}): give --label-map, "
                              f"e.g. 1=single,0=not_single")
        else:
            name = key
        if name == UNLABELLED:
            continue
        if name not in position:
            raise ConfigError(f"labels {where}: unknown class {name!r} (frame {index}): use "
                              f"{', '.join(LABEL_CLASSES)}, or map it with --label-map")
        codes[index] = position[name]
    return codes


def load_labels(spec: str, source: FrameSource, label_map: Mapping[str, str] | None) -> tuple[np.ndarray, str]:
    """(N_source,) int8 codes of every source frame (−1 = unlabelled), and where they came from.

    ``spec`` is a 1-D dataset of the source file (one raw label per source frame), or a label file read by
    :func:`spisim.labels.read_label_file` (CSV ``index,label``, ``spi label`` logs, HDF5 index+label) whose
    indices are source frame indices.
    """
    from ..labels import read_label_file

    n = source.n_frames
    text = str(spec)
    if source.kind == "hdf5" and source._file is not None:
        key = text if text.startswith("/") else "/" + text
        if key in source._file and isinstance(source._file[key], h5py.Dataset):
            arr = np.asarray(source._file[key][()])
            where = f"{source.path}:{key}"
            if arr.ndim != 1 or arr.shape[0] != n:
                raise InputFileError(f"labels {where} have shape {arr.shape}, expected ({n},): one per frame")
            return label_codes(dict(enumerate(arr.tolist())), n, label_map, where), where
    path = Path(text)
    if not path.is_file():
        in_source = f" nor a dataset of {source.path}" if source.kind == "hdf5" else ""
        raise InputFileError(f"labels {text!r}: no such file{in_source}")
    raw = read_label_file(path, n_shots=n)
    return label_codes(raw, n, label_map, str(path)), str(path)


def file_facts(path: Path) -> dict:
    """Path, size and modification time of a file, for provenance."""
    st = path.stat()
    from datetime import UTC, datetime

    return {"path": str(path.resolve()), "size_bytes": int(st.st_size),
            "mtime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds")}


__all__ = ["FrameSource", "UNLABELLED", "file_facts", "label_codes", "load_labels", "load_mask", "open_source",
           "parse_label_map", "resolve_array"]
