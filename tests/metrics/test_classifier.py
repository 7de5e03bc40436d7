"""The domain classifier: shapes, training on the demo shapes, the file format and the feature extractor."""
from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from safetensors.torch import load_file, save_file

from stargan.data import DEMO_DOMAINS, open_dataset
from stargan.metrics.classifier import (FORMAT, ClassifierConfig, ClassifierError, ClassifierFeatures,
                                        DomainClassifier, accuracy, augment, evaluate_folder,
                                        load_classifier, read_classifier_info, resize_images,
                                        save_classifier, train_classifier)
from tests.tiny import make_demo

TINY = dict(epochs=2, batch_size=8, width=8, feature_dim=32, progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run many times slower with 2 threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Twice the images of the shared ``demo_data``: 8 training and 4 validation images per shape."""
    return make_demo(tmp_path_factory.mktemp("demo"), img_size=16, train_per_domain=8, val_per_domain=4)


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    return train_classifier(demo, 16, tmp_path_factory.mktemp("clf") / "clf.safetensors", seed=0, **TINY)


def _randomised(model: DomainClassifier, seed: int = 0) -> DomainClassifier:
    """Non-trivial weights and BatchNorm statistics, so a lost tensor changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.train()
    model(torch.randn(4, 3, model.img_size, model.img_size, generator=g))  # updates running stats
    return model.eval()


@pytest.mark.parametrize("img_size", [16, 32, 64])
def test_shapes(img_size):
    model = DomainClassifier(img_size, num_domains=3, width=8, feature_dim=40).eval()
    x = torch.rand(5, 3, img_size, img_size) * 2 - 1
    assert model.features(x).shape == (5, 40)
    assert model(x).shape == (5, 3)
    with pytest.raises(ValueError, match=rf"\[B, 3, {img_size}, {img_size}\].*got \[5, 3, 8, 8\]"):
        model(torch.zeros(5, 3, 8, 8))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="power of two >= 16, got 24"):
        ClassifierConfig(24, ("a", "b"))
    with pytest.raises(ValueError, match="at least 2 domains"):
        ClassifierConfig(16, ("a",))
    config = ClassifierConfig(32, ("a", "b", "c"), width=8, feature_dim=16)
    assert ClassifierConfig.from_dict(dataclasses.asdict(config)) == config


def test_augment_is_seeded_and_keeps_images_without_crop():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(1), crop_prob=1.0)
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(1), crop_prob=1.0))
    assert a.shape == x.shape and not torch.allclose(a, x)
    kept = augment(x, torch.Generator().manual_seed(2), crop_prob=0.0)
    for before, after in zip(x, kept):  # only flips: each image is itself or its mirror
        assert torch.allclose(after, before, atol=1e-5) or torch.allclose(after, before.flip(-1), atol=1e-5)


def test_training_writes_a_self_describing_file(trained):
    assert trained.path.is_file() and trained.epochs == 2
    assert (trained.train_images, trained.val_images) == (8 * 3, 4 * 3)
    info = read_classifier_info(trained.path)
    assert info["format"] == FORMAT
    assert info["config"] == trained.config == ClassifierConfig(16, DEMO_DOMAINS, 8, 32)
    assert info["val_accuracy"] == trained.val_accuracy
    assert info["train"]["epochs"] == 2 and info["train"]["seed"] == 0
    assert not list(trained.path.parent.glob(".*tmp*"))  # the temporary file was renamed away


def test_reloaded_classifier_gives_identical_logits(tmp_path):
    config = ClassifierConfig(16, ("a", "b", "c"), width=8, feature_dim=32)
    model = _randomised(config.build())
    save_classifier(model, config, tmp_path / "c.safetensors", val_accuracy=0.5)
    loaded, loaded_config = load_classifier(tmp_path / "c.safetensors")
    assert loaded_config == config and not loaded.training
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_val_accuracy_is_what_evaluate_folder_computes(trained, demo):
    _, val_set = open_dataset(demo)
    model, _ = load_classifier(trained.path)
    assert evaluate_folder(model, val_set) == trained.val_accuracy
    assert evaluate_folder(ClassifierFeatures.from_file(trained.path), val_set) == trained.val_accuracy


def test_same_seed_gives_identical_weights(demo, trained, tmp_path):
    again = train_classifier(demo, 16, tmp_path / "again.safetensors", seed=0, **TINY)
    other = train_classifier(demo, 16, tmp_path / "other.safetensors", seed=1, **TINY)
    first, second, third = (load_file(str(r.path)) for r in (trained, again, other))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_learns_the_demo_shapes(tmp_path):
    root = make_demo(tmp_path / "demo", img_size=16, train_per_domain=300, val_per_domain=30)
    result = train_classifier(root, 16, tmp_path / "c.safetensors", epochs=8, batch_size=16, width=16,
                              feature_dim=64, progress=False)
    assert result.val_accuracy > 0.75, result  # chance is 1/3; seeds 0 and 1 reach 0.88 and 0.93


def test_accuracy_helper(tmp_path):
    model = _randomised(DomainClassifier(16, 3, width=8, feature_dim=32))
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    x = images.float() / 127.5 - 1
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert accuracy(model, x, predicted) == 1.0
    assert accuracy(model, images, predicted) == 1.0  # uint8 images are mapped to [-1, 1]
    wrong = (predicted + 1) % 3
    assert accuracy(model, x, torch.cat([predicted[:4], wrong[4:]]), batch_size=3) == pytest.approx(0.4)
    model.train()
    accuracy(model, x, predicted)
    assert model.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="10 images and 9 labels"):
        accuracy(model, x, predicted[:9])


def test_evaluate_folder_refuses_other_domains(trained, tmp_path):
    root = make_demo(tmp_path / "demo", img_size=16, train_per_domain=1, val_per_domain=1)
    _, val_set = open_dataset(root)
    with pytest.raises(ValueError, match=r"domains \(4\) do not match the domains of .*circle"):
        evaluate_folder(DomainClassifier(16, 4, width=8, feature_dim=32), val_set)


def test_features_resize_inputs(trained):
    features = ClassifierFeatures.from_file(trained.path)
    assert features.name == "classifier" and features.feature_dim == 32 and features.domains == DEMO_DOMAINS
    assert features.weights_sha256 == hashlib.sha256(trained.path.read_bytes()).hexdigest()
    assert "32-d" in features.protocol and "img_size 16" in features.protocol
    assert "\n" not in features.protocol
    features.train()
    assert not features.training and not features.classifier.training  # a fixed feature space
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = features(x)
        assert out.shape == (3, 32) and out.dtype == torch.float32
        small = resize_images(x, 16)
        assert torch.equal(out, features.classifier.features(small))
        assert torch.equal(features(small), out)
        assert features.logits(x).shape == (3, len(DEMO_DOMAINS))


def test_load_errors_are_specific(tmp_path):
    with pytest.raises(ClassifierError, match="does not exist; train one with `stargan classifier train"):
        load_classifier(tmp_path / "missing.safetensors")
    with pytest.raises(ClassifierError, match="is a directory"):
        load_classifier(tmp_path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ClassifierError, match="cannot read .* as a safetensors file"):
        load_classifier(garbage)
    checkpoint = tmp_path / "networks.safetensors"
    save_file({"generator.w": torch.zeros(2)}, str(checkpoint),
              metadata={"format": "stargan-v2-checkpoint/1"})
    with pytest.raises(ClassifierError, match="not a stargan classifier file: .*'stargan-v2-checkpoint/1'"):
        load_classifier(checkpoint)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(ClassifierError, match="metadata format is None"):
        ClassifierFeatures.from_file(bare)


def test_load_rejects_tensors_that_do_not_fit_the_config(tmp_path):
    config = ClassifierConfig(16, ("a", "b"), width=8, feature_dim=32)
    save_classifier(DomainClassifier(16, 2, width=8, feature_dim=16), config, tmp_path / "c.safetensors")
    with pytest.raises(ClassifierError, match="do not match the stored config"):
        load_classifier(tmp_path / "c.safetensors")
