"""A new run started from a trained model (``stargan train --init-from``): heads by domain name, the parent
left as it was, an imported release as parent, the refused settings and options, and exact resume."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stargan.checkpoints import read_networks
from stargan.cli import main
from stargan.config import ConfigError, load_config_yaml
from stargan.nets.v2 import build_networks
from stargan.official import import_official, import_v1_official
from stargan.state import make_train_state
from stargan.training.v2 import finetune
from tests import tiny
from tests.release_fixtures import release_checkpoint

PARENT_DOMAINS = ("circle", "square", "triangle")
NEW_DOMAINS = ("circle", "hexagon", "square", "star")  # kept circle, square; new hexagon, star; dropped triangle
RUN = tiny.as_cli_flags(tiny.RUN + ["train.total_iters=2"])  # no model.*: the demo preset's differ from the parent's


@pytest.fixture(scope="module")
def parent(demo_data, tmp_path_factory):
    """A tiny run on the demo shapes, two iterations: its networks and their moving averages differ."""
    run = tmp_path_factory.mktemp("parent") / "run"
    assert main(["train", "--preset", "demo", "--data", str(demo_data), "--run-dir", str(run), "--no-progress",
                 *tiny.as_cli_flags(tiny.V2 + ["train.total_iters=2"])]) == 0
    return run


@pytest.fixture(scope="module")
def new_data(demo_data, tmp_path_factory):
    """The demo shapes with triangle renamed star and circle's images again as hexagon."""
    root = tmp_path_factory.mktemp("new") / "data"
    shutil.copytree(demo_data, root, ignore=shutil.ignore_patterns(".stargan-*"))
    for split in ("train", "val"):
        (root / split / "triangle").rename(root / split / "star")
        shutil.copytree(root / split / "circle", root / split / "hexagon")
    return root


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def started(parent_path, config, domains, copies=None):
    """A fresh state loaded from the parent as a run on ``domains`` would be, and its config."""
    start = finetune.InitFrom(finetune.read_parent(parent_path), copies or {})
    config, _ = finetune.start_config(config, start.parent, explicit=())
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, domains=domains),
                                 model=dataclasses.replace(config.model, num_domains=len(domains)))
    config = finetune.with_init(config, start)
    torch.manual_seed(0)
    state = make_train_state(build_networks(config.model), config.optim)
    fresh_d = {k: v.clone() for k, v in state.nets.discriminator.state_dict().items()}
    finetune.load_parent(state, start, config)
    return start, config, state, fresh_d


def expected_head(tensors, prefix, rest, source):
    """The parent's head ``source`` (an index), or the mean of all its heads ("mean")."""
    heads = [tensors[f"{prefix}{i}.{rest}"] for i in range(len(PARENT_DOMAINS))]
    return torch.stack(heads).mean(0) if source == "mean" else heads[source]


def test_heads_are_kept_new_or_dropped_by_domain_name(parent):
    start, config, state, _ = started(parent, tiny.v2_config(), NEW_DOMAINS, {"star": "triangle"})
    assert (config.init.kept, config.init.new, config.init.dropped) == (
        ("circle", "square"), ("hexagon=mean", "star=copy:triangle"), ("triangle",))
    sources = {"circle": 0, "hexagon": "mean", "square": 1, "star": 2}
    p = read_networks(start.parent.checkpoint)
    assert not torch.equal(p["mapping_network.unshared.0.0.weight"], p["ema.mapping_network.unshared.0.0.weight"])
    assert not torch.equal(p["mapping_network.unshared.0.0.weight"], p["mapping_network.unshared.1.0.weight"])
    for prefix, nets in (("", state.nets), ("ema.", state.ema)):  # trained copies and moving averages
        for name in ("mapping_network", "style_encoder"):
            got = getattr(nets, name).state_dict()
            rests = {k.split(".", 2)[2] for k in got if k.startswith("unshared.0.")}
            assert len(getattr(nets, name).unshared) == 4  # triangle's head is gone
            for j, domain in enumerate(NEW_DOMAINS):
                for rest in rests:
                    want = expected_head(p, f"{prefix}{name}.unshared.", rest, sources[domain])
                    assert torch.equal(got[f"unshared.{j}.{rest}"], want), (prefix, name, domain, rest)
            for key, value in got.items():  # the shared trunks are the parent's
                if key.startswith("shared."):
                    assert torch.equal(value, p[f"{prefix}{name}.{key}"]), key
        for key, value in nets.generator.state_dict().items():
            assert torch.equal(value, p[f"{prefix}generator.{key}"]), key
    d, last = state.nets.discriminator.state_dict(), f"main.{len(state.nets.discriminator.main) - 1}."
    assert config.init.discriminator == "parent"
    for key, value in d.items():
        if not key.startswith(last):
            assert torch.equal(value, p[f"discriminator.{key}"]), key
            continue
        assert value.shape[0] == 4  # one output row per domain of the new data
        for j, domain in enumerate(NEW_DOMAINS):
            rows = p[f"discriminator.{key}"]
            want = rows.mean(0) if sources[domain] == "mean" else rows[sources[domain]]
            assert torch.equal(value[j], want), (key, domain)


def test_new_domains_start_halfway_to_the_dropped_domains_in_order_then_at_the_mean(parent):
    """Without --init-domain, hexagon (the first new domain) takes the one dropped domain, triangle:
    mean + (triangle - mean) / 2 in every head and D row; star, the next, starts at the mean."""
    start, config, state, _ = started(parent, tiny.v2_config(), NEW_DOMAINS)
    assert config.init.new == ("hexagon=half:triangle", "star=mean")
    p = read_networks(start.parent.checkpoint)
    for prefix, nets in (("", state.nets), ("ema.", state.ema)):
        for name in ("mapping_network", "style_encoder"):
            got = getattr(nets, name).state_dict()
            for rest in {k.split(".", 2)[2] for k in got if k.startswith("unshared.0.")}:
                mean = expected_head(p, f"{prefix}{name}.unshared.", rest, "mean")
                triangle = expected_head(p, f"{prefix}{name}.unshared.", rest, 2)
                torch.testing.assert_close(got[f"unshared.1.{rest}"], (mean + triangle) / 2, rtol=0, atol=1e-6)
                assert not torch.allclose(got[f"unshared.1.{rest}"], mean)
                assert torch.equal(got[f"unshared.3.{rest}"], mean)
                assert torch.equal(got[f"unshared.0.{rest}"], expected_head(p, f"{prefix}{name}.unshared.",
                                                                            rest, 0))  # circle kept
    last = f"main.{len(state.nets.discriminator.main) - 1}."
    for key, value in state.nets.discriminator.state_dict().items():
        if key.startswith(last):
            rows = p[f"discriminator.{key}"]
            torch.testing.assert_close(value[1], (rows.mean(0) + rows[2]) / 2, rtol=0, atol=1e-6)
            assert torch.equal(value[3], rows.mean(0))
    assert "hexagon (halfway from the mean of the parent's 3 heads to triangle's), star (mean of the parent's " \
        "3 heads)" in finetune.describe(start, config.init)


def test_new_run_from_the_cli_records_its_parent_and_leaves_it_untouched(parent, new_data, tmp_path, capsys):
    before = file_hashes(parent)
    runs = tmp_path / "runs"
    assert main(["train", "--init-from", str(parent), "--data", str(new_data), "--preset", "demo",
                 "--runs", str(runs), "--no-progress", "--init-domain", "star=triangle", *RUN]) == 0
    assert file_hashes(parent) == before  # not a byte, not a lock file, not a log
    ckpt = parent / "checkpoints" / "step-000002"
    digest = hashlib.sha256((ckpt / "networks.safetensors").read_bytes()).hexdigest()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run directory: {runs / '00000-demo'}"
    assert lines[1].startswith(f"init from {ckpt.resolve()} (step 2, sha256 {digest}): kept circle, square; new "
                               "hexagon (mean of the parent's 3 heads), star (copy of triangle); dropped triangle; "
                               "G, F, E, D from the parent's networks, the moving averages from the parent's; model "
                               "settings from the parent, replacing the preset's (img_size 32 -> 16, ")
    assert lines[1].endswith("; optimizers, step and schedules start at 0")
    config = load_config_yaml(runs / "00000-demo" / "config.yaml")
    assert dataclasses.asdict(config.init) == {
        "path": str(ckpt.resolve()), "step": 2, "sha256": digest, "discriminator": "parent",
        "kept": ("circle", "square"), "new": ("hexagon=mean", "star=copy:triangle"), "dropped": ("triangle",)}
    assert config.model == dataclasses.replace(load_config_yaml(parent / "config.yaml").model, num_domains=4)
    assert config.data.domains == NEW_DOMAINS and config.optim.lr == 5e-4  # the demo preset's training


def test_resume_of_a_started_run_is_exact_and_does_not_read_the_parent(parent, new_data, tmp_path):
    moved = tmp_path / "parent"
    shutil.copytree(parent, moved)
    start = ["train", "--init-from", str(moved), "--data", str(new_data), "--preset", "demo", "--no-progress",
             *tiny.as_cli_flags(tiny.V2)]  # model values equal to the parent's may be set
    assert main([*start, "--run-dir", str(tmp_path / "a"), "--set", "train.total_iters=4"]) == 0
    assert main([*start, "--run-dir", str(tmp_path / "b"), "--set", "train.total_iters=2"]) == 0
    shutil.rmtree(moved)  # a resumed run reads its own checkpoints only
    torch.manual_seed(12345)
    assert main(["train", "--resume", str(tmp_path / "b"), "--no-progress", "--set", "train.total_iters=4"]) == 0
    a, b = (tmp_path / run / "checkpoints" / "step-000004" for run in ("a", "b"))
    wa, wb = load_file(str(a / "networks.safetensors")), load_file(str(b / "networks.safetensors"))
    assert wa.keys() == wb.keys() and "ema.mapping_network.unshared.3.6.weight" in wa
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    sa, sb = (torch.load(c / "state.pt", weights_only=True) for c in (a, b))
    assert torch.equal(sa["optimizers"]["generator"]["state"][0]["exp_avg"],
                       sb["optimizers"]["generator"]["state"][0]["exp_avg"])
    assert sb["config"]["init"] == sa["config"]["init"] and sa["config"]["init"]["step"] == 2


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The CelebA-HQ-like release file of tests/release_fixtures.py (EMA G, F, E and the FAN, no D),
    imported as `stargan import-official` does, with the demo shapes' names for its two domains."""
    root = tmp_path_factory.mktemp("release")
    path = release_checkpoint(root / "100000_nets_ema.ckpt", seed=5)
    import_official(path, root / "run", domains=("circle", "square"))
    return root / "run", torch.load(path, weights_only=True)


def test_an_imported_release_starts_g_f_e_and_their_averages_from_its_weights_and_d_fresh(release):
    run, raw = release
    config = tiny.v2_config().with_overrides(["model.img_size=256"])  # a preset's other model: replaced
    start, config, state, fresh_d = started(run, config, ("circle", "triangle"))
    assert config.model.img_size == 256 and config.model.w_hpf == 1.0
    assert config.model.fan_weights == str((run / "fan.safetensors").resolve())  # the release's FAN
    assert (config.init.discriminator, config.init.step, config.init.new) == ("fresh", 100000,
                                                                                 ("triangle=half:square",))
    for nets in (state.nets, state.ema):
        for key, value in nets.generator.state_dict().items():
            if key != "hpf.filter":
                assert torch.equal(value, raw["generator"][key]), key
        assert torch.equal(nets.mapping_network.unshared[0][0].weight, raw["mapping_network"]["unshared.0.0.weight"])
        circle, square = raw["style_encoder"]["unshared.0.weight"], raw["style_encoder"]["unshared.1.weight"]
        half = (circle + square) / 2 + ((square - (circle + square) / 2) / 2)  # halfway from the mean to square
        torch.testing.assert_close(nets.style_encoder.unshared[1].weight, half, rtol=0, atol=1e-7)
    for key, value in state.nets.discriminator.state_dict().items():
        assert torch.equal(value, fresh_d[key]), key  # as built: the release has no D
    line = finetune.describe(start, config.init)
    assert ("an imported release (no optimizer state): G, F, E and the moving averages from its weights; "
            "D from its usual initialisation (the parent has none)") in line


def test_changing_the_networks_is_refused_naming_the_parents_values(parent, new_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--init-from", str(parent), "--data", str(new_data), "--preset", "demo", "--runs",
                 str(runs), *RUN, "--set", "model.img_size=32", "--set", "model.style_dim=4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid config: model.img_size=32: expected 16, the parent's; "
                          "model.style_dim=4: expected 8, the parent's (--init-from ")
    assert "Traceback" not in err and not runs.exists()
    config = tiny.v2_config(None, "model.w_hpf=1", "model.base_dim=16")
    with pytest.raises(ConfigError, match=r"model\.base_dim=16: expected 8, the parent's; model\.w_hpf=1\.0: "):
        finetune.start_config(config, finetune.read_parent(parent), explicit={"w_hpf", "base_dim", "img_size"})


@pytest.mark.parametrize("flags, message", [
    (["--init-domain", "star=hexagon"], ("--init-domain star=hexagon: 'hexagon' is not a domain of the parent "
                                         "(circle, square, triangle)")),
    (["--init-domain", "circle=square"], ("'circle' is a domain of the parent too and keeps its own heads; name "
                                          "a domain only the new data has (hexagon, star)")),
    (["--init-domain", "moon=circle"], "'moon' is not a domain of"),
    (["--init-domain", "star"], "--init-domain takes NEW=OLD"),
    (["--init-domain", "star=circle", "--init-domain", "star=square"], "names 'star' twice"),
    (["--set", "init.step=7"], "--set init.step=7: the init section records"),
    (["--model", "v1"], "--model v1: starting a run from a trained model (--init-from) is StarGAN v2 only"),
    (["--preset", "cpu-v1"], "--preset cpu-v1 is a StarGAN v1 preset: starting a run from a trained model"),
    (["--resume", "RUNS"], "--init-from starts a new run from a trained model and --resume continues a run"),
])
def test_bad_options_are_one_line_errors_before_any_file(parent, new_data, tmp_path, capsys, flags, message):
    runs = tmp_path / "runs"
    flags = [str(runs) if flag == "RUNS" else flag for flag in flags]
    preset = [] if "--preset" in flags or "--model" in flags else ["--preset", "demo"]
    assert main(["train", "--init-from", str(parent), "--data", str(new_data), *preset, "--runs", str(runs),
                 *RUN, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not runs.exists()


def test_a_v1_parent_a_file_or_init_domain_alone_are_refused(demo_data, tmp_path, capsys):
    from stargan.v1 import Generator

    g = tmp_path / "000100-G.ckpt"
    torch.save(Generator(conv_dim=8, label_dim=3, repeat_num=1).state_dict(), g)
    import_v1_official(g, out_dir=tmp_path / "v1", names=PARENT_DOMAINS)
    cases = [(["--init-from", str(tmp_path / "v1")], ("is a StarGAN v1 checkpoint: starting a run from a "
                                                       "trained model (--init-from) is StarGAN v2 only")),
             (["--init-from", str(g)], ("is a file; it takes a run directory or a checkpoint directory. A "
                                        f"released .ckpt becomes one with `stargan import-official {g} --out DIR`")),
             (["--init-domain", "star=circle"], "--init-domain says how --init-from's model starts a new domain")]
    for flags, message in cases:
        assert main(["train", *flags, "--data", str(demo_data), "--runs", str(tmp_path / "runs"), *RUN]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()
