import dataclasses
import hashlib
import itertools
from pathlib import Path

import lpips as lpips_package
import pytest
import torch
import torchvision

from stargan.metrics.lpips import LPIPS
from stargan.metrics.weights import REGISTRY, WeightsError


@pytest.fixture(scope="module")
def metric():
    return LPIPS(random_init=True)


def images(n, seed, size=64):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_identical_images_are_at_distance_zero(metric):
    x = images(3, 0)
    d = metric.distance(x, x.clone())
    assert d.shape == (3,)
    torch.testing.assert_close(d, torch.zeros(3), atol=1e-7, rtol=0)


def test_distance_is_symmetric_and_positive(metric):
    a, b = images(4, 1), images(4, 2)
    torch.testing.assert_close(metric.distance(a, b), metric.distance(b, a))
    assert (metric.distance(a, b) > 0).all()


def test_mean_pairwise_equals_the_double_loop(metric):
    x = images(5, 3)
    pairs = [metric.distance(x[i:i + 1], x[j:j + 1]).item() for i, j in itertools.combinations(range(5), 2)]
    assert len(pairs) == 10
    assert metric.mean_pairwise_lpips(x) == pytest.approx(sum(pairs) / len(pairs), rel=1e-5)


def test_mean_pairwise_needs_two_images(metric):
    for k in (0, 1):
        with pytest.raises(ValueError, match="at least 2"):
            metric.mean_pairwise_lpips(images(k, 4))


def test_mismatched_batches_are_refused(metric):
    with pytest.raises(ValueError, match="same shape"):
        metric.distance(images(2, 5), images(3, 5))


def test_linear_heads_come_from_the_package(metric):
    heads = Path(lpips_package.__file__).parent / "weights" / "v0.1" / "alex.pth"
    state = torch.load(heads, map_location="cpu", weights_only=True)
    torch.testing.assert_close(metric.model.lin0.model[1].weight, state["lin0.model.1.weight"])
    assert metric.weights_sha256 == "random-init" and "v0.1" in metric.protocol


def test_alexnet_features_map_onto_the_lpips_slices(monkeypatch, tmp_path):
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    state = {f"features.{k}": v for k, v in features.items()} | {"classifier.1.bias": torch.zeros(2)}
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = dataclasses.replace(REGISTRY["alexnet"], filename=f"alexnet-{digest[:8]}.pth", sha256=None)
    monkeypatch.setitem(REGISTRY, "alexnet", spec)

    metric = LPIPS(weights=path)
    assert metric.weights_sha256 == digest
    trunk = metric.model.net
    for slice_name, index in [("slice1", 0), ("slice2", 3), ("slice3", 6), ("slice4", 8), ("slice5", 10)]:
        layer = getattr(getattr(trunk, slice_name), str(index))  # lpips keeps the torchvision index
        torch.testing.assert_close(layer.weight, features[f"{index}.weight"])
        torch.testing.assert_close(layer.bias, features[f"{index}.bias"])

    torch.save({"conv.weight": torch.zeros(1)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(REGISTRY, "alexnet", dataclasses.replace(spec, filename=f"a-{digest[:8]}.pth"))
    with pytest.raises(WeightsError, match="not a torchvision AlexNet"):
        LPIPS(weights=path)


def test_missing_alexnet_weights_raise_weights_error():
    with pytest.raises(WeightsError, match="alexnet-owt-7be5be79.pth"):
        LPIPS()


def test_small_images_are_upsampled_to_alexnet_minimum():
    """16 px images (too small for AlexNet's pooling) are scored after a bilinear upsampling to 32 px."""
    import torch.nn.functional as F

    from stargan.metrics.lpips import LPIPS, MIN_SIZE

    model = LPIPS(random_init=True)
    g = torch.Generator().manual_seed(0)
    small = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    up = F.interpolate(small, size=(MIN_SIZE, MIN_SIZE), mode="bilinear", align_corners=False)
    assert model.mean_pairwise_lpips(small) == pytest.approx(model.mean_pairwise_lpips(up), rel=1e-6)
    assert model.mean_pairwise_lpips(small) > 0
