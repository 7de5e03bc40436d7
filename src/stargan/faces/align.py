"""Align face images to the mean CelebA-HQ face, as the StarGAN v2 release prepares its inputs.

Per image: resize to the output size, find the 98 landmarks, pad by mirroring (blending into a blur
towards the new borders), then one similarity transform (rotation from the eye and mouth axis, scale
from the eyes and mouth corners, translation of the landmarks' mean) and a Lanczos warp. Needs OpenCV
(``pip install 'stargan[faces]'``) for the warp and resizes.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

LEFT_EYE = [*range(60, 68), 96]    # contour of the left eye and its pupil
RIGHT_EYE = [*range(68, 76), 97]
MOUTH_LEFT, MOUTH_RIGHT = 76, 82
SCALE_POINTS = [96, 97, MOUTH_LEFT, MOUTH_RIGHT]  # pupils and mouth corners
REFERENCE_SIZE = 256               # the mean landmarks are pixel positions in a 256 px image


def cv2_module():
    """OpenCV, or an error that says how to install it."""
    try:
        import cv2
    except ImportError as error:
        raise ImportError("face alignment needs OpenCV: pip install 'stargan[faces]' "
                          "(installs opencv-python-headless)") from error
    return cv2


def face_axis(landmarks: np.ndarray) -> np.ndarray:
    """The unit 'x-axis' of a face: eye to eye, corrected by the eyes-to-mouth direction turned 90 deg."""
    left, right = landmarks[LEFT_EYE].mean(axis=0), landmarks[RIGHT_EYE].mean(axis=0)
    eye_to_mouth = (left + right) / 2 - (landmarks[MOUTH_LEFT] + landmarks[MOUTH_RIGHT]) / 2
    axis = (right - left) - np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    return axis / np.linalg.norm(axis)


def estimate_transform(landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """3 x 3 similarity matrix taking the face of ``landmarks`` onto ``reference`` (both 98 x 2, x y).

    Translate the landmarks' mean to the origin, rotate by the angle between the two face axes, scale
    by the mean distance ratio of the pupils and mouth corners to the means, translate to the
    reference's mean.
    """
    landmarks, reference = np.asarray(landmarks, np.float64), np.asarray(reference, np.float64)
    mean_l, mean_r = landmarks.mean(axis=0), reference.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate landmarks: checked below
        a, b = face_axis(landmarks), face_axis(reference)
        cos = float(np.clip(a @ b, -1.0, 1.0))
        sin = np.sqrt(1.0 - cos ** 2) * np.sign(a[0] * b[1] - a[1] * b[0])
        scale = np.mean(np.linalg.norm(reference[SCALE_POINTS] - mean_r, axis=1)
                        / np.linalg.norm(landmarks[SCALE_POINTS] - mean_l, axis=1))

    def translation(t: np.ndarray) -> np.ndarray:
        m = np.eye(3)
        m[:2, 2] = t
        return m

    rotation_scale = np.eye(3)
    rotation_scale[:2, :2] = scale * np.array([[cos, -sin], [sin, cos]])
    matrix = translation(mean_r) @ rotation_scale @ translation(-mean_l)
    if not np.isfinite(matrix).all():
        raise ValueError("no face: the eye and mouth landmarks coincide")
    return matrix


def mirror_pad(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reflect-pad by half the height and width on each side, blending the padding into a blurred copy
    towards the new borders; the landmarks move with the image. ``image``: H x W x 3 uint8."""
    cv2 = cv2_module()
    h, w = image.shape[:2]
    padded = np.pad(image, ((h // 2, h // 2), (w // 2, w // 2), (0, 0)), mode="reflect")
    hp, wp = padded.shape[:2]
    small = cv2.resize(padded, (w, h)).astype(np.float64) / 255.0
    sigma = max(h // 100, 1)  # the release's H // 100; at least 1 so small images blur too
    blurred = cv2.resize(gaussian_filter(small, sigma=(sigma, sigma, 0)), (wp, hp)) * 255.0
    ys, xs = np.arange(hp, dtype=np.float64)[:, None], np.arange(wp, dtype=np.float64)[None, :]
    edge = np.minimum(np.minimum(xs, wp - 1 - xs), np.minimum(ys, hp - 1 - ys))
    weight = (np.clip(edge / (hp // 4), 0.0, 1.0) ** 4)[..., None]
    blended = padded.astype(np.float64) * weight + blurred * (1.0 - weight)
    shifted = np.asarray(landmarks, np.float64) + np.array([wp // 4, hp // 4])
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8), shifted


def align_face(image: np.ndarray, landmarks: np.ndarray, mean_landmarks: np.ndarray,
               output_size: int = 256) -> np.ndarray:
    """``image`` (output_size square, uint8 H x W x 3) with its 98 ``landmarks`` -> the aligned face."""
    cv2 = cv2_module()
    # The release scales by output_size // 256 (its sizes are multiples of 256); / works for any size.
    reference = np.asarray(mean_landmarks, np.float64) * (output_size / REFERENCE_SIZE)
    padded, shifted = mirror_pad(image, landmarks)
    matrix = estimate_transform(shifted, reference)
    size = (max(padded.shape[1], output_size), max(padded.shape[0], output_size))
    warped = cv2.warpPerspective(padded, matrix, size, flags=cv2.INTER_LANCZOS4)
    return warped[:output_size, :output_size]


def fan_landmark_fn(fan) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a :class:`~stargan.faces.FAN` as ``landmark_fn``: H x W x 3 uint8 -> 98 x 2 (x, y)."""
    import torch

    device = fan.l0.weight.device

    def landmarks(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 127.5 - 1
        return fan.get_landmark(x.to(device))[0].double().cpu().numpy()

    return landmarks


def align_images(paths: list[Path], input_root: Path, output_root: Path,
                 landmark_fn: Callable[[np.ndarray], np.ndarray], mean_landmarks: np.ndarray,
                 output_size: int = 256, progress: Callable | None = None) -> list[tuple[Path, str]]:
    """Align each image of ``paths`` into ``output_root`` under its path relative to ``input_root``
    (or under its own name when ``input_root`` is the file itself).

    ``landmark_fn`` maps an output_size x output_size x 3 uint8 image to its 98 x 2 landmarks. Files
    that cannot be read (or show no face) are skipped and returned with the reason.
    """
    from PIL import Image

    from stargan.data.folders import DataError, load_rgb

    skipped = []
    for path in (progress(paths) if progress else paths):
        try:
            image = np.asarray(load_rgb(path).resize((output_size, output_size), Image.LANCZOS))
        except DataError as error:
            skipped.append((path, str(error)))
            continue
        try:
            aligned = align_face(image, landmark_fn(image), mean_landmarks, output_size)
        except ValueError as error:
            skipped.append((path, str(error)))
            continue
        target = output_root / (path.relative_to(input_root) if path != input_root else path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        options = {"quality": 95} if target.suffix.lower() in (".jpg", ".jpeg") else {}
        Image.fromarray(aligned).save(target, **options)
    return skipped
