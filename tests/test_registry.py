"""The one registry idiom: register, list in order, get with a did-you-mean error."""

import pytest

from metaprune.errors import ConfigError, KernelError
from metaprune.registry import Registry


def test_register_get_and_list_in_registration_order():
    colours = Registry[str]("colour")

    @colours.register("red")
    def red() -> str:
        return "r"

    colours.add("blue", lambda: "b")
    assert colours.names() == ("red", "blue")
    assert colours.get("red") is red and colours["blue"]() == "b"
    assert "red" in colours and "green" not in colours and len(colours) == 2
    assert list(colours) == ["red", "blue"]


def test_unknown_name_suggests_the_closest_and_lists_all():
    criteria = Registry[int]("criterion", plural="criteria")
    criteria.add("group_l2", 1)
    criteria.add("taylor", 2)
    with pytest.raises(ConfigError, match=r"unknown criterion 'grup_l2'; did you mean 'group_l2'\? known criteria: group_l2, taylor"):
        criteria.get("grup_l2")
    with pytest.raises(ConfigError, match=r"^unknown criterion 'snip'; known criteria: group_l2, taylor$"):
        criteria.get("snip")


def test_a_name_cannot_be_taken_twice_but_re_registering_the_same_object_is_harmless():
    registry = Registry[object]("thing")
    item = object()
    registry.add("a", item)
    registry.add("a", item)
    with pytest.raises(ConfigError, match="already registered"):
        registry.add("a", object())
    with pytest.raises(ConfigError, match="non-empty string name"):
        registry.add("", item)


def test_the_error_class_is_the_registrys():
    formats = Registry[int]("sparse format", error=KernelError)
    with pytest.raises(KernelError, match="unknown sparse format 'x'"):
        formats.get("x")


def test_every_project_registry_uses_the_idiom():
    from metaprune.data import DATASETS
    from metaprune.kernels import FORMATS
    from metaprune.models import MODELS
    from metaprune.prune.criteria import CRITERIA
    from metaprune.prune.schedules import SCHEDULES
    from metaprune.search import ALLOCATORS, METHODS
    from metaprune.zoo.loaders import ENTRY_KINDS

    for registry in (DATASETS, FORMATS, MODELS, CRITERIA, SCHEDULES, ALLOCATORS, METHODS, ENTRY_KINDS):
        assert isinstance(registry, Registry) and len(registry) >= 2
