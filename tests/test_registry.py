"""The one registry helper (`sc_imagenet.registry.Registry`) and the registries built on it."""

from __future__ import annotations

import pytest

from sc_imagenet.registry import Registry, UnknownNameError


def test_register_lookup_and_order() -> None:
    reg: Registry[int] = Registry("widget")
    assert reg.register("b", 2) == 2
    reg.register("a", 1)
    reg.register("c", 3)
    assert reg["a"] == 1 and "a" in reg and "z" not in reg and len(reg) == 3
    assert reg.names() == list(reg) == ["b", "a", "c"]  # registration order, not sorted
    assert list(reg.items()) == [("b", 2), ("a", 1), ("c", 3)] and reg.get("z") is None


def test_duplicate_name_raises_naming_registry_and_name() -> None:
    reg: Registry[object] = Registry("widget")
    obj = object()
    reg.register("a", obj)
    with pytest.raises(ValueError, match=r"^widget 'a' is already registered$"):
        reg.register("a", object())
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", obj)  # even the same object: one policy
    assert reg["a"] is obj


def test_unknown_name_lists_the_known_ones() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("zeta", 1)
    reg.register("alpha", 2)
    with pytest.raises(UnknownNameError) as info:
        reg["gamma"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value) == "unknown widget 'gamma'; known: alpha, zeta"


def test_decorator_returns_the_object_and_unregister() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.decorator("thing")
    class Thing:
        pass

    assert isinstance(Thing, type) and reg["thing"] is Thing
    assert reg.unregister("thing") is Thing and "thing" not in reg
    reg.register("thing", Thing)  # free again


def test_project_registries_refuse_duplicates() -> None:
    from sc_imagenet.detect.backends import DETECTORS, UltralyticsDetector, create_detector, register_detector
    from sc_imagenet.matching.backbones import BACKBONES, create_backbone, register_backbone
    from sc_imagenet.stages import STAGES, register_stage

    assert DETECTORS["ultralytics"] is UltralyticsDetector
    with pytest.raises(ValueError, match="detector backend 'ultralytics' is already registered"):
        register_detector(UltralyticsDetector)
    with pytest.raises(ValueError, match=r"^unknown detector backend 'nope'; known: .*ultralytics"):
        create_detector("nope")
    with pytest.raises(ValueError, match="backbone 'dense-sift' is already registered"):
        register_backbone("dense-sift")(BACKBONES["dense-sift"])
    with pytest.raises(ValueError, match=r"^unknown backbone 'nope'; known: .*dense-sift"):
        create_backbone("nope")
    with pytest.raises(ValueError, match="stage 'index' is already registered"):
        register_stage(type(STAGES["index"]))
    assert list(STAGES)[:2] == ["categories", "index"]
