"""What ``spi classify`` does, callable without the command line (:func:`run_classify`).

The checkpoints MODEL names are read (a file, or a run folder's ``best.pt`` and with ``select`` its kept epochs),
optionally adapted to a run (AdaBN), the supports embedded with each; where there is a choice (several
checkpoints, ``rule="auto"``) the checkpoint and rule with the most supports right under leave-one-out are taken,
``min_ratio="auto"`` sets the ratio test from the supports; then the file is classified
(:func:`spinet.inference.classify_file`). DATA is opened, and checked to hold a frame with data, before any
support is built. With supports from several files (e.g. simulated shots and a few real labelled ones), a
label-free check is reported: how often each file's supports alone give the same single-vs-rest answer as the
first file's on DATA's frames (:func:`support_agreement`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spisim.backend import resolve_device
from spisim.cxi import CXIReader
from spisim.errors import InputFileError

from .checkpoint import ModelBundle
from .inference import (
    ClassifyResult,
    SupportSet,
    SupportSpec,
    adapt_bundle,
    build_supports,
    check_outputs,
    classify_file,
    embed_batches,
    estimate_mask,
    require_data,
    select_reading,
    support_estimate,
    truth_is_binary,
)
from .labelspace import class_counts_text, is_binary_names
from .metrics import is_single_class
from .selection import (
    SELECTION_RULES,
    Candidate,
    Estimate,
    Selection,
    cluster_agreement,
    fitted_ratio,
    nested_estimate,
)

AGREEMENT_FRAMES = 2000
"""Frames of DATA (spread over the file, supports and frames without data left out) read for the check."""


def model_files(model: str | Path, select: bool = False) -> list[Path]:
    """The checkpoints MODEL names: a file, or a run folder's best.pt, and with ``select`` its kept epochs."""
    model = Path(model)
    if model.is_dir():
        best = model / "best.pt"
        if not best.is_file():
            raise InputFileError(f"{model} is a directory without best.pt (give a checkpoint or a spi train run "
                                 "folder)")
        return [best, *(sorted((model / "epochs").glob("epoch-*.pt")) if select else [])]
    return [model]


@dataclass
class ClassifyOutcome:
    """What :func:`run_classify` did.

    Attributes:
        result: the file's predictions (:class:`spinet.inference.ClassifyResult`).
        estimate: the accuracy the supports give under leave-one-out (with its n and Wilson interval).
        binary: whether answers and estimate are single / not_single.
        model: the checkpoint used.
        rule: the rule used.
        min_ratio: the ratio test used (None: none).
        selection: the leave-one-out table of the candidates, where there was a choice.
    """

    result: ClassifyResult
    estimate: Estimate
    binary: bool
    model: Path
    rule: str
    min_ratio: float | None
    selection: Selection | None = None


Say = Callable[[str], None]


def _readings(files: list[Path], model: Path, data: Path, specs: Sequence[SupportSpec], *, adapt: Path | None,
              adapt_shots: int, label_mode: str | None, batch_size: int, device: str, say: Say
              ) -> tuple[list[tuple[str, ModelBundle, SupportSet]], str]:
    """(name, model, its support set) per checkpoint, and the label mode."""
    readings = []
    mode = label_mode or "hit_type"
    for path in files:
        bundle = ModelBundle.load(path, device=device)
        if path == files[0]:
            require_data(bundle, data)  # a file of empty frames: one line, before the supports are built
        if adapt is not None:
            bundle, n_adapt = adapt_bundle(bundle, adapt, max_shots=adapt_shots, batch_size=batch_size)
            if path == files[0]:
                say(f"AdaBN: batch-norm statistics re-estimated on {n_adapt} frames of {adapt}"
                    if n_adapt else "AdaBN: the network has no batch-norm layers; nothing to adapt")
        mode = label_mode or bundle.config.data.label
        readings.append((path.name if len(files) == 1 else str(path.relative_to(model)), bundle,
                         build_supports(bundle, specs, label_mode=mode, batch_size=batch_size)))
    return readings, mode


def _ratio_and_estimate(sup: SupportSet, rule: str, min_ratio: float | str | None, binary: bool, data: Path,
                        selection: Selection | None, say: Say) -> tuple[Estimate, float | None]:
    """(the estimate, the ratio test), the ratio fitted on the supports for ``min_ratio="auto"``. Where the
    supports chose something (a checkpoint or rule among several, the ratio), the estimate is the nested one
    (:func:`spinet.selection.nested_estimate`: each support answered by what the others chose), else plain
    leave-one-out."""
    fixed = None if min_ratio == "auto" else min_ratio
    loo = support_estimate(sup, rule, min_ratio=fixed, binary=binary, data=data)
    ratio = fixed
    if min_ratio == "auto":
        ratio = fitted_ratio(loo)
        say(f"ratio test from the supports: {'none' if ratio is None else f'--min-ratio {ratio:g}'}")
    if selection is None and min_ratio != "auto":
        return loo.estimate, ratio
    candidates = selection.candidates if selection is not None else [Candidate("model", sup.embeddings, rule)]
    estimate = nested_estimate(candidates, sup.classes.numpy(), sup.class_names, binary=binary,
                               evaluate=estimate_mask(sup, data), min_ratio=min_ratio)
    return estimate, ratio


def support_agreement(bundle: ModelBundle, sup: SupportSet, data: Path, rule: str, *, batch_size: int = 256,
                      max_frames: int = AGREEMENT_FRAMES) -> list[dict[str, Any]]:
    """The label-free check of supports from several files: for each file after the first, the share of DATA's
    frames to which its supports alone give the same single-vs-rest answer as the first file's supports alone
    (:func:`spinet.selection.cluster_agreement`; 1: the two sets put the classes in the same places of the
    embedding). Files whose supports lack a single or a non-single class are left out.

    Returns:
        one dict per compared file: ``first``, ``other`` (paths), ``agreement`` (0-1), ``frames`` (n read).
    """
    files = list(dict.fromkeys(str(f) for f in sup.files))
    names = list(sup.class_names)
    single = np.array([is_single_class(n) for n in names])

    def reading(path: str) -> tuple[torch.Tensor, torch.Tensor, list[str]] | None:
        own = torch.from_numpy(np.asarray([str(f) == path for f in sup.files], dtype=bool))
        present, cls = np.unique(sup.classes[own].numpy(), return_inverse=True)  # the file's own classes
        if not (single[present].any() and (~single[present]).any()):
            return None
        return sup.embeddings[own], torch.from_numpy(cls.astype(np.int64)), [names[i] for i in present]

    readings = [(f, reading(f)) for f in files]
    readings = [(f, r) for f, r in readings if r is not None]
    if len(readings) < 2:
        return []
    with CXIReader(data) as r:
        n = len(r)
        idx = np.arange(n)[~sup.is_member(data, np.arange(n))]
        if len(idx) > max_frames:
            idx = idx[np.linspace(0, len(idx) - 1, max_frames).round().astype(np.int64)]
        embedded = [(e, ok) for _, e, ok in embed_batches(bundle, r, idx, batch_size)]
    if not embedded:
        return []
    emb = torch.cat([e for e, _ in embedded])[torch.from_numpy(np.concatenate([ok for _, ok in embedded]))]
    if len(emb) == 0:
        return []
    first, ref = readings[0]
    return [{"first": first, "other": other, "frames": int(len(emb)),
             "agreement": cluster_agreement(emb, ref, rd, rule=rule)} for other, rd in readings[1:]]


def run_classify(
    model: str | Path,
    data: str | Path,
    specs: Sequence[SupportSpec],
    *,
    labels: str | Path | None = None,
    binary: bool | None = None,
    rule: str = "mean",
    unknown_threshold: float | None = None,
    min_ratio: float | str | None = None,
    select: bool = False,
    adapt: str | Path | None = None,
    adapt_shots: int = 2000,
    label_mode: str | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    batch_size: int = 256,
    device: str = "cpu",
    say: Say | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ClassifyOutcome:
    """Classify DATA few-shot as ``spi classify`` does (module doc); the arguments are its options.

    Args:
        model: a checkpoint, or a run folder (its ``best.pt``; with ``select`` also its kept epochs).
        data: the CXI/HDF5 file to classify.
        specs: the support files (:meth:`spinet.inference.SupportSpec.parse`).
        rule: ``mean``, ``prototype``, ``nearest``, ``knn`` or ``auto`` (chosen by leave-one-out).
        min_ratio: the ratio test (>= 1), ``auto`` (from the supports) or None.
        say: where messages go, one line each (default: none).
        progress: called with the number of shots after each batch.
        on_start: called once with the number of shots of DATA, when classifying starts.

    Raises:
        InputFileError: a missing or unreadable DATA or checkpoint, a DATA without any frame with data, bad
            supports; OutputFileError: outputs that cannot be written (checked before any work); ConfigError: a
            device that is not there.
    """
    say = say or (lambda text: None)
    model, data = Path(model), Path(data)
    device = resolve_device(device, library="torch")
    if output is not None:
        check_outputs(output, overwrite)  # before any work
    with CXIReader(data) as r:  # a missing or unreadable DATA: one line, before the supports are built
        n = len(r)
    files = model_files(model, select)
    readings, mode = _readings(files, model, data, specs, adapt=None if adapt is None else Path(adapt),
                               adapt_shots=adapt_shots, label_mode=label_mode, batch_size=batch_size, device=device,
                               say=say)
    sup = readings[0][2]
    for part in sup.parts:
        say(f"support from {part['path']}: {class_counts_text(part['counts'])}")
    is_bin = binary if binary is not None else truth_is_binary(data, labels, mode, sup.class_names)
    if is_bin is None:
        is_bin = is_binary_names(sup.class_names)
    rules = list(SELECTION_RULES) if rule == "auto" else [rule]
    chosen, selection = 0, None
    if len(readings) * len(rules) > 1:
        selection, chosen = select_reading(readings, rules, binary=is_bin, data=data,
                                           min_ratio=None if min_ratio == "auto" else min_ratio)
        rule = selection.chosen.rule
        say(f"chosen by leave-one-out over the supports: {selection.chosen.name}, rule {rule} "
            f"({len(readings)} checkpoints x {len(rules)} rules tried)")
        for row in selection.table():
            say(f"  {row['candidate']:>20s} {row['rule']:>9s}: {row['correct']} of {row['n']} right, "
                f"mean margin {row['mean_margin']:+.3f}{' <' if row['chosen'] else ''}")
    bundle, sup = readings[chosen][1], readings[chosen][2]
    estimate, ratio = _ratio_and_estimate(sup, rule, min_ratio, is_bin, data, selection, say)
    extra: dict[str, Any] = {"model": str(files[chosen]), "adapt": None if adapt is None else str(adapt),
                             "estimate": estimate.to_dict(),
                             "selection": None if selection is None else selection.table()}
    agreement = support_agreement(bundle, sup, data, rule, batch_size=batch_size) if len(sup.parts) > 1 else []
    for a in agreement:
        say(f"label-free check: the supports of {Path(a['other']).name} alone give the same single-vs-rest answer "
            f"as those of {Path(a['first']).name} alone on {100 * a['agreement']:.1f} % of {a['frames']} frames of "
            f"{data.name} (low: the two sets put the classes in different places)")
    extra["support_agreement"] = agreement
    if on_start is not None:
        on_start(n)
    result = classify_file(bundle, data, sup, rule=rule, threshold=unknown_threshold, min_ratio=ratio, output=output,
                           batch_size=batch_size, truth_labels=labels, label_mode=mode, on_batch=progress,
                           binary=binary, overwrite=overwrite, extra=extra)
    return ClassifyOutcome(result, estimate, is_bin, files[chosen], rule, ratio, selection)
