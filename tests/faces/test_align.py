"""Face alignment: the similarity transform is recovered from landmarks moved by a known rotation, scale
and shift, and a synthetic face drawn at those landmarks comes out at the reference positions."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")

from stargan.faces.align import (LEFT_EYE, MOUTH_LEFT, MOUTH_RIGHT, RIGHT_EYE, align_face, align_images,
                                 estimate_transform, face_axis, mirror_pad)

ROTATION, SCALE, SHIFT = math.radians(17), 0.8, np.array([9.0, -6.0])
MARKS = {96: (255, 0, 0), 97: (0, 255, 0), MOUTH_LEFT: (0, 0, 255), MOUTH_RIGHT: (255, 255, 0)}


def reference_face(size: int = 256) -> np.ndarray:
    """98 plausible landmarks of an upright face (x, y), in a size px image."""
    rng = np.random.default_rng(0)
    points = rng.uniform(0.3, 0.7, (98, 2)) * size
    points[LEFT_EYE] = np.array([0.36, 0.42]) * size + rng.normal(0, 0.01 * size, (9, 2))
    points[RIGHT_EYE] = np.array([0.64, 0.42]) * size + rng.normal(0, 0.01 * size, (9, 2))
    points[96], points[97] = np.array([0.36, 0.42]) * size, np.array([0.64, 0.42]) * size
    points[MOUTH_LEFT], points[MOUTH_RIGHT] = np.array([0.4, 0.72]) * size, np.array([0.6, 0.72]) * size
    return points


def similarity(angle: float, scale: float, shift: np.ndarray, center: np.ndarray) -> np.ndarray:
    """3 x 3: rotate by ``angle`` and scale about ``center``, then shift."""
    c, s = math.cos(angle), math.sin(angle)
    m = np.eye(3)
    m[:2, :2] = scale * np.array([[c, -s], [s, c]])
    m[:2, 2] = center + shift - m[:2, :2] @ center
    return m


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def moved_face(size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    reference = reference_face(size)
    moved = similarity(ROTATION, SCALE, SHIFT, np.array([size / 2, size / 2]))
    return reference, apply(moved, reference), moved


def test_the_transform_undoes_a_known_rotation_scale_and_shift():
    reference, landmarks, moved = moved_face()
    matrix = estimate_transform(landmarks, reference)
    np.testing.assert_allclose(matrix, np.linalg.inv(moved), atol=1e-9)
    np.testing.assert_allclose(apply(matrix, landmarks), reference, atol=1e-9)
    assert math.atan2(matrix[1, 0], matrix[0, 0]) == pytest.approx(-ROTATION)
    assert math.hypot(matrix[0, 0], matrix[1, 0]) == pytest.approx(1 / SCALE)


def test_face_axis_is_eye_to_eye_for_an_upright_face():
    np.testing.assert_allclose(face_axis(reference_face()), [1.0, 0.0], atol=0.05)


def test_degenerate_landmarks_are_refused():
    with pytest.raises(ValueError, match="no face"):
        estimate_transform(np.zeros((98, 2)), reference_face())


def test_mirror_padding_keeps_the_image_in_the_middle_and_moves_the_landmarks():
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    padded, points = mirror_pad(image, np.array([[10.0, 20.0]]))
    assert padded.shape == (128, 128, 3)
    np.testing.assert_array_equal(padded[32:96, 32:96], image)
    np.testing.assert_array_equal(points, [[42.0, 52.0]])
    assert padded[0, 0].tolist() != image[32, 32].tolist()  # corners come from the blur


def draw_face(landmarks: np.ndarray, size: int = 256) -> np.ndarray:
    """A grey image with one coloured disk per marked landmark."""
    image = np.full((size, size, 3), 128, np.uint8)
    ys, xs = np.mgrid[:size, :size]
    for index, colour in MARKS.items():
        x, y = landmarks[index]
        image[(xs - x) ** 2 + (ys - y) ** 2 <= 5 ** 2] = colour
    return image


def centroid(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    close = (np.abs(image.astype(int) - colour).sum(axis=2) < 60)
    ys, xs = np.nonzero(close)
    assert len(xs) > 20, colour
    return np.array([xs.mean(), ys.mean()])


def test_a_moved_synthetic_face_is_aligned_back_onto_the_reference():
    reference, landmarks, _ = moved_face()
    aligned = align_face(draw_face(landmarks), landmarks, reference, output_size=256)
    assert aligned.shape == (256, 256, 3) and aligned.dtype == np.uint8
    for index, colour in MARKS.items():
        np.testing.assert_allclose(centroid(aligned, colour), reference[index], atol=1.0)


def test_align_images_mirrors_names_and_lists_unreadable_files(tmp_path):
    reference, landmarks, _ = moved_face(128)
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    Image.fromarray(draw_face(landmarks, 128)).save(source / "a.png")
    Image.fromarray(draw_face(landmarks, 128)).resize((200, 200)).save(source / "sub" / "b.jpg")
    (source / "broken.jpg").write_bytes(b"not an image")
    paths = sorted(p for p in source.rglob("*") if p.is_file())
    seen = []

    def landmark_fn(image):
        seen.append(image.shape)
        return landmarks

    skipped = align_images(paths, source, tmp_path / "out", landmark_fn, reference_face(256), 128)
    assert [p.name for p, _ in skipped] == ["broken.jpg"] and "cannot read" in skipped[0][1]
    assert seen == [(128, 128, 3), (128, 128, 3)]   # resized to the output size before landmarks
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*")) == \
        ["a.png", "sub/b.jpg"]
    with Image.open(tmp_path / "out" / "a.png") as image:
        aligned = np.asarray(image)
    np.testing.assert_allclose(centroid(aligned, MARKS[96]), reference[96], atol=1.0)  # mean x 128 / 256
    one = align_images([source / "a.png"], source / "a.png", tmp_path / "single", landmark_fn,
                       reference_face(256), 128)
    assert one == [] and (tmp_path / "single" / "a.png").is_file()


def test_align_command_with_the_release_files_in_the_weights_folder(face_files, tmp_path, capsys):
    from stargan.cli import main

    source = tmp_path / "faces"
    (source / "female").mkdir(parents=True)
    for name in ("x.png", "y.png"):
        Image.fromarray(draw_face(moved_face(96)[1], 96)).save(source / "female" / name)
    (source / "female" / "z.jpg").write_bytes(b"\x89PNG broken")
    assert main(["align", str(source), str(tmp_path / "aligned"), "--size", "64", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "aligned 2 of 3 images (64 px)" in out
    assert "skipped 1 files" in err and "z.jpg" in err
    for name in ("x.png", "y.png"):
        with Image.open(tmp_path / "aligned" / "female" / name) as image:
            assert image.size == (64, 64)
    assert (face_files / "wing.safetensors").is_file()


def test_align_command_without_the_release_files_stops_before_work(no_face_files, tmp_path, capsys):
    from stargan.cli import main

    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "in" / "a.png")
    assert main(["align", str(tmp_path / "in"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "celeba_lm_mean.npz not found" in err and "celeba_lm_mean.npz?dl=1" in err
    assert not (tmp_path / "out").exists()
