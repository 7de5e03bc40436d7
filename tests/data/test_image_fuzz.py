"""Fuzz: 1,100 hostile image files through every input path.

Truncated, zero-byte, random and mutated files with image extensions, forged 60000x60000 headers,
real decompression bombs, 1x1, 16-bit, CMYK, palette with transparency, animations, EXIF rotations and
wrong extensions (tests/data/hostile_images.py, generated from a seed; nothing large is committed) go
through the dataset check, ``load_rgb`` (training batches, eval inputs), ``Translator.translate`` and
``stargan translate``. Each ends in the clear error naming the file or in a correct image; none in
another exception, a hang (each file under SECONDS_PER_FILE) or peak memory growing by more than
MEMORY_BOUND_MB in a fresh process.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import stargan
from stargan import checkpoints
from stargan.api import Translator
from stargan.cli import main
from stargan.config import Config
from stargan.data import DataError, eval_transform, load_rgb, open_dataset
from stargan.data.image_check import find_bad_images
from stargan.nets.v2 import build_networks
from stargan.state import make_train_state
from tests import tiny

from .hostile_images import make_corpus

COUNT = 1100
SECONDS_PER_FILE = 5.0
MEMORY_BOUND_MB = 300  # peak RSS growth while decoding every file (undefended, the bombs need 1.5 GB)
IMG_SIZE = 16
TINY = tiny.V2_MODEL + [f"model.img_size={IMG_SIZE}", "model.num_domains=2", "data.domains=[cat,dog]"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[Path, tuple]:
    return make_corpus(tmp_path_factory.mktemp("fuzz") / "images", COUNT, seed=0)


@pytest.fixture(scope="module")
def problems(corpus) -> dict[Path, str | None]:
    """The dataset check's verdict on every file (no cache: each file is decoded)."""
    root = next(iter(corpus)).parent
    with time_limit(SECONDS_PER_FILE * 20):
        bad = dict(find_bad_images(list(corpus), root, cache=False))
    return {path: bad.get(path) for path in corpus}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny untrained StarGAN v2 checkpoint, reused by every translation."""
    out = tmp_path_factory.mktemp("fuzz-run") / "run"
    config = Config().with_overrides(TINY)
    torch.manual_seed(0)
    checkpoints.save_checkpoint(out, make_train_state(build_networks(config.model), config.optim), config)
    return out


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail instead of hanging (SIGALRM interrupts Python code between C calls)."""
    def expired(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def clear_error(path: Path) -> str:
    return rf"cannot (read image|use) {re.escape(str(path))}: \S"


def test_corpus_is_large_and_mixed(corpus, problems):
    assert len(corpus) >= 1000
    expectations = [expect[0] for expect in corpus.values()]
    assert expectations.count("ok") >= 25 and expectations.count("error") >= 100
    decoded = sum(problem is None for problem in problems.values())
    assert 100 < decoded < len(corpus) - 500          # the mutations exercise both outcomes


def pillow_user_warnings(recorded) -> list[str]:
    """Pillow's UserWarnings (corrupt TIFF/EXIF tags...): noise next to our own error or image."""
    return [str(w.message) for w in recorded
            if issubclass(w.category, UserWarning) and "PIL" in Path(w.filename).parts]


def test_dataset_check_and_load_rgb_give_the_expected_image_or_the_clear_error(corpus, problems, recwarn):
    for path, expect in corpus.items():
        problem = problems[path]
        if expect[0] == "error":
            assert problem, path.name
        if problem is not None:
            with time_limit(SECONDS_PER_FILE), pytest.raises(DataError, match=clear_error(path)):
                load_rgb(path)
            continue
        assert expect[0] != "error", path.name
        with time_limit(SECONDS_PER_FILE):
            image = load_rgb(path)
        assert image.mode == "RGB" and image.width >= 1 and image.height >= 1, path.name
        if expect[0] == "ok":
            _, size, colour = expect
            assert image.size == size, path.name
            if colour is not None:
                assert np.abs(np.asarray(image)[0, 0].astype(int) - colour).max() <= 8, path.name
    assert pillow_user_warnings(recwarn) == []  # the corpus makes them: 0123_truncate.jpg, 0029_flip.png...


def test_every_expected_image_decodes(corpus, problems):
    wrong = {path.name: problems[path] for path, expect in corpus.items()
             if expect[0] == "ok" and problems[path] is not None}
    assert wrong == {}


def test_open_dataset_lists_or_skips_exactly_the_bad_files(corpus, problems, tmp_path):
    for split in ("train", "val"):
        shutil.copytree(next(iter(corpus)).parent, tmp_path / split / "hostile")
        (tmp_path / split / "good").mkdir(parents=True)
        load_rgb(next(p for p, e in corpus.items() if e[0] == "ok")).save(tmp_path / split / "good" / "a.png")
    bad_count = sum(problem is not None for problem in problems.values())
    with pytest.raises(DataError, match=rf"^{2 * bad_count} unreadable images in {re.escape(str(tmp_path))}"):
        open_dataset(tmp_path)
    with pytest.warns(UserWarning, match=f"skipping {2 * bad_count} unreadable"):
        train, val = open_dataset(tmp_path, skip_bad_images=True)
    assert len(train) == len(val) == len(corpus) - bad_count + 1
    for path in train.files:                          # what is kept is usable by the training batches
        assert eval_transform(load_rgb(path), IMG_SIZE).shape == (3, IMG_SIZE, IMG_SIZE)


def test_eval_inputs_are_finite_tensors_or_the_clear_error(corpus, problems):
    for path in corpus:
        with time_limit(SECONDS_PER_FILE):
            if problems[path] is not None:
                with pytest.raises(DataError, match=clear_error(path)):
                    eval_transform(load_rgb(path), IMG_SIZE)
            else:
                x = eval_transform(load_rgb(path), IMG_SIZE)
                assert x.shape == (3, IMG_SIZE, IMG_SIZE) and torch.isfinite(x).all(), path.name


def test_translator_translate(corpus, problems, run):
    translator = Translator.load(run)
    good = next(path for path, expect in corpus.items() if expect[0] == "ok")
    for path in corpus:
        with time_limit(SECONDS_PER_FILE):
            if problems[path] is not None:
                with pytest.raises(DataError, match=clear_error(path)):
                    translator.translate(path, domain="dog", seed=0)
                with pytest.raises(DataError, match=clear_error(path)):
                    translator.translate(good, domain="dog", reference=path)
            else:
                out = translator.translate(path, domain="dog", seed=0)
                assert len(out) == 1 and out[0].size == (IMG_SIZE, IMG_SIZE), path.name


def test_translate_command(corpus, problems, run, tmp_path, capfd):
    folder = next(iter(corpus)).parent
    with time_limit(SECONDS_PER_FILE * len(corpus)):
        code = main(["translate", str(run), "--input", str(folder), "--domain", "cat", "--num-styles", "1",
                     "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err
    bad = [path for path, problem in problems.items() if problem is not None]
    assert code == 2 and "Traceback" not in err
    assert f"error: {len(bad)} of the {len(corpus)} images in {folder} could not be read" in err
    for path in bad:
        assert f"skipped: cannot read image {path}: {problems[path]}" in err
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {f"{path.stem}_cat_style0.png" for path, problem in problems.items() if problem is None}
    for path in bad[:20]:                             # one file: the clear error and status 2
        assert main(["translate", str(run), "--input", str(path), "--domain", "cat",
                     "--out", str(tmp_path / "one")]) == 2
        assert capfd.readouterr().err.strip() == f"error: cannot read image {path}: {problems[path]}"


def test_eval_command_names_a_hostile_validation_image(corpus, problems, run, tmp_path, capfd):
    data = tmp_path / "data"
    hostile = next(path for path, problem in problems.items() if problem is not None)
    good = [path for path, problem in problems.items() if problem is None][:4]
    for split in ("train", "val"):
        for domain in ("cat", "dog"):
            (data / split / domain).mkdir(parents=True)
            for k, path in enumerate(good):
                shutil.copy(path, data / split / domain / f"{k}{path.suffix}")
    shutil.copy(hostile, data / "val" / "dog" / hostile.name)
    code = main(["eval", str(run), "--data", str(data), "--random-weights", "--backbone", "none", "--no-lpips",
                 "--mode", "reference", "--num-outs", "2", "--no-progress", "--cache-dir", str(tmp_path)])
    err = capfd.readouterr().err
    assert code == 2 and "Traceback" not in err
    # named before any work, in the dataset check's list, as training does
    listed = f"1 unreadable images in {data}:\n  {data / 'val' / 'dog' / hostile.name}: {problems[hostile]}\n"
    assert listed in err


MEASURE = """
import json, resource, sys, time
from pathlib import Path
from stargan.data.images import DataError, load_rgb
from stargan.data.image_check import find_bad_images
paths = [Path(line) for line in Path(sys.argv[1]).read_text().splitlines()]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
slowest = 0.0
for path in paths:
    started = time.perf_counter()
    try:
        load_rgb(path)
    except DataError:
        pass
    slowest = max(slowest, time.perf_counter() - started)
started = time.perf_counter()
find_bad_images(paths, paths[0].parent, workers=4, cache=False)
check_seconds = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "slowest": slowest, "check_seconds": check_seconds}))
"""


def test_memory_and_time_are_bounded_in_a_fresh_process(corpus, tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(str(path) for path in corpus))
    env = {"PYTHONPATH": str(Path(stargan.__file__).parents[1]), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", MEASURE, str(listing)], capture_output=True, text=True,
                            env=env, timeout=SECONDS_PER_FILE * 20)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["growth_mb"] < MEMORY_BOUND_MB, measured
    assert measured["slowest"] < SECONDS_PER_FILE, measured
    assert time.perf_counter() - started < 60
