"""The public v1 API (``stargan.v1``) uses the v2 API's names; the names of earlier releases still work."""
import pytest

import stargan.v1
import stargan.v2


def test_v1_and_v2_export_the_same_names_for_the_same_things():
    shared = {"Discriminator", "Generator", "Networks", "TrainState", "build_networks", "make_train_state",
              "train_step"}
    assert shared <= set(stargan.v1.__all__) and shared <= set(stargan.v2.__all__)
    assert not any(n.endswith(("_v1", "_v2")) or n.startswith("V1") for n in stargan.v1.__all__)


@pytest.mark.parametrize("old,new", [("V1Networks", "Networks"), ("build_v1_networks", "build_networks"),
                                     ("V1TrainState", "TrainState"), ("make_v1_train_state", "make_train_state"),
                                     ("train_step_v1", "train_step")])
def test_the_names_of_earlier_releases_warn_and_give_the_same_object(old, new):
    with pytest.warns(DeprecationWarning, match=f"stargan.v1.{old} is now stargan.v1.{new}"):
        assert getattr(stargan.v1, old) is getattr(stargan.v1, new)
    with pytest.raises(AttributeError, match="no attribute 'V1Nothing'"):
        stargan.v1.V1Nothing
