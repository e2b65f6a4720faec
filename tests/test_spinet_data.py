"""Label files, labelled shots of files, class-balanced sampling, datasets and live simulation streams."""

from __future__ import annotations

from collections import Counter

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from spinet.augment import ShotTransform
from spinet.config import AugmentConfig, PreprocessConfig
from spinet.data import (
    ClassBalancedBatchSampler,
    FileShots,
    ShotDataset,
    SimulatedShotStream,
    StreamBatcher,
    file_labels,
    label_names_for,
    order_classes,
    pick_per_class,
    read_label_file,
    stratified_split,
)
from spinet.synthetic import ToySimulator, write_toy_dataset
from spisim.cxi import HIT_TYPES, CXIReader
from spisim.errors import InputFileError


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy.h5", 24, seed=3)


def test_label_files_csv_log_and_hdf5(tmp_path):
    (tmp_path / "a.csv").write_text("index,label\n0,single\n3,multi\n1,no_hit\n3,multi\n4,not_single\n")
    assert read_label_file(tmp_path / "a.csv") == {0: "single", 1: "no_hit", 3: "multi", 4: "not_single"}
    (tmp_path / "b.csv").write_text("5,single\n2,droplet\n")
    assert read_label_file(tmp_path / "b.csv", class_names=["single", "droplet"]) == {5: "single", 2: "droplet"}
    # the append-only log of spi label, with an undo
    (tmp_path / "c.csv").write_text("index,label,time\n0,single,t\n1,multi,t\n1,undo,t\n1,no_hit,t\n2,custom,t\n")
    assert read_label_file(tmp_path / "c.csv", class_names=[*HIT_TYPES, "custom"]) == {
        0: "single", 1: "no_hit", 2: "custom"}
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["index"] = np.array([4, 7])
        f["label"] = np.array([b"single", b"multi"])
    assert read_label_file(tmp_path / "d.h5") == {4: "single", 7: "multi"}
    with pytest.raises(InputFileError, match="out of range"):
        read_label_file(tmp_path / "d.h5", n_shots=5)
    (tmp_path / "e.csv").write_text("index,label\nx,single\n")
    with pytest.raises(InputFileError, match="not a non-negative integer"):
        read_label_file(tmp_path / "e.csv")
    with pytest.raises(InputFileError, match="no such label file"):
        read_label_file(tmp_path / "missing.csv")
    # structure_hit_type names pass where the caller allows them
    (tmp_path / "s.csv").write_text("0,capsid/single\n1,no_hit\n")
    assert read_label_file(tmp_path / "s.csv", class_names=label_names_for("structure_hit_type")) == {
        0: "capsid/single", 1: "no_hit"}
    with pytest.raises(InputFileError, match="unknown class 'capsid/single'"):
        read_label_file(tmp_path / "s.csv")


@pytest.mark.parametrize("text, line", [
    ("index,label\n0,single\n\n\n1,alien\n", 5),  # header and two blank lines counted
    ("0,single\n\n1,alien\n", 3),
    ("index,label,time\n0,single,t\n\n1,alien,t\n", 4),  # the log of spi label
])
def test_unknown_class_is_an_error_listing_the_known_ones_with_the_real_line(tmp_path, text, line):
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(InputFileError) as err:
        read_label_file(tmp_path / "l.csv")
    msg = str(err.value)
    assert f"l.csv:{line}: unknown class 'alien'" in msg, msg
    assert "no_hit, single, multi, unintended, not_single" in msg and "\n" not in msg


def test_line_numbers_of_row_errors_count_the_header_and_blank_lines(tmp_path):
    (tmp_path / "l.csv").write_text("index,label\n\n0,single\n\n\nseven,multi\n")
    with pytest.raises(InputFileError, match=r"l.csv:6: shot index 'seven' is not a non-negative integer"):
        read_label_file(tmp_path / "l.csv")
    (tmp_path / "m.csv").write_text("index,label\n0,single\n1\n")
    with pytest.raises(InputFileError, match=r"m.csv:3: expected 'index,label'"):
        read_label_file(tmp_path / "m.csv")
    (tmp_path / "n.csv").write_text("\n0,single\n9,multi\n")
    with pytest.raises(InputFileError, match=r"n.csv:3: shot index 9 is out of range for a dataset of 5 shots"):
        read_label_file(tmp_path / "n.csv", n_shots=5)


def test_an_index_given_twice_with_different_labels_is_an_error_naming_both_lines(tmp_path):
    (tmp_path / "d.csv").write_text("index,label\n0,single\n3,multi\n\n1,no_hit\n3,single\n")
    with pytest.raises(InputFileError) as err:
        read_label_file(tmp_path / "d.csv")
    assert "shot 3 is labelled 'multi' on line 3 and 'single' on line 6" in str(err.value)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["index"] = np.array([4, 7, 4])
        f["label"] = np.array([b"single", b"multi", b"no_hit"])
    with pytest.raises(InputFileError, match=r"shot 4 is labelled 'single' at entry 0 and 'no_hit' at entry 2"):
        read_label_file(tmp_path / "d.h5")
    with h5py.File(tmp_path / "u.h5", "w") as f:
        f["index"] = np.array([0, 1])
        f["label"] = np.array([b"single", b"alien"])
    with pytest.raises(InputFileError, match=r"label\[1\]: unknown class 'alien': expected one of no_hit"):
        read_label_file(tmp_path / "u.h5")


def test_file_labels_by_hit_type_structure_and_label_file(toy_file, tmp_path):
    with CXIReader(toy_file) as r:
        idx, names = file_labels(r)
        codes = r.hit_type
        assert idx.tolist() == list(range(24))
        assert names == [HIT_TYPES[c] for c in codes]
        _, snames = file_labels(r, "structure_hit_type")
        assert set(snames) == {"no_hit", "toy/single", "toy/multi", "unintended"}
        (tmp_path / "l.csv").write_text("index,label\n2,ice\n5,single\n")
        idx, names = file_labels(r, label_file=tmp_path / "l.csv", class_names=["ice", "single"])
        assert idx.tolist() == [2, 5] and names == ["ice", "single"]
        with pytest.raises(InputFileError, match="unknown class 'ice'"):
            file_labels(r, label_file=tmp_path / "l.csv")
    assert order_classes(["zeta", "multi", "alpha", "no_hit"]) == ["no_hit", "multi", "alpha", "zeta"]
    assert order_classes(["not_single", "zeta", "single"]) == ["single", "zeta", "not_single"]


def test_balanced_sampler_counts_determinism_and_weights():
    labels = np.array([0] * 30 + [1] * 4 + [2] * 10)
    s = ClassBalancedBatchSampler(labels, 3, 20, seed=1)
    batches = list(s)
    assert len(batches) == 20
    for b in batches:
        assert Counter(int(labels[i]) for i, _ in b) == {0: 3, 1: 3, 2: 3}
    assert batches == list(s)  # same epoch replays
    s.set_epoch(1)
    assert batches != list(s)
    r1 = ClassBalancedBatchSampler(labels, 3, 20, seed=1, rank=1)
    assert batches != list(r1)
    # weights: within class 0, shots 0..9 (weight 3) are drawn three times as often as 10..29 (weight 0.5)
    w = np.ones(len(labels))
    w[:10], w[10:30] = 3.0, 0.5
    s = ClassBalancedBatchSampler(labels, 2, 3000, weights=w, seed=0)
    drawn = Counter(i for b in s for i, _ in b if labels[i] == 0)
    first, rest = sum(drawn[i] for i in range(10)), sum(drawn[i] for i in range(10, 30))
    assert first / rest == pytest.approx(3.0, rel=0.1)
    # subsets of classes per batch
    s = ClassBalancedBatchSampler(labels, 2, 50, classes_per_batch=2, seed=0)
    seen = set()
    for b in s:
        cls = {int(labels[i]) for i, _ in b}
        assert len(cls) == 2 and len(b) == 4
        seen.add(tuple(sorted(cls)))
    assert len(seen) == 3


def test_split_and_support_pick():
    cls = np.array([0] * 20 + [1] * 10 + [2] * 2)
    tr, held = stratified_split(cls, 0.2, seed=0)
    assert set(tr) | set(held) == set(range(32)) and not set(tr) & set(held)
    assert Counter(int(cls[i]) for i in held) == {0: 4, 1: 2, 2: 1}
    assert np.array_equal(stratified_split(cls, 0.2, seed=0)[1], held)
    sup = pick_per_class(cls, 3, seed=1)
    assert Counter(int(cls[i]) for i in sup) == {0: 3, 1: 3, 2: 2}


def test_dataset_keys_workers_and_augmentation_seed(toy_file):
    with CXIReader(toy_file) as r:
        pos, mask, shape = r.pixel_position, r.mask, r.frame_shape
        idx, names = file_labels(r)
        frames = r.frames(idx)
    cls = np.array([HIT_TYPES.index(n) for n in names])
    pre = PreprocessConfig(input_size=16)
    plain = ShotTransform(pre, None, shape, pos, mask)
    aug = ShotTransform(pre, AugmentConfig(), shape, pos, mask)
    ds = ShotDataset(
        [FileShots(toy_file, idx[:12], cls[:12], aug, 1.0), FileShots(toy_file, idx[12:], cls[12:], aug, 2.0)]
    )
    assert len(ds) == 24 and ds.locate(13) == (1, 1)
    x, y = ds[13]
    assert y == cls[13] and torch.allclose(x, plain(frames[13]))
    xa, _ = ds[(13, 99)]
    xb, _ = ds[(13, 99)]
    assert torch.equal(xa, xb) and not torch.allclose(xa, x)
    w = ds.sample_weights()
    c0 = cls == cls[0]
    assert w[:12][c0[:12]].sum() == pytest.approx(1.0) and w[12:][c0[12:]].sum() == pytest.approx(2.0)
    sampler = ClassBalancedBatchSampler(ds.labels, 2, 3, seed=5)
    serial = [(xb_.clone(), yb.clone()) for xb_, yb in DataLoader(ds, batch_sampler=sampler, num_workers=0)]
    parallel = list(DataLoader(ds, batch_sampler=sampler, num_workers=2))
    for (a, ya), (b, yb) in zip(serial, parallel, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_a_training_frame_without_finite_pixels_is_an_error_naming_the_shot(toy_file, tmp_path):
    """Training on an empty frame would teach the network an empty image under a class's name: reading one is an
    InputFileError naming the shot (augmented or not, in a DataLoader worker too: one line); a frame with some
    finite pixels is read as usual (the others masked)."""
    from spinet.train import _one_line_errors

    bad = tmp_path / "bad.h5"
    bad.write_bytes(toy_file.read_bytes())
    with h5py.File(bad, "r+") as f:
        data = f["/entry_1/data_1/data"]
        data[5] = np.full(data.shape[1:], np.nan, np.float32)
        half = data[6]
        half[..., : half.shape[-1] // 2] = np.inf
        data[6] = half
    with CXIReader(bad) as r:
        pos, mask, shape = r.pixel_position, r.mask, r.frame_shape
        idx, names = file_labels(r)
    cls = np.array([HIT_TYPES.index(n) for n in names])
    pre = PreprocessConfig(input_size=16)
    ds = ShotDataset([FileShots(bad, idx, cls, ShotTransform(pre, AugmentConfig(), shape, pos, mask))])
    assert torch.isfinite(ds[6][0]).all() and torch.isfinite(ds[(6, 3)][0]).all()
    message = rf"{bad}: shot 5 has no finite pixel where the model looks"
    for key in (5, (5, 3)):
        with pytest.raises(InputFileError, match=message):
            ds[key]
    for workers in (0, 1):
        with pytest.raises(InputFileError, match=message) as err:
            list(_one_line_errors(iter(DataLoader(ds, batch_sampler=[[4, 6], [5, 7]], num_workers=workers))))
        assert len(str(err.value).splitlines()) == 1, str(err.value)


def test_stream_with_toy_simulator_in_order_across_workers():
    sim = ToySimulator(seed=4)
    t = ShotTransform(PreprocessConfig(input_size=16), None, sim.frame_shape, sim.pixel_position, sim.mask)
    index = {n: i for i, n in enumerate(HIT_TYPES)}
    stream = SimulatedShotStream(sim, t, index, start=10, stop=22, augment_seed=None)
    items = list(DataLoader(stream, batch_size=None, num_workers=2))
    assert [int(i) for _, _, i in items] == list(range(10, 22))
    for x, y, i in items:
        frame, labels = sim.simulate_shot(int(i))
        assert int(y) == labels.hit_type
        assert torch.allclose(x, t(frame))
    # a class left out of the index comes out as -1 and the batcher skips it
    no_unintended = {n: i for i, n in enumerate(HIT_TYPES[:3])}
    stream = SimulatedShotStream(sim, t, no_unintended, start=0, stop=80, augment_seed=1)
    batches = list(StreamBatcher(stream, 3, m_per_class=2))
    assert len(batches) >= 4
    for xb, yb in batches:
        assert xb.shape == (6, 1, 16, 16) and sorted(yb.tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.slow
def test_stream_from_the_real_simulator():
    """The default manifest of spisim.generate streamed through the dataset: labels and frames agree."""
    from spisim.generate import Simulator
    from spisim.manifest import load_manifest

    sim = Simulator(load_manifest(None))
    from spinet.data import as_shot_source, simulator_geometry

    src = as_shot_source(sim)
    pos, mask = simulator_geometry(src)
    assert pos.shape == (*src.frame_shape, 3) and mask.shape == src.frame_shape
    t = ShotTransform(PreprocessConfig(input_size=48), None, src.frame_shape, pos, mask)
    index = {n: i for i, n in enumerate(HIT_TYPES)}
    items = list(SimulatedShotStream(sim, t, index, start=0, stop=4, augment_seed=None))
    for x, y, i in items:
        frame, labels = sim.shot(i)
        assert y == labels.hit_type
        assert torch.allclose(x, t(frame)) and x.abs().sum() > 0
