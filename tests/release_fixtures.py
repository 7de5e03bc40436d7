"""Stand-ins for the StarGAN v2 CelebA-HQ release, written from our own (random, narrow) networks in
the release's formats, so that the README's release commands run offline:

    python tests/release_fixtures.py DIR [--hub HUB]

writes DIR/expr/checkpoints/celeba_hq/100000_nets_ema.ckpt (generator, mapping_network, style_encoder
and fan, as the release saves them), DIR/data/celeba_hq/{train,val}/{female,male}/*.jpg, DIR/photos/
(unaligned "faces" and one unreadable file) and, in HUB (default: torch hub's checkpoints folder),
wing.ckpt and celeba_lm_mean.npz. The images are coloured ellipses, not faces: the point is the file
formats and the commands, not the pictures.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from stargan.config import ModelConfig
from stargan.faces import FAN
from stargan.nets.v2 import build_networks

# 256 px, w_hpf 1, two domains, paper latent/style sizes; narrow convolutions (the importer reads the
# widths off the tensors) so that CPU runs take seconds.
RELEASE_LIKE = ModelConfig(img_size=256, num_domains=2, latent_dim=16, style_dim=64, hidden_dim=64,
                           max_conv_dim=64, base_dim=0, w_hpf=1.0)
DOMAINS = ("female", "male")


def random_fan(seed: int = 0) -> FAN:
    """A FAN with random weights and BatchNorm statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fan = FAN()
        with torch.no_grad():
            for name, tensor in fan.state_dict().items():
                if name.endswith("running_var"):
                    tensor.uniform_(0.5, 2.0)
                elif name.endswith(("running_mean", "bias")):
                    tensor.normal_(0, 0.1)
    return fan


def mean_face() -> np.ndarray:
    """98 plausible (x, y) landmarks of an upright face in a 256 px image (eyes, pupils, mouth corners
    where alignment looks for them; the other points spread over the face)."""
    rng = np.random.default_rng(0)
    points = rng.uniform(80, 176, (98, 2))
    points[60:68] = [92, 110] + rng.normal(0, 3, (8, 2))
    points[68:76] = [164, 110] + rng.normal(0, 3, (8, 2))
    points[96], points[97] = [92, 110], [164, 110]
    points[76], points[82] = [102, 180], [154, 180]
    return points.astype(np.float32)


def face_image(seed: int, size: int = 256) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    cx, cy, rx, ry = size / 2 + rng.normal(0, 8), size / 2 + rng.normal(0, 8), size * 0.3, size * 0.38
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(v) for v in rng.integers(120, 256, 3)))
    for dx in (-0.35, 0.35):
        draw.ellipse([cx + dx * rx - 8, cy - 0.2 * ry - 5, cx + dx * rx + 8, cy - 0.2 * ry + 5], fill=(30, 30, 30))
    draw.line([cx - 0.3 * rx, cy + 0.45 * ry, cx + 0.3 * rx, cy + 0.45 * ry], fill=(150, 40, 40), width=5)
    return image


def release_checkpoint(path: Path, seed: int = 0) -> Path:
    """``100000_nets_ema.ckpt``: {net name: state_dict}, the generator without ``hpf.filter``, and the
    FAN under ``fan`` (the release saves every module of its EMA set)."""
    torch.manual_seed(seed)
    nets = build_networks(RELEASE_LIKE, with_discriminator=False)
    raw = {name: {k: v for k, v in net.state_dict().items() if k != "hpf.filter"} for name, net in nets.items()}
    raw["fan"] = random_fan(seed).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raw, path)
    return path


def write_release(root: Path, hub: Path, images_per_split: int = 2) -> dict[str, Path]:
    root, hub = Path(root), Path(hub)
    ckpt = release_checkpoint(root / "expr" / "checkpoints" / "celeba_hq" / "100000_nets_ema.ckpt")
    hub.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": random_fan(1).state_dict()}, hub / "wing.ckpt")
    np.savez(hub / "celeba_lm_mean.npz", mean=mean_face())
    data = root / "data" / "celeba_hq"
    seed = 0
    for split in ("train", "val"):
        for domain in DOMAINS:
            folder = data / split / domain
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(images_per_split):
                seed += 1
                face_image(seed).save(folder / f"{k:06d}.jpg")
    photos = root / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(("woman.jpg", "man.jpg")):
        face_image(100 + k, size=300).rotate(12 * (k + 1)).save(photos / name)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    return {"checkpoint": ckpt, "data": data, "photos": photos, "hub": hub}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--hub", help="where wing.ckpt and celeba_lm_mean.npz go (default: torch hub's)")
    args = parser.parse_args()
    from stargan.hub import hub_dir

    written = write_release(Path(args.root), Path(args.hub) if args.hub else hub_dir())
    print("\n".join(f"{key}: {value}" for key, value in written.items()))


if __name__ == "__main__":
    main()
