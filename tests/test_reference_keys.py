"""The key lists of tests/reference: what tests/reference_keys.py reads, and the copies of shared/reference."""
from __future__ import annotations

import pytest

from tests.reference_keys import KEY_FILES, REFERENCE_DIR, SHARED_DIR, read_key_file


def test_the_reference_folder_holds_exactly_the_key_files():
    assert sorted(p.name for p in REFERENCE_DIR.glob("*.tsv")) == sorted(KEY_FILES)


@pytest.mark.parametrize("name", KEY_FILES)
def test_every_network_lists_as_many_keys_as_its_header_counts(name):
    sections = read_key_file(name)
    assert sections
    for title, nets in sections.items():
        assert nets, title
        for net, listed in nets.items():
            assert listed.tensors == len(listed.keys) > 0, (title, net)
            assert listed.params > 0, (title, net)


def test_the_reader_keeps_titles_order_and_shapes(tmp_path, monkeypatch):
    (tmp_path / "k.tsv").write_text("# a comment\n## first\n# G: 2 tensors, 7 parameters\nG\tw\t(2, 3)\n"
                                    "G\tb\t()\n\n## second\nD\tw\t(1,)\n")
    monkeypatch.setattr("tests.reference_keys.REFERENCE_DIR", tmp_path)
    sections = read_key_file("k.tsv")
    assert list(sections) == ["first", "second"]
    g = sections["first"]["G"]
    assert list(g.keys.items()) == [("w", (2, 3)), ("b", ())] and (g.tensors, g.params) == (2, 7)
    d = sections["second"]["D"]
    assert d.keys == {"w": (1,)} and d.tensors is None
    (tmp_path / "twice.tsv").write_text("G\tw\t(2,)\nG\tw\t(2,)\n")
    with pytest.raises(ValueError, match="twice.tsv:2: G w listed twice"):
        read_key_file("twice.tsv")


@pytest.mark.skipif(not SHARED_DIR.is_dir(), reason="no shared/reference folder beside this clone")
@pytest.mark.parametrize("name", KEY_FILES)
def test_the_key_list_copy_equals_shared_reference(name):
    assert (REFERENCE_DIR / name).read_text() == (SHARED_DIR / name).read_text()
