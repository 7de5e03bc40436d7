import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from stargan.data import DataError
from stargan.data.attributes import LabeledImages, celeba_splits, read_celeba_attributes
from stargan.data.attributes import test_targets as targets_for  # renamed: pytest would collect test_* names
from stargan.data.attributes import exclusive_groups

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
SELECTED = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
HAIR = "Black_Hair+Blond_Hair+Brown_Hair+Gray_Hair"


def image_color(i: int) -> tuple[int, int, int]:
    return (20 * i + 10, 128, 200 - 10 * i)


def make_celeba(base: Path, n: int = 12, seed: int = 0) -> tuple[Path, Path, list[list[int]]]:
    """``base/images/00000k.jpg`` (8x8, colour ``image_color(k - 1)``) and ``base/list_attr_celeba.txt``."""
    rng = random.Random(seed)
    values = [[rng.choice((1, -1)) for _ in CELEBA_ATTRS] for _ in range(n)]
    (base / "images").mkdir(parents=True)
    lines = [str(n), " ".join(CELEBA_ATTRS) + " "]
    for i, row in enumerate(values):
        name = f"{i + 1:06d}.jpg"
        Image.new("RGB", (8, 8), image_color(i)).save(base / "images" / name, quality=95)
        lines.append(name + " " + " ".join(f"{v:2d}" for v in row))
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return base / "images", base / "list_attr_celeba.txt", values


@pytest.fixture
def celeba(tmp_path):
    return make_celeba(tmp_path / "celeba")


def edit_line(path: Path, number: int, new: str | None) -> None:
    """Replace (or delete, when ``new`` is None) the 1-based line ``number`` of ``path``."""
    lines = path.read_text().splitlines()
    if new is None:
        del lines[number - 1]
    else:
        lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


def test_read_attributes_maps_minus_one_to_zero_in_selection_order(celeba):
    _, attr_file, values = celeba
    files, labels = read_celeba_attributes(attr_file, ["Young", "Black_Hair"])
    assert files == [f"{i + 1:06d}.jpg" for i in range(12)]
    columns = [CELEBA_ATTRS.index("Young"), CELEBA_ATTRS.index("Black_Hair")]
    expected = [[1.0 if row[c] == 1 else 0.0 for c in columns] for row in values]
    assert labels.dtype == torch.float32 and labels.tolist() == expected


def test_split_is_the_released_seeded_shuffle(celeba):
    image_dir, attr_file, _ = celeba
    state = random.getstate()
    train, test = celeba_splits(image_dir, attr_file, SELECTED, [HAIR], test_size=5)
    assert random.getstate() == state  # the global RNG is untouched

    lines = attr_file.read_text().splitlines()[2:]
    random.Random(1234).shuffle(lines)  # what the released code does, with random.seed(1234)
    assert [f.name for f in test.files] == [line.split()[0] for line in lines[:5]]
    assert [f.name for f in train.files] == [line.split()[0] for line in lines[5:]]
    all_files, all_labels = read_celeba_attributes(attr_file, SELECTED)
    for split in (train, test):
        assert split.names == SELECTED and split.multi_label and split.exclusive == ((0, 1, 2),)
        assert all(f.parent == image_dir for f in split.files)
        expected = torch.stack([all_labels[all_files.index(f.name)] for f in split.files])
        assert torch.equal(split.labels, expected)


@pytest.mark.parametrize("edit, expected", [
    ((5, "000003.jpg " + " 1" * 39), ["line 5", "39 values", "000003.jpg", "expected 40"]),
    ((2, None), ["line 2", "expected the attribute names", "header line is missing"]),
    ((1, None), ["line 1", "count line is missing"]),
    ((4, "000002.jpg " + " 2" * 40), ["line 4", "of 000002.jpg is '2'", "expected 1 or -1"]),
    ((1, "13"), ["line 1 says 13 images but 12"]),
    ((14, None), ["line 1 says 12 images but 11", "truncated"]),
])
def test_malformed_attribute_files_name_line_and_problem(celeba, edit, expected):
    _, attr_file, _ = celeba
    edit_line(attr_file, *edit)
    with pytest.raises(DataError) as error:
        read_celeba_attributes(attr_file, SELECTED)
    for text in expected:
        assert text in str(error.value)
    assert str(attr_file) in str(error.value)


def test_unknown_attribute_lists_the_valid_names(celeba):
    _, attr_file, _ = celeba
    with pytest.raises(DataError, match="did you mean Blond_Hair") as error:
        read_celeba_attributes(attr_file, ["Blonde_Hair", "Male"])
    assert "['Blonde_Hair']" in str(error.value)
    assert all(name in str(error.value) for name in CELEBA_ATTRS)


def test_missing_attribute_file_and_images(celeba, tmp_path):
    image_dir, attr_file, _ = celeba
    with pytest.raises(DataError, match="attribute file .*nope.txt does not exist"):
        read_celeba_attributes(tmp_path / "nope.txt", SELECTED)
    (image_dir / "000004.jpg").unlink()
    (image_dir / "000009.jpg").unlink()
    listed = r"2 of the 12 images listed in .* are missing .*: 000004.jpg, 000009.jpg"
    with pytest.raises(DataError, match=listed):
        celeba_splits(image_dir, attr_file, SELECTED, test_size=2)


def test_nested_image_folder_is_suggested(celeba, tmp_path):
    image_dir, attr_file, _ = celeba
    with pytest.raises(DataError, match=f"they are in {image_dir}: set data.root to it"):
        celeba_splits(image_dir.parent, attr_file, SELECTED, test_size=2)


def test_test_size_must_leave_training_images(celeba):
    image_dir, attr_file, _ = celeba
    with pytest.raises(ValueError, match="data.test_size is 12 but .* lists 12 images"):
        celeba_splits(image_dir, attr_file, SELECTED, test_size=12)


def test_exclusive_groups_keep_selected_members_only():
    attrs = ["Blond_Hair", "Male", "Black_Hair"]
    assert exclusive_groups([HAIR], attrs, CELEBA_ATTRS) == ((2, 0),)
    assert exclusive_groups(["Black_Hair+Gray_Hair"], attrs, CELEBA_ATTRS) == ()  # one selected: flipped
    with pytest.raises(ValueError, match=r"unknown attributes \['Blonde_Hair'\] \(did you mean Blond_Hair"):
        exclusive_groups(["Black_Hair+Blonde_Hair"], attrs, CELEBA_ATTRS)
    with pytest.raises(ValueError, match=r"\['Black_Hair'\] are in more than one"):
        exclusive_groups(["Black_Hair+Blond_Hair", "Black_Hair+Male"], attrs)


def hand_made(names=SELECTED, exclusive=((0, 1, 2),)) -> LabeledImages:
    return LabeledImages(root=Path("x"), files=(), labels=torch.zeros(0, len(names)), names=tuple(names),
                         multi_label=True, exclusive=exclusive)


def test_targets_set_hair_within_its_group_flip_the_rest_and_add_figure4_combinations():
    # Black hair, female, young.
    targets = targets_for(torch.tensor([1.0, 0, 0, 0, 1]), hand_made())
    assert [(name, t.tolist()) for name, t in targets] == [
        ("Black_Hair", [1, 0, 0, 0, 1]),
        ("Blond_Hair", [0, 1, 0, 0, 1]),
        ("Brown_Hair", [0, 0, 1, 0, 1]),
        ("Male", [1, 0, 0, 1, 1]),
        ("Young", [1, 0, 0, 0, 0]),
        ("Blond_Hair+Male", [0, 1, 0, 1, 1]),
        ("Blond_Hair+Young", [0, 1, 0, 0, 0]),
        ("Male+Young", [1, 0, 0, 1, 0]),
        ("Blond_Hair+Male+Young", [0, 1, 0, 1, 0]),
    ]
    # Blond, male, old: H is the first hair colour the input lacks, Black_Hair.
    combos = dict(targets_for(torch.tensor([0.0, 1, 0, 1, 0]), hand_made()))
    assert combos["Black_Hair+Male+Young"].tolist() == [1, 0, 0, 0, 1]
    assert len(targets_for(torch.tensor([1.0, 0, 0, 0, 1]), hand_made(), combos=False)) == 5


def test_targets_without_groups_or_gender_flip_and_skip_combinations():
    images = hand_made(names=("Blond_Hair", "Young", "Smiling"), exclusive=())
    targets = targets_for(torch.tensor([1.0, 0, 1]), images)
    assert [(name, t.tolist()) for name, t in targets] == [
        ("Blond_Hair", [0, 0, 1]), ("Young", [1, 1, 1]), ("Smiling", [1, 0, 0])]
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        targets_for(torch.tensor([1.0, 0]), images)


def test_targets_of_single_label_data_are_every_domain():
    images = LabeledImages(root=Path("x"), files=(Path("a.png"),), labels=torch.tensor([1]),
                           names=("angry", "happy", "sad"), multi_label=False)
    targets = targets_for(images.labels[0], images)
    assert [name for name, _ in targets] == ["angry", "happy", "sad"]
    assert [t.item() for _, t in targets] == [0, 1, 2] and all(t.dtype == torch.long for _, t in targets)


def test_labeled_images_check_label_shape():
    with pytest.raises(ValueError, match=r"expected torch.float32 \[2, 3\]"):
        LabeledImages(Path("x"), (Path("a"), Path("b")), torch.zeros(2, 2), ("a", "b", "c"), True)
    with pytest.raises(ValueError, match="exclusive groups need multi-label"):
        LabeledImages(Path("x"), (Path("a"),), torch.tensor([0]), ("a", "b"), False, ((0, 1),))
