"""spisim.atomic: outputs are written whole or not at all."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from spisim.atomic import atomic_path, save_figure, write_bytes_atomic, write_text_atomic  # noqa: E402


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp." in p.name)


def test_text_and_bytes_replace_the_target_whole(tmp_path):
    target = tmp_path / "a.csv"
    write_text_atomic(target, "x,y\r\n1,2\n")
    assert target.read_bytes() == b"x,y\r\n1,2\n"  # newlines as given, UTF-8
    write_text_atomic(target, "é\n", fsync=True)
    assert target.read_text(encoding="utf-8") == "é\n"
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("complete old report\n")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed half-way")
    assert target.read_text() == "complete old report\n"
    assert _leftovers(tmp_path) == []
    fresh = tmp_path / "new.md"
    with pytest.raises(KeyboardInterrupt), atomic_path(fresh) as tmp:
        tmp.write_text("partial")
        raise KeyboardInterrupt
    assert not fresh.exists() and _leftovers(tmp_path) == []


def test_the_temporary_is_hidden_beside_the_target_and_per_process(tmp_path):
    with atomic_path(tmp_path / "x.json") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.json.tmp.") and tmp.name.endswith(str(os.getpid()))
        tmp.write_text("{}")
    assert (tmp_path / "x.json").read_text() == "{}"


def test_save_figure_writes_a_png_whatever_the_temporary_name(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "plot.png", dpi=50)
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _leftovers(tmp_path) == []
