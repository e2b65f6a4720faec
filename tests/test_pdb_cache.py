"""Tests of spisim.pdb_cache against a local HTTP server on 127.0.0.1 (no internet needed).

The suite puts the shared structures on ``$SPI_STRUCTURE_PATH`` (tests/conftest.py); these tests clear it,
so that what they test is the cache and the download.
"""

from __future__ import annotations

import functools
import gzip
import os
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gemmi
import numpy as np
import pytest

from spisim.errors import ConfigError, InputFileError
from spisim.pdb_cache import cached_path, default_cache_dir, download_urls, fetch_pdb, is_pdb_id
from spisim.structure import load_structure


class _QuietHandler(SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (name of the base class's method)
        _QuietHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):  # noqa: A002 (signature of the base class)
        """Silence the per-request log lines."""


class _Server:
    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, template: str) -> str:
        return f"http://127.0.0.1:{self.port}/{template}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


N_ATOMS = 27


def _entry_pdb() -> str:
    """A small protein-like entry in PDB format (N_ATOMS carbon atoms on a helix), named 1CRN."""
    t = np.arange(N_ATOMS)
    xyz = np.stack([2.3 * np.cos(1.75 * t), 2.3 * np.sin(1.75 * t), 1.5 * t], axis=1)
    lines = ["HEADER    TEST ENTRY                              01-JAN-00   1CRN"]
    lines += [f"ATOM  {i + 1:5d}  CA  GLY A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 10.00           C"
              for i, (x, y, z) in enumerate(xyz)]
    return "\n".join(lines) + "\nEND\n"


def _entry_cif() -> bytes:
    """The same entry as mmCIF, block ``data_1CRN``, as the RCSB and PDBe serve it."""
    doc = gemmi.read_pdb_string(_entry_pdb()).make_mmcif_document()
    doc[0].name = "1CRN"
    return doc.as_string().encode()


@pytest.fixture(autouse=True)
def _no_structure_path(monkeypatch):
    monkeypatch.delenv("SPI_STRUCTURE_PATH", raising=False)


@pytest.fixture
def server(tmp_path) -> Iterator[_Server]:
    root = tmp_path / "www"
    (root / "rcsb").mkdir(parents=True)
    (root / "pdbe").mkdir()
    cif = _entry_cif()
    (root / "rcsb" / "1CRN.cif.gz").write_bytes(gzip.compress(cif))
    (root / "pdbe" / "1crn.cif").write_bytes(cif)  # plain, as PDBe serves it
    (root / "rcsb" / "2BAD.cif.gz").write_bytes(gzip.compress(b"<html>not found</html>"))
    _QuietHandler.requests = []
    srv = _Server(root)
    yield srv
    srv.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_is_pdb_id():
    assert all(is_pdb_id(s) for s in ["1crn", "1CRN", "6zu5", "9XYZ"])
    assert not any(is_pdb_id(s) for s in ["crn1", "0abc", "1crn.cif", "12345", "1c_n", ""])


def test_download_url_templates(monkeypatch):
    monkeypatch.delenv("SPI_PDB_URL", raising=False)
    assert download_urls("1AbC") == [
        "https://files.rcsb.org/download/1ABC.cif.gz",
        "https://www.ebi.ac.uk/pdbe/entry-files/download/1abc.cif",
    ]
    monkeypatch.setenv("SPI_PDB_URL", "http://a/{mid}/{id}.cif.gz, http://b/base/")
    assert download_urls("1abc") == ["http://a/ab/1abc.cif.gz", "http://b/base/1ABC.cif.gz"]
    assert download_urls("1abc", "http://c/{ID}.cif") == ["http://c/1ABC.cif"]
    with pytest.raises(ConfigError, match="placeholders"):
        download_urls("1abc", ["http://c/{pdb}.cif"])


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPI_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SPI_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "spi-toolkit" / "pdb"


def test_download_then_cache_hit_with_server_stopped(server, tmp_path):
    cache = tmp_path / "cache"
    path = fetch_pdb("1crn", cache_dir=cache, urls=[server.url("rcsb/{ID}.cif.gz")])
    assert path == cache / "1crn.cif.gz"
    assert gzip.decompress(path.read_bytes()).startswith(b"data_1CRN")
    assert sorted(p.name for p in cache.iterdir()) == ["1crn.cif.gz"]  # no temporary file left
    assert _QuietHandler.requests == ["/rcsb/1CRN.cif.gz"]
    server.stop()
    again = fetch_pdb("1CRN", cache_dir=cache, urls=[server.url("rcsb/{ID}.cif.gz")])
    assert again == path
    assert len(load_structure("1crn", cache_dir=cache)) == N_ATOMS


def test_fallback_to_second_url_and_plain_response_is_stored_gzipped(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SPI_PDB_URL", f"{server.url('missing/{ID}.cif.gz')} {server.url('pdbe/{id}.cif')}")
    monkeypatch.setenv("SPI_CACHE_DIR", str(tmp_path / "envcache"))
    path = fetch_pdb("1crn")
    assert path == tmp_path / "envcache" / "1crn.cif.gz"
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert _QuietHandler.requests == ["/missing/1CRN.cif.gz", "/pdbe/1crn.cif"]
    assert len(load_structure(path)) == N_ATOMS


def test_invalid_response_is_not_cached(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(InputFileError, match=r"structure 2BAD is not in the cache .*, and could not download it "
                       r"\(.*not an mmCIF file"):
        fetch_pdb("2bad", cache_dir=cache, urls=[server.url("rcsb/{ID}.cif.gz")])
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_message_names_the_file_to_supply(tmp_path):
    cache = tmp_path / "cache"
    port = _closed_port()
    with pytest.raises(InputFileError) as info:
        fetch_pdb("1abc", cache_dir=cache, urls=[f"http://127.0.0.1:{port}/{{ID}}.cif.gz"], timeout_s=5)
    message = str(info.value)
    url = f"http://127.0.0.1:{port}/1ABC.cif.gz"
    assert message.startswith(f"structure 1ABC is not in the cache {cache}, and could not download it ({url}: ")
    assert message.endswith(f"download {url} by hand and put it in {cache} as 1abc.cif.gz "
                            "(or in a folder of $SPI_STRUCTURE_PATH), or give the file's path")
    assert "\n" not in message


def test_offline_message_names_the_structure_path_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("SPI_STRUCTURE_PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    with pytest.raises(InputFileError, match=rf"^structure 1ABC is not in \$SPI_STRUCTURE_PATH \({tmp_path}/a:"
                       rf"{tmp_path}/b\) nor the cache {tmp_path}/cache, and could not download it"):
        fetch_pdb("1abc", cache_dir=tmp_path / "cache", urls=[f"http://127.0.0.1:{_closed_port()}/x"], timeout_s=5)


def test_structure_path_comes_before_the_cache_and_is_never_written(server, tmp_path, monkeypatch):
    local = tmp_path / "mine"
    local.mkdir()
    (local / "1CRN.cif").write_bytes(_entry_cif())
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "1crn.cif.gz").write_bytes(gzip.compress(b"data_not_used"))
    monkeypatch.setenv("SPI_STRUCTURE_PATH", f"{tmp_path / 'missing'}{os.pathsep}{local}")
    assert fetch_pdb("1crn", cache_dir=cache, urls=[server.url("rcsb/{ID}.cif.gz")]) == local / "1CRN.cif"
    assert _QuietHandler.requests == [] and sorted(p.name for p in local.iterdir()) == ["1CRN.cif"]
    assert len(load_structure("1crn", cache_dir=cache)) == N_ATOMS
    monkeypatch.setenv("SPI_STRUCTURE_PATH", str(tmp_path / "missing"))  # not there: the cache, then the network
    assert fetch_pdb("1crn", cache_dir=tmp_path / "c2", urls=[server.url("rcsb/{ID}.cif.gz")]) == (
        tmp_path / "c2" / "1crn.cif.gz")
    assert _QuietHandler.requests == ["/rcsb/1CRN.cif.gz"]


def test_files_put_in_the_cache_by_hand_are_found(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    assert cached_path("1crn", cache) is None
    (cache / "1CRN.pdb").write_text(_entry_pdb())
    assert cached_path("1crn", cache) == cache / "1CRN.pdb"
    assert fetch_pdb("1crn", cache_dir=cache, urls=[f"http://127.0.0.1:{_closed_port()}/x"]) == cache / "1CRN.pdb"


def test_not_a_pdb_id():
    with pytest.raises(InputFileError, match="not a PDB ID"):
        fetch_pdb("abcde")
