"""Training end to end on toy shots: beats chance on held-out shots, checkpoints round-trip, resume is exact,
exports agree, live simulation trains, the CLI commands run, DDP with gloo keeps ranks in sync."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import spi
from spinet.checkpoint import ModelBundle, save_checkpoint
from spinet.config import Config
from spinet.export import check_onnx, export_model, inference_module
from spinet.inference import build_support, classify_file
from spinet.synthetic import ToySimulator, write_toy_dataset
from spinet.train import _epoch_batches, prepare_data, train
from spisim.cxi import CXIReader
from spisim.errors import ConfigError, InputFileError

TINY_MODEL = {"channels": [4, 8], "hidden": 32, "embedding_dim": 16}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models on a shared machine run fastest (and steadiest) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("spinet")
    return {
        "train": write_toy_dataset(d / "train.h5", 160, seed=11),
        "test": write_toy_dataset(d / "test.h5", 60, seed=12),
        "dir": d,
    }


def config(out: Path, source: Path, **sections) -> Config:
    d = {
        "preprocess": {"input_size": 32},
        "augment": {"rotation": 0, "flip": True, "shift": 0, "zoom": 0, "fluence_scale": [0.5, 2.0]},
        "data": {"sources": [{"path": str(source)}], "batches_per_epoch": 8, "m_per_class": 5},
        "train": {"out": str(out), "epochs": 4, "tensorboard": False, "progress": False, "patience": 0},
    }
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return Config.from_dict(d)


@pytest.fixture(scope="module")
def trained(files):
    out = files["dir"] / "run"
    result = train(config(out, files["train"], train={"tensorboard": True}))
    return result


@pytest.mark.slow
def test_short_training_beats_chance_on_held_out_shots(trained, files):
    assert trained.epochs_run == 4 and (trained.out / "best.pt").is_file()
    rows = list(csv.DictReader(open(trained.out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["train_loss"]) >= 0 and int(r["triplets"]) > 0 for r in rows)
    assert any(p.name.startswith("events.out.tfevents") for p in (trained.out / "tensorboard").iterdir())
    bundle = ModelBundle.load(trained.out / "best.pt")
    support = build_support(bundle, files["train"], k=10, seed=0)
    result = classify_file(bundle, files["test"], support, output=files["dir"] / "pred.csv", batch_size=16)
    assert result.n_shots == 60 and sum(result.counts.values()) == 60
    # four balanced classes: chance is 0.25
    assert result.accuracy is not None and result.accuracy >= 0.6, result
    with open(files["dir"] / "pred.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and set(rows[0]) == {
        "index",
        "label",
        "support",
        "truth",
        "distance_no_hit",
        "distance_single",
        "distance_multi",
        "distance_unintended",
    }
    assert np.mean([r["label"] == r["truth"] for r in rows]) == pytest.approx(result.accuracy)


@pytest.mark.slow  # shares the trained fixture
def test_classify_cli_knn_rule_distances_match_the_embeddings(trained, files):
    from spinet.fewshot import FewShotClassifier
    from spinet.inference import iter_embeddings

    out = files["dir"] / "knn.csv"
    result = CliRunner().invoke(spi, ["classify", str(trained.out / "best.pt"), str(files["test"]), "--support-from",
                                      str(files["train"]), "-k", "6", "--seed", "3", "--rule", "knn", "-o", str(out)])
    assert result.exit_code == 0, result.output
    bundle = ModelBundle.load(trained.out / "best.pt")
    support = build_support(bundle, files["train"], k=6, seed=3)
    with CXIReader(files["test"]) as r:
        emb = torch.cat([e for _, e in iter_embeddings(bundle, r)])
    ref = FewShotClassifier(support.embeddings, support.classes, support.class_names, "knn").distances(emb)
    rows = list(csv.DictReader(open(out)))
    got = np.array([[float(row[f"distance_{c}"]) for c in support.class_names] for row in rows])
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-6)
    assert [row["label"] for row in rows] == [support.class_names[i] for i in ref.argmin(dim=1).tolist()]


@pytest.mark.slow  # shares the trained fixture (about 10 s)
def test_checkpoint_round_trip_and_exports_give_identical_embeddings(trained, files, tmp_path):
    bundle = ModelBundle.load(trained.out / "best.pt")
    with CXIReader(files["test"]) as r:
        frames = torch.from_numpy(r.frames(range(6)))
    emb = inference_module(bundle)(frames).detach()
    assert emb.shape == (6, 128) and torch.allclose(emb.norm(dim=1), torch.ones(6))
    save_checkpoint(
        tmp_path / "copy.pt",
        config=bundle.config,
        class_names=bundle.class_names,
        model=bundle.model,
        preprocessor=bundle.preprocessor,
        geometry=bundle.geometry,
        epoch=0,
    )
    again = ModelBundle.load(tmp_path / "copy.pt")
    assert torch.equal(inference_module(again)(frames).detach(), emb)
    ts_path = export_model(trained.out / "best.pt", "torchscript", tmp_path / "m.ts.pt")
    with pytest.warns(DeprecationWarning, match="torch.jit.load"):  # the warning is torch's own (recent torch)
        ts = torch.jit.load(str(ts_path))
    assert torch.allclose(ts(frames), emb, atol=1e-6)
    onnx_path = export_model(trained.out / "best.pt", "onnx", tmp_path / "m.onnx")
    assert check_onnx(onnx_path, bundle, frames) < 1e-5
    import onnx

    # another detector: the table is rebuilt from the saved preprocess config; the training one is reused
    from spinet.synthetic import toy_geometry

    pos, mask = toy_geometry(ss=24, fs=40, gap=6)
    other = bundle.preprocessor_for(mask.shape, pos, mask)
    assert other is not bundle.preprocessor and other.frame_shape == (2, 24, 40) and other.size == 32
    with CXIReader(files["test"]) as r:
        assert bundle.preprocessor_for(r.frame_shape, r.pixel_position, r.mask) is bundle.preprocessor
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert '"class_names": ["no_hit", "single", "multi", "unintended"]' in meta["spinet"]


@pytest.mark.parametrize("miner", ["random_semihard", "batch_hard"])
def test_resume_continues_identically(files, tmp_path, miner):
    kw = dict(
        model=TINY_MODEL,
        augment={"rotation": 30, "zoom": 0.05, "occlusion_patches": 1},
        loss={"miner": miner},
        data={"batches_per_epoch": 3},
    )
    straight = train(config(tmp_path / "a", files["train"], train={"epochs": 3, "keep_every": 2}, **kw))
    first = train(config(tmp_path / "b", files["train"], train={"epochs": 1, "keep_every": 2}, **kw))
    assert first.epochs_run == 1
    resumed = train(config(tmp_path / "b", files["train"], train={"epochs": 3, "keep_every": 2}, **kw), resume=True)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    # only last.pt, what --resume continues from, carries the optimizer state; best.pt and kept epochs do not
    assert "optimizer_state" in a and "optimizer_state" in b
    kept = sorted(p.name for p in (tmp_path / "a" / "epochs").iterdir())
    assert kept == ["epoch-002.pt", "epoch-003.pt"]
    for path in [tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt", *(tmp_path / "a" / "epochs").iterdir()]:
        doc = torch.load(path, weights_only=True)
        assert "optimizer_state" not in doc and doc["model_state"].keys() == a["model_state"].keys(), path
    assert a["model_state"].keys() == b["model_state"].keys()
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    assert [h["val_accuracy"] for h in straight.history] == [h["val_accuracy"] for h in resumed.history]
    # and the training really moved the weights
    assert straight.history[0]["train_loss"] != straight.history[-1]["train_loss"]


def test_run_training_without_click_reports_steps_and_leaves_no_folder_for_bad_data(files, tmp_path):
    """spinet.train.run_training is what spi train runs: plain arguments, a message sink and a progress callback;
    the data are checked before the run folder is made."""
    from spinet.train import run_training

    out = tmp_path / "run"
    overrides = {"data.sources": [{"path": str(files["train"])}], "train.out": str(out), "train.epochs": 2,
                 "data.batches_per_epoch": 3, "preprocess.input_size": 16, "train.tensorboard": False,
                 "train.patience": 0, **{f"model.{k}": v for k, v in TINY_MODEL.items()}}
    lines, steps, totals = [], [], []
    res = run_training(None, overrides, say=lines.append, progress=steps.append, on_start=totals.append)
    assert res.epochs_run == 2 and totals == [6] and steps == [1] * 6
    assert sum("epoch " in line and "validation accuracy" in line for line in lines) == 2, lines
    with pytest.raises(ConfigError, match="already holds a run"):
        run_training(None, overrides)
    res = run_training(None, {"train.out": str(out), "train.epochs": 3, "train.progress": False}, resume=True,
                       say=lines.append, progress=steps.append, on_start=totals.append)
    assert res.epochs_run == 3 and totals == [6] and len(steps) == 6  # train.progress off: no calls
    with pytest.raises(ConfigError, match="cannot change train.lr"):
        run_training(None, {"train.out": str(out), "train.lr": 0.5}, resume=True)
    bad = {**overrides, "data.sources": [{"path": str(tmp_path / "nope.h5")}], "train.out": str(tmp_path / "bad")}
    with pytest.raises(InputFileError, match="nope.h5"):
        run_training(None, bad, say=lines.append)
    assert not (tmp_path / "bad").exists()


def test_live_simulation_training_and_mixed_batches(files, tmp_path):
    sim = ToySimulator(seed=21)
    cfg = config(
        tmp_path / "s",
        files["train"],
        model=TINY_MODEL,
        data={
            "sources": [{"simulate": "toy"}],
            "stream_shots_per_epoch": 60,
            "max_val_shots": 24,
            "support_k": 3,
            "m_per_class": 3,
        },
    )
    res = train(cfg.with_overrides({"train.epochs": 2}), simulator=sim)
    assert res.epochs_run == 2 and all(h["steps"] >= 3 for h in res.history)
    assert 0.0 <= res.history[-1]["val_accuracy"] <= 1.0
    # mixing a file (weight 2) with the stream (weight 1): 4 shots per class from the file, 2 from the stream
    mixed = cfg.with_overrides(
        {
            "data.sources": [{"path": str(files["train"]), "weight": 2.0}, {"simulate": "toy", "weight": 1.0}],
            "data.m_per_class": 6,
        }
    )
    data = prepare_data(mixed, simulator=sim)
    from spinet.data import ClassBalancedBatchSampler

    sampler = ClassBalancedBatchSampler(data.train.labels, 4, 2, seed=0)
    index = {n: i for i, n in enumerate(data.class_names)}
    batches = list(_epoch_batches(mixed, data, 0, sampler, index, 4, 2, 2))
    assert len(batches) == 2
    for x, y in batches:
        assert x.shape == (24, 1, 32, 32)
        assert torch.bincount(y[:16]).tolist() == [4, 4, 4, 4] and torch.bincount(y[16:]).tolist() == [2, 2, 2, 2]


def test_real_data_without_geometry_and_label_file(files, tmp_path):
    """A real-style file: (N, SS, FS) frames only, no geometry, no labels inside; labels from a CSV by name
    (custom class names, allowed by data.classes). Panels are stacked, training runs, classify answers in the label
    file's names."""
    import h5py

    with CXIReader(files["train"]) as r:
        frames = r.frames(range(40))[:, 0]  # one panel, as a detector without geometry
        truth = [["ice", "none", "dust", "virus"][c] for c in r.hit_type[:40]]
    real = tmp_path / "real.cxi"
    with h5py.File(real, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=frames)
    (tmp_path / "labels.csv").write_text("index,label\n" + "".join(f"{i},{t}\n" for i, t in enumerate(truth)))
    cfg = config(
        tmp_path / "real_run",
        real,
        model=TINY_MODEL,
        preprocess={"input_size": 16},
        train={"epochs": 1},
        data={"batches_per_epoch": 2, "m_per_class": 3},
    )
    cfg = cfg.with_overrides({"data.sources": [{"path": str(real), "labels": str(tmp_path / "labels.csv")}]})
    with pytest.raises(InputFileError, match="unknown class 'ice'"):  # names beyond the known ones must be listed
        train(cfg)
    cfg = cfg.with_overrides({"data.classes": ["dust", "ice", "none", "virus"]})
    res = train(cfg)
    bundle = ModelBundle.load(res.out / "best.pt")
    assert bundle.class_names == ["dust", "ice", "none", "virus"]
    assert bundle.preprocessor.frame_shape == (1, 20, 44)
    support = build_support(bundle, real, labels=tmp_path / "labels.csv", k=2)
    out = classify_file(bundle, real, support, truth_labels=tmp_path / "labels.csv", output=tmp_path / "p.csv")
    assert out.n_shots == 40 and set(out.counts) == {"dust", "ice", "none", "virus", "invalid"}
    assert out.accuracy is not None and out.summary.n == 32 and out.n_support == 8  # the supports are not scored


def test_one_shot_class_warns_and_validation_accuracy_states_n(files, tmp_path):
    """A run labelled single / not_single with a single hit labelled once: the class trains no triplet (a warning
    says so), not_single is a class, and every validation accuracy comes with its number of shots."""
    from rich.console import Console

    with CXIReader(files["train"]) as r:
        codes = r.hit_type[:48]
    first_single = int(np.nonzero(codes == 1)[0][0])
    rows = [f"{i},{'single' if i == first_single else 'not_single'}" for i, c in enumerate(codes) if c != 1]
    rows.append(f"{first_single},single")
    (tmp_path / "l.csv").write_text("index,label\n" + "\n".join(rows) + "\n")
    cfg = config(tmp_path / "run", files["train"], model=TINY_MODEL, train={"epochs": 2},
                 data={"batches_per_epoch": 2, "m_per_class": 3, "support_k": 2})
    cfg = cfg.with_overrides({"data.sources": [{"path": str(files["train"]), "labels": str(tmp_path / "l.csv")}]})
    console = Console(file=io.StringIO(), width=300)
    res = train(cfg, console=console)
    text = console.file.getvalue()
    assert ModelBundle.load(res.out / "best.pt").class_names == ["single", "not_single"]
    assert "warning: class single has only 1 training shot: triplets need 2 shots of a class" in text
    n_val = res.n_val
    assert n_val > 0 and text.count("validation accuracy ") == 2, text
    assert len(re.findall(rf"validation accuracy \d\.\d{{3}} \(n = {n_val}\)", text)) == 2, text
    assert "class not_single" not in text  # plenty of shots: no warning


@pytest.mark.slow
def test_cli_train_classify_bench(files, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    (tmp_path / "real_labels.csv").write_text(
        "index,label\n"
        + "".join(f"{i},{lab}\n" for i, lab in enumerate(["single", "no_hit", "multi", "unintended"] * 5))
    )
    res = runner.invoke(
        spi,
        [
            "train",
            "--data",
            str(files["train"]),
            "--data",
            f"{files['test']},labels={tmp_path / 'real_labels.csv'},weight=0.5",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--input-size",
            "24",
            "--no-progress",
            "--set",
            "data.batches_per_epoch=2",
            "--set",
            "model.channels=[4,8]",
            "--set",
            "model.hidden=16",
            "--set",
            "train.tensorboard=false",
            "--export",
            "onnx",
        ],
    )
    assert res.exit_code == 0, res.output
    # held out: 6 of the 40 shots per class of train.h5, and 1 per class of the 20 labelled test.h5 shots
    assert re.search(r"best validation accuracy \d\.\d{3} \(n = 28, epoch 1\)", res.output), res.output
    assert (out / "best.onnx").is_file()
    assert "test.h5: 16 training shots" in res.output  # 20 labelled, one per class held out
    pred = tmp_path / "p.csv"
    res = runner.invoke(
        spi,
        [
            "classify",
            str(out / "best.pt"),
            str(files["test"]),
            "--support-from",
            str(files["train"]),
            "-k",
            "3",
            "-o",
            str(pred),
            "--batch-size",
            "7",
            "--unknown-threshold",
            "3.9",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "scored against the labels: 4 classes" in res.output and "n = 60 scored shots" in res.output
    assert "unknown" in res.output
    assert len(pred.read_text().splitlines()) == 61
    res = runner.invoke(spi, ["classify", str(out / "best.pt"), str(files["test"]), "--support-from",
                              str(files["train"]), "-k", "3", "--rule", "nearest", "--min-ratio", "1e9",
                              "-o", str(pred), "--overwrite"])  # p.csv exists: replaced only when asked
    assert res.exit_code == 0, res.output
    assert {row.split(",")[1] for row in pred.read_text().splitlines()[1:]} == {"unknown"}  # nothing that sure
    res = runner.invoke(spi, ["classify", str(out / "best.pt"), str(files["test"]), "--support-from",
                              str(files["train"]), "-k", "3", "--min-ratio", "0.5"])
    assert res.exit_code == 2 and "--min-ratio" in res.output
    res = runner.invoke(spi, ["classify", str(out / "best.pt"), str(files["test"])])
    assert res.exit_code != 0 and "--support" in res.output
    res = runner.invoke(spi, ["train", "--data", str(files["train"]), "--out", str(out)])
    assert res.exit_code == 1 and "already holds a run" in res.output and "--resume" in res.output
    res = runner.invoke(spi, ["train", "--resume", "--out", str(out), "--epochs", "2", "--lr", "0.1"])
    assert res.exit_code == 1 and "cannot change train.lr when resuming" in res.output
    res = runner.invoke(spi, ["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output and "spi train: 2 epochs" in res.output
    assert len((out / "log.csv").read_text().splitlines()) == 3
    assert torch.load(out / "last.pt", weights_only=True)["config"]["preprocess"]["input_size"] == 24
    res = runner.invoke(spi, ["train", "--data", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "no such file" in res.output
    res = runner.invoke(
        spi,
        [
            "bench",
            "--default",
            "--frame-shape",
            "2,64,96",
            "--batch-sizes",
            "1,4",
            "--runtime",
            "torch,onnx",
            "--min-seconds",
            "0.05",
            "--repeats",
            "2",
            "--json",
            str(tmp_path / "b.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "LCLS-I" in res.output and (tmp_path / "b.json").is_file()
    res = runner.invoke(
        spi,
        [
            "bench",
            str(out / "best.pt"),
            "--batch-sizes",
            "2",
            "--min-seconds",
            "0.05",
            "--repeats",
            "2",
            "--runtime",
            "torchscript",
        ],
    )
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_ddp_two_processes_gloo(files, tmp_path):
    """torchrun with 2 CPU processes (gloo): trains, rank 0 writes the run, ranks end with equal weights
    (train checks that with an all-gather and fails otherwise)."""
    out = tmp_path / "ddp"
    cfg = config(out, files["train"], model=TINY_MODEL, data={"batches_per_epoch": 2}, train={"epochs": 2})
    cfg_path = tmp_path / "ddp.yaml"
    from spinet.config import save_config

    save_config(cfg, cfg_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",
            "-m",
            "cli",
            "train",
            str(cfg_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "2 processes" in proc.stderr
    assert (out / "last.pt").is_file()
    doc = torch.load(out / "last.pt", weights_only=True)
    assert doc["epoch"] == 2 and len(doc["history"]) == 2
