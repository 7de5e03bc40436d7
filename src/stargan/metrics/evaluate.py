"""The StarGAN v2 evaluation protocol (Choi et al., 2020, Section 4), with the EMA networks.

For every ordered pair of domains src -> trg (src != trg), each validation image of src is translated
``num_outs`` times into trg: with random latent codes through F ("latent") and, separately, with
``num_outs`` distinct random validation images of trg through E ("reference"; all of them, once each,
when trg has fewer). Per task:

- FID and KID of all outputs against the *training* images of trg, in the backbone's feature space.
  Outputs are rounded to 8 bits first, as the released protocol scores saved PNGs.
- LPIPS: the mean over the num_outs * (num_outs - 1) / 2 pairs of one input's outputs (raw outputs,
  as released), averaged over inputs.
- With a domain classifier: the share of outputs classified as trg, and FID/KID in its feature space.
- ``pairwise_l1`` (diversity, as LPIPS but in pixels) and ``source_kept`` (how much of the difference
  between two inputs survives a translation with one style; 0 for a G that ignores its input, which
  the accuracy and FIDs alone cannot tell from a translator), from :mod:`stargan.metrics.diversity`.
  Neither is in the paper.
- On validation data paired by name (the same picture in every domain, :mod:`stargan.data.pairs`), in
  reference mode: the distance of the outputs to the true translation, beside the unchanged source's
  (``paired_l1``, ``paired_l1_identity``, and in LPIPS; :mod:`stargan.metrics.paired`). Not in the paper.

Generation and feature extraction are streamed batch by batch; only feature vectors are kept.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from stargan.config import Config, EvalConfig
from stargan.data import ImageFolder, eval_images, open_dataset
from stargan.data.pairs import namesakes, pair_key, paired_by_name
from stargan.metrics.backbones import FeatureExtractor, build_extractor
from stargan.metrics.diversity import mean_pairwise_l1, source_kept
from stargan.metrics.fid import FeatureStats, fid_from_stats
from stargan.metrics.kid import kernel_inception_distance
from stargan.metrics.paired import PairedDistances
from stargan.metrics.stats_cache import cached_real_stats
from stargan.nets.v2 import MaskFn, Masks, Networks
from stargan.sampling.v2 import latent_dim_of, masks_of

FORMAT = "stargan-eval/1"
MODES = ("latent", "reference")
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


@dataclasses.dataclass
class Scorers:
    """The networks that score images, built once per evaluation."""

    extractors: dict[str, FeatureExtractor]  # "inception" and/or "classifier" feature spaces
    lpips: torch.nn.Module | None
    classifier: torch.nn.Module | None       # ClassifierFeatures (its logits give the accuracy)

    @classmethod
    def build(cls, settings: EvalConfig, img_size: int, device: torch.device,
              random_init: bool = False) -> "Scorers":
        from stargan.metrics.lpips import LPIPS

        extractors: dict[str, FeatureExtractor] = {}
        if settings.backbone != "none":
            extractors["inception"] = build_extractor(settings.backbone, img_size, settings.weights or None,
                                                      random_init=random_init, device=device,
                                                      trust_weights=settings.trust_weights)
        classifier = None
        if settings.classifier:
            from stargan.metrics.classifier import ClassifierFeatures

            classifier = ClassifierFeatures.from_file(settings.classifier, device=device)
            extractors["classifier"] = classifier
        lpips = (LPIPS(settings.lpips_weights or None, random_init=random_init, device=device,
                       trust_weights=settings.trust_weights) if settings.lpips else None)
        return cls(extractors, lpips, classifier)

    def describe(self) -> dict[str, Any]:
        described = {name: {"name": e.name, "weights_sha256": e.weights_sha256,
                            "weights_verified": e.weights_verified, "protocol": e.protocol,
                            "feature_dim": e.feature_dim} for name, e in self.extractors.items()}
        if self.lpips is not None:
            described["lpips"] = {"name": self.lpips.name, "weights_sha256": self.lpips.weights_sha256,
                                  "weights_verified": self.lpips.weights_verified,
                                  "protocol": self.lpips.protocol}
        return described


def check_settings(settings: EvalConfig) -> None:
    """What the config's own field rules (config_rules.py) cannot see: files on disk."""
    if settings.classifier and not Path(settings.classifier).is_file():
        raise FileNotFoundError(f"classifier file {settings.classifier} does not exist; train one with "
                                "`stargan classifier train DATA --out FILE`")


def preflight(settings: EvalConfig, random_init: bool = False, domains: tuple[str, ...] = ()) -> None:
    """Fail now, not after hours of training, when the settings are wrong, a weight file is missing or
    the classifier was trained on other ``domains``."""
    from stargan.metrics.weights import resolve_weights

    check_settings(settings)
    if settings.classifier and domains:
        from stargan.metrics.classifier import read_classifier_info

        trained_on = tuple(read_classifier_info(settings.classifier)["config"].domains)
        if trained_on != tuple(domains):
            raise ValueError(f"the classifier {settings.classifier} was trained on domains {list(trained_on)} "
                             f"but the dataset has {list(domains)}; train one on this dataset")
    if random_init:
        return
    if settings.backbone != "none":
        resolve_weights(settings.backbone, settings.weights or None, settings.trust_weights)
    if settings.lpips:
        resolve_weights("alexnet", settings.lpips_weights or None, settings.trust_weights)


def as_png(x: Tensor) -> Tensor:
    """Round to the 8-bit values a saved PNG would hold, back in [-1, 1]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


class _Task:
    """Accumulates the scores of one (mode, src, trg) task as output batches stream in."""

    def __init__(self, scorers: Scorers, trg: int):
        self.scorers, self.trg = scorers, trg
        self.stats = {name: FeatureStats(keep_features=True) for name in scorers.extractors}
        self.lpips: list[float] = []
        self.pairwise_l1: list[Tensor] = []
        self.source_kept: float | None = None
        self.paired: PairedDistances | None = None
        self.correct = 0
        self.count = 0

    def add(self, outs: Tensor) -> None:
        """``outs`` [num_outs, N, 3, S, S]: num_outs outputs for each of N inputs."""
        if self.scorers.lpips is not None:
            self.lpips += [self.scorers.lpips.mean_pairwise_lpips(outs[:, i]) for i in range(outs.size(1))]
        images = as_png(outs.flatten(0, 1))
        self.pairwise_l1.append(mean_pairwise_l1(images.view_as(outs)))
        for name, extractor in self.scorers.extractors.items():
            self.stats[name].update(extractor(images))
        if self.scorers.classifier is not None:
            predicted = self.scorers.classifier.logits(images).argmax(1)
            self.correct += int((predicted == self.trg).sum())
        self.count += images.size(0)

    def add_paired(self, outs: Tensor, x: Tensor, truth: Tensor, scored: Tensor) -> None:
        """The distances of ``outs`` (as :meth:`add`) and of the inputs ``x`` to their true translations
        ``truth``; ``scored`` [num_outs, N]: False for outputs whose reference was the input's namesake."""
        if self.paired is None:
            self.paired = PairedDistances(self.scorers.lpips)
        self.paired.add(as_png(outs.flatten(0, 1)).view_as(outs), x, truth, scored)

    def result(self, real: dict[str, FeatureStats], seed: int) -> dict[str, float]:
        out: dict[str, float] = {"num_images": self.count}
        for name, stats in self.stats.items():
            prefix = "" if name == "inception" else f"{name}_"
            out[f"{prefix}fid"] = fid_from_stats(stats, real[name])
            out[f"{prefix}kid"], out[f"{prefix}kid_std"] = kernel_inception_distance(
                stats.features, real[name].features, num_subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE,
                seed=seed)
        if self.lpips:
            out["lpips"] = float(np.mean(self.lpips))
        out["pairwise_l1"] = float(torch.cat(self.pairwise_l1).mean())
        if self.source_kept is not None:
            out["source_kept"] = self.source_kept
        if self.paired is not None:
            out.update(self.paired.result())
        if self.scorers.classifier is not None:
            out["accuracy"] = self.correct / self.count
        return out


def reference_picks(num_refs: int, num_inputs: int, num_outs: int, generator: torch.Generator) -> Tensor:
    """``[num_inputs, num_outs]`` indices of references: distinct within each input's row, as released
    (duplicates would lower LPIPS on small domains). Needs ``num_outs <= num_refs``."""
    if not 1 <= num_outs <= num_refs:
        raise ValueError(f"cannot draw {num_outs} distinct references out of {num_refs}")
    return torch.stack([torch.randperm(num_refs, generator=generator)[:num_outs] for _ in range(num_inputs)])


def outputs_per_input(settings: EvalConfig, mode: str, num_refs: int) -> int:
    """``num_outs``, or in reference mode all ``num_refs`` references of the target when there are fewer."""
    return settings.num_outs if mode == "latent" else min(settings.num_outs, num_refs)


@torch.inference_mode()
def _outputs(nets: Networks, x: Tensor, trg: int, mode: str, num_outs: int, refs: list[Path],
             img_size: int, generator: torch.Generator, masks: Masks, picks: Tensor | None = None) -> Tensor:
    """[num_outs, N, 3, S, S]: each input translated num_outs times into ``trg`` (``masks``: of x).
    Reference mode uses ``refs[picks[i, j]]`` for output j of input i (:func:`reference_picks`).
    G's encoder half does not depend on the style, so it runs once for the num_outs styles."""
    n, device = x.size(0), x.device
    y = torch.full((n,), trg, dtype=torch.long, device=device)
    if mode == "reference" and (picks is None or tuple(picks.shape) != (n, num_outs)):
        raise ValueError(f"reference mode needs picks of shape [{n}, {num_outs}]")
    features = nets.generator.encode_image(x, masks)
    outs = []
    for j in range(num_outs):
        if mode == "latent":
            z = torch.randn(n, latent_dim_of(nets), generator=generator)
            s = nets.mapping_network(z.to(device), y)
        else:
            s = nets.style_encoder(eval_images([refs[k] for k in picks[:, j].tolist()], img_size).to(device), y)
        outs.append(nets.generator.decode_from(features, s, masks))
    return torch.stack(outs)


def _true_translations(val_set: ImageFolder, pairs: list[dict[str, Path]], src: int, trg: int,
                       inputs: list[Path], picks: Tensor, img_size: int) -> tuple[Tensor, Tensor]:
    """On data paired by name: the inputs' namesakes in ``trg`` [N, 3, S, S], and [num_outs, N] bool, False
    where output j of input i had that namesake as its reference (``refs[picks[i, j]]``)."""
    src_folder, trg_folder = val_set.root / val_set.domains[src], val_set.root / val_set.domains[trg]
    refs = val_set.files_of(trg)
    keys = [pair_key(f, src_folder) for f in inputs]
    scored = torch.tensor([[pair_key(refs[int(picks[i, j])], trg_folder) != key for i, key in enumerate(keys)]
                           for j in range(picks.size(1))])
    return eval_images(namesakes(inputs, src_folder, pairs[trg]), img_size), scored


def _check_references(val_set: ImageFolder, settings: EvalConfig, modes: tuple[str, ...]) -> None:
    """Reference mode: stop when a domain has fewer than 2 validation images (LPIPS needs pairs); say so
    when it has fewer than num_outs (each input then uses all of them, once each)."""
    if "reference" not in modes:
        return
    for label, name in enumerate(val_set.domains):
        count = len(val_set.indices_of(label))
        if count < 2:
            raise ValueError(f"reference-guided evaluation needs at least 2 validation images per domain "
                             f"(distinct references, and LPIPS compares pairs); {val_set.root / name} has "
                             f"{count}. Add images or use --mode latent")
        if count < settings.num_outs:
            warnings.warn(f"{val_set.root / name} has {count} validation images, fewer than num_outs="
                          f"{settings.num_outs}: reference-guided evaluation translates each input with all "
                          f"{count} of them (distinct references), so its tasks into {name} have "
                          f"{count} outputs per input", stacklevel=3)


def _save_outputs(outs: Tensor, files: list[Path], out_dir: Path) -> None:
    """``out_dir/<input name>_<k>.png`` for the k-th output of each input."""
    from stargan.data import to_pil

    out_dir.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(files):
        for k in range(outs.size(0)):
            to_pil(outs[k, i]).save(out_dir / f"{source.stem}_{k:02d}.png")


@torch.inference_mode()
def evaluate_networks(nets: Networks, config: Config, settings: EvalConfig, *, data_root: str | None = None,
                      seed: int = 0, random_init: bool = False, cache_dir: str | None = None,
                      progress: bool = True, image_dir: str | Path | None = None,
                      mask_fn: MaskFn | None = None) -> dict[str, Any]:
    """Run the protocol on (EMA) networks and return the results as a JSON-ready dict.

    With ``image_dir``, every output is also written as ``image_dir/<mode>/<src>_to_<trg>/*.png``.
    ``mask_fn`` gives the face masks of the inputs (models with w_hpf > 0).
    """
    check_settings(settings)
    started = time.perf_counter()
    root = data_root or config.data.root
    train_set, val_set = _open_data(root, config)
    modes = MODES if settings.mode == "both" else (settings.mode,)
    _check_references(val_set, settings, modes)
    img_size = config.model.img_size
    scorers = Scorers.build(settings, img_size, next(nets.generator.parameters()).device, random_init=random_init)
    if scorers.classifier is not None and tuple(scorers.classifier.domains) != tuple(train_set.domains):
        raise ValueError(f"the classifier {settings.classifier} was trained on domains "
                         f"{list(scorers.classifier.domains)} but {root} has {list(train_set.domains)}")
    run = _Evaluation(nets, settings, scorers, val_set, paired_by_name(val_set, img_size), img_size, mask_fn,
                      Path(image_dir) if image_dir is not None else None)
    real = _real_statistics(train_set, scorers, settings, img_size, cache_dir, progress)
    inputs = {src: _inputs(val_set, src, settings.max_inputs) for src in range(len(val_set.domains))}
    total = sum(len(inputs[src]) * run.outputs_per_input(mode, trg) for src, trg in run.tasks() for mode in modes)
    with tqdm(total=total, desc="eval", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        results = {mode: _evaluate_mode(run, mode, inputs, real, seed, bar) for mode in modes}
    summary: dict[str, Any] = {
        "format": FORMAT,
        "settings": {**dataclasses.asdict(settings), "seed": seed, "data": str(root),
                     "inputs_per_domain": {val_set.domains[s]: len(inputs[s]) for s in inputs},
                     "random_init": random_init, "paired_by_name": run.pairs is not None,
                     "face_masks": "fan" if mask_fn is not None else "none"},
        "scorers": scorers.describe(),
        **results,
    }
    if scorers.classifier is not None:
        from stargan.metrics.classifier import evaluate_folder

        summary["classifier_real_val_accuracy"] = evaluate_folder(scorers.classifier, val_set,
                                                                  settings.batch_size)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


@dataclasses.dataclass
class _Evaluation:
    """What every task of one evaluation shares."""

    nets: Networks
    settings: EvalConfig
    scorers: Scorers
    val_set: ImageFolder
    pairs: list[dict[str, Path]] | None   # the validation sets paired by name, or None
    img_size: int
    mask_fn: MaskFn | None
    image_dir: Path | None

    def tasks(self) -> list[tuple[int, int]]:
        n = len(self.val_set.domains)
        return [(src, trg) for trg in range(n) for src in range(n) if src != trg]

    def outputs_per_input(self, mode: str, trg: int) -> int:
        return outputs_per_input(self.settings, mode, len(self.val_set.indices_of(trg)))


def _open_data(root: str, config: Config) -> tuple[ImageFolder, ImageFolder]:
    """The train and validation sets, every image checked before work as for training (cached: a file
    checked before is not decoded again), on the domains the model was trained on."""
    if not root:
        raise ValueError("no dataset to evaluate on: pass --data DIR (with train/ and val/)")
    train_set, val_set = open_dataset(root, skip_bad_images=config.data.skip_bad_images)
    if config.data.domains and tuple(train_set.domains) != tuple(config.data.domains):
        raise ValueError(f"the model was trained on domains {list(config.data.domains)} but {root} has "
                         f"{list(train_set.domains)}")
    return train_set, val_set


def _real_statistics(train_set: ImageFolder, scorers: Scorers, settings: EvalConfig, img_size: int,
                     cache_dir: str | None, progress: bool) -> dict[int, dict[str, FeatureStats]]:
    """Per target domain and backbone: the feature statistics of its training images (cached on disk)."""
    return {trg: {name: cached_real_stats(train_set.files_of(trg), img_size, extractor, cache_dir,
                                          batch_size=settings.batch_size, progress=progress)
                  for name, extractor in scorers.extractors.items()}
            for trg in range(len(train_set.domains))}


def _evaluate_mode(run: _Evaluation, mode: str, inputs: dict[int, list[Path]],
                   real: dict[int, dict[str, FeatureStats]], seed: int, bar: tqdm) -> dict[str, Any]:
    """Every task in one mode: its scores per task and their mean. The draws start from ``seed`` in each
    mode (``source_kept`` has its own)."""
    generator = torch.Generator().manual_seed(seed)
    kept_generator = torch.Generator().manual_seed(seed + 1)
    domains = run.val_set.domains
    per_task = {}
    for src, trg in run.tasks():
        task = _Task(run.scorers, trg)
        for start in range(0, len(inputs[src]), run.settings.batch_size):
            chunk = inputs[src][start:start + run.settings.batch_size]
            _score_batch(run, task, mode, src, chunk, generator, kept_generator if start == 0 else None)
            bar.update(len(chunk) * run.outputs_per_input(mode, trg))
        per_task[f"{domains[src]}->{domains[trg]}"] = task.result(real.get(trg, {}), seed)
    return {"tasks": per_task, "mean": _mean(per_task)}


def _score_batch(run: _Evaluation, task: _Task, mode: str, src: int, chunk: list[Path],
                 generator: torch.Generator, kept_generator: torch.Generator | None) -> None:
    """Translate one batch of inputs of ``src`` into ``task.trg`` and add the outputs to the task's scores
    (``kept_generator``: on the first batch, also measure ``source_kept``); save them when asked."""
    trg, refs = task.trg, run.val_set.files_of(task.trg)
    num_outs = run.outputs_per_input(mode, trg)
    x = eval_images(chunk, run.img_size).to(next(run.nets.generator.parameters()).device)
    masks = masks_of(run.mask_fn, x)
    picks = reference_picks(len(refs), len(chunk), num_outs, generator) if mode == "reference" else None
    outs = _outputs(run.nets, x, trg, mode, num_outs, refs, run.img_size, generator, masks, picks)
    task.add(outs)
    if run.pairs is not None and picks is not None:
        truth, scored = _true_translations(run.val_set, run.pairs, src, trg, chunk, picks, run.img_size)
        task.add_paired(outs, x, truth.to(x.device), scored)
    if kept_generator is not None and len(chunk) >= 2:
        task.source_kept = source_kept(run.nets, x, trg, mode, refs, run.img_size, kept_generator, masks)
    if run.image_dir is not None:
        domains = run.val_set.domains
        _save_outputs(outs, chunk, run.image_dir / mode / f"{domains[src]}_to_{domains[trg]}")


def _inputs(val_set: ImageFolder, src: int, max_inputs: int) -> list[Path]:
    files = val_set.files_of(src)
    return files[:max_inputs] if max_inputs > 0 else files


def _mean(per_task: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = [k for k in next(iter(per_task.values()))
            if k != "num_images" and all(k in t for t in per_task.values())]
    return {k: float(np.mean([t[k] for t in per_task.values()])) for k in keys}


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """The mean scores of every mode as flat ``mode/metric`` scalars (for logs and the console)."""
    return {f"{mode}/{key}": value for mode in MODES if mode in summary
            for key, value in summary[mode]["mean"].items() if math.isfinite(value)}


def write_results(summary: dict[str, Any], run_dir: str | Path, step: int) -> Path:
    """``RUN/metrics/step-NNNNNN.json`` (atomically) and one line in ``RUN/metrics/metrics.jsonl``."""
    out_dir = Path(run_dir) / "metrics"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"step-{step:06d}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**summary, "step": step}, indent=1))
    os.replace(tmp, path)
    with open(out_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": step, **headline(summary), "file": path.name}) + "\n")
    return path


def evaluate_run(path: str | Path, settings: EvalConfig, *, data_root: str | None = None,
                 device: str = "cpu", seed: int = 0, random_init: bool = False,
                 cache_dir: str | None = None, progress: bool = True,
                 image_dir: str | Path | None = None, fan_weights: str | Path | None = None,
                 masks: bool | None = None, skip_bad_images: bool = False) -> tuple[Path, dict[str, Any]]:
    """Evaluate a run's latest checkpoint (or a checkpoint directory); write and return the results.

    Models with w_hpf > 0 use FAN masks (``fan_weights``, else the run's or the weights folder's);
    ``masks=False`` opts out. Unreadable images stop before work, unless ``skip_bad_images`` or the
    run was trained with it.
    """
    from stargan import checkpoints
    from stargan.faces.masks import load_mask_fn

    ckpt = checkpoints.resolve_checkpoint(path)
    preflight(settings, random_init)
    config = checkpoints.load_config(ckpt)
    if masks is not None:
        config = config.with_overrides([f"model.masks={str(masks).lower()}"])
    if skip_bad_images:
        config = config.with_overrides(["data.skip_bad_images=true"])
    mask_fn = load_mask_fn(config.model, device, fan_weights, run=ckpt)
    _, nets = checkpoints.load_for_sampling(ckpt, device)
    step = checkpoints.step_of(ckpt)
    summary = evaluate_networks(nets, config, settings, data_root=data_root, seed=seed,
                                random_init=random_init, cache_dir=cache_dir, progress=progress,
                                image_dir=image_dir, mask_fn=mask_fn)
    summary["checkpoint"] = str(ckpt)
    return write_results(summary, checkpoints.run_dir_of(ckpt), step), summary
