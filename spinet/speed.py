"""Inference speed: shots per second and latency per batch of the whole path (preprocessing + network),
raw frames in, embeddings out, for torch (eager), TorchScript and ONNX Runtime, on CPU and GPU.

Timing starts with the frames in host memory (the copy to the GPU is included) and ends with the
embeddings back on the host; reading HDF5 is not included. Each setting runs ``warmup`` untimed calls,
then at least ``repeats`` timed calls and ``min_seconds``; the latency is the median call time.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from spisim.backend import torch_cuda_available
from spisim.errors import ConfigError

from .checkpoint import ModelBundle
from .config import Config
from .export import inference_module
from .models import build_model
from .preprocess import Preprocessor, geometry_key

RUNTIMES = ("torch", "torchscript", "onnx")
LCLS_I_HZ = 120.0


@dataclass
class BenchRow:
    """One measured setting."""

    runtime: str
    device: str
    threads: int
    batch: int
    latency_ms: float
    p95_ms: float
    shots_per_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def pnccd_like_geometry(
    ss: int = 512, fs: int = 1024, gap_pixels: int = 20, pixel_size: float = 75e-6, distance: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """A pnCCD-like detector: two (ss, fs) panels of 75 µm pixels above and below the beam.

    Returns:
        (pixel_position (2, ss, fs, 3) m, mask (2, ss, fs) bool, a 3-pixel beamstop masked).
    """
    from .synthetic import toy_geometry

    return toy_geometry(ss=ss, fs=fs, gap=gap_pixels, pixel_size=pixel_size, distance=distance, beamstop=3.0)


def default_bundle(
    config: Config | None = None, frame_shape: tuple[int, int, int] = (2, 512, 1024), seed: int = 0
) -> ModelBundle:
    """An untrained model with default settings behind a pnCCD-like detector of ``frame_shape`` (for timing)."""
    cfg = config or Config.from_dict({"preprocess": {"bin": 4}})
    m, ss, fs = frame_shape
    if m != 2:
        raise ConfigError("the default benchmark detector has 2 panels: give --frame-shape 2,SS,FS")
    pos, mask = pnccd_like_geometry(ss, fs)
    pre = Preprocessor.from_geometry(cfg.preprocess, frame_shape, pos, mask)
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.preprocess.input_size).eval()
    return ModelBundle(
        cfg,
        ["no_hit", "single", "multi", "unintended"],
        model,
        pre,
        geometry_key(frame_shape, pos, mask),
        {"spi_version": None},
    )


def _timed(
    call: Callable[[], object], sync: Callable[[], None], warmup: int, repeats: int, min_seconds: float
) -> list[float]:
    for _ in range(warmup):
        call()
    sync()
    times: list[float] = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < repeats or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50 * max(repeats, 1):
            break
    return times


def _runner(
    bundle: ModelBundle, runtime: str, device: str, threads: int, tmpdir: str
) -> Callable[[np.ndarray], np.ndarray]:
    module = inference_module(bundle).to(device)
    if runtime == "torch":

        def run(frames: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(frames).to(device)).cpu().numpy()

        return run
    if runtime == "torchscript":
        from .export import _example

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still works
            traced = torch.jit.trace(module, (_example(bundle.preprocessor).to(device),), check_trace=False)
            traced = torch.jit.freeze(traced.eval())

        def run_ts(frames: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return traced(torch.from_numpy(frames).to(device)).cpu().numpy()

        return run_ts
    if runtime == "onnx":
        import onnxruntime as ort

        from .export import export_onnx

        path = f"{tmpdir}/bench.onnx"
        export_onnx(bundle, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
        if providers[0] not in ort.get_available_providers():
            raise ConfigError(f"onnxruntime has no {providers[0]} here")
        sess = ort.InferenceSession(path, opts, providers=providers)

        def run_onnx(frames: np.ndarray) -> np.ndarray:
            return sess.run(["embeddings"], {"frames": frames})[0]

        return run_onnx
    raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")


def benchmark(
    bundle: ModelBundle,
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    runtimes: Sequence[str] = ("torch",),
    devices: Sequence[str] = ("cpu",),
    threads: int = 1,
    warmup: int = 3,
    repeats: int = 10,
    min_seconds: float = 1.0,
    seed: int = 0,
    on_row: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Time the inference path for each runtime × device × batch size.

    Args:
        bundle: the model (its stored preprocessing and frame shape are used).
        batch_sizes: shots per call.
        runtimes: ``torch``, ``torchscript``, ``onnx``.
        devices: ``cpu`` and/or ``cuda``.
        threads: CPU threads (torch intra-op and ONNX Runtime intra-op) during the measurement.
        warmup, repeats, min_seconds: see the module docstring (min_seconds in s, >= 0).
        seed: seed of the random Poisson frames.
        on_row: called with each row as soon as it is measured.
    """
    import tempfile

    if min_seconds < 0 or not np.isfinite(min_seconds):
        raise ConfigError(f"min_seconds must be a finite number of seconds >= 0, got {min_seconds}")
    if repeats < 1 or warmup < 0 or threads < 1:
        raise ConfigError(f"need repeats >= 1, warmup >= 0 and threads >= 1, got {repeats}, {warmup}, {threads}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    rows: list[BenchRow] = []
    frame_shape = bundle.preprocessor.frame_shape
    rng = np.random.default_rng(seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for device in devices:
                if device.startswith("cuda") and not torch_cuda_available():
                    raise ConfigError("no CUDA device here: benchmark the CPU only")
                sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
                for runtime in runtimes:
                    run = _runner(bundle, runtime, device, threads, tmp)
                    for b in batch_sizes:
                        frames = rng.poisson(1.0, size=(b, *frame_shape)).astype(np.float32)
                        times = _timed(lambda f=frames, r=run: r(f), sync, warmup, repeats, min_seconds)
                        med = statistics.median(times)
                        row = BenchRow(
                            runtime, device, threads, b, 1e3 * med, 1e3 * float(np.percentile(times, 95)), b / med
                        )
                        rows.append(row)
                        if on_row is not None:
                            on_row(row)
    finally:
        torch.set_num_threads(prev_threads)
    return rows


# ----------------------------------------------------------------------------------------------
# The whole benchmark of ``spi bench`` (callable without click)


def parse_positive_ints(text: str, what: str) -> list[int]:
    """Comma-separated positive integers (``"1,8,32"``); ConfigError naming ``what`` otherwise."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} takes positive integers, got {text!r}")
    return values


def parse_frame_shape(text: str, what: str = "--frame-shape") -> tuple[int, int, int]:
    """``"M,SS,FS"`` → (M, SS, FS) of positive integers."""
    shape = parse_positive_ints(text, what)
    if len(shape) != 3:
        raise ConfigError(f"{what} takes M,SS,FS, got {text!r}")
    return shape[0], shape[1], shape[2]


def parse_runtimes(text: str, what: str = "--runtime") -> list[str]:
    """Comma-separated names of :data:`RUNTIMES`."""
    runtimes = [r.strip() for r in text.split(",") if r.strip()]
    if not runtimes or any(r not in RUNTIMES for r in runtimes):
        raise ConfigError(f"{what} takes {', '.join(RUNTIMES)}, got {text!r}")
    return runtimes


def bench_devices(device: str) -> list[str]:
    """The devices to time for ``cpu``, ``cuda`` or ``all`` (the CPU, and the GPU when torch sees one);
    ConfigError for ``cuda`` without a GPU (:func:`spisim.backend.resolve_device`)."""
    from spisim.backend import resolve_device

    if device == "all":
        return ["cpu", "cuda"] if torch_cuda_available() else ["cpu"]
    return [resolve_device(device, library="torch")]


@dataclass
class BenchReport:
    """What :func:`run_bench` measured, and on what."""

    arch: str
    frame_shape: tuple[int, int, int]
    input_size: int
    threads: int
    rows: list[BenchRow]

    def as_dict(self) -> dict:
        """The JSON document of ``spi bench --json``."""
        return {"frame_shape": list(self.frame_shape), "input_size": self.input_size, "torch": torch.__version__,
                "rows": [r.as_dict() for r in self.rows]}

    def verdict(self) -> str | None:
        """One line on whether the CPU keeps up with LCLS-I (None without CPU rows)."""
        cpu = [r for r in self.rows if r.device == "cpu"]
        if not cpu:
            return None
        best = max(cpu, key=lambda r: r.shots_per_s)
        keeps = "keeps up with" if best.shots_per_s >= LCLS_I_HZ else "does NOT keep up with"
        return (f"CPU, {self.threads} thread{'s' if self.threads > 1 else ''}: best {best.shots_per_s:.0f} shots/s "
                f"({best.runtime}, batch {best.batch}): {keeps} LCLS-I ({LCLS_I_HZ:.0f} Hz)")


def run_bench(
    model: str | None,
    *,
    frame_shape: tuple[int, int, int] = (2, 512, 1024),
    batch_sizes: Sequence[int] = (1, 8, 32),
    runtimes: Sequence[str] = ("torch",),
    devices: Sequence[str] = ("cpu",),
    threads: int = 1,
    repeats: int = 10,
    min_seconds: float = 1.0,
    on_start: Callable[[ModelBundle], None] | None = None,
    on_row: Callable[[BenchRow], None] | None = None,
) -> BenchReport:
    """Time a checkpoint (``model``), or an untrained default network on a pnCCD-like detector of
    ``frame_shape`` (``model`` None), with :func:`benchmark`.

    ``on_start`` is called with the loaded model before any timing; the other arguments are :func:`benchmark`'s.
    """
    bundle = ModelBundle.load(model) if model is not None else default_bundle(frame_shape=frame_shape)
    if on_start is not None:
        on_start(bundle)
    rows = benchmark(bundle, batch_sizes=batch_sizes, runtimes=runtimes, devices=devices, threads=threads,
                     repeats=repeats, min_seconds=min_seconds, on_row=on_row)
    pre = bundle.preprocessor
    return BenchReport(bundle.config.model.arch, tuple(pre.frame_shape), pre.size, threads, rows)  # type: ignore[arg-type]
