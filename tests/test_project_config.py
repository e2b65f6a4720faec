"""pyproject.toml: every third-party module the code imports is declared; a hung test fails instead of hanging CI."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _declared() -> set[str]:
    names = PYPROJECT["project"]["dependencies"] + [d for ds in PYPROJECT["project"]["optional-dependencies"].values()
                                                    for d in ds]
    return {re.split(r"[\s<>=!\[;~]", d, maxsplit=1)[0].lower() for d in names}


def test_pillow_is_declared_where_the_label_page_imports_it():
    assert "from PIL import" in (REPO / "spisim" / "shotimage.py").read_text()  # the drawing of spi label's shots
    assert "pillow" in _declared()


def test_a_hung_test_fails_after_the_configured_timeout(tmp_path):
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert options["timeout"] == 600 and "pytest-timeout" in " ".join(PYPROJECT["project"]["optional-dependencies"]
                                                                       ["test"])
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 2\n")  # the same key, a short limit
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hang():\n    time.sleep(60)\n")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=50)
    assert res.returncode == 1 and "Timeout" in res.stdout, res.stdout[-2000:]
