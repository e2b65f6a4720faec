"""`spi bench` and spinet.speed: impossible settings are refused before any timing; --json is written whole."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.main import spi
from spinet.speed import benchmark, default_bundle
from spisim.errors import ConfigError


@pytest.fixture(scope="module")
def bundle():
    return default_bundle(frame_shape=(2, 32, 64))


@pytest.mark.parametrize(("kw", "message"), [
    ({"min_seconds": -1.0}, "min_seconds must be a finite number of seconds >= 0, got -1.0"),
    ({"min_seconds": float("nan")}, "min_seconds must be a finite number"),
    ({"repeats": 0}, "need repeats >= 1"),
    ({"threads": 0}, "threads >= 1"),
    ({"batch_sizes": [4, 0]}, "batch sizes must be >= 1, got [4, 0]"),
])
def test_benchmark_refuses_impossible_settings(bundle, kw, message):
    with pytest.raises(ConfigError) as info:
        benchmark(bundle, **kw)
    assert message in str(info.value)


def test_zero_min_seconds_times_the_repeats_only(bundle):
    (row,) = benchmark(bundle, batch_sizes=[2], min_seconds=0.0, repeats=2, warmup=0)
    assert row.batch == 2 and row.shots_per_s > 0


def test_cli_refuses_a_negative_min_seconds_in_one_line():
    res = CliRunner().invoke(spi, ["bench", "--default", "--min-seconds", "-1"])
    assert res.exit_code == 2
    assert res.stderr.strip() == ("Error: Invalid value for '--min-seconds': -1.0 is not in the range x>=0.0. "
                                  "(see 'spi bench --help')")
    assert res.stdout == ""


def test_json_goes_to_a_writable_folder_whole(tmp_path):
    res = CliRunner().invoke(spi, ["bench", "--default", "--json", str(tmp_path / "no" / "b.json")])
    assert res.exit_code == 1 and res.stdout == ""  # refused before any timing
    assert res.stderr.strip() == f"Error: output folder {tmp_path / 'no'} does not exist"
    out = tmp_path / "b.json"
    res = CliRunner().invoke(spi, ["bench", "--default", "--frame-shape", "2,32,64", "--batch-sizes", "1",
                                   "--min-seconds", "0", "--repeats", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["frame_shape"] == [2, 32, 64] and len(doc["rows"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]
