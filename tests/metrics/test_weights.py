import dataclasses
import hashlib

import pytest
import torch

from stargan.metrics import weights
from stargan.metrics.weights import REGISTRY, WeightsError, resolve_weights


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch.hub folder; returns its checkpoints folder."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def register(monkeypatch, key, content_sha256, full=False):
    spec = dataclasses.replace(REGISTRY[key], filename=f"fake-{content_sha256[:8]}.pth",
                               sha256=content_sha256 if full else None)
    monkeypatch.setitem(REGISTRY, key, spec)
    return spec


def test_registry_names_carry_the_sha256_prefix():
    assert REGISTRY["inception-tf"].prefix == "6726825d"
    assert REGISTRY["inception-torchvision"].prefix == "0cc3c7bd"
    assert REGISTRY["alexnet"].prefix == "7be5be79"
    for spec in REGISTRY.values():
        assert spec.sha256 is None or (len(spec.sha256) == 64 and spec.sha256.startswith(spec.prefix))


def test_missing_file_says_what_where_and_how(hub):
    with pytest.raises(WeightsError) as info:
        resolve_weights("inception-tf")
    message = str(info.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in message
    assert str(hub) in message
    assert REGISTRY["inception-tf"].url in message
    assert "`stargan download inception-tf`" in message and "STARGAN_OFFLINE=1 or --offline" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_explicit_path_is_named(hub, tmp_path):
    with pytest.raises(WeightsError, match="nowhere.pth"):
        resolve_weights("alexnet", tmp_path / "nowhere.pth")


def test_wrong_file_reports_expected_prefix_actual_digest_and_path(hub, tmp_path):
    path = tmp_path / "impostor.pth"
    path.write_bytes(b"not inception")
    digest = hashlib.sha256(b"not inception").hexdigest()
    with pytest.raises(WeightsError) as info:
        resolve_weights("inception-torchvision", path)
    message = str(info.value)
    assert "0cc3c7bd" in message and digest in message and str(path) in message


def test_correct_prefix_is_accepted_from_path_folder_and_hub(hub, tmp_path, monkeypatch):
    content = b"weights"
    digest = hashlib.sha256(content).hexdigest()
    spec = register(monkeypatch, "alexnet", digest)
    path = tmp_path / "anything.pth"
    path.write_bytes(content)
    assert resolve_weights("alexnet", path) == weights.Weights(path, digest)

    hub.mkdir(parents=True)
    (hub / spec.filename).write_bytes(content)
    assert resolve_weights("alexnet").sha256 == digest
    assert resolve_weights("alexnet", hub).path == hub / spec.filename


def test_full_digest_is_checked_when_known(hub, tmp_path, monkeypatch):
    content = b"weights"
    digest = hashlib.sha256(content).hexdigest()
    register(monkeypatch, "alexnet", digest[:8] + "0" * 56, full=True)  # same prefix, other file
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=digest):
        resolve_weights("alexnet", path)


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ValueError, match="inception-tf"):
        resolve_weights("vgg")


def test_load_state_dict_refuses_non_dicts(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="state dict"):
        weights.load_state_dict(weights.Weights(path, "x"))


def test_a_file_that_is_not_the_release_is_refused_naming_the_trust_option(hub, tmp_path):
    path = tmp_path / "converted.pth"
    path.write_bytes(b"a converted copy")
    with pytest.raises(WeightsError, match="--trust-weights"):
        resolve_weights("inception-tf", path)


def test_a_trusted_file_is_used_its_hash_printed_once_and_marked(hub, tmp_path, capsys):
    path = tmp_path / "converted.pth"
    path.write_bytes(b"a converted copy")
    digest = hashlib.sha256(b"a converted copy").hexdigest()
    first = resolve_weights("inception-tf", path, trust=True)
    second = resolve_weights("inception-tf", path, trust=True)
    assert first == second == weights.Weights(path, digest, verified=False)
    out = capsys.readouterr().out
    assert out.count(digest) == 1 and str(path) in out and "--trust-weights" in out


def test_trust_covers_named_files_only(hub, tmp_path):
    """The hub folder is where the release is expected: a wrong file there is refused even on trust."""
    hub.mkdir(parents=True)
    (hub / REGISTRY["alexnet"].filename).write_bytes(b"not alexnet")
    with pytest.raises(WeightsError, match="pass its path"):
        resolve_weights("alexnet", trust=True)


def test_the_release_is_verified_with_or_without_trust(hub, tmp_path, monkeypatch):
    content = b"weights"
    digest = hashlib.sha256(content).hexdigest()
    register(monkeypatch, "alexnet", digest)
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    assert resolve_weights("alexnet", path, trust=True).verified
