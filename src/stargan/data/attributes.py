"""Labeled images for StarGAN v1: CelebA's attribute file, its fixed test split, and test-time targets.

``list_attr_celeba.txt`` as distributed with CelebA::

    202599
    5_o_Clock_Shadow Arched_Eyebrows ... Young
    000001.jpg -1  1  1 -1 ...

Values are 1 (has the attribute) or -1 (has not), read as 1 and 0.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from stargan.data.folders import IMAGE_EXTENSIONS, MAX_LISTED, DataError

CELEBA_SPLIT_SEED = 1234  # the released code's random.seed(1234) before shuffling the attribute lines
ATTR_FILE_HINT = ("expected CelebA's list_attr_celeba.txt: line 1 the number of images, line 2 the attribute "
                  "names, then one line per image: its file name and one 1 or -1 per attribute")
GENDER, AGE, HAIR_SUFFIX = "Male", "Young", "_Hair"  # the attributes of the paper's Figure 4


@dataclass(frozen=True)
class LabeledImages:
    """One split of one dataset: ``files[i]`` has label ``labels[i]``.

    Multi-label (CelebA): ``labels`` is float ``[N, c]`` of 0/1 over the attributes ``names``;
    ``exclusive`` holds groups of indices into ``names`` (hair colours) of which a target sets one
    and clears the others. Single-label (folders): ``labels`` is long ``[N]``, indices into ``names``.
    """

    root: Path
    files: tuple[Path, ...]
    labels: Tensor
    names: tuple[str, ...]
    multi_label: bool
    exclusive: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        n, c = len(self.files), len(self.names)
        shape, dtype = ((n, c), torch.float32) if self.multi_label else ((n,), torch.long)
        if tuple(self.labels.shape) != shape or self.labels.dtype != dtype:
            raise ValueError(f"LabeledImages({self.root}): labels are {self.labels.dtype} "
                             f"{list(self.labels.shape)}, expected {dtype} {list(shape)} for {n} files "
                             f"and {c} names")
        if self.exclusive and not self.multi_label:
            raise ValueError(f"LabeledImages({self.root}): exclusive groups need multi-label data")
        if any(not 0 <= i < c for group in self.exclusive for i in group):
            raise ValueError(f"LabeledImages({self.root}): exclusive groups {self.exclusive} index "
                             f"outside the {c} names")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def label_dim(self) -> int:
        return len(self.names)

    def without(self, drop: set[Path]) -> LabeledImages:
        """The same split without the files in ``drop`` (e.g. unreadable images)."""
        keep = [i for i, f in enumerate(self.files) if f not in drop]
        if len(keep) == len(self.files):
            return self
        return dataclasses.replace(self, files=tuple(self.files[i] for i in keep), labels=self.labels[keep])


def _suggest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_selection(attrs: Sequence[str], valid: Sequence[str], path: Path) -> None:
    if not attrs:
        raise ValueError("no attributes selected; set data.attrs, e.g. --set data.attrs=Blond_Hair,Male")
    repeated = sorted({a for a in attrs if list(attrs).count(a) > 1})
    if repeated:
        raise ValueError(f"data.attrs names {repeated} more than once; list each attribute once")
    unknown = [a for a in attrs if a not in valid]
    if unknown:
        hints = "".join(_suggest(a, valid) for a in unknown)
        raise DataError(f"unknown attributes {unknown}{hints}: {path} has {len(valid)} attributes: "
                        f"{' '.join(valid)}")


def _read_header(lines: list[str], path: Path) -> tuple[str, ...]:
    """Check lines 1 and 2; return the attribute names."""
    first = lines[0].split() if lines else []
    if len(first) != 1 or not first[0].isdigit():
        found = f"found {lines[0][:60]!r}" if lines else "the file is empty"
        missing = ""
        if len(first) > 1 and first[0].lower().endswith(IMAGE_EXTENSIONS):
            missing = "; it looks like an image line, so both header lines are missing"
        elif len(first) > 1 and not any(_is_value(v) for v in first):
            missing = "; it looks like the attribute names, so the image count line is missing"
        raise DataError(f"{path}, line 1: expected the number of images, {found}{missing}; {ATTR_FILE_HINT}")
    names = lines[1].split() if len(lines) > 1 else []
    if not names or names[0].lower().endswith(IMAGE_EXTENSIONS) or any(_is_value(v) for v in names):
        found = f"found {lines[1][:60]!r}" if len(lines) > 1 else "the file ends after line 1"
        raise DataError(f"{path}, line 2: expected the attribute names, {found} (the header line is "
                        f"missing); {ATTR_FILE_HINT}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}, line 2: attribute names {repeated} appear more than once")
    return tuple(names)


def _is_value(token: str) -> bool:
    return token in ("1", "-1", "0")


def _read_attr_file(attr_file: str | Path, attrs: Sequence[str]) -> tuple[tuple[str, ...], list[str], Tensor]:
    """All attribute names in the file, the image names and ``[N, len(attrs)]`` 0/1 labels."""
    path = Path(attr_file)
    if not path.is_file():
        raise DataError(f"attribute file {path} does not exist; set data.attr_file to CelebA's "
                        "list_attr_celeba.txt (in Anno/ of the CelebA download)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    names = _read_header(lines, path)
    _check_selection(attrs, names, path)
    columns = [names.index(a) + 1 for a in attrs]  # + 1: the file name comes first
    files: list[str] = []
    rows: list[list[int]] = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise DataError(f"{path}, line {number}: {len(fields) - 1} values after the file name "
                            f"{fields[0]!r}, expected {len(names)} (one per name on line 2); the file is "
                            "corrupt or was edited by hand: download it again")
        row = []
        for column in columns:
            value = fields[column]
            if value not in ("1", "-1"):
                raise DataError(f"{path}, line {number}: {names[column - 1]} of {fields[0]} is {value!r}, "
                                "expected 1 or -1")
            row.append(int(value == "1"))
        files.append(fields[0])
        rows.append(row)
    count = int(lines[0])
    if not files:
        raise DataError(f"{path} lists no images after its two header lines; {ATTR_FILE_HINT}")
    if len(files) != count:
        raise DataError(f"{path}: line 1 says {count} images but {len(files)} image lines follow; the file "
                        f"is truncated (download it again) or, if you removed lines on purpose, set line 1 "
                        f"to {len(files)}")
    return names, files, torch.tensor(rows, dtype=torch.float32)


def read_celeba_attributes(attr_file: str | Path, attrs: Sequence[str]) -> tuple[list[str], Tensor]:
    """Image file names and their float ``[N, len(attrs)]`` 0/1 labels (columns in ``attrs`` order),
    in file order."""
    _, files, labels = _read_attr_file(attr_file, attrs)
    return files, labels


def exclusive_groups(groups: Sequence[str], attrs: Sequence[str],
                     valid: Sequence[str] | None = None) -> tuple[tuple[int, ...], ...]:
    """Indices into ``attrs`` of each '+'-joined group of ``groups``.

    Only the selected attributes of a group count; a group with fewer than two of them is dropped (a
    single attribute is flipped like any other). Names must be in ``valid`` when it is given.
    """
    result: list[tuple[int, ...]] = []
    for group in groups:
        members = [m.strip() for m in group.split("+") if m.strip()]
        unknown = [m for m in members if valid is not None and m not in valid]
        if unknown:
            hints = "".join(_suggest(m, valid) for m in unknown)
            raise ValueError(f"data.exclusive group {group!r} names unknown attributes {unknown}{hints}; "
                             f"valid names: {' '.join(valid)}; or --set 'data.exclusive=[]' for no groups")
        indices = tuple(attrs.index(m) for m in dict.fromkeys(members) if m in attrs)
        if len(indices) >= 2:
            result.append(indices)
    shared = sorted({attrs[i] for i in set(sum(result, ())) if sum(g.count(i) for g in result) > 1})
    if shared:
        raise ValueError(f"attributes {shared} are in more than one data.exclusive group; merge the groups")
    return tuple(result)


def _check_images_exist(image_dir: Path, files: Sequence[str], attr_file: Path) -> None:
    if not image_dir.is_dir():
        raise DataError(f"CelebA image folder {image_dir} does not exist; set data.root to the folder "
                        "holding 000001.jpg ... (img_align_celeba)")
    present = set(os.listdir(image_dir))
    missing = [f for f in files if f not in present and not (image_dir / f).is_file()]
    if not missing:
        return
    nested = [d for d in image_dir.iterdir() if d.is_dir() and (d / missing[0]).is_file()]
    hint = f"; they are in {nested[0]}: set data.root to it" if nested else \
        "; extract all of img_align_celeba there, or point data.root at the right folder"
    listed = ", ".join(missing[:MAX_LISTED]) + (f" ... and {len(missing) - MAX_LISTED} more"
                                                 if len(missing) > MAX_LISTED else "")
    raise DataError(f"{len(missing)} of the {len(files)} images listed in {attr_file} are missing from "
                    f"{image_dir}: {listed}{hint}")


def celeba_splits(image_dir: str | Path, attr_file: str | Path, attrs: Sequence[str],
                  exclusive: Sequence[str] = (),
                  test_size: int = 2000) -> tuple[LabeledImages, LabeledImages]:
    """``(train, test)``: the attribute lines shuffled with seed 1234, the first ``test_size`` held out.

    The released code shuffles the lines with ``random.seed(1234)``; shuffling their indices with a
    local ``random.Random(1234)`` gives the same permutation without touching the global RNG. (It then
    keeps lines ``i + 1 < 2000`` as test, i.e. 1999 of them: ``test_size=1999`` reproduces that exactly.)
    """
    image_dir, attr_file = Path(image_dir), Path(attr_file)
    names, files, labels = _read_attr_file(attr_file, attrs)
    groups = exclusive_groups(exclusive, list(attrs), names)
    if not 0 <= test_size < len(files):
        raise ValueError(f"data.test_size is {test_size} but {attr_file} lists {len(files)} images; "
                         f"choose 0 <= test_size < {len(files)}")
    _check_images_exist(image_dir, files, attr_file)
    order = list(range(len(files)))
    random.Random(CELEBA_SPLIT_SEED).shuffle(order)

    def split(indices: list[int]) -> LabeledImages:
        return LabeledImages(root=image_dir, files=tuple(image_dir / files[i] for i in indices),
                             labels=labels[indices], names=tuple(attrs), multi_label=True, exclusive=groups)

    return split(order[test_size:]), split(order[:test_size])


def _set_attribute(label: Tensor, index: int, groups: Sequence[Sequence[int]]) -> Tensor:
    """Set ``index`` and clear the rest of its exclusive group, or flip it when it has none."""
    target = label.clone()
    group = next((g for g in groups if index in g), None)
    if group is None:
        target[index] = 1 - target[index]
    else:
        target[list(group)] = 0
        target[index] = 1
    return target


def _figure4_combinations(label: Tensor, images: LabeledImages) -> list[tuple[str, Tensor]]:
    """H+G, H+A, G+A, H+G+A: H the first hair colour the input lacks, G flips Male, A flips Young."""
    names = images.names
    parts: dict[str, int] = {}
    hair = next((g for g in images.exclusive if any(names[i].endswith(HAIR_SUFFIX) for i in g)), ())
    lacking = [i for i in hair if label[i] == 0]
    if lacking:
        parts["H"] = lacking[0]
    for key, name in (("G", GENDER), ("A", AGE)):
        if name in names:
            parts[key] = names.index(name)
    targets = []
    for combination in ("HG", "HA", "GA", "HGA"):
        if all(key in parts for key in combination):
            target = label
            for key in combination:
                target = _set_attribute(target, parts[key], images.exclusive)
            targets.append(("+".join(names[parts[key]] for key in combination), target))
    return targets


def test_targets(label: Tensor, images: LabeledImages, combos: bool = True) -> list[tuple[str, Tensor]]:
    """``(column name, target label)`` for each column of a test grid row of the input labeled ``label``.

    Multi-label: one column per attribute (set it within its exclusive group, else flip it, as the
    released ``create_labels``), then with ``combos`` the paper's Figure 4 combinations of hair,
    gender and age where those attributes are selected. Single-label: every domain. Targets have the
    format of one row of ``images.labels``.
    """
    if not images.multi_label:
        return [(name, torch.tensor(k, dtype=torch.long)) for k, name in enumerate(images.names)]
    if tuple(label.shape) != (images.label_dim,):
        raise ValueError(f"test_targets expects one label of shape [{images.label_dim}], "
                         f"got {list(label.shape)}")
    label = label.float()
    targets = [(name, _set_attribute(label, i, images.exclusive)) for i, name in enumerate(images.names)]
    return targets + (_figure4_combinations(label, images) if combos else [])


test_targets.__test__ = False  # not a pytest test, even when a test module imports it
