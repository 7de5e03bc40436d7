"""End-to-end training: run directories, logs, samples, checkpoints and exact resume."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from stargan.checkpoints import CheckpointError, checkpoint_dirs
from stargan.config import Config
from stargan.training.v2.loop import train
from stargan.training.runner import new_run_dir
from tests.tiny import make_demo, v2_config

DS_ITER = "loss.ds_iter=4"  # lambda_ds decays to 0 in 4 iterations: the logged values show the schedule


def weights(ckpt) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "networks.safetensors"))


def test_run_writes_config_logs_samples_and_checkpoints(demo_data, tmp_path):
    run = new_run_dir(tmp_path / "runs", "tiny")
    assert run.name == "00000-tiny"
    ckpt = train(v2_config(demo_data, DS_ITER, "train.total_iters=4", "train.keep_last=1"), run,
                 show_progress=False)
    assert ckpt.name == "step-000004"
    assert new_run_dir(tmp_path / "runs", "tiny").name == "00001-tiny"
    assert [p.name for p in checkpoint_dirs(run)] == ["step-000004"]  # keep_last=1 pruned step 2
    saved = Config.load_yaml(run / "config.yaml")
    assert saved.data.domains == ("circle", "square", "triangle")
    assert saved.model.num_domains == 3
    rows = [json.loads(line) for line in (run / "logs" / "scalars.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"D/latent_real", "D/ref_reg", "G/latent_ds", "G/ref_cyc", "G/lambda_ds"} <= rows[0].keys()
    assert rows[0]["G/lambda_ds"] == 1.0 and rows[3]["G/lambda_ds"] == 0.25  # value used at step 0 and 3
    # at every sample step, logged with the losses: how much of its inputs' differences G keeps
    assert [r["step"] for r in rows if "val/source_kept" in r] == [2, 4]
    assert all(0 < r["val/source_kept"] < 10 for r in rows if "val/source_kept" in r)
    assert list((run / "logs").glob("events.out.tfevents.*"))
    for kind in ("cycle", "latent", "reference"):
        assert (run / "samples" / f"000002_{kind}.png").is_file()
        assert (run / "samples" / f"000004_{kind}.png").is_file()


def test_a_generator_that_ignores_its_input_is_warned_about_once(demo_data, tmp_path, monkeypatch, capsys):
    from stargan.training.v2 import loop

    kept = iter([0.5, 0.02, 0.03, 0.01, 0.02])          # at the sample steps 2, 4, ... 10
    monkeypatch.setattr(loop, "batch_source_kept", lambda *args, **kwargs: next(kept))
    train(v2_config(demo_data, "train.total_iters=10", "train.log_every=3", "train.save_every=10"),
          tmp_path / "run", show_progress=False)
    out = capsys.readouterr().out
    # watch_from(10) = 2; low at 4 and 6: one warning, at 6
    assert out.count("warning: the generator ignores its input") == 1
    assert "val/source_kept has been below 0.2 since iteration 4 (0.030 at 6;" in out
    assert "loss.lambda_sty (now 1)" in out
    rows = [json.loads(line) for line in (tmp_path / "run" / "logs" / "scalars.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["val/source_kept"], "D/latent_real" in r) for r in rows if "val/source_kept" in r]
    assert logged == [(2, 0.5, False), (4, 0.02, False), (6, 0.03, True), (8, 0.01, False), (10, 0.02, True)]


# ADA moves p by 2 * 1 / (0.008 * 1000) = 0.25 after every iteration (batch 2, interval 1), from 0.5
# (set below), so p, the warm-up and the augmentation's random draws all have to resume exactly.
ADA = ["train.augment=ada", "train.ada_kimg=0.008", "train.ada_interval=1", "optim.ema_warmup=true"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ADA, ["train.augment=diffaugment"]], ids=["paper", "ada-warmup",
                                                                                "diffaugment"])
def test_resume_gives_identical_weights(demo_data, tmp_path, extra, monkeypatch):
    from stargan.training.v2 import augment

    start = augment.AdaptiveAugment.__init__
    monkeypatch.setattr(augment.AdaptiveAugment, "__init__", lambda self, *a, **k: start(self, *a, **k, p=0.5))
    straight = train(v2_config(demo_data, DS_ITER, "train.total_iters=4", *extra), tmp_path / "a",
                     show_progress=False)
    (tmp_path / "b").mkdir()
    half = train(v2_config(demo_data, DS_ITER, "train.total_iters=2", *extra), tmp_path / "b",
                 show_progress=False)
    assert half.name == "step-000002"
    torch.manual_seed(12345)  # disturb the global RNG: resume must not depend on it
    resumed = train(v2_config(demo_data, DS_ITER, "train.total_iters=4", *extra), tmp_path / "b", resume=True,
                    show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "b" / "logs" / "scalars.jsonl").read_text().splitlines()]
    # lambda_ds keeps decaying where it left off (ds_iter=4): the value used at steps 0..3
    assert [(r["step"], r["G/lambda_ds"]) for r in rows] == [(1, 1.0), (2, 0.75), (3, 0.5), (4, 0.25)]
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    assert any(k.startswith("ema.generator.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    state_a = torch.load(straight / "state.pt", weights_only=True)
    state_b = torch.load(resumed / "state.pt", weights_only=True)
    assert state_b["step"] == 4
    exp_avg = lambda s: s["optimizers"]["generator"]["state"][0]["exp_avg"]  # noqa: E731
    assert torch.equal(exp_avg(state_a), exp_avg(state_b))
    assert state_a.get("augment", {}).keys() == state_b.get("augment", {}).keys()
    for key, value in state_a.get("augment", {}).items():
        assert torch.equal(value, state_b["augment"][key]), key
    if extra == ADA:  # p was restored, not restarted: the same p at every step, and it did move
        rows_a = [json.loads(line) for line in (tmp_path / "a" / "logs" / "scalars.jsonl").read_text().splitlines()]
        assert [r["D/ada_p"] for r in rows] == [r["D/ada_p"] for r in rows_a]
        assert len({r["D/ada_p"] for r in rows}) > 1


def test_resume_refuses_a_different_model(demo_data, tmp_path):
    train(v2_config(demo_data, "train.total_iters=2"), tmp_path, show_progress=False)
    with pytest.raises(CheckpointError, match=r"model\.\w+ .* -> "):
        train(v2_config(demo_data, "train.total_iters=4", "model.style_dim=4"), tmp_path, resume=True,
              show_progress=False)


def test_missing_dataset_is_reported_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="--data"):
        train(Config(), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_domains_must_match_the_run(demo_data, tmp_path):
    with pytest.raises(ValueError, match="expects domains"):
        train(v2_config(demo_data, "data.domains=cat,dog", "train.total_iters=1"), tmp_path,
              show_progress=False)


# ---- evaluation during training (eval.every) ----------------------------------------------------

EVAL = ["model.img_size=32", "train.total_iters=4", "train.sample_every=100", "train.save_every=100",
        "eval.backbone=none", "eval.lpips=false", "eval.num_outs=2", "eval.max_inputs=1"]


@pytest.fixture(scope="module")
def demo_32(tmp_path_factory):
    """A 32 px demo dataset (the size the metrics need) and a one-epoch domain classifier of it."""
    from stargan.metrics.classifier import train_classifier

    root = tmp_path_factory.mktemp("demo32")
    data = make_demo(root / "data", img_size=32, train_per_domain=4, val_per_domain=2)
    result = train_classifier(data, 32, root / "classifier.safetensors", epochs=1, progress=False)
    return data, result.path


@pytest.fixture(scope="module")
def evaluated_run(demo_32, tmp_path_factory):
    """4 steps with the metrics at steps 2 and 4 (classifier accuracy and FID, no downloaded weights)."""
    data, classifier = demo_32
    tmp = tmp_path_factory.mktemp("evaluated")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))   # real-image statistics stay in the test
        ckpt = train(v2_config(data, *EVAL, "eval.every=2", f"eval.classifier={classifier}"), tmp / "run",
                     show_progress=False)
    return tmp / "run", ckpt


def test_training_evaluates_every_n_steps(evaluated_run):
    run, _ = evaluated_run
    assert sorted(p.name for p in (run / "metrics").iterdir()) == ["metrics.jsonl", "step-000002.json",
                                                                   "step-000004.json"]
    for step in (2, 4):
        saved = json.loads((run / "metrics" / f"step-{step:06d}.json").read_text())
        assert saved["step"] == step
        assert saved["settings"]["backbone"] == "none" and saved["settings"]["random_init"] is False
        assert set(saved["scorers"]) == {"classifier"}
        for mode in ("latent", "reference"):
            tasks = saved[mode]["tasks"]
            assert set(tasks) == {"circle->square", "circle->triangle", "square->circle", "square->triangle",
                                  "triangle->circle", "triangle->square"}
            assert all(t["num_images"] == 2 for t in tasks.values())     # max_inputs x num_outs
            assert all(t["accuracy"] in (0.0, 0.5, 1.0) for t in tasks.values())
            assert saved[mode]["mean"]["accuracy"] == pytest.approx(
                sum(t["accuracy"] for t in tasks.values()) / 6)
            assert "lpips" not in saved[mode]["mean"] and "fid" not in saved[mode]["mean"]
        assert saved["classifier_real_val_accuracy"] in (0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1)
    rows = [json.loads(line) for line in (run / "logs" / "scalars.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/latent/accuracy" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        saved = json.loads((run / "metrics" / f"step-{r['step']:06d}.json").read_text())
        assert r["eval/latent/accuracy"] == saved["latent"]["mean"]["accuracy"]
        assert r["eval/reference/classifier_fid"] == saved["reference"]["mean"]["classifier_fid"]
    lines = [json.loads(line) for line in (run / "metrics" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["file"]) for line in lines] == [(2, "step-000002.json"),
                                                                (4, "step-000004.json")]


def test_evaluation_does_not_change_training(demo_32, evaluated_run, tmp_path):
    data, _ = demo_32
    _, evaluated = evaluated_run
    plain = train(v2_config(data, *EVAL), tmp_path / "plain", show_progress=False)
    assert not (tmp_path / "plain" / "metrics").exists()
    a, b = weights(plain), weights(evaluated)
    assert a.keys() == b.keys()
    assert any(k.startswith("ema.generator.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_missing_lpips_weights_fail_before_training(demo_32, tmp_path, monkeypatch):
    from stargan.metrics.weights import WeightsError

    data, _ = demo_32
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="alexnet-owt-7be5be79.pth"):
        train(v2_config(data, *EVAL, "eval.every=2", "eval.lpips=true"), tmp_path / "run",
              show_progress=False)
    assert not (tmp_path / "run").exists()                               # no step, no checkpoint, no logs


# ---------------------------------------------------------------- face masks (w_hpf > 0)

HPF = ["model.w_hpf=1", "train.total_iters=2", "train.num_samples=2"]


def random_masks(x):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.rand(x.size(0), 1, 256, 256, generator=g) for _ in range(2))


def test_w_hpf_training_uses_fan_masks_in_every_step_and_sample(demo_data, tmp_path, face_files, monkeypatch):
    from stargan.faces import FAN

    inputs = []

    def recording(self, x):
        inputs.append(tuple(x.shape))
        return random_masks(x)

    monkeypatch.setattr(FAN, "get_heatmap", recording)
    train(v2_config(demo_data, *HPF), tmp_path / "run", show_progress=False)
    # 2 iterations x (x_real, then x_fake of each G step's cycle), the watch (the two sources of the other
    # domains, for each of the 3 domains), then the grids: cycle (sources and translations), latent
    # (sources), reference (sources)
    assert inputs == [(2, 3, 16, 16)] * (2 * 3 + 3 + 4)
    assert Config.load_yaml(tmp_path / "run" / "config.yaml").model.masks is True


def test_w_hpf_training_without_fan_weights_stops_before_writing(demo_data, tmp_path, no_face_files):
    from stargan.metrics.weights import WeightsError

    with pytest.raises(WeightsError, match="wing.ckpt not found"):
        train(v2_config(demo_data, *HPF), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_explicit_opt_out_is_announced_and_recorded(demo_data, tmp_path, no_face_files, capsys):
    train(v2_config(demo_data, *HPF, "model.masks=false", "train.sample_every=100"), tmp_path / "run",
          show_progress=False)
    assert "model.masks=false (--no-masks)" in capsys.readouterr().out
    assert Config.load_yaml(tmp_path / "run" / "config.yaml").model.masks is False
