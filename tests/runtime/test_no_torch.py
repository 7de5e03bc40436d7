"""stargan.runtime translates where torch cannot be imported: a new Python process whose import system
refuses torch loads exports (StarGAN v2 with and without face masks, v1) and translates an image, the
same pixels as in this process; also as a folder copied out of stargan, with stargan itself refused."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stargan.runtime
from stargan.runtime import Translator
from tests.onnx_exports import exported, photo

SCRIPT = r"""
import sys

BLOCKED = set(sys.argv[1].split(","))


class Refuse:
    '''A finder that refuses the blocked packages, as if they were not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed (refused by the test)")
        return None


sys.meta_path.insert(0, Refuse())
import importlib

runtime = importlib.import_module(sys.argv[2])
source, reference, out = sys.argv[3:6]
for index, folder in enumerate(sys.argv[6:]):
    translator = runtime.Translator.load(folder, backend="onnx", threads=1)
    if translator.arch == "v2":
        images = translator.translate(source, translator.domains[-1], num_styles=2, seed=3)
        images += translator.translate(source, translator.domains[0], reference=reference)
    else:
        images = translator.translate(source, translator.domains[-1])
    for k, image in enumerate(images):
        image.save(f"{out}/{index}-{k}.png")
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch was imported")
assert not {"torch", "torchvision"} & set(sys.modules), sorted(sys.modules)
print("translated without torch")
"""

KINDS = ("v2", "v2_hpf", "v1")  # w_hpf 0; w_hpf 1 with masks.onnx; v1


def run_without(blocked: str, module: str, path: Path, folders: list[Path], tmp_path: Path) -> list[Path]:
    photo(0, kind="face").save(tmp_path / "source.png")
    photo(1, kind="face").save(tmp_path / "reference.png")
    (tmp_path / "out").mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, blocked, module, str(tmp_path / "source.png"),
                             str(tmp_path / "reference.png"), str(tmp_path / "out"), *map(str, folders)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "translated without torch" in result.stdout
    return sorted((tmp_path / "out").iterdir())


def expected_images(folders: list[Path], tmp_path: Path) -> list[np.ndarray]:
    """The same translations in this process (where torch is loaded, and unused by the runtime)."""
    images = []
    for folder in folders:
        translator = Translator.load(folder, threads=1)
        source, reference = tmp_path / "source.png", tmp_path / "reference.png"
        if translator.arch == "v2":
            images += translator.translate(source, translator.domains[-1], num_styles=2, seed=3)
            images += translator.translate(source, translator.domains[0], reference=reference)
        else:
            images += translator.translate(source, translator.domains[-1])
    return [np.asarray(image) for image in images]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[Path]:
    return [exported(kind, tmp_path_factory)[1] for kind in KINDS]


def test_the_runtime_translates_where_torch_cannot_be_imported(folders, tmp_path):
    src = Path(stargan.runtime.__file__).parents[2]
    written = run_without("torch,torchvision", "stargan.runtime", src, folders, tmp_path)
    assert [p.name for p in written] == ["0-0.png", "0-1.png", "0-2.png", "1-0.png", "1-1.png", "1-2.png", "2-0.png"]
    for path, expected in zip(written, expected_images(folders, tmp_path), strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), expected)


def test_the_runtime_folder_works_copied_out_of_stargan(folders, tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(Path(stargan.runtime.__file__).parent, lib / "starmodels", ignore=shutil.ignore_patterns(
        "__pycache__"))
    written = run_without("torch,torchvision,stargan", "starmodels", lib, folders[:1], tmp_path)
    assert len(written) == 3
