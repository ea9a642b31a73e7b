"""Manual category filtering (paper §3.5: 1000 ImageNet classes → 679 kept).

Curated lists live in `manifests/categories/<name>.csv` with columns `wnid,lemma,keep,reason,note`;
a user override CSV `wnid,keep,reason,note` is merged on top. Functions here take and return
DataFrames; the `categories` stage does the file and folder work.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# Reason codes for a removed category (docs/categories.md explains the rule behind each).
REASONS: dict[str, str] = {
    "scene": "scene, landscape or place rather than an object",
    "texture": "texture, material, or food/objects in bulk: no object boundary",
    "crowded": "usually many instances or a crowded, cluttered view",
    "no_salient_parts": "an object without salient, unique parts to put keypoints on",
    "other": "other (see the note)",
    "unlisted": "folder under the data root that the curated list does not name",
    "override": "removed by the user override file",
}

LIST_COLUMNS = ["wnid", "lemma", "keep", "reason", "note"]
OVERRIDE_COLUMNS = ["wnid", "keep", "reason", "note"]


class CategoryListError(ValueError):
    pass


def _parse_keep(series: pd.Series, source: str) -> pd.Series:
    mapping = {"1": True, "0": False, "true": True, "false": False, "yes": True, "no": False}
    parsed = series.astype(str).str.strip().str.lower().map(mapping)
    bad = series[parsed.isna()]
    if len(bad):
        raise CategoryListError(f"{source}: column keep must be 1/0 (or true/false); bad values: "
                                f"{sorted(set(bad.astype(str)))[:5]}")
    return parsed.astype(bool)


def read_category_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read and validate a curated list or an override file."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise CategoryListError(f"cannot read category list {path}: {exc}") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CategoryListError(f"{path}: missing column(s) {missing}; expected {columns}")
    df = df[columns].copy()
    df["wnid"] = df["wnid"].str.strip()
    dupes = df.loc[df["wnid"].duplicated(), "wnid"].tolist()
    if dupes:
        raise CategoryListError(f"{path}: duplicate wnid(s) {dupes[:5]}")
    df["keep"] = _parse_keep(df["keep"], str(path))
    df["reason"] = df["reason"].str.strip()
    bad_reason = df.loc[~df["keep"] & ~df["reason"].isin(list(REASONS)), "wnid"].tolist()
    if bad_reason:
        raise CategoryListError(f"{path}: removed categories need a reason in {sorted(REASONS)}; "
                                f"missing or unknown for {bad_reason[:5]}")
    df.loc[df["keep"], "reason"] = ""
    return df.reset_index(drop=True)


def apply_overrides(curated: pd.DataFrame, overrides: pd.DataFrame) -> pd.DataFrame:
    """Override rows replace keep/reason/note of listed wnids and append unknown ones."""
    out = curated.copy()
    out["source"] = "curated"
    index = {w: i for i, w in enumerate(out["wnid"])}
    new_rows = []
    for row in overrides.itertuples(index=False):
        values = {"keep": bool(row.keep), "reason": "" if row.keep else (row.reason or "override"),
                  "note": row.note, "source": "override"}
        if row.wnid in index:
            for key, value in values.items():
                out.at[index[row.wnid], key] = value
        else:
            new_rows.append({"wnid": row.wnid, "lemma": "", **values})
    if new_rows:
        out = pd.concat([out, pd.DataFrame(new_rows)], ignore_index=True)
    return out


def resolve_categories(
    curated: pd.DataFrame | None, folders: dict[str, int], unlisted: str = "drop"
) -> pd.DataFrame:
    """Final table: one row per listed category plus one per unlisted folder.

    curated: the (override-merged) list, or None to keep every folder. folders: wnid → number of
    files on disk. Returns columns wnid, name, keep, reason, note, source, n_images (0 if no folder).
    """
    if curated is None:
        curated = pd.DataFrame({"wnid": sorted(folders), "lemma": "", "keep": True, "reason": "",
                                "note": "", "source": "folder"})
    elif "source" not in curated:
        curated = curated.assign(source="curated")
    listed = set(curated["wnid"])
    extra = sorted(w for w in folders if w not in listed)
    rows = pd.DataFrame({
        "wnid": extra, "lemma": "", "keep": unlisted == "keep",
        "reason": "" if unlisted == "keep" else "unlisted",
        "note": "not in the curated list", "source": "unlisted",
    })
    table = pd.concat([curated, rows], ignore_index=True) if len(rows) else curated.copy()
    table["n_images"] = table["wnid"].map(folders).fillna(0).astype("int64")
    table["name"] = table["lemma"].where(table["lemma"] != "", table["wnid"])
    return table[["wnid", "name", "keep", "reason", "note", "source", "n_images"]]
