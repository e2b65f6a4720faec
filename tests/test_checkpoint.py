"""spinet.checkpoint: what a checkpoint holds, the optimizer state only where --resume needs it, atomic writes."""

from __future__ import annotations

import pytest
import torch

from spinet.checkpoint import ModelBundle, load_checkpoint, save_checkpoint
from spinet.speed import default_bundle


@pytest.fixture(scope="module")
def trained():
    """A small default network after one Adam step (so the optimizer holds its two moments per weight)."""
    bundle = default_bundle(frame_shape=(2, 64, 128))
    opt = torch.optim.Adam(bundle.model.parameters())
    bundle.model.train()
    x = torch.randn(4, 1, bundle.preprocessor.size, bundle.preprocessor.size)
    bundle.model(x).sum().backward()
    opt.step()
    bundle.model.eval()
    return bundle, opt


def _save(path, bundle, opt, **kw):
    save_checkpoint(path, config=bundle.config, class_names=bundle.class_names, model=bundle.model,
                    preprocessor=bundle.preprocessor, geometry=bundle.geometry, epoch=3,
                    optimizer_state=opt.state_dict(), best_metric=0.5, best_epoch=2, bad_epochs=1, history=[], **kw)


def test_optimizer_state_only_where_asked_and_a_third_of_the_size(trained, tmp_path):
    bundle, opt = trained
    _save(tmp_path / "last.pt", bundle, opt)
    _save(tmp_path / "best.pt", bundle, opt, optimizer=False)
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert "optimizer_state" in last and "optimizer_state" not in best
    assert set(last) - set(best) == {"optimizer_state"}
    n_weights = sum(p.numel() for p in bundle.model.parameters())
    extra = (tmp_path / "last.pt").stat().st_size - (tmp_path / "best.pt").stat().st_size
    assert extra == pytest.approx(8 * n_weights, rel=0.02)  # Adam: two float32 moments per weight
    assert (tmp_path / "best.pt").stat().st_size < 0.4 * (tmp_path / "last.pt").stat().st_size
    # both load for inference and give the same embeddings
    x = torch.poisson(torch.full((3, *bundle.preprocessor.frame_shape), 2.0))
    with torch.no_grad():
        a = ModelBundle.load(tmp_path / "last.pt")
        b = ModelBundle.load(tmp_path / "best.pt")
        assert torch.equal(a.model(a.preprocessor(x)), b.model(b.preprocessor(x)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_an_interrupted_save_leaves_no_temporary(trained, tmp_path, monkeypatch):
    bundle, opt = trained

    def disk_full(obj, f, *a, **kw):
        open(f, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        _save(tmp_path / "last.pt", bundle, opt)
    assert list(tmp_path.iterdir()) == []
