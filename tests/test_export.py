"""`stargan export`: ONNX graphs of v2 (w_hpf 0 and 1, with the FAN masks) and v1 models whose
translations, run by ONNX Runtime, equal PyTorch's within one 8-bit level on every pixel, for latent and
reference styles and any batch size; the manifest; the release-format files imported then exported;
every refusal comes before any file is written."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from stargan import export as export_module
from stargan.checkpoints import CheckpointError, load_for_sampling, load_v1_for_sampling
from stargan.cli import main
from stargan.config import V1ModelConfig
from stargan.data.transforms import eval_transform
from stargan.data.v1 import condition_vector, transform as v1_transform
from stargan.export import ExportError, export_onnx, levels
from stargan.faces.masks import load_mask_fn
from stargan.hub import RELEASES, WeightsError, sha256_file
from stargan.nets.v1 import build_networks as build_v1_networks
from stargan.official import import_official, import_v1_official
from stargan.runtime import Translator, read_manifest
from stargan.sampling.v2 import translate
from tests.onnx_exports import exported, perturb, photo, write_run
from tests.release_fixtures import face_image, write_release


def torch_model(run: Path):
    config, nets = load_for_sampling(run)
    return config, nets, load_mask_fn(config.model, run=run)


def images(kind: str, count: int, size: int, seed: int = 0) -> torch.Tensor:
    style = "face" if kind == "v2_hpf" else "noise"
    return torch.stack([eval_transform(photo(seed + k, kind=style), size) for k in range(count)])


# ------------------------------------------------------------------------------------------------
# Parity: StarGAN v2

@pytest.mark.parametrize("kind", ["v2", "v2_style", "v2_hpf"])
@pytest.mark.parametrize("sources, codes", [(1, 1), (1, 3), (3, 3)])
def test_v2_latent_translation_matches_pytorch(kind, sources, codes, tmp_path_factory):
    run, folder = exported(kind, tmp_path_factory)
    config, nets, mask_fn = torch_model(run)
    x = images(kind, sources, config.model.img_size)
    z = torch.randn(codes, config.model.latent_dim, generator=torch.Generator().manual_seed(codes))
    y = torch.tensor([1, 0, 1]) if max(sources, codes) == 3 else 1
    expected = translate(nets, x, y, z=z, mask_fn=mask_fn).numpy()
    got = Translator.load(folder, threads=1).graphs.translate(x.numpy(), np.asarray(y), z=z.numpy())
    assert got.shape == expected.shape == (max(sources, codes), 3, config.model.img_size, config.model.img_size)
    assert levels(expected, got) <= 1


@pytest.mark.parametrize("kind", ["v2", "v2_style", "v2_hpf"])
@pytest.mark.parametrize("sources, references", [(1, 1), (1, 3), (3, 3)])
def test_v2_reference_translation_matches_pytorch(kind, sources, references, tmp_path_factory):
    run, folder = exported(kind, tmp_path_factory)
    config, nets, mask_fn = torch_model(run)
    x = images(kind, sources, config.model.img_size)
    x_ref = images(kind, references, config.model.img_size, seed=10)
    y = torch.tensor([0, 1, 1]) if max(sources, references) == 3 else 0
    expected = translate(nets, x, y, x_ref=x_ref, mask_fn=mask_fn).numpy()
    got = Translator.load(folder, threads=1).graphs.translate(x.numpy(), np.asarray(y), x_ref=x_ref.numpy())
    assert got.shape == expected.shape
    assert levels(expected, got) <= 1


@pytest.mark.parametrize("domain", [0, 1])
def test_v2_psi_uses_the_exported_mean_style(domain, tmp_path_factory):
    run, folder = exported("v2", tmp_path_factory)
    config, nets, _ = torch_model(run)
    x = images("v2", 1, config.model.img_size)
    z = torch.randn(2, config.model.latent_dim, generator=torch.Generator().manual_seed(5))
    # translate() averages each domain's mean style over codes from this generator, as the export did
    expected = translate(nets, x, domain, z=z, psi=0.5, generator=torch.Generator().manual_seed(0)).numpy()
    graphs = Translator.load(folder, threads=1).graphs
    assert levels(expected, graphs.translate(x.numpy(), domain, z=z.numpy(), psi=0.5)) <= 1
    assert levels(graphs.translate(x.numpy(), domain, z=z.numpy(), psi=0.0),
                  graphs.translate(x.numpy(), domain, z=z.numpy()[::-1].copy(), psi=0.0)) == 0


def test_the_face_masks_are_the_fans_and_not_trivial(tmp_path_factory):
    run, folder = exported("v2_hpf", tmp_path_factory)
    config, _, mask_fn = torch_model(run)
    x = images("v2_hpf", 2, config.model.img_size)
    expected = [m.numpy() for m in mask_fn(x)]
    got = Translator.load(folder, threads=1).graphs.masks(x.numpy())
    for e, g in zip(expected, got):
        assert g.shape == (2, 1, 256, 256)
        assert 0.05 < e.mean() < 0.95 and 0.05 < ((e > 0) & (e < 1)).mean()  # the masks matter
        # Heatmap values are zeroed below 0.1: one at the threshold may fall either side, so a few pixels
        # (about 1 in 100,000) of one landmark's share of the mask differ; the translations above do not.
        assert (np.abs(e - g) > 1e-3).mean() < 1e-4


# ------------------------------------------------------------------------------------------------
# Parity: StarGAN v1

@pytest.mark.parametrize("kind, target", [("v1", {"domain": "star"}), ("v1_both", {"domain": "sad"}),
                                          ("v1_both", {"attributes": ["Male"]})])
def test_v1_translation_matches_pytorch(kind, target, tmp_path_factory):
    run, folder = exported(kind, tmp_path_factory)
    config, generator = load_v1_for_sampling(run)
    sizes = tuple(read_manifest(folder).label_sizes)
    if "domain" in target:
        c = condition_vector(torch.tensor([config.data.domains.index(target["domain"])]), len(sizes) - 1, sizes)
    else:
        c = condition_vector(torch.tensor([[float(a in target["attributes"]) for a in config.data.attrs]]), 0, sizes)
    image = photo(3)
    x = v1_transform(image, config.model.img_size, config.data.crop_size, flip=False)[None]
    with torch.inference_mode():
        expected = generator(x, c).numpy()
    translator = Translator.load(folder, threads=1)
    np.testing.assert_array_equal(translator.graphs.label_vector(**target), c[0].numpy())
    got = np.asarray(translator.translate(image, **target)[0]).astype(int)
    assert np.abs(got - export_module.to_uint8(expected)[0].transpose(1, 2, 0)).max() <= 1


def test_v1_batch_is_dynamic(tmp_path_factory):
    run, folder = exported("v1", tmp_path_factory)
    _, generator = load_v1_for_sampling(run)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    c = torch.eye(3)[[2, 0, 1]]
    with torch.inference_mode():
        expected = generator(x, c).numpy()
    assert levels(expected, Translator.load(folder, threads=1).graphs.translate(x.numpy(), c.numpy())) <= 1


# ------------------------------------------------------------------------------------------------
# The folder and its manifest

def test_manifest_describes_the_model_and_its_source(tmp_path_factory):
    run, folder = exported("v2_hpf", tmp_path_factory)
    data = json.loads((folder / "manifest.json").read_text())
    assert data["format"] == "stargan-onnx/1" and data["arch"] == "v2"
    assert (data["domains"], data["img_size"], data["value_range"]) == (["female", "male"], 64, [-1.0, 1.0])
    assert (data["latent_dim"], data["style_dim"], data["w_hpf"], data["masks"]) == (4, 8, 1.0, True)
    assert "attributes" not in data and "label_sizes" not in data  # v1's fields stay out
    ckpt = run / "checkpoints" / "step-000000"
    assert data["source"]["checkpoint"] == str(ckpt.resolve())
    assert data["source"]["sha256"] == sha256_file(ckpt / "networks.safetensors")
    assert data["source"]["fan_weights"] == str((run / "fan.safetensors").resolve())
    assert data["licence"] is None and data["opset"] >= 17 and "torch" in data["exporter"]
    assert set(data["check"]) == {"latent", "latent_psi_0.5", "reference"} and max(data["check"].values()) <= 1
    graphs = data["graphs"]
    assert graphs["generator"]["inputs"] == ["x", "s", "mask_coarse", "mask_fine"]
    assert graphs["masks"]["outputs"] == ["mask_coarse", "mask_fine"]
    for graph in graphs.values():
        assert graph["exporter"] == "dynamo" and graph["sha256"] == sha256_file(folder / graph["file"])
        model = onnx.load(folder / graph["file"])
        assert model.opset_import[0].version == data["opset"]
        for value in (*model.graph.input, *model.graph.output):  # the batch axis is symbolic
            assert value.type.tensor_type.shape.dim[0].dim_param
    assert np.load(folder / data["mean_styles"]).shape == (2, 8)
    assert sorted(p.name for p in folder.iterdir()) == [
        "generator.onnx", "manifest.json", "mapping_network.onnx", "masks.onnx", "mean_styles.npy",
        "style_encoder.onnx"]


def test_v1_manifest(tmp_path_factory):
    _, folder = exported("v1_both", tmp_path_factory)
    manifest = read_manifest(folder)
    assert (manifest.arch, manifest.attributes, manifest.domains) == ("v1", ("Blond_Hair", "Male"),
                                                                      ("happy", "sad", "angry"))
    assert (manifest.label_sizes, manifest.crop_size, list(manifest.graphs)) == ((2, 3), 20, ["generator"])
    assert manifest.check["labels"] <= 1 and manifest.latent_dim == 0


def test_the_torchscript_exporter_gives_the_same_translations(tmp_path):
    run = write_run("v2", tmp_path)
    manifest = export_onnx(run, tmp_path / "ts", exporter="torchscript")
    assert {g.exporter for g in manifest.graphs.values()} == {"torchscript"}
    _, nets, _ = torch_model(run)
    x = images("v2", 3, 16)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    graphs = Translator.load(tmp_path / "ts", threads=1).graphs
    assert levels(translate(nets, x, 1, z=z).numpy(), graphs.translate(x.numpy(), 1, z=z.numpy())) <= 1


# ------------------------------------------------------------------------------------------------
# Release-format files, imported then exported

@pytest.mark.slow
def test_the_celeba_hq_release_format_imported_then_exported(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    release = write_release(tmp_path, tmp_path / "hub" / "checkpoints", images_per_split=1)
    (tmp_path / "hub" / "checkpoints" / "wing.ckpt").unlink()  # the file's own 'fan' entry is enough
    downloaded = tmp_path / RELEASES["celeba_hq"].files[0].filename  # as `stargan download` names it
    shutil.copy(release["checkpoint"], downloaded)
    import_official(downloaded, tmp_path / "run")
    manifest = export_onnx(tmp_path / "run", tmp_path / "export")
    assert manifest.licence == RELEASES["celeba_hq"].licence
    assert manifest.masks and manifest.source.fan_weights.endswith("fan.safetensors")
    assert (manifest.img_size, manifest.domains) == (256, ("female", "male"))
    onnx_translator = Translator.load(tmp_path / "export", threads=1)
    _, nets, mask_fn = torch_model(tmp_path / "run")
    source, reference = face_image(1, size=300), face_image(2, size=300)
    x, x_ref = eval_transform(source, 256)[None], eval_transform(reference, 256)[None]
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    pairs = [(onnx_translator.translate(source, "male", z=z.numpy()), translate(nets, x, 1, z=z, mask_fn=mask_fn)),
             (onnx_translator.translate(source, "male", reference=reference),
              translate(nets, x, 1, x_ref=x_ref, mask_fn=mask_fn))]
    for got, expected in pairs:
        got = np.stack([np.asarray(im).transpose(2, 0, 1) for im in got]).astype(int)
        assert np.abs(got - export_module.to_uint8(expected.numpy())).max() <= 1


def test_the_v1_release_format_imported_then_exported(tmp_path):
    torch.manual_seed(0)
    nets = build_v1_networks(V1ModelConfig(c_dim=5, g_conv_dim=8, g_repeat_num=2), with_discriminator=False)
    perturb(nets)
    torch.save(nets.generator.state_dict(), tmp_path / "200000-G.ckpt")
    import_v1_official(tmp_path / "200000-G.ckpt", out_dir=tmp_path / "run")
    manifest = export_onnx(tmp_path / "run", tmp_path / "export")
    assert (manifest.img_size, manifest.crop_size, len(manifest.attributes)) == (128, 178, 5)
    config, generator = load_v1_for_sampling(tmp_path / "run")
    image = photo(0, size=200)
    wanted = ["Blond_Hair", "Young"]
    c = torch.tensor([[float(a in wanted) for a in config.data.attrs]])
    with torch.inference_mode():
        expected = generator(v1_transform(image, 128, 178, flip=False)[None], c).numpy()
    got = np.asarray(Translator.load(tmp_path / "export", threads=1).translate(image, attributes=wanted)[0])
    assert np.abs(got.astype(int) - export_module.to_uint8(expected)[0].transpose(1, 2, 0)).max() <= 1


# ------------------------------------------------------------------------------------------------
# Refusals, before any file is written

def test_a_used_out_folder_is_refused_and_kept(tmp_path, tmp_path_factory):
    run, _ = exported("v2", tmp_path_factory)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="already exists and is not an empty folder"):
        export_onnx(run, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("make, error, message", [
    (lambda tmp: tmp / "nowhere", CheckpointError, "does not exist"),
    (lambda tmp: tmp / "empty", CheckpointError, "no checkpoint in"),
    (lambda tmp: tmp / "100000_nets_ema.ckpt", ExportError, "import-official"),
])
def test_what_is_not_a_checkpoint_is_refused(make, error, message, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "100000_nets_ema.ckpt").write_bytes(b"x")
    with pytest.raises(error, match=message):
        export_onnx(make(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_face_model_without_fan_weights_is_refused(tmp_path, no_face_files):
    run = write_run("v2_hpf", tmp_path)
    (run / "fan.safetensors").unlink()
    with pytest.raises(WeightsError, match="wing.ckpt"):
        export_onnx(run, tmp_path / "exports" / "out")
    assert not (tmp_path / "exports").exists()
    manifest = export_onnx(run, tmp_path / "no-masks", masks=False)  # or, said out loud, without masks
    assert not manifest.masks and "masks" not in manifest.graphs
    assert manifest.graphs["generator"].inputs == ("x", "s")


def test_missing_onnx_packages_name_the_extra(tmp_path, tmp_path_factory, monkeypatch):
    run, _ = exported("v2", tmp_path_factory)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript raises ImportError
    with pytest.raises(ImportError, match=r"stargan\[onnx\]"):
        export_onnx(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("failure", ["exporter", "check"])
def test_a_failed_export_leaves_nothing(failure, tmp_path, tmp_path_factory, monkeypatch):
    run, _ = exported("v2", tmp_path_factory)
    if failure == "exporter":
        def broken(*args, **kwargs):
            raise ExportError("cannot export generator to ONNX (dynamo: boom)")
        monkeypatch.setattr(export_module, "export_graph", broken)
    else:
        monkeypatch.setattr(export_module, "CHECK_LEVELS", -1)  # any difference at all fails
    with pytest.raises(ExportError):
        export_onnx(run, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# The command

def test_export_command(tmp_path, tmp_path_factory, capsys):
    run, _ = exported("v1", tmp_path_factory)
    assert main(["export", str(run), "--out", str(tmp_path / "export"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "exported" in out and "generator.onnx" in out and "--backend onnx" in out
    assert read_manifest(tmp_path / "export").arch == "v1"
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(tmp_path / "other"), "--no-masks"]) == 2
    assert "StarGAN v1" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()

