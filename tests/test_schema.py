"""spisim.schema's kinds for shorthand-rich files (the study file): mapping, any, section_map, words beside numbers,
optional sections, and tables without nesting."""

from dataclasses import dataclass
from typing import Any

import pytest

from spisim.errors import ConfigError
from spisim.schema import build, key, reference_rows


@dataclass
class _Entry:
    n: float | str | None = key(None, kind="float", nullable=True, minimum=1.0, choices=("auto",), doc="n")
    m: dict = key({}, kind="mapping", doc="m")
    a: Any = key(None, kind="any", nullable=True, doc="a")


@dataclass
class _Top:
    entries: dict = key({}, kind="section_map", cls=_Entry, doc="named entries")
    one: _Entry | None = key(None, kind="section", cls=_Entry, nullable=True, doc="optional")


def test_words_beside_numbers():
    assert build(_Entry, {"n": "auto"}, "e").n == "auto"
    assert build(_Entry, {"n": 3}, "e").n == 3.0 and build(_Entry, {"n": "2.5"}, "e").n == 2.5
    with pytest.raises(ConfigError, match=r"^e.n: expected a number or auto, got 'aut' \(did you mean auto\?\)$"):
        build(_Entry, {"n": "aut"}, "e")
    with pytest.raises(ConfigError, match=r"^e.n must be >= 1, got 0.5$"):
        build(_Entry, {"n": 0.5}, "e")


def test_mapping_any_and_section_map():
    raw = {"entries": {"x": {"m": {"k": [1, 2]}, "a": "file.yaml"}, 7: None}}
    top = build(_Top, raw, "")
    assert top.entries["x"].m == {"k": [1, 2]} and top.entries["x"].a == "file.yaml"
    assert top.entries["7"] == _Entry() and top.one is None  # an absent optional section stays null
    assert build(_Top, {"one": {}}, "").one == _Entry()
    with pytest.raises(ConfigError, match=r"^entries.x.mm: unknown key \(did you mean m\?\)$"):
        build(_Top, {"entries": {"x": {"mm": {}}}}, "")
    with pytest.raises(ConfigError, match=r"^entries.x.m: expected a mapping of keys, got 3$"):
        build(_Top, {"entries": {"x": {"m": 3}}}, "")
    with pytest.raises(ConfigError, match=r"^entries: expected a mapping of names to entries"):
        build(_Top, {"entries": ["x"]}, "")


def test_reference_rows_nested_or_not():
    nested = [r[0] for r in reference_rows(_Top)]
    assert nested == ["entries", "entries.NAME.n", "entries.NAME.m", "entries.NAME.a", "one.n", "one.m", "one.a"]
    flat = reference_rows(_Top, "top", nested=False)
    assert [r[:3] for r in flat] == [("top.entries", "mapping", "{}"), ("top.one", "section", "-")]
    assert reference_rows(_Entry)[0][1] == "number or auto"
