"""A dataset run: shards, resume, worker processes and Dask around :class:`spisim.simulator.Simulator`.

Reproducibility rests on two rules:

* every shot draws from its own streams, made from ``SeedSequence(seed, spawn_key=(1, shot))`` (scene,
  pulse jitter, detector noise; :func:`spisim.simulator.shot_streams`), so a shot does not depend on which
  worker makes it or in which order; fixed detector defects come from ``spawn_key=(0,)``;
* shots are made in shards of ``output.shard_size`` consecutive shots. Each finished shard is written to
  a temporary name in ``OUT.h5.parts/`` and renamed; at the end one process joins the shards, in order,
  into a temporary file (copying the compressed chunks as they are) and renames it to ``OUT.h5``. The
  final file therefore never exists half-written, and the same manifest and seed give the same bytes
  whatever the number of workers, the backend, or how often the run was interrupted and resumed.

``generate(..., resume=True)`` skips the shards already in ``OUT.h5.parts/`` (after checking that they
were made from the same manifest, overrides, package version and device, recorded in ``plan.json``).

The shots themselves are made by :class:`spisim.simulator.Simulator` (re-exported here, with
:func:`~spisim.simulator.shot_streams` and the manifest builders, for existing callers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .atomic import write_text_atomic
from .backend import resolve_device
from .cxi import labels_block, write_shard
from .errors import ConfigError, OutputFileError, SpiError, one_line_warnings, os_error_message
from .manifest import Manifest, load_manifest, parse_manifest
from .manifest.build import BACKGROUND_DATASET, MASK_DATASET, build_beam, build_body, build_detector, read_static_mask
from .simulator import ProgressCallback, Simulator, dataset_attributes, fixed_stream, shot_streams

__all__ = [  # the run; and, re-exported for existing callers, the shot maker and the manifest builders
    "BACKGROUND_DATASET", "DASK_CONNECT_TIMEOUT", "LOCK_NAME", "MASK_DATASET", "Job", "Plan", "ProgressCallback",
    "RunResult", "Simulator", "build_beam", "build_body", "build_detector", "check_output", "check_writable_folder",
    "dataset_attributes", "finished_shards", "fixed_stream", "generate", "make_shard", "parts_dir",
    "read_static_mask", "resolve_device", "run_shard", "shard_name", "shot_streams",
]

DASK_CONNECT_TIMEOUT = "20s"
"""How long to try to reach a Dask scheduler given by address."""


# ----------------------------------------------------------------------------------------------
# Shards


@dataclass(frozen=True)
class Plan:
    """How a dataset is cut into shards."""

    n_shots: int
    shard_size: int

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_shots / self.shard_size)

    def bounds(self, shard: int) -> tuple[int, int]:
        """(first shot, one past the last) of ``shard``."""
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.n_shots)


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.h5"


def parts_dir(out: str | Path) -> Path:
    """Folder of the shards of ``out``: ``OUT.h5.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _fingerprint(manifest: Manifest, device: str, compression: str) -> str:
    text = json.dumps([manifest.text, manifest.overrides, manifest.source, __version__, device, compression])
    return hashlib.sha256(text.encode()).hexdigest()


def make_shard(sim: Simulator, plan: Plan, shard: int, folder: Path, compression: str,
               progress: ProgressCallback | None = None) -> Path:
    """Simulate one shard and write it to ``folder`` (temporary name, then renamed); returns its path."""
    start, stop = plan.bounds(shard)
    frames, labels = sim.shots(start, stop, progress)
    final = folder / shard_name(shard)
    tmp = folder / f"{final.name}.tmp.{os.getpid()}"
    try:
        write_shard(tmp, start, frames, labels_block(labels, sim.spec.max_particles), compression=compression,
                    units=sim.units)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return final


# Per-process cache of simulators (worker processes and Dask workers build theirs once).
_SIMULATORS: dict[str, Simulator] = {}


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to make shards (picklable, small)."""

    text: str
    source: str
    base_dir: str | None
    overrides: dict
    device: str
    folder: str
    compression: str
    cwd: str

    @property
    def volume_store(self) -> Path:
        return Path(self.folder) / "volumes"

    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.text, self.source, self.overrides, self.device]).encode()).hexdigest()

    def simulator(self) -> Simulator:
        k = self.key()
        if k not in _SIMULATORS:
            manifest = parse_manifest(self.text, source=self.source,
                                      base_dir=Path(self.base_dir) if self.base_dir else None, overrides=self.overrides)
            with _chdir(self.cwd):
                _SIMULATORS[k] = Simulator(manifest, self.device, self.volume_store).prepare()
        return _SIMULATORS[k]


@contextlib.contextmanager
def _chdir(path: str):  # noqa: ANN202
    """Run in ``path`` (the folder the run was started from, so relative paths resolve alike), if it exists."""
    old = os.getcwd()
    moved = os.path.isdir(path)
    if moved:
        os.chdir(path)
    try:
        yield
    finally:
        if moved:
            os.chdir(old)


def run_shard(job: Job, shard: int) -> int:
    """Worker entry point: make shard ``shard`` of ``job``; returns the number of shots written."""
    sim = job.simulator()
    plan = Plan(sim.spec.shots, sim.spec.output.shard_size)
    make_shard(sim, plan, shard, Path(job.folder), job.compression)
    start, stop = plan.bounds(shard)
    return stop - start


def _pool_init(threads: int) -> None:
    """Share the cores among worker processes (before numba and OpenMP start their thread pools)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    one_line_warnings()


# ----------------------------------------------------------------------------------------------
# The whole run


def check_output(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """SpiError unless a run may write ``out`` (an existing file or unfinished shards need a flag).

    Checked before any work: the name is a file name, its folder exists and can be written.
    """
    given, out = str(out), Path(out)
    if not out.name or out.name in (".", "..") or given.endswith(("/", os.sep)):
        raise OutputFileError(f"output {given!r} is not a file name (e.g. -o run.h5)")
    if out.is_dir():
        raise OutputFileError(f"output {out} is a folder: give a file name such as {out / 'run.h5'}")
    check_writable_folder(out.parent)
    folder = parts_dir(out)
    if folder.exists() and _locked_by_another(folder):
        raise SpiError(f"another spi simulate is writing {folder}: wait for it or stop it first")
    if out.exists() and not overwrite:
        if resume and not folder.exists():
            raise SpiError(f"{out} is already complete: nothing to resume (use --overwrite to make it again)")
        if not resume:
            raise SpiError(f"{out} exists: use --overwrite to replace it")
    if folder.exists() and not resume and not overwrite:
        n = len(finished_shards(folder))
        raise SpiError(f"{folder} holds an unfinished run ({n} finished shard{'s' if n != 1 else ''}): add --resume "
                       f"to continue it, or --overwrite to start again")


def check_writable_folder(folder: str | Path) -> None:
    """OutputFileError unless ``folder`` exists and this process may create files in it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputFileError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_fs(folder) else "permission denied"
        raise OutputFileError(f"cannot write in output folder {folder}: {reason}")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # pragma: no cover - not on POSIX
        return False


def finished_shards(folder: str | Path) -> list[Path]:
    """The finished shard files in a parts folder (none when it does not exist)."""
    folder = Path(folder)
    return sorted(folder.glob("shard-*.h5")) if folder.is_dir() else []


def _discard_if_nothing_kept(folder: Path) -> None:
    """Remove a parts folder that holds no finished shard and no built volume (nothing worth resuming)."""
    volumes = folder / "volumes"
    if finished_shards(folder) or (volumes.is_dir() and any(volumes.iterdir())):
        return
    shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class RunResult:
    """What :func:`generate` did."""

    path: Path
    n_shots: int
    shards_made: int
    shards_reused: int
    seconds: float


def generate(
    manifest: Manifest | str | Path | None,
    out: str | Path,
    *,
    workers: int = 1,
    backend: str = "process",
    scheduler: str | None = None,
    device: str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    compression: str | None = None,
    progress: ProgressCallback | None = None,
    on_start: Callable[[int, int], None] | None = None,
    _fail_after_shards: int | None = None,
) -> RunResult:
    """Simulate the dataset of ``manifest`` into the CXI file ``out``.

    Args:
        manifest: a :class:`Manifest`, a manifest path, or None for the built-in default.
        out: the output file (``.h5``); shards go to ``OUT.h5.parts/`` meanwhile.
        workers: processes that make shards (1: this process).
        backend: ``process`` (a local process pool) or ``dask`` (a ``LocalCluster`` of ``workers``
            processes, or the cluster at ``scheduler``).
        scheduler: address of a running Dask scheduler (implies ``backend='dask'``); the workers must
            see the output folder.
        device: ``cpu``, ``cuda`` or ``auto``.
        resume: continue an interrupted run, keeping its finished shards.
        overwrite: replace an existing ``out`` and discard old shards.
        compression: overrides ``output.compression``.
        progress: called with the number of shots finished since the last call.
        on_start: called once with (shots to make now, shots already done), once the detector, the noise and
            the particles are built (their volumes too), before the first shot.
        _fail_after_shards: testing hook: raise after that many new shards (simulates a crash).

    Returns:
        A :class:`RunResult`. Raises :class:`SpiError` subclasses for anything the user can fix.
    """
    t0 = time.perf_counter()
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    out = Path(out)
    if scheduler:
        backend = "dask"
    if backend not in ("process", "dask"):
        raise ConfigError(f"unknown backend {backend!r}: use process or dask")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    check_output(out, resume=resume, overwrite=overwrite)
    folder = parts_dir(out)

    device = resolve_device(device)
    spec = manifest.spec
    compression = compression or spec.output.compression
    from .cxi import compression_options

    compression_options(compression)  # validates the name
    plan = Plan(spec.shots, spec.output.shard_size)
    fp = _fingerprint(manifest, device, compression)
    try:
        folder.mkdir(exist_ok=True)
        with _exclusive(folder):  # held from here on: a second run, --overwrite or not, is refused
            if not resume:
                _clear_parts(folder)
            try:
                return _run(manifest, out, folder, plan, fp, device, compression, workers, backend, scheduler,
                            progress, on_start, _fail_after_shards, t0)
            except BaseException:
                _discard_if_nothing_kept(folder)  # a failed start leaves no folder that asks for --resume
                raise
    except OSError as exc:  # the file system refused (read-only, full, quota): one line, not a traceback
        raise OutputFileError(f"writing {out} failed: {os_error_message(exc)}") from None


LOCK_NAME = "lock"
"""File in a parts folder that a running ``spi simulate`` holds an exclusive lock on."""


def _locked_by_another(folder: Path) -> bool:
    """True when another process holds the lock of a parts folder (a run is writing it now)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no lock
        return False
    path = folder / LOCK_NAME
    if not path.is_file():
        return False
    try:
        with open(path) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _clear_parts(folder: Path) -> None:
    """Empty a parts folder for a fresh run, keeping the lock file this process holds."""
    for entry in folder.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextlib.contextmanager
def _exclusive(folder: Path):  # noqa: ANN202
    """Hold an exclusive lock on ``folder`` so that two runs never write the same shards."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no lock
        yield
        return
    with open(folder / LOCK_NAME, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SpiError(f"another spi simulate is writing {folder}: wait for it or stop it first") from None
        yield


def _run(manifest: Manifest, out: Path, folder: Path, plan: Plan, fp: str, device: str, compression: str,
         workers: int, backend: str, scheduler: str | None, progress: ProgressCallback | None,
         on_start: Callable[[int, int], None] | None, fail_after: int | None, t0: float) -> RunResult:
    plan_file = folder / "plan.json"
    if plan_file.exists():
        recorded = json.loads(plan_file.read_text())
        if recorded.get("fingerprint") != fp:
            raise SpiError(f"{folder} was made from another manifest, seed, shot count, compression, device or "
                           f"package version: remove it or use --overwrite")
    else:
        write_text_atomic(plan_file, json.dumps({"fingerprint": fp, "shots": plan.n_shots,
                                                  "shard_size": plan.shard_size, "version": __version__}))
    for stale in folder.glob("*.tmp.*"):
        stale.unlink()
    done = {s for s in range(plan.n_shards) if (folder / shard_name(s)).is_file()}
    todo = [s for s in range(plan.n_shards) if s not in done]
    shots_done = sum(plan.bounds(s)[1] - plan.bounds(s)[0] for s in done)
    job = Job(manifest.text, manifest.source, str(manifest.base_dir) if manifest.base_dir else None,
              manifest.overrides, device, str(folder), compression, os.getcwd())
    sim = Simulator(manifest, device, job.volume_store)
    if todo:
        sim.prepare()  # loads the particles and builds (or loads) their volumes once, for every worker
    if on_start is not None:  # what a user can get wrong has been checked by now
        on_start(plan.n_shots - shots_done, shots_done)
    if todo:
        if backend == "dask":
            _run_dask(job, todo, plan, workers, scheduler, progress, fail_after)
        elif workers == 1 or len(todo) == 1:
            for n, shard in enumerate(todo):
                if fail_after is not None and n >= fail_after:
                    raise RuntimeError(f"injected failure after {n} shards")
                make_shard(sim, plan, shard, folder, compression, progress)
        else:
            _run_pool(job, todo, plan, workers, progress, fail_after)

    tmp = folder / f"joined.h5.tmp.{os.getpid()}"
    writer = sim.writer(tmp, plan.n_shots, compression)
    try:
        for shard in range(plan.n_shards):
            writer.copy_shard(folder / shard_name(shard))
    finally:
        writer.close()
    os.replace(tmp, out)
    shutil.rmtree(folder)
    return RunResult(out, plan.n_shots, len(todo), len(done), time.perf_counter() - t0)


class _Tally:
    """Counts shards finished by workers: reports their shots to ``progress``; the testing hook fails on cue."""

    def __init__(self, progress: ProgressCallback | None, fail_after: int | None) -> None:
        self.progress, self.fail_after, self.finished = progress, fail_after, 0

    def __call__(self, shots: int) -> None:
        self.finished += 1
        if self.progress is not None:
            self.progress(shots)
        if self.fail_after is not None and self.finished >= self.fail_after:
            raise RuntimeError(f"injected failure after {self.finished} shards")


def _run_pool(job: Job, todo: Sequence[int], plan: Plan, workers: int, progress: ProgressCallback | None,
              fail_after: int | None) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    n = min(workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // n)
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_pool_init, initargs=(threads,)) as pool:
        pending = {pool.submit(run_shard, job, s): s for s in todo}
        tally = _Tally(progress, fail_after)
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    pending.pop(fut)
                    tally(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _run_dask(job: Job, todo: Sequence[int], plan: Plan, workers: int, scheduler: str | None,
              progress: ProgressCallback | None, fail_after: int | None) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise ConfigError("the dask backend needs dask[distributed]: pip install 'dask[distributed]'") from None
    with contextlib.ExitStack() as stack:
        if scheduler:
            try:
                client = stack.enter_context(Client(scheduler, timeout=DASK_CONNECT_TIMEOUT))
            except OSError as exc:
                raise SpiError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, silence_logs=40))
            client = stack.enter_context(Client(cluster))
        futures = [client.submit(run_shard, job, s, key=f"spi-shard-{job.key()[:12]}-{s}", pure=False) for s in todo]
        tally = _Tally(progress, fail_after)
        try:
            for fut in as_completed(futures):
                tally(fut.result())
        except BaseException:
            client.cancel(futures)
            raise
