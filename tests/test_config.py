"""Configuration: defaults, profiles, overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sc_imagenet.config import (
    BuildConfig,
    ConfigError,
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
