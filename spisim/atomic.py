"""Files written whole or not at all: a temporary file in the same folder, renamed onto the target when complete.

Every command's outputs go through here, so that a killed or failing run never leaves a half-written file under
a final name (an existing file is replaced only by a complete one; ``os.replace`` is atomic on POSIX within a
file system, which the same folder guarantees).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_name(path: str | Path) -> Path:
    """A hidden name beside ``path`` unique to this process: ``.NAME.tmp.PID``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp.{os.getpid()}")


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; renamed onto ``path`` when the block ends without an
    exception, removed otherwise (the exception propagates). ``fsync``: flush the file to disk before the
    rename (a result that must survive a power cut, e.g. a label file)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` whole or not at all; returns ``path``."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return path


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` whole or not at all; returns ``path``."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return path


def save_figure(fig: Any, path: str | Path, **savefig_kwargs: Any) -> Path:
    """A matplotlib figure saved as PNG to ``path`` whole or not at all; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig_kwargs)
    return path
