"""spinet.stream as a library: message formats, frame layouts, the drop queue, the classifier on any dtype and in
ONNX Runtime, the resumable log, and whole streams (replay, ZeroMQ, Karabo bridge) on loopback sockets with
random ports: counts, labels against batch classification, malformed messages, drops, reconnection."""

from __future__ import annotations

import csv
import socket
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
import zmq

from spinet.checkpoint import ModelBundle, save_checkpoint
from spinet.config import Config
from spinet.inference import build_support, classify_file
from spinet.models import build_model, count_parameters
from spinet.preprocess import Preprocessor, geometry_key
from spinet.stream import (
    BeamlineServer,
    FrameClassifier,
    Geometry,
    KaraboSource,
    MalformedMessage,
    Publisher,
    ReplaySource,
    ResultLog,
    StreamOptions,
    StreamRunner,
    VetoList,
    ZmqSource,
    file_buffer,
    parse_source,
    parse_support,
)
from spinet.stream.messages import (
    PULSE_STRIDE,
    decode_frame_message,
    decode_results,
    encode_frame_message,
    karabo_shots,
    karabo_train,
    resolve_karabo_source,
    split_frames,
)
from spinet.stream.queue import DropQueue
from spinet.stream.stats import LatencyHistogram, StatusPrinter, StreamStats, format_status
from spinet.synthetic import ToySimulator, write_toy_dataset
from spisim.cxi import CXIReader
from spisim.errors import ConfigError, OutputFileError
from spisim.labels import read_label_file


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(path: Path, arch: str = "compact", seed: int = 0) -> Path:
    """An untrained model for toy shots (2 × 20 × 44 frames), saved as a checkpoint."""
    cfg = Config.from_dict({"preprocess": {"input_size": 32}, "model": {"arch": arch, "embedding_dim": 16,
                                                                       "channels": [4, 8], "hidden": 32}})
    sim = ToySimulator(0)
    pre = Preprocessor.from_geometry(cfg.preprocess, sim.frame_shape, sim.pixel_position, sim.mask)
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.preprocess.input_size).eval()
    save_checkpoint(path, config=cfg, class_names=list(sim.class_names), model=model, preprocessor=pre,
                    geometry=geometry_key(sim.frame_shape, sim.pixel_position, sim.mask), epoch=0)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    model = make_model(d / "model.pt")
    bundle = ModelBundle.load(model)
    support_file = write_toy_dataset(d / "support.h5", 40, seed=21)
    data = write_toy_dataset(d / "data.h5", 120, seed=22)
    support = build_support(bundle, support_file, k=5, seed=0)
    ref = classify_file(bundle, data, support, rule="nearest", output=d / "ref.csv")
    rows = list(csv.DictReader(open(d / "ref.csv")))
    return {"dir": d, "model": model, "bundle": bundle, "support": support, "support_file": support_file,
            "data": data, "ref": ref, "ref_rows": rows, "geometry": Geometry.from_file(data)}


def classifier(toy, **kw) -> FrameClassifier:
    return FrameClassifier(toy["bundle"], toy["support"], toy["geometry"], rule="nearest", **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------- messages


def test_split_frames_reads_every_layout_to_the_same_frames():
    rng = np.random.default_rng(1)
    m, ss, fs, p = 3, 5, 7, 4
    ref = rng.integers(0, 60000, size=(p, m, ss, fs)).astype(np.uint16)
    layouts = {
        "pulses first": ref,
        "pulses last": np.moveaxis(ref, 0, -1),
        "online (M, FS, SS, P)": np.moveaxis(ref, 0, -1).swapaxes(1, 2),
    }
    for name, arr in layouts.items():
        got = split_frames(arr, (m, ss, fs))
        assert got.dtype == np.uint16 and np.array_equal(got, ref), name
    assert np.array_equal(split_frames(ref[2], (m, ss, fs))[0], ref[2])
    one = ref[:, :1]  # a one-module detector may drop its module axis
    for arr in (one[:, 0], np.moveaxis(one[:, 0], 0, -1), np.moveaxis(one[:, 0], 0, -1).swapaxes(0, 1)):
        assert np.array_equal(split_frames(arr, (1, ss, fs)), one)
    with pytest.raises(MalformedMessage, match=r"does not hold frames of shape \(3, 5, 7\)"):
        split_frames(np.zeros((4, 3, 5, 8)), (m, ss, fs))
    with pytest.raises(MalformedMessage, match="not an integer or float"):
        split_frames(np.zeros((3, 5, 7), dtype=complex), (m, ss, fs))


def test_frame_message_round_trip_and_malformed_messages():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 5000, size=(3, 2, 4, 6)).astype(np.int32)
    msg = encode_frame_message(frames, train_id=77, pulse_ids=[4, 8, 12], labels=["single", "multi", "no_hit"])
    shots = decode_frame_message(msg, (2, 4, 6), t_arrival=1.5)
    assert [s.index for s in shots] == [77 * PULSE_STRIDE + p for p in (4, 8, 12)]
    assert [(s.train_id, s.pulse_id, s.truth, s.t_arrival) for s in shots][1] == (77, 8, "multi", 1.5)
    assert all(np.array_equal(s.frame, f) and s.frame.dtype == np.int32 for s, f in zip(shots, frames, strict=True))
    counter = [10]
    plain = decode_frame_message(encode_frame_message(frames[0].astype(np.float16)), (2, 4, 6), 0.0, counter)
    assert plain[0].index == 10 and counter == [11] and plain[0].train_id is None and plain[0].frame.dtype == np.float16
    explicit = decode_frame_message(encode_frame_message(frames, indices=[5, 6, 7]), (2, 4, 6), 0.0)
    assert [s.index for s in explicit] == [5, 6, 7] and explicit[0].key == ("i", 5)
    good = msgpack.unpackb(msg, raw=False)
    bad = {
        "not a msgpack": b"\xc1\xff garbage",
        "not a spi-frames": msgpack.packb({"hello": 1}),
        "bytes": msgpack.packb({**good, "frames": {**good["frames"], "data": good["frames"]["data"][:-4]}}),
        "does not hold frames": msgpack.packb({**good, "frames": {**good["frames"], "shape": [3, 2, 6, 4]}}),
        "must be 3 integers": msgpack.packb({**good, "pulse_id": [1, 2]}),
        "not an integer or float": msgpack.packb({**good, "frames": {**good["frames"], "dtype": "<c8",
                                                                     "shape": [3, 2, 4, 3]}}),
    }
    for why, payload in bad.items():
        with pytest.raises(MalformedMessage, match=why):
            decode_frame_message(payload, (2, 4, 6), 0.0)


def test_karabo_train_round_trips_through_the_bridge_serializer():
    from karabo_bridge import deserialize, serialize

    rng = np.random.default_rng(3)
    frames = rng.normal(size=(4, 1, 6, 5)).astype(np.float32)
    data, meta = karabo_train(frames, 123, source="DET/CAL/X", indices=[9, 3, 4, 0], labels=["a", "b", "c", "d"])
    data["OTHER/MOTOR"] = {"position": 1.5}
    meta["OTHER/MOTOR"] = {"source": "OTHER/MOTOR", "timestamp.tid": 123}
    data2, meta2 = deserialize(serialize(data, meta))
    assert resolve_karabo_source(data2, None, "image.data") == "DET/CAL/X"
    shots = karabo_shots(data2, meta2, "DET/CAL/X", "image.data", (1, 6, 5), 2.0)
    assert [(s.index, s.train_id, s.pulse_id, s.truth) for s in shots] == [(9, 123, 0, "a"), (3, 123, 1, "b"),
                                                                          (4, 123, 2, "c"), (0, 123, 3, "d")]
    assert all(np.array_equal(s.frame, f) for s, f in zip(shots, frames, strict=True))
    with pytest.raises(LookupError, match="no source 'SPB'"):
        resolve_karabo_source(data2, "SPB", "image.data")
    with pytest.raises(LookupError, match="has no key 'data.adc'"):
        resolve_karabo_source(data2, "DET/CAL/X", "data.adc")
    with pytest.raises(MalformedMessage, match="does not hold frames"):
        karabo_shots(data2, meta2, "DET/CAL/X", "image.data", (1, 6, 6), 2.0)


# ------------------------------------------------------------------------------------------------- parts


def test_drop_queue_drops_the_oldest_and_cuts_batches_at_the_deadline():
    q: DropQueue[int] = DropQueue(4)
    assert q.put(range(6)) == (2, 0) and q.dropped == 2
    assert q.get_batch(3, max_wait_s=0.0, timeout_s=0.0) == [2, 3, 4]
    t0 = time.monotonic()
    assert q.get_batch(10, max_wait_s=0.15, timeout_s=1.0) == [5]  # waits for more until the deadline
    assert 0.1 <= time.monotonic() - t0 < 1.0
    assert q.get_batch(10, max_wait_s=0.0, timeout_s=0.05) == []
    late = [(0, time.monotonic() - 1.0)]
    q.put(late)
    t0 = time.monotonic()
    assert q.get_batch(10, max_wait_s=0.5, timeout_s=1.0, arrival=lambda item: item[1]) == late
    assert time.monotonic() - t0 < 0.1  # already past its deadline: goes at once
    stop = threading.Event()
    stop.set()
    assert q.put([1, 2, 3, 4, 5], block=True, stop=stop) == (0, 1)  # waits for room only until the stream stops
    assert q.dropped == 2 and len(q) == 4
    q.close()
    assert q.get_batch(10, 1.0, 1.0) == [1, 2, 3, 4]  # closed: no waiting for more
    assert q.get_batch(10, 1.0, 1.0) == []


def test_latency_histogram_percentiles_within_one_percent():
    rng = np.random.default_rng(4)
    v = rng.lognormal(mean=1.0, sigma=1.2, size=20000)
    h = LatencyHistogram()
    h.add(v[:7000])
    h.add(v[7000:])
    for q in (50, 90, 99):
        assert h.percentile(q) == pytest.approx(np.percentile(v, q), rel=0.012)
    assert np.isnan(LatencyHistogram().percentile(50))


def test_status_line_and_printer(tmp_path):
    stats = StreamStats(["single", "multi"])
    stats.add(received=5, dropped=1)
    stats.record(["single", "multi", "single", "single"], ["single", None, "multi", "single"], np.array([1, 2, 3, 4.0]))
    line = format_status(stats.tick())
    for part in ("received 5", "classified 4", "dropped 1", "single 3 multi 1", "accuracy 0.667 (3 judged)",
                 "p50 2.5 ms"):
        assert part in line, line
    out = (tmp_path / "status.txt").open("w")
    p = StatusPrinter(out, plain_every_s=30.0)
    p.show("a")
    p.show("b")  # within 30 s of "a": not shown on a plain stream
    p.show("c", force=True)
    out.close()
    assert (tmp_path / "status.txt").read_text() == "a\nc\n"


def test_parse_support_and_source():
    assert parse_support("s.h5") == parse_support("s.h5", None, None)
    spec = parse_support("s.h5,labels=l.csv,k=5")
    assert (str(spec.path), str(spec.labels), spec.k) == ("s.h5", "l.csv", 5)
    assert parse_support("s.h5", "l.csv", 3).k == 3
    for bad in ("s.h5,k=0", "s.h5,kk=3", "s.h5,k=2,k=3"):
        with pytest.raises(ConfigError):
            parse_support(bad)
    with pytest.raises(ConfigError, match="label file once"):
        parse_support("s.h5,labels=a.csv", "b.csv")
    # one parser for spi classify and spi stream: -k and --seed are defaults for the keys a value does not give
    from spinet.inference import SupportSpec

    assert parse_support == SupportSpec.parse
    assert SupportSpec.parse("s.h5,k=2", k=7, seed=3) == SupportSpec(Path("s.h5"), None, 2, 3)
    assert SupportSpec.parse("s.h5,seed=9", k=7) == SupportSpec(Path("s.h5"), None, 7, 9)
    for bad, what in (("s.h5,seed=x", "seed must be an integer"), (",k=2", "empty file name"),
                      ("s.h5,seed=1,seed=2", "repeated option")):
        with pytest.raises(ConfigError, match=what):
            SupportSpec.parse(bad)
    assert isinstance(parse_source("karabo://tcp://host:4545"), KaraboSource)
    assert isinstance(parse_source("zmq://tcp://host:4545", socket="pull"), ZmqSource)
    for bad in ("http://x", "karabo://host:12", "zmq://tcp://host:port", "replay:x.h5?speed=3"):
        with pytest.raises(ConfigError):
            parse_source(bad)


def test_compact_model_has_the_fpga_budget():
    cfg = Config.from_dict({"model": {"arch": "compact", "embedding_dim": 50}})
    model = build_model(cfg.model, 96)
    assert count_parameters(model) == 60836 + 65 * 50 == 64086  # FPGA study: 64.6 K at a 50-d embedding
    for size in (32, 96, 128):  # global pooling: any input size
        emb = model.eval()(torch.randn(3, 1, size, size))
        assert emb.shape == (3, 50) and torch.allclose(emb.norm(dim=1), torch.ones(3))


# ------------------------------------------------------------------------------------------------- classifier


def test_classifier_takes_integer_and_half_frames_and_onnx_agrees(toy):
    with CXIReader(toy["data"]) as r:
        photons = np.rint(r.frames(np.arange(16)))
    clf = classifier(toy)
    ref = clf.embed(photons.astype(np.float32))
    for dtype in (np.uint16, np.int32, np.float16, ">u2"):
        got = clf.embed(photons.astype(dtype))
        assert torch.allclose(got, ref, atol=1e-5), dtype
    from spinet.stream.engine import pixel_subset

    pre = toy["bundle"].preprocessor
    used, reduced = pixel_subset(pre)
    flat = torch.from_numpy(photons.astype(np.float32)).reshape(16, -1)
    assert len(used) < flat.shape[1]  # the crop reads part of the detector, and the cut frames give the same images
    full = pre(torch.from_numpy(photons.astype(np.float32)))
    cut = flat[:, used].reshape(16, 1, 1, -1)
    assert torch.allclose(reduced(cut), full, atol=1e-5)
    cut[:, 0, 0, :5] = float("nan")  # non-finite pixels are left out (masked in that frame) in both
    full_nan = flat.clone()
    full_nan[:, used[:5]] = float("nan")
    assert torch.allclose(reduced(cut), pre(full_nan.reshape(photons.shape)), atol=1e-5)
    onnx_clf = classifier(toy, runtime="onnx", threads=1)
    assert torch.allclose(onnx_clf.embed(photons.astype(np.uint16)), ref, atol=1e-4)
    res = clf.classify(photons.astype(np.float32))
    assert res.distances.shape == (16, 4) and len(res.labels) == 16
    d = np.maximum(res.distances.astype(np.float64), 1e-12)
    expected = np.log(np.delete(d, 1, axis=1).min(axis=1)) - np.log(d[:, 1])  # ln(d_other / d_single)
    np.testing.assert_allclose(res.scores, expected, rtol=1e-6)
    assert all((s > 0) == (lab == "single") for s, lab in zip(res.scores, res.labels, strict=True))


# ------------------------------------------------------------------------------------------------- log


def test_result_log_resumes_repairs_and_is_a_label_file(toy, tmp_path):
    from spinet.stream.messages import Shot

    names = ["no_hit", "single", "multi", "unintended"]
    path = tmp_path / "log.csv"
    log = ResultLog(path, names)
    shots = [Shot(np.zeros(1), i) for i in range(3)] + [Shot(np.zeros(1), 7 * PULSE_STRIDE + 2, 7, 2, "multi")]
    log.write(shots, ["single", "multi", "no_hit", "multi"], np.arange(4.0), np.random.default_rng(0).random((4, 4)))
    log.close()
    with open(path, "a") as f:
        f.write("3,sing")  # a write cut short by a kill
    again = ResultLog(path, names)
    assert again.done == {("i", 0), ("i", 1), ("i", 2), ("t", 7, 2)}
    again.close()
    assert read_label_file(path) == {0: "single", 1: "multi", 2: "no_hit", 7 * PULSE_STRIDE + 2: "multi"}
    with pytest.raises(OutputFileError, match="exists with columns"):
        ResultLog(path, ["a", "b"])
    fresh = ResultLog(path, ["a", "b"], overwrite=True)
    fresh.close()
    assert fresh.done == set()
    assert path.read_text().startswith("index,label,score,train_id,pulse_id,truth,time,distance_a,distance_b\n")


# ------------------------------------------------------------------------------------------------- streams


def run_stream(toy, source, **kw):
    log = kw.pop("log", None)
    clf = kw.pop("clf", None) or classifier(toy)
    runner = StreamRunner(source, clf, StreamOptions(**kw.pop("options", {})), log=log, **kw)
    return runner, runner.run()


def test_replay_stream_gives_the_labels_of_batch_classification_and_resumes(toy):
    d = toy["dir"]
    log = ResultLog(d / "replay.csv", classifier(toy).output_names, overwrite=True)
    veto = VetoList(d / "veto.csv", overwrite=True)
    _, first = run_stream(toy, ReplaySource(toy["data"]), log=log, veto=veto,
                          options={"max_batch": 7, "max_shots": 50})
    assert first["stopped_by"] == "shot limit" and 50 <= first["classified"] < 120
    log2 = ResultLog(d / "replay.csv", classifier(toy).output_names)
    assert len(log2.done) == first["classified"]
    veto2 = VetoList(d / "veto.csv")
    _, second = run_stream(toy, ReplaySource(toy["data"]), log=log2, veto=veto2, options={"max_batch": 16})
    assert second["skipped"] == first["classified"] and second["classified"] == 120 - first["classified"]
    assert second["dropped"] == 0 and second["received"] == 120 and second["stopped_by"] == "source ended"
    rows = list(csv.DictReader(open(d / "replay.csv")))
    assert sorted(int(r["index"]) for r in rows) == list(range(120))  # each shot once over the two runs
    ref = {int(r["index"]): r for r in toy["ref_rows"]}
    for r in rows:
        want = ref[int(r["index"])]
        assert r["truth"] == want["truth"]
        dist = np.array([float(r[f"distance_{c}"]) for c in toy["support"].class_names])
        want_d = np.array([float(want[f"distance_{c}"]) for c in toy["support"].class_names])
        np.testing.assert_allclose(dist, want_d, rtol=1e-4, atol=1e-5)
        if np.sort(want_d)[1] - np.sort(want_d)[0] > 1e-4:  # not a tie
            assert r["label"] == want["label"]
    vetoed = [int(r["index"]) for r in csv.DictReader(open(d / "veto.csv"))]
    assert sorted(vetoed) == sorted(int(r["index"]) for r in rows if r["label"] == "single")
    acc = np.mean([r["label"] == r["truth"] for r in rows])
    assert acc == pytest.approx(toy["ref"].accuracy, abs=0.02)


class SlowClassifier:
    """A classifier that takes ``delay_s`` per batch (to make the stream fall behind)."""

    def __init__(self, inner: FrameClassifier, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.frame_shape, self.class_names, self.output_names = inner.frame_shape, inner.class_names, inner.output_names
        self.batches: list[int] = []

    def classify(self, frames):  # noqa: ANN001, ANN201
        time.sleep(self.delay_s)
        self.batches.append(len(frames))
        return self.inner.classify(frames)


def test_a_slow_classifier_drops_and_counts_instead_of_blocking(toy):
    slow = SlowClassifier(classifier(toy), 0.05)
    t0 = time.monotonic()
    _, s = run_stream(toy, ReplaySource(toy["data"], rate=1000.0), clf=slow,
                      options={"max_batch": 4, "queue_size": 8, "max_latency_ms": 20})
    elapsed = time.monotonic() - t0
    assert s["received"] == 120 and s["dropped"] > 50
    assert s["classified"] + s["dropped"] == 120  # every shot is either classified or counted as dropped
    assert max(slow.batches) <= 4 and sum(slow.batches) == s["classified"]
    assert elapsed < 0.05 * 120 / 4 + 1.0  # the source was never held back until all its shots were taken


class _IdleSource:
    """A source that delivers nothing and ends (closing the queue) as soon as the stream is told to stop."""

    description = "idle"

    def run(self, feed, frame_shape) -> None:
        feed.stop.wait(10.0)


def test_a_stop_that_ends_the_source_is_reported_as_a_stop(toy):
    """stop() (Ctrl-C) makes the source end and close the queue; the runner must say "stop", not "source ended",
    however the two threads interleave."""
    for _ in range(5):
        runner = StreamRunner(_IdleSource(), classifier(toy), StreamOptions(max_latency_ms=1))
        threading.Timer(0.05, runner.stop).start()
        assert runner.run()["stopped_by"] == "stop"


def test_zmq_stream_counts_malformed_messages_and_reconnects(toy):
    with CXIReader(toy["data"]) as r:
        frames = r.frames(np.arange(30)).astype(np.uint16)
        truth = [r.class_names[c] for c in r.hit_type[:30]]
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    source = ZmqSource(endpoint, socket="PULL", reconnect_s=0.5)
    messages: list[str] = []
    runner = StreamRunner(source, classifier(toy), StreamOptions(max_batch=8, max_seconds=20, max_shots=30),
                          on_message=messages.append)
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(runner.run()))
    thread.start()

    def send(parts_list):
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.bind(endpoint)
        for parts in parts_list:
            push.send_multipart(parts)
        time.sleep(0.3)
        ctx.destroy(linger=2000)

    good = [[encode_frame_message(frames[i:i + 5], indices=range(i, i + 5), labels=truth[i:i + 5])]
            for i in range(0, 15, 5)]
    broken = [[b"\x00\x01 not msgpack"], [msgpack.packb({"format": "spi-frames", "frames": 3})],
              [encode_frame_message(frames[:2, :, :, :10])]]
    send(good[:1] + broken + good[1:])
    time.sleep(1.5)  # the source goes away: silence, then the connection is remade
    send([[b"topic", encode_frame_message(frames[i:i + 5], indices=range(i, i + 5), labels=truth[i:i + 5])]
          for i in range(15, 30, 5)])
    thread.join(30)
    assert not thread.is_alive()
    assert done["malformed"] == 3 and done["classified"] == 30 and done["received"] == 30
    assert done["reconnects"] >= 1 and done["judged"] == 30
    assert any("malformed message" in m for m in messages)


def test_karabo_stream_against_the_simulated_beamline(toy):
    buffer = file_buffer(toy["data"])
    server = BeamlineServer(buffer, "tcp://127.0.0.1:*", rate=400.0, pulses=3, dtype="uint16")
    ready = threading.Event()
    served: dict = {}
    t = threading.Thread(target=lambda: served.update(vars(server.run(ready=ready))))
    t.start()
    assert ready.wait(10)
    endpoint = server.bound_endpoint
    pub = Publisher("tcp://127.0.0.1:*", classifier(toy).output_names)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 100)
    sub.connect(pub.endpoint)
    log = ResultLog(toy["dir"] / "karabo.csv", classifier(toy).output_names, overwrite=True)
    runner = StreamRunner(KaraboSource(endpoint, reconnect_s=1.0), classifier(toy),
                          StreamOptions(max_batch=8, max_seconds=20.0), log=log, publisher=pub)
    s: dict = {}
    rt = threading.Thread(target=lambda: s.update(runner.run()))
    rt.start()
    t.join(10)
    time.sleep(0.5)
    runner.stop()
    rt.join(10)
    results = []
    while True:
        try:
            results.append(decode_results(sub.recv_multipart()))
        except zmq.Again:
            break
    ctx.destroy(linger=0)
    assert served["shots"] == 120 and served["trains"] == 40
    assert s["received"] + 3 * served["dropped_trains"] == 120 and s["classified"] == s["received"] > 60
    rows = list(csv.DictReader(open(toy["dir"] / "karabo.csv")))
    assert len(rows) == s["classified"]
    assert all(int(r["train_id"]) - 1_000_000 == int(r["index"]) // 3 and int(r["pulse_id"]) == int(r["index"]) % 3
               for r in rows)
    ref = {int(r["index"]): r for r in toy["ref_rows"]}
    assert all(r["truth"] == ref[int(r["index"])]["truth"] for r in rows)
    assert s["accuracy"] == pytest.approx(np.mean([r["label"] == r["truth"] for r in rows]))
    published = [i for m in results for i in m["index"]]
    if published:  # PUB drops what a late subscriber missed; what came must match the log
        by_index = {int(r["index"]): r["label"] for r in rows}
        m = results[-1]
        assert m["class_names"] == ["no_hit", "single", "multi", "unintended"]
        assert all(by_index[i] == lab for i, lab in zip(m["index"], m["label"], strict=True))
        assert len(m["distances"][0]) == 4 and all(v >= 0 for v in m["latency_ms"])
    assert len(published) > 0


def test_karabo_stream_reconnects_when_the_bridge_comes_back_and_names_missing_sources(toy):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    buffer = file_buffer(toy["data"], 20)

    def serve(first_train):
        srv = BeamlineServer(buffer, endpoint, rate=200.0, first_train=first_train)
        return srv, threading.Thread(target=srv.run)

    runner = StreamRunner(KaraboSource(endpoint, reconnect_s=0.5), classifier(toy),
                          StreamOptions(max_batch=4, max_seconds=20))
    done: dict = {}
    t = threading.Thread(target=lambda: done.update(runner.run()))
    t.start()
    lost = 0
    for first_train in (1000, 5000):
        srv = BeamlineServer(buffer, endpoint, rate=100.0, first_train=first_train)
        lost += srv.run().dropped_trains  # trains sent before the client (re)connected are dropped, like at a facility
        time.sleep(1.5)  # the bridge is gone
    runner.stop()
    t.join(20)
    assert not t.is_alive()
    assert done["classified"] == done["received"] == 40 - lost > 20 and done["reconnects"] == 2  # two outages
    # a source name that the stream does not have: one clear error listing what it holds
    srv3 = BeamlineServer(buffer, endpoint, rate=200.0)
    st3 = threading.Thread(target=srv3.run)
    st3.start()
    bad = StreamRunner(KaraboSource(endpoint, source="SQS_DET/CAL/X"), classifier(toy), StreamOptions(max_seconds=10))
    with pytest.raises(ConfigError, match=r"no source 'SQS_DET/CAL/X'.*SPB_DET_AGIPD1M-1/CAL/APPEND_CORRECTED: "
                                          r"image.data \(1, 2, 20, 44\)"):
        bad.run()
    srv3.stop()
    st3.join(10)


def test_array_source_cycles_frames_with_labels_and_the_beamline_simulates_a_manifest(toy):
    from spinet.stream import ArraySource, simulate_buffer
    from spisim.cxi import HIT_TYPES

    with CXIReader(toy["data"]) as r:
        frames = r.frames(np.arange(10))
        truth = [r.class_names[c] for c in r.hit_type[:10]]
    runner = StreamRunner(ArraySource(frames, shots=25, labels=truth), classifier(toy), StreamOptions(max_batch=6))
    s = runner.run()
    assert s["classified"] == s["received"] == s["judged"] == 25 and s["dropped"] == 0
    buf = simulate_buffer(None, 3, seed=5)  # the built-in default manifest
    assert buf.frames.shape[0] == 3 and buf.frames.shape[1:] == (1, 64, 64) and set(buf.labels) <= set(HIT_TYPES)
    again = simulate_buffer(None, 3, seed=5)
    assert np.array_equal(again.frames, buf.frames) and again.labels == buf.labels  # same manifest + seed, same shots
