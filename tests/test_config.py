"""Configuration: defaults, profiles, overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sc_imagenet.config import (
    BuildConfig,
    ConfigError,
    LabelConfig,
    SelectConfig,
    load_config,
    parse_overrides,
    read_resolved_config,
    write_resolved_config,
)


def test_profiles_hold_only_valid_overrides() -> None:
    demo = load_config("demo")
    assert demo.data.source == "synthetic" and demo.categories.list == "demo"
    imagenet = load_config("imagenet", data_root="/data/train")
    assert imagenet.categories.list == "imagenet1k" and str(imagenet.data.root) == "/data/train"
    assert BuildConfig().index.verify == "draft"  # defaults live in code


def test_bench_profile_is_the_demo_with_more_images() -> None:
    """benchmarks/downstream.py's build: the demo's settings, only many more images of the same six categories."""
    demo, bench = load_config("demo"), load_config("bench")
    assert bench.data.synthetic.images_per_category >= 10 * demo.data.synthetic.images_per_category
    synthetic = bench.data.synthetic.model_copy(update={"images_per_category": demo.data.synthetic.images_per_category})
    assert bench.model_copy(update={"data": bench.data.model_copy(update={"synthetic": synthetic})}) == demo


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ({"index": {"workers": -1}}, "index.workers", "greater than or equal to 0"),
        ({"index": {"verify": "deep"}}, "index.verify", "'header', 'draft' or 'full'"),
        ({"index": {"wokers": 2}}, "index.wokers", "Extra inputs are not permitted"),
        ({"data": {"synthetic": {"multi_instance_fraction": 1.5}}}, "data.synthetic.multi_instance_fraction",
         "less than or equal to 1"),
        ({"data": {"synthetic": {"multi_instance_fraction": -0.1}}}, "data.synthetic.multi_instance_fraction",
         "greater than or equal to 0"),
        ({"seed": "abc"}, "seed", "valid integer"),
        ({"bogus_section": {}}, "bogus_section", "Extra inputs"),
    ],
)
def test_bad_values_name_the_field(override: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("demo", override)
    msg = str(err.value)
    assert f"  {field}:" in msg and words in msg


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known profiles: .*demo.*imagenet"):
        load_config("nope")


def test_profile_from_path_and_cli_overrides(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"index": {"workers": 3}, "categories": {"list": None}}))
    cfg = load_config(str(path), parse_overrides(["index.verify=full", "seed=7"]))
    assert (cfg.index.workers, cfg.index.verify, cfg.seed, cfg.categories.list) == (3, "full", 7, None)
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_overrides(["index.workers"])


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(path))


def test_resolved_config_roundtrip(tmp_path: Path) -> None:
    cfg = load_config("demo", {"index": {"workers": 2}})
    path = write_resolved_config(cfg, tmp_path, "demo")
    doc = yaml.safe_load(path.read_text())
    assert doc["profile"] == "demo" and doc["sc_imagenet_version"] and "git_sha" in doc
    assert read_resolved_config(tmp_path) == cfg


def test_fallbacks_are_resolved_once_in_the_config() -> None:
    cfg = BuildConfig()
    assert cfg.label.foreground == cfg.train.foreground == "detector_mask"
    assert cfg.select.point_threshold == cfg.consistency.threshold == 0.1
    # an override of the section a setting falls back to reaches it; an explicit value wins
    cfg = load_config("demo", {"train": {"foreground": "box"}, "consistency": {"threshold": 0.25}})
    assert (cfg.label.foreground, cfg.select.point_threshold) == ("box", 0.25)
    cfg = load_config("demo", {"train": {"foreground": "box"}, "label": {"foreground": "none"},
                               "consistency": {"threshold": 0.25}, "select": {"point_threshold": 0.5}})
    assert (cfg.label.foreground, cfg.select.point_threshold) == ("none", 0.5)


def test_resolving_leaves_a_shared_section_alone() -> None:
    label, select = LabelConfig(), SelectConfig()
    a = BuildConfig(label=label, select=select, train={"foreground": "box"}, consistency={"threshold": 0.2})
    b = BuildConfig(label=label, select=select, train={"foreground": "saliency"}, consistency={"threshold": 0.3})
    assert (a.label.foreground, a.select.point_threshold) == ("box", 0.2)
    assert (b.label.foreground, b.select.point_threshold) == ("saliency", 0.3)
    assert label.foreground is None and select.point_threshold is None


def test_resolved_config_holds_the_values_in_use(tmp_path: Path) -> None:
    cfg = load_config("demo", {"consistency": {"threshold": 0.2}})
    doc = yaml.safe_load(write_resolved_config(cfg, tmp_path, "demo").read_text())
    assert doc["config"]["label"]["foreground"] == cfg.train.foreground
    assert doc["config"]["select"]["point_threshold"] == 0.2
    back = read_resolved_config(tmp_path)
    assert back == cfg
    # a resolved config read back is not resolved again: a later change of the fallback's source stays out
    doc["config"]["consistency"]["threshold"] = 0.4
    assert BuildConfig.model_validate(doc["config"]).select.point_threshold == 0.2
    # one written before the fallbacks were resolved (nulls) still reads, and resolves the same way
    doc["config"]["label"]["foreground"] = doc["config"]["select"]["point_threshold"] = None
    old = BuildConfig.model_validate(doc["config"])
    assert (old.label.foreground, old.select.point_threshold) == (cfg.train.foreground, 0.4)
