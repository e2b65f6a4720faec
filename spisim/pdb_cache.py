"""Find structure files by PDB ID: in local folders, in a cache, or downloaded into the cache.

:func:`fetch_pdb` returns the path of the file for an ID. It looks, in order,

1. in the folders of ``$SPI_STRUCTURE_PATH`` (``os.pathsep``-separated, like ``$PATH``), for a file named
   ``<id>.cif``, ``<id>.cif.gz``, ``<id>.mmcif``, ``<id>.pdb``, ``<id>.pdb.gz``, ``<id>.ent``,
   ``<id>.ent.gz`` or ``pdb<id>.ent[.gz]``, any case (:func:`find_local`): a folder of structures you
   already have, used as it is and never written to;
2. in the cache folder (:func:`cached_path`);
3. on the network: it downloads the entry, trying RCSB, then PDBe, into ``<cache dir>/<id>.cif.gz``.
   The download is written to a temporary file in the cache folder and renamed into place, so an
   interrupted download never leaves a truncated file behind.

Without network and without the file, the error names the ID, the URL to fetch it from and the folders
to put it in.

Configuration:

* local folders: argument ``search_path``, else ``$SPI_STRUCTURE_PATH``;
* cache folder: argument ``cache_dir``, else ``$SPI_CACHE_DIR``, else ``~/.cache/spi-toolkit/pdb``;
* download URLs: argument ``urls``, else ``$SPI_PDB_URL`` (several separated by spaces or commas),
  else :data:`DEFAULT_URLS`. A URL may be a template with ``{id}`` (lower-case ID), ``{ID}``
  (upper case) and ``{mid}`` (the ID's middle two characters, lower case, as in the wwPDB
  archive's divided layout); a URL without ``{`` is a base to which ``/{ID}.cif.gz`` is appended.
  Plain and gzipped responses are both accepted; the cache stores gzip.
"""

from __future__ import annotations

import gzip
import os
import re
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

from .atomic import write_bytes_atomic
from .errors import ConfigError, InputFileError

DEFAULT_URLS: tuple[str, ...] = (
    "https://files.rcsb.org/download/{ID}.cif.gz",
    "https://www.ebi.ac.uk/pdbe/entry-files/download/{id}.cif",
)
"""Download templates tried in order: RCSB, then PDBe."""

CACHE_ENV = "SPI_CACHE_DIR"
"""Environment variable naming the cache folder."""

URL_ENV = "SPI_PDB_URL"
"""Environment variable with download URL templates or base URLs (space- or comma-separated)."""

PATH_ENV = "SPI_STRUCTURE_PATH"
"""Environment variable naming folders of structure files (``os.pathsep``-separated), searched before the cache."""

_LOCAL_NAMES = ("{id}.cif", "{id}.cif.gz", "{id}.mmcif", "{id}.mmcif.gz", "{id}.pdb", "{id}.pdb.gz", "{id}.ent",
                "{id}.ent.gz", "pdb{id}.ent", "pdb{id}.ent.gz")

_PDB_ID = re.compile(r"[1-9][A-Za-z0-9]{3}")
_CACHED_NAMES = (
    "{id}.cif.gz",
    "{id}.cif",
    "{ID}.cif.gz",
    "{ID}.cif",
    "{id}.pdb.gz",
    "{id}.pdb",
    "{ID}.pdb.gz",
    "{ID}.pdb",
    "pdb{id}.ent.gz",
    "pdb{id}.ent",
)


def is_pdb_id(text: str) -> bool:
    """True when `text` is a classic 4-character PDB ID (digit 1-9, then three letters or digits)."""
    return bool(_PDB_ID.fullmatch(text.strip()))


def default_cache_dir() -> Path:
    """The cache folder: ``$SPI_CACHE_DIR`` when set, else ``~/.cache/spi-toolkit/pdb``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spi-toolkit" / "pdb"


def structure_path(value: str | None = None) -> list[Path]:
    """The folders of ``$SPI_STRUCTURE_PATH`` (or of `value`), in order; empty entries are left out."""
    text = os.environ.get(PATH_ENV, "") if value is None else value
    return [Path(part).expanduser() for part in text.split(os.pathsep) if part.strip()]


def find_local(pdb_id: str, search_path: Sequence[str | Path] | None = None) -> Path | None:
    """The first file for `pdb_id` in the folders of `search_path` (default ``$SPI_STRUCTURE_PATH``), or None.

    In each folder, in order, the names ``<id>.cif``, ``<id>.cif.gz``, ``<id>.mmcif[.gz]``, ``<id>.pdb``,
    ``<id>.pdb.gz``, ``<id>.ent``, ``<id>.ent.gz``, ``pdb<id>.ent``, ``pdb<id>.ent.gz`` are looked for, in any
    case (``1CRN.cif`` and ``1crn.CIF`` are both found); empty files and folders that do not exist are
    passed over. (A name such as ``1abc_clean.pdb`` is not an ID's file: give its path instead.)
    """
    folders = structure_path() if search_path is None else [Path(f).expanduser() for f in search_path]
    low = pdb_id.strip().lower()
    wanted = [pattern.format(id=low) for pattern in _LOCAL_NAMES]
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        by_name: dict[str, Path] = {}
        for entry in entries:
            by_name.setdefault(entry.name.lower(), entry)
        for name in wanted:
            hit = by_name.get(name)
            if hit is not None and hit.is_file() and hit.stat().st_size > 0:
                return hit
    return None


def download_urls(pdb_id: str, urls: Sequence[str] | str | None = None) -> list[str]:
    """The URLs tried for `pdb_id`, in order (templates from `urls`, ``$SPI_PDB_URL`` or the defaults)."""
    if urls is None:
        env = os.environ.get(URL_ENV, "").strip()
        templates: Sequence[str] = re.split(r"[\s,]+", env) if env else DEFAULT_URLS
    elif isinstance(urls, str):
        templates = re.split(r"[\s,]+", urls.strip())
    else:
        templates = list(urls)
    low = pdb_id.lower()
    out = []
    for template in templates:
        if not template:
            continue
        if "{" not in template:
            template = template.rstrip("/") + "/{ID}.cif.gz"
        try:
            out.append(template.format(id=low, ID=low.upper(), mid=low[1:3]))
        except (KeyError, IndexError, ValueError):
            raise ConfigError(
                f"bad PDB download URL {template!r}: placeholders are {{id}}, {{ID}} and {{mid}}"
            ) from None
    return out


def cached_path(pdb_id: str, cache_dir: Path | None = None) -> Path | None:
    """Path of the cached file for `pdb_id` (also files put there by hand), or None when absent.

    Looked for, in order: ``1abc.cif.gz``, ``1abc.cif``, ``1ABC.cif.gz``, ``1ABC.cif``, then the same
    names with ``.pdb``/``.pdb.gz``, and ``pdb1abc.ent[.gz]``.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    low = pdb_id.strip().lower()
    for pattern in _CACHED_NAMES:
        candidate = folder / pattern.format(id=low, ID=low.upper())
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


def fetch_pdb(
    pdb_id: str,
    *,
    cache_dir: Path | None = None,
    urls: Sequence[str] | str | None = None,
    timeout_s: float = 30.0,
    search_path: Sequence[str | Path] | None = None,
) -> Path:
    """Path of a structure file of `pdb_id`: from a local folder, from the cache, or downloaded into the cache.

    Args:
        pdb_id: 4-character PDB ID, any case (e.g. ``"1crn"``).
        cache_dir: cache folder (default :func:`default_cache_dir`); created when missing.
        urls: URL templates or base URLs to try in order (default ``$SPI_PDB_URL`` or
            :data:`DEFAULT_URLS`); see the module docstring for the placeholders.
        timeout_s: network timeout per attempt (s).
        search_path: folders searched first (default ``$SPI_STRUCTURE_PATH``), see :func:`find_local`.

    Returns:
        Path of the file: one in `search_path`, else the cached file, normally ``<cache_dir>/<id>.cif.gz``.

    Raises:
        InputFileError: `pdb_id` is not a PDB ID, or no URL gave a valid mmCIF file; the one-line message
            names the ID, the URL to fetch it from by hand and the folders to put it in.
    """
    if not is_pdb_id(pdb_id):
        raise InputFileError(f"{pdb_id!r} is not a PDB ID (4 characters such as 1crn) nor an existing file")
    low = pdb_id.strip().lower()
    local = find_local(low, search_path)
    if local is not None:
        return local
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    hit = cached_path(low, folder)
    if hit is not None:
        return hit

    failures = []
    candidates = download_urls(low, urls)
    for url in candidates:
        try:
            data = _download(url, timeout_s)
            text_gz = _as_valid_cif_gz(data)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {_reason(exc)}")
            continue
        return _write_atomically(folder / f"{low}.cif.gz", text_gz)
    tried = "; ".join(failures) or "no download URL configured"
    source = candidates[0] if candidates else DEFAULT_URLS[0].format(ID=low.upper())
    folders = structure_path() if search_path is None else [Path(f) for f in search_path]
    looked = f"not in ${PATH_ENV} ({os.pathsep.join(map(str, folders))}) nor" if folders else "not in"
    raise InputFileError(
        f"structure {low.upper()} is {looked} the cache {folder}, and could not download it ({tried}): "
        f"download {source} by hand and put it in {folder} as {low}.cif.gz (or in a folder of ${PATH_ENV}), "
        f"or give the file's path"
    )


def _download(url: str, timeout_s: float) -> bytes:
    from . import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"spi-toolkit/{__version__}"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (http(s) only)
        return response.read()


def _as_valid_cif_gz(data: bytes) -> bytes:
    """Gzipped bytes of a response that holds an mmCIF file; ValueError when it does not."""
    raw = data
    if data[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"corrupt gzip data ({exc})") from None
    head = raw[:4096].decode("utf-8", errors="replace")
    lines = [ln.strip() for ln in head.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not lines or not lines[0].lower().startswith("data_"):
        raise ValueError("response is not an mmCIF file")
    return data if data[:2] == b"\x1f\x8b" else gzip.compress(raw)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _write_atomically(target: Path, data: bytes) -> Path:
    """Write `data` to `target` whole or not at all (:mod:`spisim.atomic`), as an InputFileError on failure."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(f"cannot write to the PDB cache folder {target.parent}: {exc.strerror or exc}") from None
    try:
        return write_bytes_atomic(target, data, fsync=True)
    except OSError as exc:
        raise InputFileError(f"cannot write {target}: {exc.strerror or exc}") from None
