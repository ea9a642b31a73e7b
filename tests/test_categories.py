"""The curated category lists and the category filter."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import timm

from sc_imagenet.categories import (
    LIST_COLUMNS,
    OVERRIDE_COLUMNS,
    REASONS,
    CategoryListError,
    apply_overrides,
    read_category_csv,
    resolve_categories,
)
from sc_imagenet.paths import CATEGORY_LISTS_DIR

TIMM_INFO = Path(timm.__file__).parent / "data" / "_info"


def test_imagenet1k_list_matches_timm_and_paper() -> None:
    df = read_category_csv(CATEGORY_LISTS_DIR / "imagenet1k.csv", LIST_COLUMNS)
    synsets = (TIMM_INFO / "imagenet_synsets.txt").read_text().split()
    assert len(df) == 1000 and df.wnid.is_unique
    assert df.wnid.tolist() == synsets
    lemmas = dict(line.split("\t", 1) for line in (TIMM_INFO / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    assert all(df.lemma == df.wnid.map(lemmas))
    kept = int(df.keep.sum())
    assert 660 <= kept <= 700  # the paper keeps 679
    removed = df[~df.keep]
    assert removed.reason.isin(["scene", "texture", "crowded", "no_salient_parts", "other"]).all()
    assert (removed.note.str.len() > 0).all()
    assert (df[df.keep].reason == "").all()


def test_demo_list() -> None:
    df = read_category_csv(CATEGORY_LISTS_DIR / "demo.csv", LIST_COLUMNS)
    assert df.keep.sum() >= 6 and set(df[~df.keep].reason) == {"scene", "texture"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_list_validation_errors(tmp_path: Path) -> None:
    with pytest.raises(CategoryListError, match="missing column"):
        read_category_csv(_write(tmp_path / "a.csv", "wnid,keep\nn1,1\n"), LIST_COLUMNS)
    with pytest.raises(CategoryListError, match="duplicate"):
        read_category_csv(_write(tmp_path / "b.csv", "wnid,lemma,keep,reason,note\nn1,a,1,,\nn1,a,1,,\n"),
                          LIST_COLUMNS)
    with pytest.raises(CategoryListError, match="need a reason"):
        read_category_csv(_write(tmp_path / "c.csv", "wnid,lemma,keep,reason,note\nn1,a,0,,\n"), LIST_COLUMNS)
    with pytest.raises(CategoryListError, match="keep must be"):
        read_category_csv(_write(tmp_path / "d.csv", "wnid,lemma,keep,reason,note\nn1,a,maybe,,\n"),
                          LIST_COLUMNS)


def test_overrides_merge_on_top(tmp_path: Path) -> None:
    curated = read_category_csv(
        _write(tmp_path / "l.csv", "wnid,lemma,keep,reason,note\nn1,cat,1,,\nn2,lake,0,scene,a place\n"),
        LIST_COLUMNS)
    over = read_category_csv(_write(tmp_path / "o.csv", "wnid,keep,reason,note\nn1,0,crowded,mine\nn2,1,,\n"
                                    "n3,1,,new\n"), OVERRIDE_COLUMNS)
    merged = apply_overrides(curated, over).set_index("wnid")
    assert merged.loc["n1", "keep"] == False and merged.loc["n1", "reason"] == "crowded"  # noqa: E712
    assert merged.loc["n2", "keep"] == True and merged.loc["n2", "reason"] == ""  # noqa: E712
    assert merged.loc["n3", "source"] == "override"


@pytest.mark.parametrize("unlisted", ["drop", "keep"])
def test_resolve_counts_folders_and_unlisted(unlisted: str) -> None:
    curated = pd.DataFrame({"wnid": ["n1", "n2"], "lemma": ["cat", ""], "keep": [True, False],
                            "reason": ["", "scene"], "note": ["", "x"]})
    table = resolve_categories(curated, {"n1": 5, "n9": 2}, unlisted).set_index("wnid")
    assert table.loc["n1", "n_images"] == 5 and table.loc["n2", "n_images"] == 0
    assert table.loc["n2", "name"] == "n2"  # no lemma: the wnid stands in
    assert table.loc["n9", "keep"] == (unlisted == "keep")
    assert table.loc["n9", "reason"] == ("" if unlisted == "keep" else "unlisted")
    assert set(REASONS) >= set(table.reason) - {""}


def test_no_list_keeps_every_folder() -> None:
    table = resolve_categories(None, {"a": 1, "b": 2})
    assert table.keep.all() and table.wnid.tolist() == ["a", "b"]
