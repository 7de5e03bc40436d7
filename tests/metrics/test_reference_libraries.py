"""Our FID, KID and LPIPS equal the libraries people compare with, given the same network weights.

One seeded random TF Inception, its batch norms calibrated so that its features have a trained
network's scale (tests/metrics/calibrated.py), is saved in pytorch-fid's ``pt_inception`` format and
loaded into our ``inception-tf`` extractor (with ``trust_weights``: it is not the release) and into
each reference library, their downloads refused; one random AlexNet does the same for LPIPS. The
images are drawn pictures (stargan.data.demo) written as PNG folders:

- pair A, circles vs squares at 64 px (the resize to 299 matters): clean-fid's "clean" mode (its
  folder loader, resizer and network, and its FID and KID functions), pytorch-fid's network.
- pair B, triangles vs squares at 299 px (drawn at 64 px, enlarged by PIL): torch-fidelity, whose own
  resize (TF1 bilinear) is the identity only at 299 px.

clean-fid runs NVIDIA's TorchScript export of the TF graph (``inception-2015-12-05.pt``), which cannot
be rebuilt without downloading it: pytorch-fid's network with the same weights, scripted, stands in
for it under that file name, behind clean-fid's own ``InceptionV3W`` wrapper (which does the
``(x - 128) / 128`` scaling).

With N < 2048 images the covariances are singular: every 2048-d FID (ours, clean-fid's sqrtm with its
eps fallback, which alone takes 30 s) carries ~1e-5 relative rounding. FID is compared with clean-fid
in 2048-d (the README's claim); the formulas of pytorch-fid and torch-fidelity on the same statistics
written in a basis of their span (:func:`projected`), where all are exact.

Random features have heavier tails than a trained network's, so the KIDs of these few images are
negative (a few images dominate the cubic kernel); what is compared is the computation. Run with
``-s`` to see the agreement table (about a minute of CPU).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path

import cleanfid.features
import cleanfid.fid
import cleanfid.inception_torchscript
import lpips
import numpy as np
import pytest
import pytorch_fid.fid_score
import pytorch_fid.inception
import torch
import torchvision
from PIL import Image
from torch import nn
from torch_fidelity.datasets import ImagesPathDataset
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from stargan.data import eval_images
from stargan.metrics.backbones import FeatureExtractor, build_extractor
from stargan.metrics.fid import FeatureStats, fid_from_stats, frechet_distance
from stargan.metrics.kid import kernel_inception_distance
from stargan.metrics.lpips import LPIPS
from stargan.metrics.stats_cache import cached_real_stats
from stargan.metrics.weights import seeded_init
from tests.metrics.calibrated import as_batch, calibrated_tf_inception, drawn_images, write_folder

pytestmark = [pytest.mark.slow,  # the references' own sqrtm call, below, is deprecated in SciPy 1.17
              pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")]

N_A = 12      # pictures per folder of pair A (64 px)
N_B = 6       # pictures per folder of pair B (299 px)
BATCH = 16    # images per network pass in clean-fid: our extractor's cpu_chunk
CPU = torch.device("cpu")


def refuse(*args, **kwargs):
    raise AssertionError("a reference library tried to download")


def relative(ours: float, reference: float) -> float:
    return abs(ours - reference) / abs(reference)


def worst_relative(ours, reference) -> float:
    """The largest per-image relative difference of two feature arrays ``[N, D]``."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float((np.linalg.norm(ours - reference, axis=1) / np.linalg.norm(reference, axis=1)).max())


def projected(a: FeatureStats, b: FeatureStats) -> tuple[np.ndarray, ...]:
    """(mu1, sigma1, mu2, sigma2) in an orthonormal basis of the span of all feature deviations.

    The Fréchet distance is invariant under an isometry of the feature space, and both means and both
    covariances live in that span (dimension < 2N), so these full-rank statistics have the FID of the
    2048-d ones, without their rounding, and a reference's ``sqrtm`` on them takes milliseconds.
    """
    features = np.concatenate([a.features, b.features]).astype(np.float64)
    centre = features.mean(0)
    basis, _ = np.linalg.qr((features - centre).T)   # [2048, 2N]
    return ((a.mean - centre) @ basis, basis.T @ a.cov @ basis,
            (b.mean - centre) @ basis, basis.T @ b.cov @ basis)


# ----------------------------------------------------------------------------------------------
# The reference libraries, loaded with our weights

@contextlib.contextmanager
def pytorch_fid_loads(state: dict[str, torch.Tensor]):
    """pytorch-fid builds its network from ``state`` instead of downloading its release."""
    def load(url, *args, **kwargs):
        assert url == pytorch_fid.inception.FID_WEIGHTS_URL, url
        return state

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pytorch_fid.inception, "load_state_dict_from_url", load)
        yield


class _Pool3(nn.Module):
    """pool3 features of a torchvision-layout Inception whose ``fc`` is the identity."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._forward(x)[0]


class _TorchScriptStandIn(nn.Module):
    """What clean-fid's ``InceptionV3W`` uses of NVIDIA's file: ``layers``, from the scaled 299 px input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.layers = _Pool3(net)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


def clean_fid_model(state: dict[str, torch.Tensor], folder: Path):
    """clean-fid's "clean" feature extractor with pytorch-fid's network on ``state`` as its TorchScript file."""
    with pytorch_fid_loads(state):
        net = pytorch_fid.inception.fid_inception_v3()
    net.fc = nn.Identity()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
        torch.jit.script(_TorchScriptStandIn(net.eval())).save(str(folder / "inception-2015-12-05.pt"))
    wrapper = cleanfid.inception_torchscript.InceptionV3W
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=FutureWarning)
        patch.setattr(cleanfid.inception_torchscript, "check_download_inception", refuse)
        patch.setattr(cleanfid.features, "InceptionV3W", lambda path, download, resize_inside: wrapper(
            str(folder), download=False, resize_inside=resize_inside))
        return cleanfid.features.build_feature_extractor("clean", CPU, use_dataparallel=False)


def clean_fid_features(model, folder: Path) -> np.ndarray:
    """clean-fid's loader, resizer and network on a folder, as its compute_fid runs them."""
    return cleanfid.fid.get_folder_features(str(folder), model, num_workers=0, batch_size=BATCH, device=CPU,
                                            mode="clean", verbose=False)


def torch_fidelity_features(weights: Path, files: list[Path]) -> torch.Tensor:
    """torch-fidelity's loader (8-bit tensors) and Inception on ``files``."""
    network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path=str(weights))
    dataset = ImagesPathDataset([str(f) for f in files])
    with torch.inference_mode():
        return network(torch.stack([dataset[i] for i in range(len(dataset))]))[0]


# ----------------------------------------------------------------------------------------------
# The comparisons

def ours(extractor: FeatureExtractor, files: list[Path], img_size: int, cache: Path) -> FeatureStats:
    """Our statistics of a folder, as ``stargan eval`` computes those of the real images."""
    return cached_real_stats(files, img_size, extractor, cache_dir=cache, progress=False, num_workers=1)


def compare_with_clean_fid(state, weights: Path, pair: list[list[Path]], tmp: Path) -> dict[str, float]:
    """Pair A: ours as loaded and folded (as `stargan eval` runs it) against clean-fid, and pytorch-fid."""
    plain = build_extractor("inception-tf", 64, weights=str(weights), trust_weights=True, fold=False)
    folded = build_extractor("inception-tf", 64, weights=str(weights), trust_weights=True)
    a = [ours(plain, files, 64, tmp / "plain") for files in pair]
    a_folded = [ours(folded, files, 64, tmp / "folded") for files in pair]
    model = clean_fid_model(state, tmp)
    a_clean = [clean_fid_features(model, files[0].parent) for files in pair]
    m = {"fid": fid_from_stats(*a), "fid_folded": fid_from_stats(*a_folded),
         "kid": kernel_inception_distance(a[0].features, a[1].features)[0],
         "kid_folded": kernel_inception_distance(a_folded[0].features, a_folded[1].features)[0],
         "features_vs_clean": max(worst_relative(s.features, c) for s, c in zip(a, a_clean)),
         "features_folded_vs_clean": max(worst_relative(s.features, c) for s, c in zip(a_folded, a_clean)),
         "clean_fid_of_ours": cleanfid.fid.fid_from_feats(a[0].features, a[1].features),
         "clean_kid_of_ours": cleanfid.fid.kernel_distance(a[0].features, a[1].features),
         "clean_kid_of_clean": cleanfid.fid.kernel_distance(*a_clean)}
    # clean-fid's FID of its own features: the one above when they are ours bit for bit (30 s saved)
    m["clean_fid_of_clean"] = (m["clean_fid_of_ours"] if m["features_vs_clean"] == 0
                               else cleanfid.fid.fid_from_feats(*a_clean))

    with pytorch_fid_loads(state):  # its network on our network's input tensors, its formula on our stats
        reference = pytorch_fid.inception.InceptionV3([3], resize_input=False, normalize_input=False).eval()
    x = plain.preprocess(eval_images(pair[0][:2], 64))
    with torch.inference_mode():
        m["features_vs_pytorch_fid"] = worst_relative(plain.net(x), reference(x)[0].flatten(1))
    mu1, sigma1, mu2, sigma2 = projected(*a)
    m["fid_projected"] = frechet_distance(mu1, sigma1, mu2, sigma2)
    m["pytorch_fid_formula"] = float(pytorch_fid.fid_score.calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
    return m


def compare_with_torch_fidelity(weights: Path, pair: list[list[Path]], tmp: Path) -> dict[str, float]:
    """Pair B (299 px): ours against torch-fidelity's loader, network and metric functions."""
    plain = build_extractor("inception-tf", 299, weights=str(weights), trust_weights=True, fold=False)
    b = [ours(plain, files, 299, tmp / "plain") for files in pair]
    b_fidelity = [torch_fidelity_features(weights, files) for files in pair]
    mu1, sigma1, mu2, sigma2 = projected(*b)
    fidelity_fid = fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2},
                                            verbose=False)["frechet_inception_distance"]
    fidelity_kid = kid_features_to_metric(*b_fidelity, kid_subset_size=N_B, verbose=False)
    return {"features_vs_torch_fidelity": max(worst_relative(s.features, f) for s, f in zip(b, b_fidelity)),
            "fid_b_projected": frechet_distance(mu1, sigma1, mu2, sigma2), "fidelity_fid_formula": fidelity_fid,
            "kid_b": kernel_inception_distance(b[0].features, b[1].features)[0],
            "fidelity_kid": fidelity_kid["kernel_inception_distance_mean"]}


def compare_with_lpips(tmp: Path) -> dict[str, float]:
    """Our LPIPS and the ``lpips`` package's (its own trunk loading), on one random AlexNet file."""
    with seeded_init(1):
        trunk = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp / "alexnet-random.pth"
    torch.save(trunk, path)

    def load(url, *args, **kwargs):
        assert "alexnet" in url, url
        return trunk

    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setattr(torchvision.models._api, "load_state_dict_from_url", load)
        warnings.filterwarnings("ignore", category=UserWarning)  # lpips' deprecated pretrained=True
        reference = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=False, verbose=False)
    reference.eval()
    metric = LPIPS(weights=path, trust_weights=True)
    a = as_batch(drawn_images(6, "circle", 64, seed=13))
    b = as_batch(drawn_images(6, "square", 64, seed=13))
    with torch.inference_mode():
        distance, expected = metric.distance(a, b), reference(a, b).flatten()
        pairs = [reference(a[i:i + 1], a[j:j + 1]).item() for i in range(6) for j in range(i + 1, 6)]
    return {"lpips": float(expected.mean()), "lpips_distance": float((distance - expected).abs().max()),
            "lpips_mean_pairwise": abs(metric.mean_pairwise_lpips(a) - float(np.mean(pairs)))}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Every number of the comparison, computed once."""
    tmp = tmp_path_factory.mktemp("reference")
    started, cpu_started = time.perf_counter(), time.process_time()
    state = calibrated_tf_inception()
    weights = tmp / "pt_inception-calibrated.pth"
    torch.save(state, weights)
    pair_a = [sorted(write_folder(drawn_images(N_A, shape, 64, seed=11), tmp / "a" / shape).iterdir())
              for shape in ("circle", "square")]
    enlarged = {shape: [image.resize((299, 299), Image.Resampling.BICUBIC)
                        for image in drawn_images(N_B, shape, 64, seed=12)] for shape in ("triangle", "square")}
    pair_b = [sorted(write_folder(images, tmp / "b" / shape).iterdir()) for shape, images in enlarged.items()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.hub, "download_url_to_file", refuse)
        patch.setattr(torch.hub, "load_state_dict_from_url", refuse)
        m = {**compare_with_clean_fid(state, weights, pair_a, tmp / "a"),
             **compare_with_torch_fidelity(weights, pair_b, tmp / "b"), **compare_with_lpips(tmp)}
    m["seconds"], m["cpu_seconds"] = time.perf_counter() - started, time.process_time() - cpu_started
    print_table(m)
    return m


def print_table(m: dict[str, float]) -> None:
    rows = [
        ("features, as loaded (worst image, relative)", "clean-fid", m["features_vs_clean"]),
        ("features, folded (stargan eval's default)", "clean-fid", m["features_folded_vs_clean"]),
        ("features on the same input tensors", "pytorch-fid", m["features_vs_pytorch_fid"]),
        ("features, 299 px folders", "torch-fidelity", m["features_vs_torch_fidelity"]),
        (f"FID {m['fid']:.6g}: its functions on our features", "clean-fid",
         relative(m["fid"], m["clean_fid_of_ours"])),
        ("FID: its loader + resizer + network", "clean-fid", relative(m["fid"], m["clean_fid_of_clean"])),
        ("FID, folded: its loader + resizer + network", "clean-fid",
         relative(m["fid_folded"], m["clean_fid_of_clean"])),
        ("FID 2048-d vs in the span (rounding, N < 2048)", "ours", relative(m["fid"], m["fid_projected"])),
        ("FID formula (calculate_frechet_distance)", "pytorch-fid",
         relative(m["fid_projected"], m["pytorch_fid_formula"])),
        ("FID formula (fid_statistics_to_metric)", "torch-fidelity",
         relative(m["fid_b_projected"], m["fidelity_fid_formula"])),
        (f"KID {m['kid']:.6g}: its function on our features", "clean-fid",
         relative(m["kid"], m["clean_kid_of_ours"])),
        ("KID: its loader + resizer + network", "clean-fid", relative(m["kid"], m["clean_kid_of_clean"])),
        ("KID, folded: its loader + resizer + network", "clean-fid",
         relative(m["kid_folded"], m["clean_kid_of_clean"])),
        (f"KID {m['kid_b']:.6g}, 299 px folders", "torch-fidelity", relative(m["kid_b"], m["fidelity_kid"])),
        (f"LPIPS {m['lpips']:.3g} per pair (absolute)", "lpips", m["lpips_distance"]),
        ("LPIPS mean over pairs (absolute)", "lpips", m["lpips_mean_pairwise"]),
    ]
    print(f"\nagreement with the reference libraries ({m['seconds']:.0f} s, {m['cpu_seconds']:.0f} s of CPU):")
    for what, library, value in rows:
        print(f"  {what:50s} {library:15s} {value:.2g}")


def test_features_equal_the_references_bit_for_bit_as_loaded(measured):
    assert measured["features_vs_clean"] == 0
    assert measured["features_vs_pytorch_fid"] == 0
    assert measured["features_vs_torch_fidelity"] == 0


def test_folded_features_are_the_same_up_to_rounding(measured):
    assert measured["features_folded_vs_clean"] < 1e-4


def test_fid_equals_clean_fid(measured):
    assert relative(measured["fid"], measured["clean_fid_of_ours"]) < 1e-5
    assert relative(measured["fid"], measured["clean_fid_of_clean"]) < 1e-5
    assert relative(measured["fid_folded"], measured["clean_fid_of_clean"]) < 1e-5


def test_kid_equals_clean_fid(measured):
    assert relative(measured["kid"], measured["clean_kid_of_ours"]) < 1e-4
    assert relative(measured["kid"], measured["clean_kid_of_clean"]) < 1e-4
    assert relative(measured["kid_folded"], measured["clean_kid_of_clean"]) < 1e-4


def test_fid_formula_equals_pytorch_fid(measured):
    assert relative(measured["fid"], measured["fid_projected"]) < 1e-4  # the same FID, but for rounding
    assert relative(measured["fid_projected"], measured["pytorch_fid_formula"]) < 1e-8


def test_fid_formula_and_kid_equal_torch_fidelity(measured):
    # the matrix square roots differ in the last digits with the BLAS path: 4e-14 relative on an AMD EPYC,
    # 1.8e-8 on an Intel Xeon with AMX
    assert relative(measured["fid_b_projected"], measured["fidelity_fid_formula"]) < 1e-6
    assert relative(measured["kid_b"], measured["fidelity_kid"]) < 1e-4


def test_lpips_equals_the_lpips_package(measured):
    assert measured["lpips_distance"] < 1e-6
    assert measured["lpips_mean_pairwise"] < 1e-6
