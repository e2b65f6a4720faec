"""Using a run's unlabelled frames (spinet.adapt): AdaBN, the training terms on unlabelled frames, and their use
in spi train (data.unlabelled, adapt.*), with train.init and train.keep_every."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from spinet.adapt import (
    UnlabelledLoss,
    adapt_batchnorm,
    consistency_loss,
    image_batches,
    mmd_loss,
    read_indices,
)
from spinet.config import AdaptConfig, Config
from spinet.models import SpeckleNNEmbedding
from spinet.synthetic import write_toy_dataset
from spisim.errors import ConfigError, InputFileError


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_adabn_moves_batchnorm_statistics_to_the_new_data():
    torch.manual_seed(0)
    net = SpeckleNNEmbedding(input_size=20, embedding_dim=8, channels=(4, 6), hidden=16).eval()
    source = torch.randn(64, 1, 20, 20)
    net.train()
    with torch.no_grad():
        for _ in range(30):  # running statistics of the "source" domain
            net(source)
    net.eval()
    target = 3.0 + 2.5 * torch.randn(96, 1, 20, 20)  # shifted, wider: another domain
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    bn1 = net.features[1]
    before_mean = bn1.running_mean.clone()
    # independent target statistics of the first conv's output channels
    with torch.no_grad():
        y = net.features[0](target)
    want_mean = y.mean(dim=(0, 2, 3))
    want_var = y.var(dim=(0, 2, 3), unbiased=True)
    n = adapt_batchnorm(net, image_batches(target, 32))
    assert n == 2  # SpeckleNN has two batch-norm layers
    assert torch.allclose(bn1.running_mean, want_mean, atol=1e-4)
    assert torch.allclose(bn1.running_var, want_var, rtol=0.05)  # average of per-batch unbiased variances
    assert (bn1.running_mean - before_mean).abs().max() > 0.1
    assert bn1.momentum == 0.1 and not net.training
    for k, v in net.state_dict().items():  # weights untouched
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_adabn_without_batchnorm_is_a_no_op():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 14 * 14, 4))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert adapt_batchnorm(net, [torch.randn(8, 1, 16, 16)]) == 0
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_image_batches_never_leave_a_batch_of_one():
    sizes = [len(b) for b in image_batches(torch.zeros(9, 1, 4, 4), 4)]
    assert sizes == [4, 5] and sum(sizes) == 9


def test_loss_terms_against_their_definitions():
    g = torch.Generator().manual_seed(1)
    a = nn.functional.normalize(torch.randn(12, 5, generator=g), dim=1)
    b = nn.functional.normalize(torch.randn(12, 5, generator=g), dim=1)
    assert consistency_loss(a, a) == 0
    assert consistency_loss(a, b) == pytest.approx(float(((a - b) ** 2).sum(1).mean()), rel=1e-6)
    # MMD² by its definition with one bandwidth
    bw = 0.7
    k = lambda x, y: torch.exp(-torch.cdist(x, y) ** 2 / bw)  # noqa: E731
    want = k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()
    assert mmd_loss(a, b, [bw]) == pytest.approx(float(want), rel=1e-5)
    assert mmd_loss(a, a) == pytest.approx(0.0, abs=1e-6)
    assert mmd_loss(a, nn.functional.normalize(a + 2.0, dim=1)) > 0.01


def test_unlabelled_terms_are_finite_and_decrease_on_a_toy_problem():
    """A small embedding of "simulated" points and of "real" ones shifted away: minimising the terms brings the
    real views onto the simulated cloud and makes two noisy views of a real point embed alike."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))

    def embed(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(net(x), dim=1)

    sim = torch.randn(40, 6)
    real = torch.randn(40, 6) + torch.tensor([3.0, -2.0, 0, 0, 1.0, 0])
    loss_fn = UnlabelledLoss(AdaptConfig(consistency=1.0, align=1.0))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    history = []
    for step in range(150):
        g = torch.Generator().manual_seed(step)
        v1 = real + 0.3 * torch.randn(real.shape, generator=g)
        v2 = real + 0.3 * torch.randn(real.shape, generator=g)
        loss = loss_fn(embed(sim), embed(v1), embed(v2))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert set(loss_fn.last) == {"consistency", "align"}
    assert np.mean(history[-10:]) < 0.5 * np.mean(history[:10])


def test_read_indices(tmp_path):
    (tmp_path / "a.csv").write_text("index\n3\n5\n\n7,x\n")
    assert read_indices(tmp_path / "a.csv").tolist() == [3, 5, 7]
    (tmp_path / "b.csv").write_text("1\nfoo\n")
    with pytest.raises(InputFileError, match="line 2"):
        read_indices(tmp_path / "b.csv")


def test_adapt_needs_unlabelled_frames():
    with pytest.raises(ConfigError, match="data.unlabelled"):
        Config.from_dict({"adapt": {"consistency": 1.0}})
    with pytest.raises(ConfigError, match="adapt.batch"):
        Config.from_dict({"adapt": {"batch": 1}})


def test_training_with_unlabelled_frames_init_and_kept_epochs(tmp_path):
    from spinet.checkpoint import load_checkpoint
    from spinet.train import train

    sim = write_toy_dataset(tmp_path / "sim.h5", 48, seed=1)
    real = write_toy_dataset(tmp_path / "real.h5", 30, seed=2)
    (tmp_path / "some.csv").write_text("index\n" + "".join(f"{i}\n" for i in range(0, 30, 2)))
    base = {"preprocess": {"input_size": 16}, "augment": {"rotation": 90, "flip": True},
            "model": {"channels": [4, 8], "hidden": 16, "embedding_dim": 8},
            "data": {"sources": [{"path": str(sim)}], "batches_per_epoch": 3, "m_per_class": 3},
            "train": {"epochs": 3, "tensorboard": False, "progress": False, "patience": 0}}
    cfg = Config.from_dict({**base, "train": {**base["train"], "out": str(tmp_path / "a"), "keep_every": 2},
                            "data": {**base["data"], "unlabelled": [{"path": str(real),
                                                                     "indices": str(tmp_path / "some.csv")}]},
                            "adapt": {"consistency": 1.0, "align": 0.5, "batch": 6}})
    res = train(cfg)
    rows = list(csv.DictReader(open(tmp_path / "a" / "log.csv")))
    assert len(rows) == 3 and all(np.isfinite(float(r["adapt_loss"])) and float(r["adapt_loss"]) >= 0 for r in rows)
    kept = sorted(p.name for p in (tmp_path / "a" / "epochs").iterdir())
    assert kept == ["epoch-002.pt", "epoch-003.pt"]  # every 2nd epoch and the last
    assert "optimizer_state" not in load_checkpoint(tmp_path / "a" / "epochs" / "epoch-002.pt")
    # the same run without the unlabelled terms ends with other weights (the terms take part in training)
    plain = Config.from_dict({**base, "train": {**base["train"], "out": str(tmp_path / "b")}})
    train(plain)
    wa = load_checkpoint(tmp_path / "a" / "last.pt")["model_state"]
    wb = load_checkpoint(tmp_path / "b" / "last.pt")["model_state"]
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    # init: a run of 1 epoch at lr ~0 starting from run a keeps a's weights
    ft = Config.from_dict({**base, "train": {**base["train"], "out": str(tmp_path / "c"), "epochs": 1, "lr": 1e-12,
                                             "init": str(tmp_path / "a" / "best.pt")}})
    train(ft)
    wc = load_checkpoint(tmp_path / "c" / "last.pt")["model_state"]
    wbest = load_checkpoint(tmp_path / "a" / "best.pt")["model_state"]
    for k in wc:
        if "running" not in k and "num_batches" not in k:
            assert torch.allclose(wc[k], wbest[k], atol=1e-6), k
    bad = Config.from_dict({**base, "model": {"channels": [4, 8], "hidden": 32, "embedding_dim": 8},
                            "train": {**base["train"], "out": str(tmp_path / "d"),
                                      "init": str(tmp_path / "a" / "best.pt")}})
    with pytest.raises(ConfigError, match="differs from this run"):
        train(bad)
    assert res.epochs_run == 3


def test_a_simulated_source_relabelled_binary_trains_beside_a_binary_real_run(tmp_path):
    """Without binary=1 a 4-class file beside a run labelled single / not_single makes five classes (not_single a
    class of its own, pushed away from the simulated multi and unintended hits); with it, two."""
    from cli.train import parse_source
    from spinet.train import prepare_data
    from spisim.cxi import CXIReader

    sim = write_toy_dataset(tmp_path / "sim.h5", 24, seed=1)
    real = write_toy_dataset(tmp_path / "real.h5", 16, seed=2)
    with CXIReader(real) as r:
        codes = r.hit_type.copy()
    (tmp_path / "real.csv").write_text("index,label\n" + "".join(
        f"{i},{'single' if c == 1 else 'not_single'}\n" for i, c in enumerate(codes)))
    base = {"preprocess": {"input_size": 16}, "augment": {"enabled": False}, "train": {"out": str(tmp_path / "r")}}
    real_src = parse_source(f"{real},labels={tmp_path / 'real.csv'},weight=0.3")
    plain = Config.from_dict({**base, "data": {"sources": [{"path": str(sim)}, real_src]}})
    assert prepare_data(plain).class_names == ["no_hit", "single", "multi", "unintended", "not_single"]
    src = parse_source(f"{sim},binary=1")
    assert src == {"path": str(sim), "binary": True}
    binary = Config.from_dict({**base, "data": {"sources": [src, real_src]}})
    data = prepare_data(binary)
    assert data.class_names == ["single", "not_single"]
    assert np.bincount(data.train.labels).tolist()[0] > 0 and len(np.unique(data.train.labels)) == 2
    with pytest.raises(ConfigError, match="binary"):
        parse_source(f"{sim},binary=maybe")


def test_unlabelled_frames_reopen_their_file_in_another_process(tmp_path):
    """The unlabelled frames' file is opened once per process: a pickled copy (spawned worker) holds no handle
    and a copy whose process id differs (forked worker) opens its own (HDF5 handles must not cross a fork)."""
    import os
    import pickle

    from spinet.adapt import UnlabelledFrames

    path = write_toy_dataset(tmp_path / "u.h5", 6, seed=3)
    frames = UnlabelledFrames(path, np.arange(6), transform=None)
    first = frames.reader
    assert frames.reader is first  # same process: kept
    clone = pickle.loads(pickle.dumps(frames))
    assert clone._reader is None and clone.reader is not first
    frames._pid = os.getpid() + 1  # as seen from a forked child
    assert frames.reader is not first and frames._pid == os.getpid()
