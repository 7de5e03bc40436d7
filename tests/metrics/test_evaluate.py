"""The evaluation protocol: tasks, per-task numbers, the JSON result, determinism and early errors."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from stargan import checkpoints
from stargan.cli import main
from stargan.config import Config, EvalConfig
from stargan.metrics import evaluate
from stargan.metrics.evaluate import Scorers, _Task, as_png, evaluate_run
from stargan.metrics.fid import FeatureStats, frechet_distance
from stargan.metrics.paired import paired_note
from stargan.metrics.weights import WeightsError
from stargan.nets.v2 import build_networks
from stargan.state import make_train_state
from tests import tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with one (untrained) checkpoint on a two-domain dataset."""
    tmp = tmp_path_factory.mktemp("eval")
    # 32 px, the size the metrics need; 3 validation images per domain, so that num_outs can exceed them
    root = tiny.make_demo(tmp / "data", img_size=32, train_per_domain=6, val_per_domain=3)
    for split in ("train", "val"):  # two domains keep the number of tasks (and FIDs) small
        shutil.rmtree(root / split / "triangle")
    config = Config().with_overrides(tiny.V2_MODEL + ["model.img_size=32", "model.num_domains=2",
                                                      f"data.root={root}", "data.domains=[circle,square]"])
    torch.manual_seed(0)
    state = make_train_state(build_networks(config.model), config.optim)
    state.step = 7
    checkpoints.save_checkpoint(tmp / "run", state, config)
    return tmp / "run"


def test_as_png_rounds_to_8_bit_levels():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.001, 0.5, 2.0])
    levels = (as_png(x) + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.tolist() == pytest.approx([0, 0, 128, 128, 191, 255], abs=1e-4)


class MeanColour(torch.nn.Module):
    """A stand-in feature extractor: the mean colour of each image (3 features)."""

    name, weights_sha256, protocol, feature_dim = "mean-colour", "none", "mean RGB", 3

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_task_scores_equal_direct_computation():
    g = torch.Generator().manual_seed(0)
    outs = torch.rand(4, 5, 3, 8, 8, generator=g) * 2 - 1          # 4 outputs for each of 5 inputs
    real = FeatureStats(keep_features=True)
    real_x = torch.rand(30, 3, 8, 8, generator=g) * 2 - 1
    real.update(real_x.mean(dim=(2, 3)))
    task = _Task(Scorers({"inception": MeanColour()}, lpips=None, classifier=None), trg=1)
    task.add(outs[:, :2])
    task.add(outs[:, 2:])                                          # streamed in two batches
    result = task.result({"inception": real}, seed=0)

    fake = as_png(outs.flatten(0, 1)).mean(dim=(2, 3)).double().numpy()
    expected = frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), real.mean, real.cov)
    assert result["num_images"] == 20
    assert result["fid"] == pytest.approx(expected, rel=1e-9)
    assert result["kid"] > 0 and "lpips" not in result and "accuracy" not in result


def test_task_accuracy_counts_target_predictions():
    class Classifier(MeanColour):
        def logits(self, x):  # domain 1 when the red channel is bright
            red = x[:, 0].mean(dim=(1, 2))
            return torch.stack([-red, red], dim=1)

    clf = Classifier()
    task = _Task(Scorers({}, lpips=None, classifier=clf), trg=1)
    outs = -torch.ones(2, 4, 3, 8, 8)
    outs[:, :3, 0] = 1.0                                            # 3 of 4 inputs have bright red
    task.add(outs)
    assert task.result({}, seed=0)["accuracy"] == pytest.approx(6 / 8)


def settings(**changes) -> EvalConfig:
    base = EvalConfig(mode="both", num_outs=3, max_inputs=2, backbone="none", batch_size=2)
    return dataclasses.replace(base, **changes)


def test_evaluate_run_writes_every_task(run, tmp_path):
    # Inception (2048-d FIDs) once, on latent mode; the reference mode is the same code path.
    path, summary = evaluate_run(run, settings(backbone="inception-tf", mode="latent"), random_init=True,
                                 cache_dir=str(tmp_path), progress=False)
    assert path == run / "metrics" / "step-000007.json"
    saved = json.loads(path.read_text())
    assert saved["step"] == 7 and saved["format"] == evaluate.FORMAT
    assert "reference" not in saved
    for mode in ("latent",):
        tasks = saved[mode]["tasks"]
        assert set(tasks) == {"circle->square", "square->circle"}
        for numbers in tasks.values():
            assert numbers["num_images"] == 2 * 3                   # max_inputs x num_outs
            assert {"fid", "kid", "kid_std", "lpips", "pairwise_l1"} <= set(numbers)
            assert numbers["lpips"] > 0                             # different styles differ
        assert saved[mode]["mean"]["lpips"] == pytest.approx(
            np.mean([t["lpips"] for t in tasks.values()]))
    scorer = saved["scorers"]["inception"]
    assert scorer["name"] == "inception-tf" and scorer["weights_sha256"] == "random-init"
    assert "299" in scorer["protocol"]
    line = json.loads((run / "metrics" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["step"] == 7 and "latent/fid" in line and "latent/lpips" in line


def test_same_seed_same_numbers_other_seed_other_numbers(run, tmp_path):
    def lpips_of(seed):
        _, summary = evaluate_run(run, settings(mode="latent"), random_init=True, seed=seed,
                                  cache_dir=str(tmp_path), progress=False)
        return summary["latent"]["mean"]["lpips"]

    assert lpips_of(0) == lpips_of(0)
    assert lpips_of(0) != lpips_of(1)


def test_identical_outputs_have_zero_lpips(run, tmp_path, monkeypatch):
    """A generator that ignores the style gives num_outs identical outputs: no diversity at all."""
    real_load = checkpoints.load_for_sampling

    def style_blind(path, device):
        config, nets = real_load(path, device)
        nets.generator.encode_image = lambda x, masks=None: (x, {})
        nets.generator.decode_from = lambda features, s, masks=None: features[0].clone()
        return config, nets

    monkeypatch.setattr(checkpoints, "load_for_sampling", style_blind)
    _, summary = evaluate_run(run, settings(mode="latent"), random_init=True, cache_dir=str(tmp_path),
                              progress=False)
    assert summary["latent"]["mean"]["lpips"] == 0.0
    assert summary["latent"]["mean"]["pairwise_l1"] == 0.0


def test_outputs_are_the_generator_applied_to_each_style(run):
    """G's encoder half runs once per input for all styles: the same images as G(x, s) per style."""
    _, nets = checkpoints.load_for_sampling(run, "cpu")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    outs = evaluate._outputs(nets, x, 1, "latent", 3, [], 32, torch.Generator().manual_seed(4), None)
    g = torch.Generator().manual_seed(4)
    for j in range(3):
        s = nets.mapping_network(torch.randn(2, 4, generator=g), torch.ones(2, dtype=torch.long))
        torch.testing.assert_close(outs[j], nets.generator(x, s), rtol=0, atol=0)


def test_source_kept_of_the_protocol_uses_its_own_draws(run, tmp_path, monkeypatch):
    """Every task reports source_kept, in (0, inf) for a random G, without moving the protocol's draws."""
    _, summary = evaluate_run(run, settings(mode="both"), random_init=True, cache_dir=str(tmp_path),
                              progress=False)
    for mode in ("latent", "reference"):
        for numbers in summary[mode]["tasks"].values():
            assert 0 < numbers["source_kept"] < 10
    monkeypatch.setattr(evaluate, "source_kept", lambda *args: float("nan"))
    _, without = evaluate_run(run, settings(mode="both"), random_init=True, cache_dir=str(tmp_path),
                              progress=False)
    assert without["latent"]["mean"]["pairwise_l1"] == summary["latent"]["mean"]["pairwise_l1"]
    assert without["reference"]["mean"]["pairwise_l1"] == summary["reference"]["mean"]["pairwise_l1"]


@pytest.mark.parametrize("change, message", [
    ({"num_outs": 1}, r"eval.num_outs=1: expected >= 2"),
    ({"mode": "sideways"}, "eval.mode='sideways': expected one of latent, reference, both"),
    ({"backbone": "vgg"}, "eval.backbone='vgg': expected one of inception-tf, inception-torchvision, none"),
    ({"classifier": "/no/such/file.safetensors"}, "stargan classifier train"),
])
def test_bad_settings_fail_before_work(run, change, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):  # bad values: when built
        evaluate_run(run, settings(**change), random_init=True, progress=False)


def test_missing_weights_named_before_work(run, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        evaluate_run(run, settings(backbone="inception-tf"), progress=False)


def test_cli_eval(run, tmp_path, capsys):
    code = main(["eval", str(run), "--random-weights", "--backbone", "none", "--mode", "reference",
                 "--num-outs", "2", "--max-inputs", "1", "--cache-dir", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "reference/lpips" in out and "latent/" not in out
    assert f"wrote {run / 'metrics' / 'step-000007.json'}" in out


def test_cli_eval_uses_a_weight_file_on_trust_and_records_its_hash(run, tmp_path, capsys):
    """A converted or mirrored file (not the release's hash) is refused, the error naming the option that
    accepts it; with --trust-weights it is used, its SHA-256 printed and recorded as not verified."""
    import hashlib

    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        path = tmp_path / "alexnet-mirror.pth"
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    args = ["eval", str(run), "--backbone", "none", "--mode", "latent", "--num-outs", "2", "--max-inputs", "1",
            "--lpips-weights", str(path), "--cache-dir", str(tmp_path), "--no-progress"]
    assert main(args) == 2
    assert "--trust-weights" in capsys.readouterr().err

    assert main(args + ["--trust-weights"]) == 0
    out = capsys.readouterr().out
    assert out.count(digest) == 1
    saved = json.loads((run / "metrics" / "step-000007.json").read_text())
    assert saved["scorers"]["lpips"]["weights_sha256"] == digest
    assert saved["scorers"]["lpips"]["weights_verified"] is False
    assert saved["settings"]["trust_weights"] is True


def test_cli_eval_refuses_random_weights_with_a_weight_file(run, tmp_path, capsys):
    assert main(["eval", str(run), "--random-weights", "--weights", str(tmp_path / "w.pth")]) == 2
    assert "--random-weights" in capsys.readouterr().err


def test_classifier_of_other_domains_is_refused_before_training(tmp_path):
    from stargan.metrics.classifier import ClassifierConfig, save_classifier
    from stargan.metrics.evaluate import preflight

    config = ClassifierConfig(img_size=16, domains=("cat", "dog"), width=8, feature_dim=16)
    path = tmp_path / "clf.safetensors"
    save_classifier(config.build(), config, path)
    preflight(dataclasses.replace(settings(), classifier=str(path)), random_init=True, domains=("cat", "dog"))
    with pytest.raises(ValueError, match=r"trained on domains \['cat', 'dog'\] but the dataset has"):
        preflight(dataclasses.replace(settings(), classifier=str(path)), random_init=True,
                  domains=("circle", "square"))


def test_cli_eval_writes_images_only_when_asked(run, tmp_path, capsys):
    args = ["eval", str(run), "--random-weights", "--backbone", "none", "--no-lpips", "--mode", "latent",
            "--num-outs", "2", "--max-inputs", "1", "--cache-dir", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    assert not any(tmp_path.rglob("*.png"))
    assert main(args + ["--write-images", str(tmp_path / "images")]) == 0
    written = sorted(p.relative_to(tmp_path / "images").as_posix() for p in tmp_path.rglob("*.png"))
    assert written == ["latent/circle_to_square/00000_00.png", "latent/circle_to_square/00000_01.png",
                       "latent/square_to_circle/00000_00.png", "latent/square_to_circle/00000_01.png"]


def reference_blocks(monkeypatch) -> list[list[list]]:
    """Spy on evaluate's image loads; the calls grouped per input chunk: [inputs, refs of output 0, 1, ...]."""
    calls: list[list] = []
    real_load = evaluate.eval_images

    def spy(files, img_size):
        calls.append(list(files))
        return real_load(files, img_size)

    monkeypatch.setattr(evaluate, "eval_images", spy)
    monkeypatch.setattr(evaluate, "source_kept", lambda *args: 0.0)  # the protocol's loads only
    return calls


def split_blocks(calls: list[list], outs: int) -> list[list[list]]:
    """Each input chunk is loaded, then the references of its ``outs`` outputs."""
    assert len(calls) % (1 + outs) == 0
    return [calls[k:k + 1 + outs] for k in range(0, len(calls), 1 + outs)]


def test_reference_picks_are_distinct_per_input_and_seeded():
    picks = evaluate.reference_picks(12, 50, 10, torch.Generator().manual_seed(0))
    assert picks.shape == (50, 10)
    assert all(len(set(row.tolist())) == 10 for row in picks)
    assert len({tuple(row.tolist()) for row in picks}) > 1                     # inputs get different draws
    assert torch.equal(picks, evaluate.reference_picks(12, 50, 10, torch.Generator().manual_seed(0)))
    every = evaluate.reference_picks(4, 3, 4, torch.Generator().manual_seed(1))
    assert all(sorted(row.tolist()) == [0, 1, 2, 3] for row in every)
    with pytest.raises(ValueError, match="3 distinct references out of 2"):
        evaluate.reference_picks(2, 1, 3, torch.Generator())


def test_reference_mode_uses_distinct_references(run, tmp_path, monkeypatch):
    calls = reference_blocks(monkeypatch)
    _, summary = evaluate_run(run, settings(mode="reference", num_outs=2, lpips=False), random_init=True,
                              cache_dir=str(tmp_path), progress=False)
    blocks = split_blocks(calls, 2)
    assert len(blocks) == 2                                     # 2 tasks, 1 chunk of 2 inputs each
    for inputs, *refs in blocks:
        for i in range(len(inputs)):
            used = [ref[i] for ref in refs]
            assert len(set(used)) == 2 and used[0].parent != inputs[i].parent


def test_reference_mode_with_fewer_images_than_num_outs_says_so_and_uses_all(run, tmp_path, monkeypatch):
    calls = reference_blocks(monkeypatch)
    with pytest.warns(UserWarning, match=r"has 3 validation images, fewer than num_outs=5.*all 3"):
        _, summary = evaluate_run(run, settings(mode="reference", num_outs=5, lpips=True), random_init=True,
                                  cache_dir=str(tmp_path), progress=False)
    for numbers in summary["reference"]["tasks"].values():
        assert numbers["num_images"] == 2 * 3                   # max_inputs x the 3 references
    for inputs, *refs in split_blocks(calls, 3):
        for i in range(len(inputs)):
            used = {ref[i] for ref in refs}
            assert used == set(refs[0][0].parent.iterdir())    # every validation image of the target, once


def test_reference_mode_needs_two_validation_images_per_domain(run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(checkpoints.load_config(run).data.root, data)
    for extra in sorted((data / "val" / "square").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(ValueError, match=r"at least 2 validation images.*val/square has 1.*--mode latent"):
        evaluate_run(run, settings(mode="reference"), data_root=str(data), random_init=True, progress=False)
    _, summary = evaluate_run(run, settings(mode="latent", lpips=False), data_root=str(data),
                              random_init=True, cache_dir=str(tmp_path), progress=False)
    assert summary["latent"]["tasks"]["square->circle"]["num_images"] == 1 * 3


def test_a_bad_image_is_named_before_work_or_skipped_as_in_training(run, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(checkpoints.load_config(run).data.root, data)
    bad = data / "train" / "square" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with monkeypatch.context() as m:
        m.setattr(evaluate, "cached_real_stats", lambda *a, **k: pytest.fail("work started"))
        listed = rf"1 unreadable images in {data}:\n  {bad}: not a readable image.*\n.*--skip-bad-images"
        with pytest.raises(ValueError, match=listed):
            evaluate_run(run, settings(), data_root=str(data), random_init=True, progress=False)

    with pytest.warns(UserWarning, match=rf"skipping 1 unreadable images in {data} \(first: {bad}"):
        assert main(["eval", str(run), "--data", str(data), "--skip-bad-images", "--random-weights",
                     "--backbone", "none", "--no-lpips", "--mode", "latent", "--num-outs", "2", "--max-inputs",
                     "1", "--cache-dir", str(tmp_path), "--no-progress"]) == 0

    # a run trained with --skip-bad-images skips them here too
    config = checkpoints.load_config(run).with_overrides(["data.skip_bad_images=true"])
    state = make_train_state(build_networks(config.model), config.optim)
    checkpoints.save_checkpoint(tmp_path / "run", state, config)
    with pytest.warns(UserWarning, match=rf"skipping 1 unreadable images in {data} \(first: {bad}"):
        _, summary = evaluate_run(tmp_path / "run", settings(lpips=False, num_outs=2, max_inputs=1),
                                  data_root=str(data), random_init=True, cache_dir=str(tmp_path),
                                  progress=False)
    assert summary["latent"]["tasks"]["circle->square"]["num_images"] == 2


@pytest.fixture(scope="module")
def hpf_run(run, tmp_path_factory):
    """The same dataset, a model with w_hpf = 1 (it needs face masks)."""
    config = checkpoints.load_config(run).with_overrides(["model.w_hpf=1"])
    torch.manual_seed(0)
    state = make_train_state(build_networks(config.model), config.optim)
    out = tmp_path_factory.mktemp("hpf") / "run"
    checkpoints.save_checkpoint(out, state, config)
    return out


def test_w_hpf_evaluation_uses_face_masks_or_stops_before_work(hpf_run, tmp_path, face_files, monkeypatch):
    from stargan.faces import FAN

    sizes = []

    def cheap_masks(self, x):  # the FAN is tested in tests/faces; here: every input batch gets masks
        sizes.append(x.size(0))
        return torch.ones(x.size(0), 1, 256, 256), torch.zeros(x.size(0), 1, 256, 256)

    monkeypatch.setattr(FAN, "get_heatmap", cheap_masks)
    _, summary = evaluate_run(hpf_run, settings(mode="latent", lpips=False), random_init=True,
                              cache_dir=str(tmp_path), progress=False)
    assert summary["settings"]["face_masks"] == "fan"
    assert sizes == [2, 2]                         # max_inputs 2, batch 2: one batch per task
    _, summary = evaluate_run(hpf_run, settings(mode="latent", lpips=False), random_init=True,
                              cache_dir=str(tmp_path), progress=False, masks=False)
    assert summary["settings"]["face_masks"] == "none" and sizes == [2, 2]

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="wing.ckpt not found"):
        evaluate_run(hpf_run, settings(mode="latent", lpips=False), random_init=True, progress=False)


@pytest.fixture
def paired_data(run, tmp_path):
    """The run's data with val/square/NAME a brighter copy of val/circle/NAME: paired by name."""
    from PIL import Image

    data = tmp_path / "paired"
    shutil.copytree(checkpoints.load_config(run).data.root, data)
    for circle in (data / "val" / "circle").iterdir():
        with Image.open(circle) as png:
            brighter = np.minimum(np.asarray(png.convert("RGB")).astype(np.int16) + 20, 255).astype(np.uint8)
        Image.fromarray(brighter).save(data / "val" / "square" / circle.name)
    return data


def test_paired_data_scores_reference_outputs_against_the_true_translation(run, paired_data, tmp_path,
                                                                            monkeypatch):
    """A G that copies its input scores the identity baseline; one that draws grey scores |truth|; the
    output whose reference was the input's namesake is left out; latent mode is not scored."""
    real_load = checkpoints.load_for_sampling
    drawn = {"copy": lambda features, s, masks=None: features[0].clone(),
             "grey": lambda features, s, masks=None: torch.zeros_like(features[0])}

    def fixed_generator(kind):
        def load(path, device):
            config, nets = real_load(path, device)
            nets.generator.encode_image = lambda x, masks=None: (x, {})
            nets.generator.decode_from = drawn[kind]
            return config, nets
        return load

    scored_counts = []
    real_add = evaluate._Task.add_paired

    def spy(task, outs, x, truth, scored):
        scored_counts.append((int(scored.sum()), scored.numel()))
        return real_add(task, outs, x, truth, scored)

    monkeypatch.setattr(evaluate._Task, "add_paired", spy)
    val = paired_data / "val"
    inputs = {d: evaluate.eval_images(sorted((val / d).iterdir())[:2], 32) for d in ("circle", "square")}
    results = {}
    for kind in drawn:
        monkeypatch.setattr(checkpoints, "load_for_sampling", fixed_generator(kind))
        _, results[kind] = evaluate_run(run, settings(lpips=False), data_root=str(paired_data), random_init=True,
                                        cache_dir=str(tmp_path), progress=False)
    assert results["copy"]["settings"]["paired_by_name"] is True
    for src, trg in (("circle", "square"), ("square", "circle")):
        identity = (inputs[src] - inputs[trg]).abs().mean().item()
        copy, grey = (results[k]["reference"]["tasks"][f"{src}->{trg}"] for k in drawn)
        assert copy["paired_l1_identity"] == pytest.approx(identity, rel=1e-5)
        assert copy["paired_l1"] == pytest.approx(identity, abs=1 / 255)       # outputs rounded to 8 bits
        assert grey["paired_l1"] == pytest.approx(inputs[trg].abs().mean().item(), abs=1 / 255)
        assert "paired_l1" not in results["copy"]["latent"]["tasks"][f"{src}->{trg}"]
    # num_outs=3 = all 3 references of the target: each input's namesake is one of them, and left out
    assert scored_counts == [(2 * 2, 3 * 2)] * 4


def test_unpaired_data_reports_no_paired_measure(run, tmp_path, capsys):
    _, summary = evaluate_run(run, settings(lpips=False), random_init=True, cache_dir=str(tmp_path),
                              progress=False)
    assert summary["settings"]["paired_by_name"] is False             # 00000.png in each, unrelated shapes
    assert not any(key.startswith("paired") for key in summary["reference"]["mean"])
    assert paired_note(summary) is None


def test_cli_eval_says_how_near_the_true_translation_comes(run, paired_data, tmp_path, capsys):
    assert main(["eval", str(run), "--data", str(paired_data), "--random-weights", "--backbone", "none",
                 "--mode", "reference", "--num-outs", "2", "--cache-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for key in ("paired_l1", "paired_l1_identity", "paired_lpips", "paired_lpips_identity"):
        assert f"reference/{key} " in out
    assert "paired by name: reference-guided outputs are " in out
    assert "from the true translation (mean L1, images in [-1, 1]), the unchanged sources" in out
