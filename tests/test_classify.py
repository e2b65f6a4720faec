"""spi classify: label spaces (binary single / not_single), supports never scored, mixed supports, k checks,
invalid frames, atomic outputs; and the label-space summary checked by hand."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import spi
from spinet.checkpoint import ModelBundle
from spinet.config import Config
from spinet.inference import SupportSpec, build_support, build_supports, classify_file, require_data
from spinet.labelspace import LabelSpace, Summary, choose_label_space, score
from spinet.synthetic import write_toy_dataset
from spinet.train import train
from spisim.cxi import HIT_TYPES, CXIReader
from spisim.errors import InputFileError, OutputFileError


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny trained model, a 4-class simulated file and a "real" file labelled single / not_single."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("classify")
    train_file = write_toy_dataset(d / "train.h5", 80, seed=11)
    test_file = write_toy_dataset(d / "test.h5", 40, seed=12)
    cfg = Config.from_dict({
        "preprocess": {"input_size": 16}, "augment": {"enabled": False},
        "model": {"channels": [4, 8], "hidden": 16, "embedding_dim": 8},
        "data": {"sources": [{"path": str(train_file)}], "batches_per_epoch": 2, "m_per_class": 3},
        "train": {"out": str(d / "run"), "epochs": 1, "tensorboard": False, "progress": False, "patience": 0},
    })
    train(cfg)
    with CXIReader(test_file) as r:
        codes = r.hit_type.copy()
    binary = d / "binary.csv"
    binary.write_text("index,label\n" + "".join(f"{i},{'single' if c == 1 else 'not_single'}\n"
                                                for i, c in enumerate(codes)))
    yield {"dir": d, "model": d / "run" / "best.pt", "train": train_file, "test": test_file, "codes": codes,
           "binary": binary}
    torch.set_num_threads(before)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run(*args) -> object:
    return CliRunner().invoke(spi, ["classify", *map(str, args)])


# ------------------------------------------------------------------------------------------- label space by hand


def test_summary_numbers_by_hand():
    truth = ["single", "single", "single", "not_single", "not_single", "not_single", "not_single", "single"]
    pred = ["single", "multi", "single", "single", "no_hit", "unintended", "unknown", "not_single"]
    space = choose_label_space(truth, HIT_TYPES)
    assert space == LabelSpace(("single", "not_single"), True)
    m = score(truth, pred, space)
    # mapped: single ← single; multi, no_hit, unintended, not_single → not_single; unknown stays (a wrong answer)
    # true single:  single, not_single, single, not_single → 2 right;  true not_single: single, ns, ns, unknown
    assert m.n == 8 and m.class_names == ["single", "not_single"]
    assert m.confusion == [[2, 2, 0], [1, 2, 1]]
    assert m.accuracy == pytest.approx(4 / 8)
    assert m.single_precision == pytest.approx(2 / 3) and m.single_recall == pytest.approx(2 / 4)
    summary = Summary(space, m, {"support": 3, "invalid": 1, "unlabelled": 0})
    text = summary.headline()
    assert text.startswith("binary (single / not_single), n = 8 scored shots: accuracy 0.500 (4 of 8)")
    assert "single precision 0.667 (2 of 3)" in text and "single recall 0.500 (2 of 4)" in text
    assert text.endswith("not scored: 3 support, 1 invalid")
    header, rows = summary.confusion_rows()
    assert header == ["true \\ predicted", "single", "not_single", "unknown", "shots"]
    assert rows == [["single", "2", "2", "0", "4"], ["not_single", "1", "2", "1", "4"]]
    doc = summary.to_dict()
    assert doc["n_scored"] == 8 and doc["label_space"]["binary"] and doc["confusion"]["counts"] == m.confusion
    # the full space keeps every class; a not_single answer to a 4-class truth is a column of its own (wrong)
    full = choose_label_space(["single", "multi"], ["single", "multi", "not_single"])
    assert full.classes == ("single", "multi", "not_single") and not full.binary
    m4 = score(["single", "multi", "multi"], ["single", "not_single", "multi"], full)
    assert m4.accuracy == pytest.approx(2 / 3) and m4.single_precision == 1.0 and m4.single_recall == 1.0
    # automatic choice
    assert choose_label_space(None, ["single", "not_single"]).binary
    assert not choose_label_space(None, HIT_TYPES).binary
    assert choose_label_space(["multi", "single"], HIT_TYPES, binary=True).binary
    assert not choose_label_space(["single"], HIT_TYPES).binary  # single alone says nothing of a binary labelling


# ------------------------------------------------------------------------------------------- supports


def test_supports_in_the_data_file_are_never_scored(env, tmp_path):
    # the README's old example: the support file is the data file, every labelled shot a support, rule nearest
    res = _run(env["model"], env["test"], "--support", env["test"], "--rule", "nearest", "-o", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    assert "accuracy 1.000" not in res.output
    assert "no shot scored" in res.output and "40 support" in res.output
    assert all(r["support"] == "1" for r in _rows(tmp_path / "p.csv"))
    # k supports per class drawn from the data file: the other shots are scored, the supports are marked
    res = _run(env["model"], env["test"], "--support", f"{env['test']},k=2,seed=5", "--rule", "nearest",
               "-o", tmp_path / "q.csv")
    assert res.exit_code == 0, res.output
    rows = _rows(tmp_path / "q.csv")
    marked = [int(r["index"]) for r in rows if r["support"] == "1"]
    bundle = ModelBundle.load(env["model"])
    support = build_support(bundle, env["test"], k=2, seed=5)
    assert sorted(marked) == sorted(support.members[str(env["test"].resolve())].tolist()) and len(marked) == 8
    doc = json.loads((tmp_path / "q.summary.json").read_text())
    s = doc["summary"]
    assert s["n_scored"] == 32 and s["not_scored"]["support"] == 8 and doc["n_support_shots"] == 8
    scored = [r for r in rows if r["support"] == "0"]
    assert s["accuracy"] == pytest.approx(np.mean([r["label"] == r["truth"] for r in scored]))
    assert "n = 32 scored shots" in res.output


def test_mixed_supports_give_a_binary_summary(env, tmp_path):
    out = tmp_path / "mixed.csv"
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=5",
               "--support", f"{env['test']},labels={env['binary']},k=3,seed=1", "--labels", env["binary"], "-o", out)
    assert res.exit_code == 0, res.output
    assert "support from" in res.output and "single 3, not_single 3" in res.output
    doc = json.loads(out.with_name("mixed.summary.json").read_text())
    assert doc["support_classes"] == ["no_hit", "single", "multi", "unintended", "not_single"]
    assert [p["k"] for p in doc["supports"]] == [5, 3]
    s = doc["summary"]
    assert s["label_space"] == {"name": "binary", "binary": True, "classes": ["single", "not_single"]}
    assert s["n_scored"] == 34 and s["not_scored"]["support"] == 6
    rows = _rows(out)
    assert {r["label"] for r in rows} <= {"single", "not_single"} and {r["truth"] for r in rows} <= {
        "single", "not_single"}
    assert {r["class"] for r in rows} <= {"no_hit", "single", "multi", "unintended", "not_single"}
    scored = [r for r in rows if r["support"] == "0"]
    cm = np.zeros((2, 3), int)
    for r in scored:
        cm[["single", "not_single"].index(r["truth"]), ["single", "not_single"].index(r["label"])] += 1
    assert s["confusion"]["counts"] == cm.tolist()
    tp, pp, tt = cm[0, 0], cm[:, 0].sum(), cm[0].sum()
    assert s["single_precision"] == pytest.approx(tp / pp) and s["single_recall"] == pytest.approx(tp / tt)
    assert "binary (single / not_single), n = 34 scored shots" in res.output


def test_binary_is_automatic_for_binary_labels_and_asked_with_binary(env, tmp_path):
    bundle = ModelBundle.load(env["model"])
    sup = build_support(bundle, env["train"], k=4, seed=0)
    auto = classify_file(bundle, env["test"], sup, truth_labels=env["binary"])
    assert auto.space.binary and auto.summary.space.binary and auto.summary.n == 40
    four = classify_file(bundle, env["test"], sup)  # the file's own 4-class labels
    assert not four.space.binary and four.summary.metrics.class_names == list(HIT_TYPES)
    asked = classify_file(bundle, env["test"], sup, binary=True, output=tmp_path / "b.csv")
    assert asked.space.binary and set(asked.counts) == {"single", "not_single", "invalid"}
    # single vs rest of the same answers: what the 4-class run says, mapped
    single = four.summary.metrics.confusion[1][1]
    tp, pp, tt = asked.summary.single_counts()
    assert tp == single and tt == int((env["codes"] == 1).sum())
    assert asked.summary.metrics.accuracy >= four.summary.metrics.accuracy
    rows = _rows(tmp_path / "b.csv")
    assert {r["truth"] for r in rows} == {"single", "not_single"}
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=4", "--no-binary", "--labels",
               env["binary"])
    assert res.exit_code == 0, res.output
    assert "5 classes (no_hit, single, multi, unintended, not_single), n = 40" in res.output
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=4", "--binary")
    assert res.exit_code == 0 and "binary (single / not_single), n = 40 scored shots" in res.output


def test_k_larger_than_a_class_holds_is_an_error_listing_the_counts(env, tmp_path):
    (tmp_path / "few.csv").write_text("index,label\n0,single\n1,single\n2,not_single\n3,not_single\n4,not_single\n")
    res = _run(env["model"], env["test"], "--support", f"{env['test']},labels={tmp_path / 'few.csv'},k=3")
    assert res.exit_code == 1
    line = res.output.strip()
    assert "\n" not in line and "k = 3 supports per class is more than" in line
    assert "single 2, not_single 3" in line and "give k <= 2" in line
    res = _run(env["model"], env["test"], "--support-from", env["train"], "-k", "50")
    assert res.exit_code == 1 and "no_hit 20, single 20, multi 20, unintended 20" in res.output
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=2,colour=red")
    assert res.exit_code == 1 and "bad option 'colour=red'" in res.output
    res = _run(env["model"], env["test"], "--support", env["train"], "--support", env["test"], "--support-labels",
               env["binary"])
    assert res.exit_code == 2 and "FILE,labels=L" in res.output


# ------------------------------------------------------------------------------------------- invalid frames


def _with_nans(src: Path, dst: Path) -> tuple[Path, np.ndarray]:
    """A copy of ``src`` whose shot 0 is all NaN and shot 1 has NaN and inf over a block of pixels."""
    with CXIReader(src) as r:
        frames = r.frames(np.arange(len(r))).astype(np.float32)
        pos, mask, codes = r.pixel_position, r.mask, r.hit_type
    bad = np.zeros(frames.shape[1:], bool)
    bad[0, 10:16, 15:30] = True
    frames[0] = np.nan
    frames[1][bad] = np.nan
    frames[1][0, 12, 20] = np.inf
    with h5py.File(dst, "w") as f:
        f["entry_1/data_1/data"] = frames
        det = f.create_group("entry_1/instrument_1/detector_1")
        det["pixel_position"] = pos
        det["mask"] = mask.astype(np.uint8)
    (dst.parent / (dst.stem + ".csv")).write_text(
        "index,label\n" + "".join(f"{i},{HIT_TYPES[c]}\n" for i, c in enumerate(codes)))
    return dst, bad


def test_a_frame_without_finite_pixels_is_invalid_and_non_finite_pixels_are_masked(env, tmp_path):
    data, bad = _with_nans(env["test"], tmp_path / "nan.cxi")
    labels = tmp_path / "nan.csv"
    bundle = ModelBundle.load(env["model"])
    sup = build_support(bundle, env["train"], k=4, seed=0)
    res = classify_file(bundle, data, sup, truth_labels=labels, output=tmp_path / "p.csv", rule="nearest")
    rows = _rows(tmp_path / "p.csv")
    assert rows[0]["label"] == "invalid" and rows[0]["distance_single"] == ""
    assert all(r["label"] != "invalid" for r in rows[1:])
    assert res.n_invalid == 1 and res.counts["invalid"] == 1
    assert res.summary.n == 39 and res.summary.left_out["invalid"] == 1
    # shot 1 (some NaN and inf pixels) classifies as the same frame with those pixels masked in the file
    with CXIReader(data) as r:
        frame, pos, mask = r.frames([1]), r.pixel_position, r.mask
    masked = tmp_path / "masked.cxi"
    with h5py.File(masked, "w") as f:
        f["entry_1/data_1/data"] = np.nan_to_num(frame, nan=7.0, posinf=7.0)  # any value: those pixels are masked
        det = f.create_group("entry_1/instrument_1/detector_1")
        det["pixel_position"] = pos
        det["mask"] = (mask | bad).astype(np.uint8)
    again = classify_file(bundle, masked, sup, output=tmp_path / "m.csv", rule="nearest")
    (row,) = _rows(tmp_path / "m.csv")
    assert row["label"] == rows[1]["label"] and again.n_invalid == 0
    for c in sup.class_names:
        assert float(row[f"distance_{c}"]) == pytest.approx(float(rows[1][f"distance_{c}"]), rel=1e-5, abs=1e-7)
    # the NaN frame is not the same as zeros there (the old behaviour)
    zeros = bundle.preprocessor(torch.from_numpy(np.nan_to_num(frame, nan=0.0, posinf=0.0)))
    kept = bundle.preprocessor(torch.from_numpy(frame))
    assert not torch.allclose(zeros, kept)
    # a support frame without finite pixels is refused
    (tmp_path / "s.csv").write_text("index,label\n0,single\n2,multi\n")
    with pytest.raises(InputFileError, match="support shot 0 .* has no finite pixel"):
        build_support(bundle, data, labels=tmp_path / "s.csv")
    # a file where no frame has a finite pixel: nothing to classify, and nothing written
    assert require_data(bundle, data) == 40
    empty = tmp_path / "empty.cxi"
    with h5py.File(empty, "w") as f:
        f["entry_1/data_1/data"] = np.where(np.arange(frame.size).reshape(frame.shape) % 2, np.nan, np.inf).repeat(
            3, axis=0).astype(np.float32)
        det = f.create_group("entry_1/instrument_1/detector_1")
        det["pixel_position"] = pos
        det["mask"] = mask.astype(np.uint8)
    for check in (lambda: require_data(bundle, empty),
                  lambda: classify_file(bundle, empty, sup, output=tmp_path / "e.csv")):
        with pytest.raises(InputFileError, match=r"empty.cxi: no shot has a finite pixel .* \(3 shots\)"):
            check()
    assert not (tmp_path / "e.csv").exists() and not (tmp_path / "e.csv.tmp").exists()


def test_exports_keep_matching_with_non_finite_pixels(env, tmp_path):
    from spinet.export import check_onnx, export_model, inference_module

    bundle = ModelBundle.load(env["model"])
    with CXIReader(env["test"]) as r:
        frames = torch.from_numpy(r.frames(range(3)).astype(np.float32))
    frames[0, 0, 5:9, 10:20] = float("nan")
    frames[1, 1, 3, 4] = float("inf")
    frames[2] = float("nan")
    ref = inference_module(bundle)(frames).detach()
    assert torch.isfinite(ref).all()
    ts_path = export_model(env["model"], "torchscript", tmp_path / "m.ts.pt")
    with pytest.warns(DeprecationWarning, match="torch.jit.load"):  # the warning is torch's own (recent torch)
        ts = torch.jit.load(str(ts_path))
    assert torch.allclose(ts(frames), ref, atol=1e-6)
    assert check_onnx(export_model(env["model"], "onnx", tmp_path / "m.onnx"), bundle, frames) < 1e-5


# ------------------------------------------------------------------------------------------- outputs


def test_outputs_are_written_whole_or_not_at_all(env, tmp_path, monkeypatch):
    from spinet import fewshot

    bundle = ModelBundle.load(env["model"])
    sup = build_supports(bundle, [SupportSpec(env["train"], None, 3, 0)])
    out = tmp_path / "p.csv"
    calls = {"n": 0}
    real = fewshot.FewShotClassifier.predict

    def failing(self, emb):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # interrupted after the first batch was written
        return real(self, emb)

    monkeypatch.setattr(fewshot.FewShotClassifier, "predict", failing)
    with pytest.raises(KeyboardInterrupt):
        classify_file(bundle, env["test"], sup, output=out, batch_size=8)
    assert calls["n"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == []  # no final file, no leftover
    monkeypatch.setattr(fewshot.FewShotClassifier, "predict", real)
    classify_file(bundle, env["test"], sup, output=out, batch_size=8)
    assert len(_rows(out)) == 40 and (tmp_path / "p.summary.json").is_file()
    with pytest.raises(OutputFileError, match="exists: give --overwrite"):
        classify_file(bundle, env["test"], sup, output=out)
    before = out.read_text()
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=3", "-o", out)
    assert res.exit_code == 1 and "p.csv exists: give --overwrite" in res.output and out.read_text() == before
    (tmp_path / "p.csv").unlink()
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=3", "-o", out)
    assert res.exit_code == 1 and "p.summary.json exists" in res.output
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=3", "-o", out, "--overwrite")
    assert res.exit_code == 0 and len(_rows(out)) == 40
    # the output folder is checked before any work (the model file is not even read)
    res = _run(tmp_path / "no-model.pt", env["test"], "--support", env["train"], "-o", tmp_path / "nope" / "p.csv")
    assert res.exit_code == 1 and "no folder" in res.output and "model" not in res.output


# ------------------------------------------------------------------------------------------- few labels


def test_estimate_from_the_supports_adabn_and_selection(env, tmp_path):
    """The supports' leave-one-out estimate (n and Wilson interval) is printed and stored; --adapt re-estimates the
    batch-norm statistics on a file (other distances); --select --rule auto --min-ratio auto choose among a run
    folder's kept checkpoints and the rules by leave-one-out, and the chosen supports are still never scored."""
    from spinet.selection import wilson_interval

    d = tmp_path / "run"
    cfg = Config.from_dict({
        "preprocess": {"input_size": 16}, "augment": {"enabled": False},
        "model": {"channels": [4, 8], "hidden": 16, "embedding_dim": 8},
        "data": {"sources": [{"path": str(env["train"])}], "batches_per_epoch": 2, "m_per_class": 3},
        "train": {"out": str(d), "epochs": 2, "tensorboard": False, "progress": False, "patience": 0,
                  "keep_every": 1},
    })
    train(cfg)
    sup = f"{env['test']},labels={env['binary']},k=4,seed=2"
    plain = _run(d / "best.pt", env["test"], "--support", sup, "--labels", env["binary"], "--rule", "nearest",
                 "-o", tmp_path / "plain.csv")
    assert plain.exit_code == 0, plain.output
    doc = json.loads((tmp_path / "plain.summary.json").read_text())
    est = doc["estimate"]
    assert est["n"] == 8 and 0 <= est["correct"] <= 8  # 4 + 4 supports of the data file, each by the other 7
    assert est["interval_95"] == pytest.approx(list(wilson_interval(est["correct"], 8)))
    assert f"({est['correct']} of 8; 95 % Wilson interval" in plain.output
    assert doc["summary"]["n_scored"] == 32

    adapted = _run(d / "best.pt", env["test"], "--support", sup, "--labels", env["binary"], "--rule", "nearest",
                   "--adapt", env["test"], "-o", tmp_path / "adapted.csv")
    assert adapted.exit_code == 0, adapted.output
    assert "AdaBN: batch-norm statistics re-estimated on 40 frames" in adapted.output
    d0 = [r["distance_single"] for r in _rows(tmp_path / "plain.csv")]
    d1 = [r["distance_single"] for r in _rows(tmp_path / "adapted.csv")]
    assert d0 != d1

    chosen = _run(d, env["test"], "--select", "--rule", "auto", "--min-ratio", "auto", "--support", sup,
                  "--labels", env["binary"], "-o", tmp_path / "chosen.csv")
    assert chosen.exit_code == 0, chosen.output
    assert "chosen by leave-one-out over the supports" in chosen.output and "3 checkpoints x 4 rules" in chosen.output
    doc = json.loads((tmp_path / "chosen.summary.json").read_text())
    table = doc["selection"]
    assert len(table) == 12 and sum(r["chosen"] for r in table) == 1
    best = next(r for r in table if r["chosen"])
    assert best["correct"] == max(r["correct"] for r in table)
    assert doc["rule"] == best["rule"] and doc["model"].endswith(best["candidate"])
    assert doc["summary"]["n_scored"] == 32 and doc["summary"]["not_scored"]["support"] == 8
    bad = _run(d / "best.pt", env["test"], "--select", "--support", sup)
    assert bad.exit_code != 0 and "run folder" in bad.output


def test_run_classify_is_spi_classify_without_click(env, tmp_path):
    """spinet.classify.run_classify does the work of spi classify: plain arguments, a message sink, a progress
    callback; DATA is checked before any support is built."""
    from spinet.classify import run_classify

    lines, steps, totals = [], [], []
    specs = [SupportSpec.parse(f"{env['train']},k=3", seed=2)]
    done = run_classify(env["model"], env["test"], specs, rule="auto", output=tmp_path / "p.csv", batch_size=16,
                        say=lines.append, progress=steps.append, on_start=totals.append)
    assert totals == [40] and sum(steps) == 40 and len(steps) == 3
    assert done.result.n_shots == 40 and done.selection is not None and done.rule == done.selection.chosen.rule
    assert any(line.startswith(f"support from {env['train']}: no_hit 3, single 3") for line in lines), lines
    cli = _run(env["model"], env["test"], "--support", f"{env['train']},k=3,seed=2", "--rule", done.rule, "-o",
               tmp_path / "q.csv", "--batch-size", 16)
    assert cli.exit_code == 0, cli.output
    assert _rows(tmp_path / "q.csv") == _rows(tmp_path / "p.csv")
    with pytest.raises(InputFileError, match="nope.h5"):
        run_classify(env["model"], tmp_path / "nope.h5", [SupportSpec(Path("/no/support.h5"))])


# ------------------------------------------------------------------------------------------- label-free check


def test_supports_from_two_files_get_a_label_free_agreement_check(env, tmp_path):
    """Simulated 4-class supports beside real single / not_single ones: each file's supports alone read DATA's
    frames single vs rest, and the share of frames they agree on is printed and stored; the same supports twice
    (a copy of the file) agree on every frame."""
    out = tmp_path / "p.csv"
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=5",
               "--support", f"{env['test']},labels={env['binary']},k=3", "--labels", env["binary"], "-o", out)
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("label-free check"))
    share = float(line.split(" on ")[1].split(" %")[0])
    n = int(line.split(" % of ")[1].split()[0])
    assert 0.0 <= share <= 100.0 and n == 40 - 6  # the test file's 6 supports are not read
    doc = json.loads((tmp_path / "p.summary.json").read_text())
    (a,) = doc["support_agreement"]
    assert a["frames"] == n and a["agreement"] == pytest.approx(share / 100, abs=5e-4)
    assert Path(a["first"]).name == "train.h5" and Path(a["other"]).name == "test.h5"

    copy = tmp_path / "copy.h5"
    shutil.copy(env["train"], copy)
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=5,seed=3",
               "--support", f"{copy},k=5,seed=3")
    assert res.exit_code == 0, res.output
    assert "same single-vs-rest answer as those of train.h5 alone on 100.0 % of 40 frames" in res.output
    # one support file: no check
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=5")
    assert res.exit_code == 0 and "label-free check" not in res.output


def test_a_shot_drawn_by_two_support_sets_is_an_error(env):
    """The same shot twice among the supports would read itself in leave-one-out (distance 0: always right)."""
    res = _run(env["model"], env["test"], "--support", f"{env['train']},k=5,seed=0",
               "--support", f"{env['train']},k=5,seed=0")
    assert res.exit_code == 1 and "is drawn by two --support sets" in res.output
    assert len(res.output.strip().splitlines()) == 1
