"""Studies: schema validation, perturbations, and a tiny study end to end through ``spi evaluate``.

The end-to-end study simulates its datasets with spisim's generator and reads "real" data from a file in
the real-data layout (3-D frames, no labels inside) written from shots simulated under other settings
(another particle, detector noise, dead pixels, another fluence), with labels in a separate file in the
``spi label`` log format.
"""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from spinet.study import (
    RunRecord,
    StudyResults,
    StudyRunner,
    human_records,
    load_study,
    missing_area_weights,
    parse_param,
    parse_study,
    resample_fluence,
)
from spisim.cxi import CXIReader
from spisim.errors import ConfigError, InputFileError

DETECTOR = {"preset": "square", "n_pixels": 32, "pixel_size": "700 um", "distance": "0.3 m"}
BEAM = {"photon_energy": "1.6 keV", "fluence": "1e12 photons/um^2", "focus_diameter": "1 um"}


def _manifest(particles: list[dict], **extra) -> dict:
    return {"beam": dict(BEAM), "detector": dict(DETECTOR), "particles": particles, "hits": "balanced",
            "output": {"shard_size": 64, "compression": "none"}, **extra}


def _write_real(tmp: Path, shots: int = 72) -> tuple[Path, Path, dict[int, str]]:
    """A "real" dataset: shells simulated at 2× the fluence with readout noise and dead pixels, stored as
    (N, SS, FS) frames without labels; labels of most shots in a separate ``index,label,time`` log."""
    from spisim.generate import generate
    from spisim.manifest import parse_manifest

    m = _manifest([{"shape": "shell", "radius": "32 nm", "thickness": "8 nm"}], seed=7, shots=shots,
                  noise={"readout": 0.3, "dead_pixels": 0.02})
    m["beam"]["fluence"] = "2e12 photons/um^2"
    sim = tmp / "other.h5"
    generate(parse_manifest(yaml.safe_dump(m)), sim)
    with CXIReader(sim) as r:
        frames = r.frames(np.arange(len(r)))[:, 0]
        pos, mask, names, codes = r.pixel_position[0], r.mask[0], r.class_names, r.hit_type
    real = tmp / "real.cxi"
    with h5py.File(real, "w") as f:
        f["entry_1/data_1/data"] = frames.astype(np.float32)
        det = f.create_group("entry_1/instrument_1/detector_1")
        det["pixel_position"] = pos
        det["mask"] = mask.astype(np.uint8)
    labels = {i: names[c] for i, c in enumerate(codes) if i % 9 != 8}  # every ninth shot unlabelled
    log = tmp / "real.labels.csv"
    with open(log, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "label", "time"])
        for i, lab in labels.items():
            if i == 3:  # a mistake, undone
                w.writerow([i, "multi" if lab != "multi" else "single", "2025-05-01T09:00:00.000+00:00"])
                w.writerow([i, "undo", "2025-05-01T09:00:01.000+00:00"])
            w.writerow([i, lab, "2025-05-01T09:00:02.000+00:00"])
    return real, log, labels


def _study(tmp: Path) -> dict:
    siamese_cfg = {"model": {"channels": [4, 8], "hidden": 16, "embedding_dim": 16},
                   "train": {"epochs": 1}, "data": {"m_per_class": 3, "batches_per_epoch": 3}}
    return {
        "name": "tiny",
        "description": "A tiny study for the test suite.",
        "parameters": {"real_data": None, "real_labels": None, "sim_shots": 96},
        "seeds": [0, 1],
        "k_shots": [1, 3],
        "preprocess": {"input_size": 24},
        "augment": {"enabled": False},
        "datasets": {
            "sim": {"simulate": _manifest([{"shape": "sphere", "radius": "30 nm"},
                                           {"shape": "spheroid", "radius": "25 nm", "polar_radius": "40 nm"}]),
                    "shots": "${sim_shots}", "seed": 1},
            "heldout": {"simulate": _manifest([{"shape": "spheroid", "radius": "22 nm", "polar_radius": "45 nm"}]),
                        "shots": 48,
                        "seed": 2, "test_fraction": 0.5},
            "real": {"path": "${real_data}", "labels": "${real_labels}", "test_fraction": 0.5},
        },
        "sources": {"sim": ["sim"], "real": ["real:train"],
                    "real+sim": ["sim", {"data": "real:train", "per_class": "k", "weight": 2}]},
        "tests": {"real": {"data": "real:test", "support": "real:train"},
                  "heldout": {"data": "heldout:test", "support": "heldout:train",
                              "sweep": {"missing_fraction": [0, 0.5]}}},
        "models": [{"name": "siamese", "kind": "siamese", "config": siamese_cfg},
                   {"name": "siamese-knn", "kind": "siamese", "rule": "knn", "embedding": "siamese"},
                   {"name": "siamese-sure", "kind": "siamese", "rule": "knn", "embedding": "siamese",
                    "min_ratio": 1.5},
                   {"name": "cnn", "kind": "cnn", "config": {"epochs": 1, "batches_per_epoch": 3, "m_per_class": 3,
                                                             "channels": [4, 8, 8], "hidden": 16}},
                   {"name": "lr", "kind": "classical", "config": {"n_rings": 8}}],
        "evaluation": {"device": "cpu", "throughput_shots": 16, "batch_size": 64},
    }


# ------------------------------------------------------------------------------------- validation


@pytest.fixture()
def base(tmp_path):
    real = tmp_path / "r.h5"
    real.write_bytes(b"")
    return tmp_path, {
        "datasets": {"a": {"path": str(real), "test_fraction": 0.5}, "b": {"path": str(real)}},
        "sources": {"s": ["a:train"]},
        "tests": {"t": {"data": "a:test", "support": "a:train"}},
        "models": [{"kind": "siamese"}, {"kind": "cnn"}, {"kind": "classical", "config": {"method": "gbt"}}],
    }


def _expect(raw: dict, tmp: Path, match: str, params: dict | None = None) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_study(raw, base_dir=tmp, params=params)


def test_a_valid_study_parses(base):
    tmp, raw = base
    s = parse_study(raw, base_dir=tmp, source="x.yaml")
    assert s.name == "x" and s.seeds == [0] and s.k_shots == [1, 5, 10, 20] and s.plot_k == 20
    assert [m.name for m in s.models] == ["siamese", "cnn", "classical"]
    assert s.datasets["a"].path == (tmp / "r.h5").resolve()
    assert s.tests["t"].support is not None and str(s.tests["t"].support) == "a:train"
    runner = StudyRunner(s, tmp / "out")
    assert len(runner.jobs()) == 3
    assert [len(runner.evaluations(j)) for j in runner.jobs()] == [4, 1, 1]  # siamese: one per k
    # a model's cache key follows what changes its training: the rule (it validates with it), not the ratio test
    job = runner.jobs()[0]
    key = runner._cache_key(job, [], [])
    job.model.min_ratio = 12.0
    assert runner._cache_key(job, [], []) == key
    job.model.rule = "knn"
    assert runner._cache_key(job, [], []) != key


def test_shorthands_read_as_their_long_forms(base):
    """A count of seeds, a source or test part given as a string, and the words `k` and `auto` beside numbers."""
    tmp, raw = base
    short = {**raw, "seeds": 3, "sources": {"s": "a:train", "t": {"data": "a:train", "per_class": "k"}},
             "tests": {"t": {"data": "a:test", "support": "a:train"}, "u": "b"},
             "models": [{"kind": "siamese", "min_ratio": "auto", "select": "loo", "rule": "auto"}, {"kind": "cnn"}]}
    long = {**short, "seeds": [0, 1, 2], "sources": {"s": [{"data": "a:train"}], "t": [{"data": "a:train",
                                                                                       "per_class": "k"}]},
            "tests": {"t": {"data": "a:test", "support": "a:train"}, "u": {"data": "b"}}}
    with pytest.raises(ConfigError, match=r"tests.u.support is required"):
        parse_study(short, base_dir=tmp)
    short["models"] = long["models"] = [{"kind": "cnn"}, {"kind": "classical", "name": "lr"}]
    a, b = parse_study(short, base_dir=tmp), parse_study(long, base_dir=tmp)
    assert a.seeds == b.seeds == [0, 1, 2]
    assert a.sources == b.sources and a.tests == b.tests and a.models == b.models
    assert a.sources["t"].components[0].per_class == "k" and a.sources["t"].k_dependent
    assert str(a.tests["u"].data) == "b" and a.tests["u"].support is None
    raw["models"][0].update(min_ratio="auto", select="loo", rule="auto")
    m = parse_study(raw, base_dir=tmp).models[0]
    assert (m.min_ratio, m.select, m.rule) == ("auto", "loo", "auto")
    raw["models"][0]["min_ratio"] = 12
    assert parse_study(raw, base_dir=tmp).models[0].min_ratio == 12.0


@pytest.mark.parametrize("change, match", [
    (lambda r: r.update(modles=[]), r"^modles: unknown key \(did you mean models\?\)$"),
    (lambda r: r["datasets"]["a"].update(labls="x"), r"^datasets.a.labls: unknown key \(did you mean labels\?\)$"),
    (lambda r: r["sources"].update(s=["b:train"]), r"b:train needs datasets.b.test_fraction > 0"),
    (lambda r: r["sources"].update(s=["c"]), r"no dataset 'c'"),
    (lambda r: r["sources"].update(s=[{"data": "a:train", "per_class": "q"}]),
     r"sources.s\[0\].per_class: expected a number or k, got 'q'"),
    (lambda r: r["tests"].update(t={"data": "a:test"}), r"tests.t.support is required"),
    (lambda r: r["tests"].update(t={"data": "a:test", "support": "a"}), r"support and data overlap"),
    (lambda r: r["tests"]["t"].update(sweep={"fluence_scale": [0, 1]}),
     r"tests.t.sweep.fluence_scale must be > 0, got \[0, 1\]"),
    (lambda r: r["tests"]["t"].update(sweep={"fluence_scale": [1], "missing_fraction": [0.5]}),
     r"tests.t.sweep: give one of fluence_scale, missing_fraction with a list of values"),
    (lambda r: r["tests"]["t"].update(sweep={"missing_fraction": [0.5, 1]}),
     r"tests.t.sweep.missing_fraction values must lie in \[0, 1\)"),
    (lambda r: r["datasets"]["a"].update(simulate="m.yaml"), r"datasets.a: give exactly one of path .* and simulate"),
    (lambda r: r["datasets"]["a"].update(shots=10), r"datasets.a.shots applies to simulated datasets only"),
    (lambda r: r["datasets"]["a"].update(test_fraction=1), r"datasets.a.test_fraction must lie in \[0, 1\), got 1"),
    (lambda r: r["datasets"].update({"a b": r["datasets"]["a"]}), r"datasets: name 'a b' may hold only"),
    (lambda r: r["sources"].update(s=[{"data": "a:train", "weight": 0}]), r"sources.s\[0\].weight must be > 0"),
    (lambda r: r["sources"].update(s=[{"per_class": 3}]), r"sources.s\[0\].data: missing value"),
    (lambda r: r["tests"].update(t="a:tst"), r"tests.t: part 'tst' of a must be train, test"),
    (lambda r: r.update(seeds=0), r"seeds must be >= 1, got 0"),
    (lambda r: r.update(label="type"), r"label: 'type' is not one of hit_type, structure_hit_type"),
    (lambda r: r.update(classes=["single"]), r"classes must be a list of at least two class names"),
    (lambda r: r.update(tests={}), r"tests: give at least one named test set"),
    (lambda r: r["models"][0].update(rule="auto"), r"models\[0\].rule: auto needs select: loo"),
    (lambda r: r["models"][0].update(min_ratio="aut"), r"models\[0\].min_ratio: expected a number or auto, got 'aut' "
                                                       r"\(did you mean auto\?\)"),
    (lambda r: r["models"][0].update(select="best"), r"models\[0\].select: 'best' is not one of loo"),
    (lambda r: r["models"][0].update(unlabelled="c"), r"models\[0\].unlabelled: no dataset 'c'"),
    (lambda r: r["models"][2].update(augment={"rotation": 0}), r"models\[2\].augment: the classical baseline is"),
    (lambda r: r["models"][1].update(sources=[]), r"models\[1\].sources must be a non-empty list"),
    (lambda r: r["tests"]["t"].update(sweep={"missing": [0.5]}), r"tests.t.sweep.missing: unknown key"),
    (lambda r: r["models"].append({"kind": "cnn"}), r"names must be unique"),
    (lambda r: r["models"].append({"kind": "svm"}),
     r"models\[3\].kind: 'svm' is not one of siamese, cnn, resnet, classical"),
    (lambda r: r["models"][0].update(config={"model": {"arch": "vgg"}}),
     r"models\[0\].config: model.arch: 'vgg' is not one of"),
    (lambda r: r["models"][0].update(config={"train": {"seed": 3}}), r"train.seed is set by the study"),
    (lambda r: r["models"][1].update(config={"epochs": 0}), r"models\[1\].config.epochs must be >= 1"),
    (lambda r: r["models"][2].update(config={"method": "svm"}), r"config.method: 'svm' is not one of logistic, gbt"),
    (lambda r: r.update(k_shots=[]), r"k_shots must be a non-empty list"),
    (lambda r: r["datasets"]["a"].update(rename={"x": 3}), r"datasets.a.rename.x must be a non-empty string"),
    (lambda r: r["models"][1].update(sources=["z"]), r"models\[1\].sources: no training source 'z'"),
    (lambda r: r.update(seeds=[1, 1]), r"seeds has duplicates"),
    (lambda r: r.update(preprocess={"scale": "cube"}), r"preprocess.scale: 'cube' is not one of"),
    (lambda r: r.update(evaluation={"device": "tpu"}), r"evaluation.device must be"),
    (lambda r: r.update(evaluation={"plot_k": 7}), r"plot_k 7 is not one of k_shots"),
    (lambda r: r["models"].append({"name": "k", "kind": "siamese", "rule": "knn", "embedding": "cnn"}),
     r"models\[3\].embedding: no earlier siamese model 'cnn'"),
    (lambda r: r["models"].insert(0, {"name": "k", "kind": "siamese", "embedding": "siamese"}),
     r"models\[0\].embedding: no earlier siamese model 'siamese'"),
    (lambda r: r["models"].append({"name": "k", "kind": "cnn", "embedding": "siamese"}),
     r"embedding applies to siamese models only"),
    (lambda r: r["models"].append({"name": "k", "kind": "siamese", "embedding": "siamese", "config": {"x": 1}}),
     r"a model with embedding takes the config of that model"),
    (lambda r: r["models"][0].update(rule="median"),
     r"models\[0\].rule: 'median' is not one of mean, prototype, nearest, knn, auto"),
    (lambda r: r["models"][0].update(min_ratio=0.9), r"models\[0\].min_ratio must be >= 1"),
    (lambda r: r["models"][1].update(min_ratio=2), r"models\[1\].min_ratio applies to siamese models only"),
])
def test_mistakes_are_named(base, change, match):
    tmp, raw = base
    change(raw)
    _expect(raw, tmp, match)


def test_parameters(base, tmp_path):
    tmp, raw = base
    raw["parameters"] = {"real_data": None, "frac": 0.5}
    raw["datasets"]["a"] = {"path": "${real_data}", "test_fraction": "${frac}"}
    _expect(raw, tmp, r"parameter real_data is not set \(used by datasets.a.path\): pass --param real_data=VALUE")
    _expect(raw, tmp, r"unknown parameter 'real_dat' \(did you mean real_data\?\)", {"real_dat": "x"})
    s = parse_study(raw, base_dir=tmp, params={"real_data": "r.h5", "frac": 0.25})
    assert s.datasets["a"].test_fraction == 0.25 and s.parameters == {"real_data": "r.h5", "frac": 0.25}
    with pytest.raises(InputFileError, match="datasets.a.path: no such file 'nothere.h5'"):
        parse_study(raw, base_dir=tmp, params={"real_data": "nothere.h5"})
    assert parse_param("k=20") == ("k", 20)
    assert parse_param("real_data=/x/y.cxi") == ("real_data", "/x/y.cxi")
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_param("novalue")


def test_load_study_from_yaml(base):
    tmp, raw = base
    (tmp / "s.yaml").write_text(yaml.safe_dump(raw))
    s = load_study(tmp / "s.yaml")
    assert s.name == "s" and len(s.models) == 3
    (tmp / "bad.yaml").write_text("datasets: [a\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(tmp / "bad.yaml")
    with pytest.raises(InputFileError, match="no such study file"):
        load_study(tmp / "none.yaml")


def test_inline_manifest_is_validated(tmp_path):
    raw = {"datasets": {"s": {"simulate": {"beam": {"photon_energy": "1 kg"}}}}, "sources": {"x": "s"},
           "tests": {"t": "s"}, "models": [{"kind": "cnn"}]}
    with pytest.raises(ConfigError, match="beam.photon_energy"):
        parse_study(raw, base_dir=tmp_path)
    raw["datasets"]["s"] = {"simulate": _manifest([{"shape": "sphere", "radius": "20 nm"}]), "labels": "l.csv"}
    with pytest.raises(ConfigError, match="labels applies to files"):
        parse_study(raw, base_dir=tmp_path)


# ------------------------------------------------------------------------------------- perturbations


def test_resample_fluence_thins_and_scales_counts():
    rng = np.random.default_rng(0)
    frames = rng.poisson(20.0, size=(4, 1, 50, 50)).astype(np.float32) * 3.0  # 3 ADU per photon
    idx = np.arange(4)
    low = resample_fluence(frames, 0.1, idx, photon_scale=3.0)
    assert np.all(low <= frames) and np.all(np.mod(low, 3.0) == 0)  # thinning never adds photons
    assert low.mean() / frames.mean() == pytest.approx(0.1, rel=0.03)
    high = resample_fluence(frames, 10.0, idx, photon_scale=3.0)
    assert high.mean() / frames.mean() == pytest.approx(10.0, rel=0.02)
    np.testing.assert_array_equal(resample_fluence(frames, 0.1, idx, 3.0), low)  # reproducible per shot
    assert not np.array_equal(resample_fluence(frames, 0.1, idx + 4, 3.0), low)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_missing_area_is_a_sector_of_the_given_fraction(fraction):
    n = 101
    c = np.arange(n) - n // 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    pos = np.stack([xx * 1e-4, yy * 1e-4, np.full((n, n), 0.1)], -1)[None].astype(float)
    w = missing_area_weights((1, n, n), pos, fraction, np.arange(3))
    r = np.hypot(xx, yy)
    disk = (r > 0) & (r <= 45)
    for i in range(3):
        lost = w[i, 0][disk] == 0
        assert lost.mean() == pytest.approx(fraction, abs=0.02)
    assert not np.array_equal(w[0], w[1])  # a random orientation per shot
    # the lost pixels form one angular sector: their angles span fraction × 360°
    phi = np.arctan2(pos[0, ..., 1], pos[0, ..., 0])[disk]
    lost_phi = np.sort(phi[w[0, 0][disk] == 0])
    gaps = np.diff(np.concatenate([lost_phi, lost_phi[:1] + 2 * np.pi]))
    assert 2 * np.pi - gaps.max() == pytest.approx(2 * np.pi * fraction, abs=0.1)


# ------------------------------------------------------------------------------------- end to end


def _is_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, monkeypatch):
    from cli.evaluate import command

    monkeypatch.chdir(tmp_path)
    real, log, labels = _write_real(tmp_path)
    study = tmp_path / "tiny.yaml"
    study.write_text(yaml.safe_dump(_study(tmp_path), sort_keys=False))
    out = tmp_path / "report"
    args = [str(study), "-o", str(out), "--param", f"real_data={real.name}", "--param", f"real_labels={log.name}"]

    dry = CliRunner().invoke(command, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "5 models × 3 training sources × 2 seeds" in dry.output
    assert "24 trainings" in dry.output and not out.exists()  # siamese-knn reuses the siamese networks
    assert "model siamese-knn: the networks of siamese, rule knn" in dry.output

    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "spi evaluate:" in result.output

    for name in ("report.md", "report.html", "metrics.json", "runs.csv", "summary.csv", "per_class.csv",
                 "throughput.csv", "datasets.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 100, name
    # a swept test is also drawn, and tabulated per class, at its unperturbed point
    for name in ("accuracy_vs_k", "confusion_real", "embedding_real", "pr_real", "sweep_heldout",
                 "confusion_heldout_missing_0", "embedding_heldout_missing_0", "pr_heldout_missing_0"):
        w, h = _is_png(out / "plots" / f"{name}.png")
        assert w > 300 and h > 200
    assert len(list((out / "cache" / "data").glob("*.h5"))) == 2  # the two simulated datasets, cached

    doc = json.loads((out / "metrics.json").read_text())
    assert doc["classes"] == ["no_hit", "single", "multi", "unintended"]
    runs = doc["runs"]
    # planned: seeds 2 × [siamese: (sim, real) × 3 test variants × 2 k + real+sim: 2 k × 3 variants;
    #                     cnn, lr: (sim, real) × 3 variants + real+sim 2 k × 3 variants]
    assert len(runs) == 2 * 3 * (2 * 3 * 2 + 2 * 3) + 2 * 2 * (2 * 3 + 2 * 3)
    # siamese-knn scores the siamese networks: same training, and with one support per class every rule agrees
    by_key = {(r["model"], r["source"], r["test"], r["k"], r["seed"]): r for r in runs}
    for key, r in by_key.items():
        if key[0] == "siamese-knn":
            twin = by_key[("siamese", *key[1:])]
            assert r["train_seconds"] == twin["train_seconds"] and r["n_train"] == twin["n_train"]
            if r["k"] == 1:
                assert r["accuracy"] == twin["accuracy"]
        if key[0] == "siamese-sure":  # the ratio test only moves shots of siamese-knn to "unknown"
            twin, cm = by_key[("siamese-knn", *key[1:])], np.array(r["confusion"])
            cm_twin = np.array(twin["confusion"])
            assert (cm[:, :4] <= cm_twin[:, :4]).all() and (cm.sum(axis=1) == cm_twin.sum(axis=1)).all()
            assert cm[:, 4].sum() == cm_twin[:, :4].sum() - cm[:, :4].sum() and cm_twin[:, 4].sum() == 0
            assert r["single_recall_at_98"] == twin["single_recall_at_98"]  # the same single-hit score
    assert sum(np.array(r["confusion"])[:, 4].sum() for r in runs if r["model"] == "siamese-sure") > 0
    for r in runs:  # the share answered is what the confusion matrix says
        cm = np.array(r["confusion"])
        assert r["answered"] == pytest.approx(cm[:, :4].sum() / cm.sum())
    ds = {(d["dataset"], d["part"]): d for d in doc["datasets"]}
    assert {r["n_test"] for r in runs if r["test"] == "real"} == {ds[("real", "test")]["shots"]}
    assert {r["n_test"] for r in runs if r["test_base"] == "heldout"} == {ds[("heldout", "test")]["shots"]}
    # every model scores single hits, so each run reads a recall at 98 % precision off its curve
    assert all(0.0 <= r["single_recall_at_98"] <= 1.0 for r in runs)
    for r in runs:  # every figure agrees with its confusion matrix
        cm = np.array(r["confusion"])
        assert cm.sum() == r["n_test"]
        assert r["accuracy"] == pytest.approx(np.trace(cm[:, :4]) / cm.sum())
    # the real labels came from the log (the undone mistake is not in force): real:train + real:test = labelled
    n_labelled = len(labels)
    assert ds[("real", "all")]["shots"] == n_labelled
    assert ds[("real", "train")]["shots"] + ds[("real", "test")]["shots"] == n_labelled
    truth_counts = {c: sum(1 for v in labels.values() if v == c) for c in doc["classes"]}
    assert {c: ds[("real", "all")][c] for c in doc["classes"]} == truth_counts
    # the classical baseline, trained on spheres and oblate spheroids, tells the hit types of held-out prolate ones
    lr = [r for r in runs if r["model"] == "lr" and r["source"] == "sim" and r["test"] == "heldout [missing 0]"]
    assert np.mean([r["accuracy"] for r in lr]) > 0.5  # chance is 0.25
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert {row["source"] for row in summary} == {"sim", "real", "real+sim"}
    assert all(int(row["seeds"]) == 2 for row in summary)
    md = (out / "report.md").read_text()
    for heading in ("## Datasets", "## Results", "## Targets", "| single recall at 98 % precision |", "| answered |",
                    "## Per particle", "## Inference speed", "## Figures", "plots/accuracy_vs_k.png"):
        assert heading in md
    # per particle: the unperturbed point of the simulated held-out test, every scored shot counted once per seed
    per = list(csv.DictReader(open(out / "per_structure.csv")))
    assert {row["test"] for row in per} == {"heldout [missing 0]"}
    n_heldout = ds[("heldout", "test")]["shots"]
    for (model, source) in {(row["model"], row["source"]) for row in per}:
        mine = [row for row in per if (row["model"], row["source"]) == (model, source)]
        assert sum(int(row["shots"]) for row in mine) == 2 * n_heldout
        matching = [r for r in runs if (r["model"], r["source"], r["test"]) == (model, source, "heldout [missing 0]")
                    and r["k"] in (None, 3)]
        correct = sum(np.trace(np.array(r["confusion"])[:, :4]) for r in matching)
        assert sum(int(row["correct"]) for row in mine) == correct
    assert {row["structure"] for row in per if row["class"] in ("single", "multi")} == {"spheroid-22nm"}
    assert {row["structure"] for row in per if row["class"] == "no_hit"} == {"(none)"}
    html = (out / "report.html").read_text()
    assert html.count("<img ") == 8 and "<table>" in html
    per_class_md = md.split("## Per-class precision and recall")[1].split("## Per particle")[0]
    assert "| cnn | sim | heldout [missing 0] | single |" in per_class_md
    assert "heldout [missing 0.5]" not in per_class_md and "| lr | real | real | multi |" in per_class_md
    tp = list(csv.DictReader(open(out / "throughput.csv")))
    assert {row["model"] for row in tp} == {"siamese", "siamese-knn", "siamese-sure", "cnn", "lr"}
    assert all(float(r["shots_per_s"]) > 0 for r in tp)

    # a second run reuses the cache: same numbers, no training, also after the report folder was moved
    # (the simulated datasets are named by their manifest's hash; a model trained again would get a new folder)
    trained = sorted(p.name for p in (out / "cache" / "models").iterdir())
    moved = tmp_path / "moved-report"
    out.rename(moved)
    rerun = CliRunner().invoke(command, [*args[:2], str(moved), *args[3:], "--quiet"])
    assert rerun.exit_code == 0, rerun.output
    assert sorted(p.name for p in (moved / "cache" / "models").iterdir()) == trained
    again = json.loads((moved / "metrics.json").read_text())
    assert [r["accuracy"] for r in again["runs"]] == [r["accuracy"] for r in runs]


@pytest.mark.slow
def test_fluence_sweep_resimulates_and_resamples(tmp_path):
    real, log, _ = _write_real(tmp_path, shots=40)
    raw = {
        "seeds": [0], "k_shots": [1], "preprocess": {"input_size": 24},
        "datasets": {"sim": {"simulate": _manifest([{"shape": "sphere", "radius": "30 nm"}]), "shots": 40,
                             "test_fraction": 0.5},
                     "real": {"path": str(real), "labels": str(log), "test_fraction": 0.5,
                              "rename": {"unintended": None, "multi": "several"}}},
        "sources": {"sim": "sim:train"},
        "tests": {"sim": {"data": "sim:test", "sweep": {"fluence_scale": [0.01, 1]}},
                  "real": {"data": "real:test", "sweep": {"fluence_scale": [0.01, 1]}}},
        "models": [{"name": "lr", "kind": "classical"}],
        "evaluation": {"device": "cpu", "throughput_shots": 0},
    }
    study = parse_study(raw, base_dir=tmp_path)
    runner = StudyRunner(study, tmp_path / "out")
    results = runner.run()
    files = sorted(p.name for p in (tmp_path / "out" / "cache" / "data").glob("*.h5"))
    assert len(files) == 2 and any("-x0.01-" in f for f in files)  # nominal and 1/100 fluence, same seed
    nominal, dim = (CXIReader(tmp_path / "out" / "cache" / "data" / f) for f in sorted(files, key=len))
    np.testing.assert_array_equal(nominal.hit_type, dim.hit_type)  # the same scenes
    hits = nominal.hit_type > 0
    ratio = dim.labels("total_photons")[hits].sum() / nominal.labels("total_photons")[hits].sum()
    assert ratio == pytest.approx(0.01, rel=1e-6)
    nominal.close()
    dim.close()
    real_all = next(d for d in results.datasets if (d["dataset"], d["part"]) == ("real", "all"))
    assert real_all["unintended"] == 0 and real_all["multi"] == 0 and real_all["several"] > 0  # renamed labels
    assert results.classes == ["no_hit", "single", "multi", "unintended", "several"]
    acc = {(r.test_base, r.sweep_value): r.metrics.accuracy for r in results.records}
    assert len(acc) == 4
    # a hundredfold drop in fluence must cost the classifier on simulated shots
    assert acc[("sim", 1.0)] > acc[("sim", 0.01)]


# ------------------------------------------------------------------------------------- human baseline


HUMAN_TRUTH = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1, 0, 3, 3])
HUMAN_GUESS = np.array([0, 0, 1, 1, 1, 2, 1, 2, 1, 0, 3, 2])


def _game_results(folder: Path) -> Path:
    """A ``spi label --game`` results file (through the game's own writer) for the shots above."""
    from spisim.labels import game_report, save_game_report

    jpath, _ = save_game_report(game_report(HUMAN_TRUTH, HUMAN_GUESS), folder / "alice.csv", {"seed": 3})
    return jpath


def test_human_baseline_is_validated(base):
    tmp, raw = base
    path = _game_results(tmp)
    assert path.name == "alice.results.json"
    (tmp / "broken.results.json").write_text('{"confusion": [[1, 0],')
    (tmp / "other.results.json").write_text(json.dumps({"class_names": ["a", "b"], "confusion": [[1, 2]]}))
    for entry, match in [
        ({"name": "alice", "results": "nothere.results.json", "test": "t"},
         r"human\[0\].results: no such file 'nothere.results.json'"),
        ({"name": "alice", "results": path.name, "test": "tt"},
         r"human\[0\].test: no test set 'tt' \(did you mean t\?"),
        ({"name": "alice", "results": "broken.results.json", "test": "t"}, r"human\[0\].results: .* is not valid JSON"),
        ({"name": "alice", "results": "other.results.json", "test": "t"}, r"needs confusion, a 2×2 matrix"),
        ({"name": "cnn", "results": path.name, "test": "t"}, r"human: names must differ"),
        ({"name": "alice", "results": path.name}, r"human\[0\].test: missing"),
        ({"name": "alice", "results": path.name, "tst": "t"}, r"human\[0\].tst: unknown key \(did you mean test\?\)"),
    ]:
        _expect({**raw, "human": [entry]}, tmp, match)
    s = parse_study({**raw, "human": [{"name": "alice", "results": path.name, "test": "t"}]}, base_dir=tmp)
    assert s.human[0].n_shots == len(HUMAN_TRUTH) and s.human[0].path == path.resolve()
    with pytest.raises(ConfigError, match=r"class 'unintended' of alice.results.json is not a class of the study"):
        human_records(s, ["no_hit", "single", "multi"])


def test_human_baseline_in_tables_and_metrics(base):
    from spinet.metrics import classification_metrics
    from spinet.report import summarize, write_report

    tmp, raw = base
    path = _game_results(tmp)
    raw["human"] = [{"name": "alice", "results": path.name, "test": "t"}]
    s = parse_study(raw, base_dir=tmp, source="x.yaml")
    classes = ["no_hit", "single", "multi", "unintended"]
    (rec,) = human_records(s, classes)
    # by hand: right 3 of 4 no_hit, 3 of 3 single, 2 of 3 multi, 1 of 2 unintended; 5 guessed single, 3 right
    assert rec.kind == "human" and rec.k is None and rec.metrics.n == 12
    assert rec.metrics.accuracy == pytest.approx(9 / 12)
    assert rec.metrics.single_precision == pytest.approx(3 / 5) and rec.metrics.single_recall == pytest.approx(1.0)
    assert rec.metrics.macro_f1 == pytest.approx(np.mean([6 / 7, 6 / 8, 4 / 6, 2 / 3]))
    # the study's class order may differ from the game's: the names decide
    (shuffled,) = human_records(s, ["unintended", "multi", "single", "no_hit"])
    assert shuffled.metrics.accuracy == pytest.approx(9 / 12)
    assert shuffled.metrics.recall == pytest.approx(rec.metrics.recall)

    model = RunRecord("cnn", "cnn", "s", "t", "t", None, None, None, 0,
                      classification_metrics(HUMAN_TRUTH, np.zeros_like(HUMAN_TRUTH), classes), 20, 1.0)
    summary = summarize([model, rec])
    human_row = next(r for r in summary if r["model"] == "alice")
    assert human_row["seeds"] == 1 and human_row["accuracy"].mean == pytest.approx(0.75)
    results = StudyResults(s, classes, [model, rec], {}, [], [], {}, 1.0, "cpu", "2026-01-01T00:00:00+00:00")
    out = tmp / "report"
    written = write_report(results, out)
    md = (out / "report.md").read_text()
    assert "| alice | — | t | — | 75.0 % |" in md, md
    assert "human baselines" in md
    doc = json.loads((out / "metrics.json").read_text())
    (row,) = [r for r in doc["summary"] if r["model"] == "alice"]
    assert row["kind"] == "human" and row["k"] is None and row["seeds"] == 1
    assert row["accuracy"]["mean"] == pytest.approx(0.75)
    assert row["single_precision"]["mean"] == pytest.approx(0.6)
    (run,) = [r for r in doc["runs"] if r["model"] == "alice"]
    assert np.array(run["confusion"])[:, :4].tolist() == [[3, 1, 0, 0], [0, 3, 0, 0], [0, 1, 2, 0], [0, 0, 1, 1]]
    summary_csv = {r["model"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert float(summary_csv["alice"]["accuracy_mean"]) == pytest.approx(0.75) and summary_csv["alice"]["k"] == ""
    assert _is_png(written["plots/accuracy_vs_k.png"])[0] > 300
    # the confusion figure shows the one model only: one panel of (1 + 0.55 × 4 + 0.8) in at 110 dpi, not two
    assert _is_png(written["plots/confusion_t.png"])[0] == pytest.approx(440, abs=2)


def test_every_shipped_study_and_its_manifests_validate(tmp_path):
    """The studies in studies/ parse, and each simulated dataset's manifest (with its overrides) validates."""
    from spinet.study import load_study
    from spisim.manifest import parse_manifest

    repo = Path(__file__).resolve().parents[1]
    files = sorted((repo / "studies").glob("*.yaml"))
    assert len(files) >= 6
    real = tmp_path / "real.cxi"
    real.write_bytes(b"")  # only its existence is checked when a study is read
    manifest = repo / "data_manifests" / "pr772_pnccd.yaml"
    for path in files:
        params = {"real_data": str(real), "real_labels": str(real)} if "real_data" in path.read_text() else None
        # parameters naming files that a recipe makes first (studies/sim_to_real/make_standin.sh): stand-ins
        declared = yaml.safe_load(path.read_text()).get("parameters") or {}
        for key, value in declared.items():
            if isinstance(value, str) and value.startswith("runs/") and not (repo / value).exists():
                params = {**(params or {}), key: str(manifest if value.endswith(".yaml") else real)}
        study = load_study(path, params)
        assert study.models, path.name
        if "${seeds}" in path.read_text():  # the full-size studies take --param seeds=N for a shorter first look
            assert study.seeds == list(range(study.parameters["seeds"])) and len(study.seeds) >= 2, path.name
            assert load_study(path, {**(params or {}), "seeds": 1}).seeds == [0], path.name
        for spec in study.datasets.values():
            if spec.simulated:
                parse_manifest(spec.manifest or "", source=spec.manifest_source, base_dir=spec.manifest_dir,
                               overrides=spec.overrides)


# ------------------------------------------------------------------------------------- label spaces, k pools


@pytest.mark.slow
def test_binary_test_labels_k_beyond_a_pool_and_supports_never_scored(tmp_path):
    """A "real" run labelled single / not_single beside 4-class simulated data: its tests are scored single vs
    rest (a 4-class model's other answers count as not_single); k values beyond what a pool holds are drawn as
    the pool allows, recorded as such (with the asked k) and noted; a test never scores its support shots, even
    when another dataset names the same file, nor a frame without a finite pixel."""
    from spinet.report import write_report
    from spinet.synthetic import write_toy_dataset

    sim = write_toy_dataset(tmp_path / "sim.h5", 48, seed=1)
    real = write_toy_dataset(tmp_path / "real.h5", 48, seed=2)
    with CXIReader(real) as r:
        codes = r.hit_type.copy()
    with h5py.File(real, "r+") as f:  # two shots lost by the detector: all NaN
        f["entry_1/data_1/data"][5] = np.nan
        f["entry_1/data_1/data"][6] = np.nan
    (tmp_path / "real.csv").write_text("index,label\n" + "".join(
        f"{i},{'single' if c == 1 else 'not_single'}\n" for i, c in enumerate(codes)))
    tiny = {"model": {"channels": [4, 8], "hidden": 16, "embedding_dim": 8}, "train": {"epochs": 1},
            "data": {"m_per_class": 3, "batches_per_epoch": 2}}
    raw = {
        "seeds": [0], "k_shots": [2, 50, 60], "preprocess": {"input_size": 16}, "augment": {"enabled": False},
        "datasets": {"sim": {"path": str(sim), "test_fraction": 0.5},
                     "real": {"path": str(real), "labels": str(tmp_path / "real.csv"), "test_fraction": 0.5},
                     "again": {"path": str(real), "labels": str(tmp_path / "real.csv")}},
        "sources": {"sim": ["sim:train"], "real-k": [{"data": "real:train", "per_class": "k"}]},
        "tests": {"sim": {"data": "sim:test", "support": "sim:train"},
                  "real": {"data": "real:test", "support": "real:train"},
                  "again": {"data": "again", "support": "real:train"}},
        "models": [{"name": "siamese", "kind": "siamese", "config": tiny},
                   {"name": "lr", "kind": "classical", "config": {"n_rings": 6}}],
        "evaluation": {"device": "cpu", "throughput_shots": 0, "plot_k": 50},
    }
    study = parse_study(raw, base_dir=tmp_path)
    runner = StudyRunner(study, tmp_path / "out")
    res = runner.run()
    assert res.classes == ["no_hit", "single", "multi", "unintended", "not_single"]
    pool = runner.data.pool_counts(study.tests["real"].support)
    assert set(pool) == {"single", "not_single"}
    cap = min(pool.values())
    assert 2 < cap < 50
    sim_cap = min(runner.data.pool_counts(study.tests["sim"].support).values())
    by = {(r.model, r.source, r.test, r.k): r for r in res.records}
    assert len(by) == len(res.records)  # one record per (model, source, test, k): 50 and 60 drew the same shots
    # the Siamese model trained on simulated shots, with real supports: binary, k as really drawn
    assert sorted(k for (m, s, t, k) in by if (m, s, t) == ("siamese", "sim", "real")) == [2, cap]
    rec = by[("siamese", "sim", "real", cap)]
    assert rec.k_asked == [50, 60] and rec.asked == (50, 60) and rec.at_k(50) and not rec.at_k(2)
    assert by[("siamese", "sim", "sim", sim_cap)].k_asked == [50, 60]
    for r in res.records:
        names = r.metrics.class_names
        cm = np.array(r.metrics.confusion)
        assert cm.sum() == r.metrics.n and r.metrics.accuracy == pytest.approx(np.trace(cm[:, :-1]) / cm.sum())
        if r.test_base == "sim":
            assert names == res.classes and r.label_space == "5 classes"
        else:
            assert names == ["single", "not_single"] and r.label_space == "binary"
    # the 4-class logistic regression trained on simulated shots answers single vs rest on the real test
    lr = by[("lr", "sim", "real", None)]
    truth = codes[runner.data.labelled("real").indices[runner.data.part(study.tests["real"].data)]]
    assert lr.metrics.support == {"single": int((truth == 1).sum()), "not_single": int((truth != 1).sum())}
    # real-k takes k per class of real:train: k = 50 and 60 train on the same shots (k = cap), trained once
    assert sorted(k for (m, s, t, k) in by if (m, s, t) == ("lr", "real-k", "real")) == [2, cap]
    assert sum(1 for label in res.train_logs if label.startswith("siamese on real-k")) == 2
    # supports never scored: "again" is the whole real file, its support part real:train is left out
    n_labelled = len(codes)
    support_idx = set(runner.data.labelled("real").indices[runner.data.part(study.tests["real"].support)].tolist())
    n_support = sum(pool.values())
    assert len(support_idx) == n_support
    n_bad = len({5, 6} - support_idx)
    assert {r.metrics.n for r in res.records if r.test == "again"} == {n_labelled - n_support - n_bad}
    test_idx = set(runner.data.labelled("real").indices[runner.data.part(study.tests["real"].data)].tolist())
    n_bad_test = len({5, 6} & test_idx)
    assert {r.metrics.n for r in res.records if r.test == "real"} == {len(test_idx) - n_bad_test}
    if n_bad:
        assert any(f"test again: {n_bad} shots have no finite pixel" in n for n in res.notes), res.notes
    # a lost frame in a training pool is left out of training (spinet.data would refuse it), with a note
    n_bad_train = len({5, 6} & support_idx)
    assert n_bad_train  # the fixture puts one in real:train (the pool of real-k)
    assert any(f"real:train: {n_bad_train} shots have no finite pixel" in n and "never trained on" in n
               for n in res.notes), res.notes
    assert any("real:train holds single" in n and "k = 50, 60" in n for n in res.notes), res.notes
    # the report states the label space, the shots, the real k and the note
    out = tmp_path / "report"
    write_report(res, out)
    md = (out / "report.md").read_text()
    assert "| labels | shots |" in md and "| single / not_single |" in md and "Note: test real:" in md
    per_class = list(csv.DictReader(open(out / "per_class.csv")))
    assert {row["class"] for row in per_class if row["test"] == "real"} == {"single", "not_single"}
    summary = {(row["model"], row["source"], row["test"], row["k"]): row
               for row in csv.DictReader(open(out / "summary.csv"))}
    assert summary[("siamese", "sim", "real", str(cap))]["k_asked"] == "50;60"
    assert summary[("siamese", "sim", "real", str(cap))]["label_space"] == "binary"
    from cli.evaluate import headlines

    lines = headlines(res)
    real_line = next(line for line in lines if line.startswith("test real "))
    n_real = len(test_idx) - n_bad_test
    assert f"(single / not_single, n = {n_real} shots)" in real_line
    assert _is_png(out / "plots" / "confusion_real.png")[0] > 100


# ------------------------------------------------------------------------------------- sim to real


@pytest.mark.slow
def test_sim_to_real_models_at_toy_size(tmp_path):
    """The sim-to-real pieces of a study at toy size: a dataset relabelled single / not_single, training on
    unlabelled frames, fine-tuning from another model's network with k real shots, AdaBN, the choice of checkpoint,
    rule and ratio test by leave-one-out over the supports (with the estimate recorded), and the photon-count
    baselines fitted on the supports."""
    from spinet.fewshot import RULES
    from spinet.report import write_report
    from spinet.synthetic import write_toy_dataset

    sim = write_toy_dataset(tmp_path / "sim.h5", 48, seed=1)
    real = write_toy_dataset(tmp_path / "real.h5", 48, seed=2)
    with CXIReader(real) as r:
        codes = r.hit_type.copy()
    (tmp_path / "real.csv").write_text("index,label\n" + "".join(
        f"{i},{'single' if c == 1 else 'not_single'}\n" for i, c in enumerate(codes)))
    tiny = {"model": {"channels": [4, 8], "hidden": 16, "embedding_dim": 8}, "train": {"epochs": 2, "keep_every": 1},
            "data": {"m_per_class": 3, "batches_per_epoch": 2}}
    raw = {
        "seeds": [0], "k_shots": [2, 4], "preprocess": {"input_size": 16}, "augment": {"rotation": 90},
        "datasets": {"sim": {"path": str(sim)}, "simb": {"path": str(sim), "binary": True},
                     "real": {"path": str(real), "labels": str(tmp_path / "real.csv"), "test_fraction": 0.5}},
        "sources": {"sim": ["sim"], "sim+real": ["simb", {"data": "real:train", "per_class": "k", "weight": 0.5}]},
        "tests": {"real": {"data": "real:test", "support": "real:train"}},
        "models": [
            {"name": "siamese", "kind": "siamese", "rule": "nearest", "config": tiny, "sources": ["sim"]},
            {"name": "siamese-choose", "kind": "siamese", "embedding": "siamese", "select": "loo", "rule": "auto",
             "adapt_bn": True, "min_ratio": "auto"},
            {"name": "siamese-uda", "kind": "siamese", "rule": "nearest", "sources": ["sim"], "unlabelled": "real",
             "config": {**tiny, "adapt": {"consistency": 1.0, "align": 1.0, "batch": 4}}},
            {"name": "siamese-ft", "kind": "siamese", "rule": "nearest", "init": "siamese", "sources": ["sim+real"],
             "config": {**tiny, "train": {"epochs": 1, "lr": 3e-4}}},
            {"name": "photons", "kind": "photons"},
            {"name": "photons-1", "kind": "photons", "config": {"rule": "threshold"}},
        ],
        "evaluation": {"device": "cpu", "throughput_shots": 0, "val_fraction": 0.2},
    }
    study = parse_study(raw, base_dir=tmp_path)
    runner = StudyRunner(study, tmp_path / "out")
    assert any("trainings" in line for line in runner.describe())
    res = runner.run()
    assert res.classes == ["no_hit", "single", "multi", "unintended", "not_single"]
    assert set(runner.data.raw_labels("simb")[1]) == {"single", "not_single"}
    by = {(r.model, r.source, r.k): r for r in res.records}
    assert {(m, s) for m, s, _ in by} == {("siamese", "sim"), ("siamese-choose", "sim"), ("siamese-uda", "sim"),
                                         ("siamese-ft", "sim+real"), ("photons", "supports"),
                                         ("photons-1", "supports")}
    n_test = len(runner.data.part(study.tests["real"].data))
    for r in res.records:
        assert r.metrics.n == n_test and r.label_space == "binary"
        assert r.estimate is not None and 0 < r.estimate["n"] <= 2 * r.k
        lo, hi = r.estimate["interval_95"]
        assert lo <= r.estimate["accuracy"] <= hi
    for k in (2, 4):
        choose = by[("siamese-choose", "sim", k)].estimate
        assert choose["checkpoint"] in ("best", "epoch-001", "epoch-002") and choose["rule"] in RULES
        assert choose["min_ratio"] is None or choose["min_ratio"] >= 1
        assert by[("siamese", "sim", k)].estimate["checkpoint"] == "best"
        # a choice made with the supports is estimated nested (no winner's curse); no choice: plain leave-one-out
        assert choose["method"].startswith("nested leave-one-out")
        assert by[("siamese", "sim", k)].estimate["method"].startswith("leave-one-out over")
        assert "photons" in by[("photons", "supports", k)].estimate["rule_text"]
    # the adapted and fine-tuned networks: the unlabelled terms in the log, the init from the siamese network
    uda = res.train_logs["siamese-uda on sim (seed 0)"]
    assert all(np.isfinite(row["adapt_loss"]) for row in uda)
    ft_dirs = [p for p in (tmp_path / "out" / "cache" / "models").iterdir() if p.name.startswith("siamese-ft")]
    assert len(ft_dirs) == 2  # one per k
    cfg = yaml.safe_load((ft_dirs[0] / "config.yaml").read_text())
    assert cfg["train"]["init"].endswith("best.pt") and "siamese-sim-s0" in cfg["train"]["init"]
    out = tmp_path / "report"
    write_report(res, out)
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert all(row["est_n"] for row in runs) and {row["source"] for row in runs} >= {"supports"}
    md = (out / "report.md").read_text()
    assert "estimated from the supports" in md
    targets = md.split("## Targets on single / not_single tests")[1].split("##")[0]
    rows = [line for line in targets.splitlines() if line.startswith("| siamese")]
    assert len(rows) == 4 and all("| 4 |" in line for line in rows)  # one per Siamese model, at k = 4 (<= 5)


def test_the_evaluation_keys_in_the_docs_are_the_schema():
    """docs/evaluation.md's key tables (the study file's sections, `evaluation`, the
    baselines' configs) are generated from the declarations."""
    from spinet.baselines import SupervisedConfig
    from spinet.study import EvaluationSpec
    from spinet.study.kinds import ClassicalConfig, PhotonCountConfig
    from spinet.study.sections import TABLES, reference_markdown
    from spisim.schema import reference_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    for cls in (EvaluationSpec, SupervisedConfig, ClassicalConfig, PhotonCountConfig):
        assert reference_table(cls) in doc, f"docs/evaluation.md: the table of {cls.__name__} is out of date"
    assert reference_markdown() in doc, "docs/evaluation.md: the study file's key tables are out of date"
    assert len(TABLES) == 6 and all(f"`{where}." in reference_markdown() for _, _, where, _ in TABLES if where)
