"""The `export` stage and the SC-ImageNet layout: select-schema shards written here (with real small
images) → `ExportStage.run` → `read_release`, which parses the release the way the public CATs/DHPF
loaders do."""

from __future__ import annotations

import csv
import io
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import jpeg_bytes
from PIL import Image
from pydantic import ValidationError

from sc_imagenet.config import BuildConfig, ConfigError, ExportConfig, SelectConfig
from sc_imagenet.dataset.scimagenet import (
    ReleaseError,
    check_wnid,
    image_numbers,
    integer_box,
    loader_image_names,
    read_header,
    read_release,
    reencode_jpeg,
    scale_variation,
    split_lines,
)
from sc_imagenet.io.manifest import ShardWriter, shard_path
from sc_imagenet.stages.base import StageContext, StageOutput
from sc_imagenet.stages.export import ExportFigures, ExportStage
from sc_imagenet.stages.pairs import SCHEMA as PAIRS_SCHEMA

A, B, C = "n01000001", "n01000002", "n01000003"
# category → (image id, file name, (width, height), group); group 0 → trn, 1 → val
IMAGES = {
    A: [(f"{A}_{n}", f"{A}_{n}.JPEG", (48 + n, 40 + n), n % 2) for n in (3, 5, 12, 40)],
    B: [(f"{B}_7", f"{B}_7.JPEG", (50, 44), 0), ("IMG 1", "IMG 1.png", (40, 30), 0),
        (f"{B}_3-b", f"{B}_3-b.JPEG", (60, 36), 0), (f"{B}_9", f"{B}_9.JPEG", (52, 52), 1),
        (f"{A}_77", f"{A}_77.JPEG", (45, 45), 1)],  # another category's prefix: not native here
    C: [(f"{C}_1", f"{C}_1.JPEG", (41, 33), 0), ("x:1", "x:1.JPEG", (39, 47), 0), (f"{C}_0002", f"{C}_0002.JPEG",
                                                                                    (44, 31), 0)],
}
K = 8  # keypoints per pair
# image id → how the file is stored, for the files that are not baseline RGB JPEG (export re-encodes them);
# every other image is an RGB noise JPEG
SPECIAL = {"IMG 1": "png", f"{A}_40": "cmyk", f"{C}_1": "gray", f"{A}_12": "progressive"}
LEFT, RIGHT = (200, 30, 40), (20, 180, 60)  # the two colours of a special image


def special_bytes(kind: str, width: int, height: int) -> bytes:
    """A two-colour picture (left half LEFT, right half RIGHT: JPEG loss stays small) stored as `kind`:
    PNG bytes, a CMYK JPEG (PIL writes Adobe inverted CMYK, as Photoshop does), a grayscale JPEG or a
    progressive RGB JPEG."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2], arr[:, width // 2:] = LEFT, RIGHT
    im = Image.fromarray(arr)
    buf = io.BytesIO()
    if kind == "png":
        im.save(buf, format="PNG")
    elif kind == "progressive":
        im.save(buf, format="JPEG", quality=95, progressive=True)
    else:
        im.convert({"cmyk": "CMYK", "gray": "L"}[kind]).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_data(data_root: Path, skip: set[str] = frozenset()) -> None:
    for c, (wnid, images) in enumerate(IMAGES.items()):
        folder = data_root / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for i, (image_id, name, (w, h), _) in enumerate(images):
            if image_id in skip:
                continue
            kind = SPECIAL.get(image_id)
            data = special_bytes(kind, w, h) if kind else jpeg_bytes(w, h, seed=10 * c + i)
            (folder / name).write_bytes(data)


def select_rows(wnid: str, drop: set[tuple[str, str]] = frozenset()) -> list[dict]:
    """Every ordered pair within a group; kept unless in `drop`, one extra non-kept row per group."""
    rng = np.random.default_rng(zlib.crc32(wnid.encode()))
    images = IMAGES[wnid]
    rows = []
    for s_id, s_name, (sw, sh), g in images:
        for t_id, t_name, (tw, th), g2 in images:
            if s_id == t_id or g != g2:
                continue
            keep = (s_id, t_id) not in drop
            src = np.stack([rng.uniform(-0.5, sw - 0.5, K), rng.uniform(-0.5, sh - 0.5, K)], 1).astype(np.float32)
            trg = np.stack([rng.uniform(-0.5, tw - 0.5, K), rng.uniform(-0.5, th - 0.5, K)], 1).astype(np.float32)
            rows.append({
                "src_id": s_id, "trg_id": t_id, "group": g, "split": "val" if g else "trn",
                "src_score": 0.5, "src_rank": 0, "src_selected": keep, "trg_selected": keep, "keep": keep,
                "reason": "kept" if keep else "trg_not_selected", "pair_score": float(rng.uniform()),
                "n_consistent": K, "src_kps": src.ravel().tolist() if keep else None,
                "trg_kps": trg.ravel().tolist() if keep else None,
                "point_offset": rng.uniform(0, 0.1, K).tolist() if keep else None,
                "src_rel_path": f"{wnid}/{s_name}", "trg_rel_path": f"{wnid}/{t_name}",
                # boxes reaching past the border (clipped on export) and sub-pixel ones
                "src_box": [-0.7, 1.3, sw - 0.2, sh + 0.6], "trg_box": [2.5, 0.2, tw * 0.6, th * 0.5],
                "src_width": sw, "src_height": sh, "trg_width": tw, "trg_height": th,
            })
    return rows


def write_select(out: Path, wnids=(A, B, C), drop: set[tuple[str, str]] = frozenset()) -> Path:
    """The `pairs` manifest export reads: select's rows in the pairs schema (as `pairs` passes them through)."""
    sdir = out / "manifests" / "pairs"
    for wnid in wnids:
        with ShardWriter(shard_path(sdir, wnid), PAIRS_SCHEMA, "0" * 16, 1) as w:
            w.write_many({**{k: r[k] for k in PAIRS_SCHEMA.names if k in r}, "reused": True, "reverse_score": None}
                         for r in select_rows(wnid, drop))
    return sdir


def context(tmp: Path, images: str = "hardlink", export_dir: Path | None = None, quality: int = 95) -> StageContext:
    cfg = BuildConfig(export=ExportConfig(images=images, dir=export_dir, reencode_quality=quality))
    out = tmp / "out"
    stage_dir = out / "manifests" / "export"
    stage_dir.mkdir(parents=True, exist_ok=True)
    return StageContext(cfg, out, tmp / "data", stage_dir, "f" * 16, {"pairs": out / "manifests" / "pairs"},
                        progress=False, log=lambda _: None)


@pytest.fixture
def built(tmp_path: Path):
    write_data(tmp_path / "data")
    write_select(tmp_path / "out")
    ctx = context(tmp_path)
    return ctx, ExportStage().run(ctx)


def kept_select(ctx: StageContext) -> dict[tuple[str, str, str], dict]:
    rows = {}
    for wnid in IMAGES:
        path = shard_path(ctx.inputs["pairs"], wnid)
        if path.exists():
            for r in pq.read_table(path).to_pylist():
                if r["keep"]:
                    rows[(wnid, r["src_id"], r["trg_id"])] = r
    return rows


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def figures(out: StageOutput) -> ExportFigures:
    """The figures the stage output's record holds, as its readers see them."""
    return ExportFigures.model_validate(out.extra)


def release_root(ctx: StageContext, out: StageOutput) -> Path:
    """The release the stage output names (inside the build folder: stored relative to it)."""
    return figures(out).release_path(ctx.out_dir)


def check_release(ctx: StageContext, out) -> None:
    root = release_root(ctx, out)
    assert root == ctx.out_dir / "export" / "SC-ImageNet"
    manifest = pq.read_table(ctx.shard()).to_pylist()
    by_pid = {r["pair_id"]: r for r in manifest}
    select = kept_select(ctx)
    assert len(manifest) == len(select) == out.rows == out.rows_by_status["exported"]
    assert {(r["wnid"], r["src_id"], r["trg_id"]) for r in manifest} == set(select)
    seen, images_of = set(), {}
    for split in ("trn", "val"):
        text = (root / "Layout" / "large" / f"{split}.txt").read_text()
        assert text.endswith("\n") and "\n\n" not in text
        pairs = read_release(root, split)
        assert [p.pair_id for p in pairs] == split_lines(text)
        assert len(pairs) == figures(out).pairs_by_split[split]
        images_of[split] = set()
        for p in pairs:
            m = by_pid[p.pair_id]
            r = select[(m["wnid"], m["src_id"], m["trg_id"])]
            assert (m["split"], r["split"], p.category) == (split, split, m["wnid"])
            assert p.annotation["src_image_id"] == r["src_id"] and p.annotation["trg_image_id"] == r["trg_id"]
            # the loaders' own string cutting, spelled out once more
            assert p.pair_id.split("-")[2].split(":")[1] == m["wnid"]
            assert p.src_image == root / m["src_image"] and p.trg_image == root / m["trg_image"]
            for side in ("src", "trg"):
                image = getattr(p, f"{side}_image")
                size = (r[f"{side}_width"], r[f"{side}_height"])
                with Image.open(image) as im:
                    assert im.size == size
                assert getattr(p, f"{side}_imsize") == size
                source = ctx.data_root / r[f"{side}_rel_path"]
                if r[f"{side}_id"] in SPECIAL:
                    check_reencoded(image, source)
                else:
                    assert image.read_bytes() == source.read_bytes()
                box = p.annotation[f"{side}_bndbox"]
                assert all(type(v) is int for v in box)
                assert 0 <= box[0] < box[2] <= size[0] - 1 and 0 <= box[1] < box[3] <= size[1] - 1
                kps = getattr(p, f"{side}_kps")
                want = np.asarray(r[f"{side}_kps"], np.float32).reshape(-1, 2)
                assert kps.shape == (K, 2) and kps.dtype == np.float32
                np.testing.assert_array_equal(kps, want)  # float32 → JSON → float32 is exact
                images_of[split].add(image)
            for key in ("viewpoint_variation", "truncation", "occlusion"):
                assert p.annotation[key] == 0
            assert p.annotation["scale_variation"] in (0, 1, 2)
            assert p.annotation["pair_score"] == pytest.approx(r["pair_score"])
            seen.add(p.pair_id)
    assert not images_of["trn"] & images_of["val"]
    assert seen == set(by_pid)
    written = figures(out)
    assert written.images == len(images_of["trn"] | images_of["val"])
    assert written.categories == 3 and written.keypoints_per_pair == K
    assert written.bytes_on_disk > 0 and written.bytes_images > 0


def check_reencoded(image: Path, source: Path) -> None:
    """`image` is a baseline RGB JPEG of `source`'s size and (roughly) its pixels as PIL reads them."""
    with Image.open(image) as im, Image.open(source) as src:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", src.size)
        assert not im.info.get("progressive") and "exif" not in im.info and "icc_profile" not in im.info
        diff = np.abs(np.asarray(im, np.int16) - np.asarray(src.convert("RGB"), np.int16))
    assert diff.mean() < 6  # q95 of a two-colour picture; an inverted CMYK would be off by ~100
    assert image.stat().st_ino != source.stat().st_ino and not image.is_symlink()


def methods(out, reencoded: int = len(SPECIAL), **rest: int) -> None:
    assert figures(out).images_by_method == {"reencoded": reencoded, **rest}


def test_export_reads_back_like_the_loaders(built) -> None:
    ctx, out = built
    check_release(ctx, out)
    root = release_root(ctx, out)
    methods(out, hardlink=figures(out).images - len(SPECIAL))
    src = ctx.data_root / A / f"{A}_3.JPEG"
    assert (root / "JPEGImages" / A / f"{A}_3.JPEG").stat().st_ino == src.stat().st_ino
    # the DHPF loader's folder name leads to the same release
    alias = root.parent / "SC-IMAGENET"
    assert alias.is_symlink() and alias.resolve() == root.resolve()
    assert len(read_release(alias, "trn")) == figures(out).pairs_by_split["trn"]
    # nothing but the release next to it (temp folders are gone)
    assert sorted(p.name for p in root.parent.iterdir()) == ["SC-IMAGENET", "SC-ImageNet"]
    assert sorted(p.name for p in (root / "JPEGImages").iterdir()) == [A, B, C]


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29 on its io
def test_non_baseline_images_are_reencoded(built) -> None:
    """A PNG, a CMYK JPEG, a grayscale JPEG and a progressive JPEG under .JPEG names become baseline RGB
    JPEGs that `torchvision.io.decode_jpeg` decodes to 3 channels of the original size; a baseline RGB
    JPEG stays a hard link."""
    pytest.importorskip("torchvision")
    from torchvision.io import decode_jpeg, read_file

    ctx, out = built
    root = release_root(ctx, out)
    with open(root / "image_ids.csv", newline="") as fh:
        files = {r["image_id"]: (root / r["file"], ctx.data_root / r["rel_path"]) for r in csv.DictReader(fh)}
    assert figures(out).images_by_method["reencoded"] == len(SPECIAL)
    sizes = {image_id: size for images in IMAGES.values() for image_id, _, size, _ in images}
    for image_id, kind in SPECIAL.items():
        image, source = files[image_id]
        w, h = sizes[image_id]
        pixels = decode_jpeg(read_file(str(image)))
        assert tuple(pixels.shape) == (3, h, w), (kind, image)
        check_reencoded(image, source)
        left, right = (pixels[:, h // 2, x].tolist() for x in (w // 4, 3 * w // 4))
        if kind == "gray":
            assert max(left) - min(left) <= 2 and max(right) - min(right) <= 2
        else:  # the colours survive (an inverted CMYK would turn (200, 30, 40) into about (55, 225, 215))
            assert np.abs(np.subtract(left, LEFT)).max() <= 8 and np.abs(np.subtract(right, RIGHT)).max() <= 8
    plain, source = files[f"{A}_3"]
    assert plain.stat().st_ino == source.stat().st_ino
    assert tuple(decode_jpeg(read_file(str(plain))).shape) == (3, 43, 51)
    release = json.loads((root / "release.json").read_text())
    assert (release["images_reencoded"], release["reencode_quality"]) == (len(SPECIAL), 95)


def test_reencode_quality_setting(tmp_path: Path) -> None:
    for bad in (0, 101):
        with pytest.raises(ValidationError):
            ExportConfig(reencode_quality=bad)
    payload = ExportStage().fingerprint_payload(BuildConfig(), Path("/data"))
    assert payload["reencode_quality"] == 95
    low = BuildConfig(export=ExportConfig(reencode_quality=40))
    assert ExportStage().fingerprint_payload(low, Path("/data"))["reencode_quality"] == 40
    write_data(tmp_path / "data")
    write_select(tmp_path / "out")
    ctx = context(tmp_path)
    root = release_root(ctx, ExportStage().run(ctx))
    best = (root / "JPEGImages" / A / f"{A}_40.JPEG").read_bytes()
    ExportStage().run(context(tmp_path, quality=40))
    assert len((root / "JPEGImages" / A / f"{A}_40.JPEG").read_bytes()) < len(best)
    assert json.loads((root / "release.json").read_text())["reencode_quality"] == 40


def test_which_files_are_reencoded(tmp_path: Path) -> None:
    """The rule, on headers only: a JPEG (or MPO, a camera's multi-picture JPEG) in RGB, not progressive,
    is kept; anything else is re-encoded."""
    im = Image.new("RGB", (20, 12), LEFT)
    cases = {"rgb.JPEG": (im, {"format": "JPEG"}), "mpo.JPEG": (im, {"format": "MPO", "save_all": True,
                                                                     "append_images": [im]}),
             "rgba.JPEG": (im.convert("RGBA"), {"format": "PNG"}), "p.JPEG": (im.convert("P"), {"format": "GIF"})}
    for name, (picture, kwargs) in cases.items():
        picture.save(tmp_path / name, **kwargs)
    for kind in ("png", "cmyk", "gray", "progressive"):
        (tmp_path / f"{kind}.JPEG").write_bytes(special_bytes(kind, 20, 12))
    kept = {p.name for p in tmp_path.iterdir() if read_header(p).baseline_rgb_jpeg}
    assert kept == {"rgb.JPEG", "mpo.JPEG"}
    assert {read_header(p).size for p in tmp_path.iterdir()} == {(20, 12)}


def test_reencoding_keeps_the_stored_pixels(tmp_path: Path) -> None:
    """EXIF orientation is not applied (the loaders ignore it; keypoints are in stored pixels) and not
    written; a file PIL cannot decode is an error naming it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    src = tmp_path / "rotated.JPEG"
    Image.new("L", (30, 10), 90).save(src, format="JPEG", exif=exif)
    dst = tmp_path / "out.JPEG"
    assert reencode_jpeg(src, dst, 95) == dst.stat().st_size
    with Image.open(dst) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (30, 10)) and "exif" not in im.info
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.JPEG", "rotated.JPEG"]  # no temp file left
    broken = tmp_path / "broken.JPEG"
    broken.write_bytes(special_bytes("png", 30, 10)[:60])
    with pytest.raises(ReleaseError, match=r"broken\.JPEG"):
        reencode_jpeg(broken, tmp_path / "never.JPEG", 95)


def test_image_id_mapping_is_recorded(built) -> None:
    ctx, out = built
    root = release_root(ctx, out)
    with open(root / "image_ids.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ids = {(r["wnid"], r["image_id"]): r["file"] for r in rows}
    assert {r["image_id"] for r in rows if r["reencoded"] == "1"} == set(SPECIAL)
    assert ids[(A, f"{A}_12")] == f"JPEGImages/{A}/{A}_12.JPEG"
    # B: native 7 and 9; the others, sorted ("IMG 1" < "n01000001_77" < "n01000002_3-b"), get 10, 11, 12
    assert ids[(B, "IMG 1")] == f"JPEGImages/{B}/{B}_10.JPEG"
    assert ids[(B, f"{A}_77")] == f"JPEGImages/{B}/{B}_11.JPEG"
    assert ids[(B, f"{B}_3-b")] == f"JPEGImages/{B}/{B}_12.JPEG"
    assert ids[(C, "x:1")] == f"JPEGImages/{C}/{C}_3.JPEG"  # after the native 1 and 0002 (= 2)
    assert ids[(C, f"{C}_0002")] == f"JPEGImages/{C}/{C}_0002.JPEG"
    assert figures(out).remapped_image_ids == 4
    for r in rows:
        assert (root / r["file"]).is_file()
        if r["reencoded"] == "0":
            assert (root / r["file"]).read_bytes() == (ctx.data_root / r["rel_path"]).read_bytes()
    pair = next(p for p in read_release(root, "trn") if p.annotation["src_image_id"] == "IMG 1")
    assert pair.src_imname == f"{B}_10.JPEG" and pair.annotation["src_rel_path"] == f"{B}/IMG 1.png"
    with Image.open(pair.src_image) as im:  # the source's PNG bytes became a real JPEG
        assert im.format == "JPEG"


def test_rerun_is_idempotent_and_removes_stale_files(built, tmp_path: Path) -> None:
    ctx, out = built
    root = release_root(ctx, out)
    before = tree(root)
    again = ExportStage().run(context(tmp_path))
    assert tree(root) == before and again.extra == out.extra
    # fewer pairs: the files of the dropped ones disappear
    write_select(tmp_path / "out", wnids=(A, B), drop={(f"{A}_3", f"{A}_5")})
    shard_path(tmp_path / "out" / "manifests" / "pairs", C).unlink()
    third = ExportStage().run(context(tmp_path))
    after = tree(root)
    assert not any(k.startswith(f"JPEGImages/{C}") for k in after)
    assert len(list((root / "PairAnnotation").rglob("*.json"))) == third.rows == out.rows - 1 - 6
    assert sum(len(read_release(root, s)) for s in ("trn", "val")) == third.rows
    assert sorted(p.name for p in root.parent.iterdir()) == ["SC-IMAGENET", "SC-ImageNet"]


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_image_modes(tmp_path: Path, mode: str) -> None:
    write_data(tmp_path / "data")
    write_select(tmp_path / "out")
    ctx = context(tmp_path, mode, export_dir=tmp_path / "release-here")
    out = ExportStage().run(ctx)
    root = release_root(ctx, out)
    assert root == tmp_path / "release-here" / "SC-ImageNet"
    image = root / "JPEGImages" / A / f"{A}_5.JPEG"
    src = ctx.data_root / A / f"{A}_5.JPEG"
    if mode == "symlink":
        assert image.is_symlink() and Path(os.readlink(image)) == src.absolute()
    else:
        assert not image.is_symlink() and image.stat().st_ino != src.stat().st_ino
    methods(out, **{mode: figures(out).images - len(SPECIAL)})
    check_reencoded(root / "JPEGImages" / B / f"{B}_10.JPEG", ctx.data_root / B / "IMG 1.png")
    for split in ("trn", "val"):
        assert read_release(root, split)
    ctx2 = context(tmp_path, mode, export_dir=tmp_path / "release-here")
    assert tree(root) == tree(release_root(ctx2, ExportStage().run(ctx2)))


def test_missing_image_names_it_and_keeps_the_old_release(built, tmp_path: Path) -> None:
    ctx, out = built
    root = release_root(ctx, out)
    before = tree(root)
    (ctx.data_root / B / "IMG 1.png").unlink()
    with pytest.raises(ReleaseError, match=r"n01000002/IMG 1: .*IMG 1\.png is missing"):
        ExportStage().run(context(tmp_path))
    assert tree(root) == before
    assert sorted(p.name for p in root.parent.iterdir()) == ["SC-IMAGENET", "SC-ImageNet"]


def test_changed_image_size_is_an_error(tmp_path: Path) -> None:
    write_data(tmp_path / "data")
    (tmp_path / "data" / A / f"{A}_5.JPEG").write_bytes(jpeg_bytes(20, 20))
    write_select(tmp_path / "out")
    with pytest.raises(ReleaseError, match="20x20"):
        ExportStage().run(context(tmp_path))


def test_reader_fails_loudly(built) -> None:
    ctx, out = built
    root = release_root(ctx, out)
    pid = split_lines((root / "Layout/large/trn.txt").read_text())[0]
    ann = root / "PairAnnotation" / "trn" / f"{pid}.json"
    doc = json.loads(ann.read_text())

    def broken(edit, match: str) -> None:
        d = json.loads(json.dumps(doc))
        edit(d)
        ann.write_text(json.dumps(d))
        with pytest.raises(ReleaseError, match=match):
            read_release(root, "trn")
        ann.write_text(json.dumps(doc))

    broken(lambda d: d.update(trg_kps=d["trg_kps"][:-1]), "target keypoints")
    broken(lambda d: d.update(src_kps=[[1.0, 2.0]] * 41), "1 to 40")
    broken(lambda d: d.update(src_kps=np.asarray(d["src_kps"]).T.tolist()), "N×2")
    broken(lambda d: d.update(src_bndbox=[0.5, 1, 5, 6]), "4 integers")
    broken(lambda d: d.update(src_bndbox=[0, 0, 500, 6]), "not inside")
    broken(lambda d: d.pop("occlusion"), "occlusion")
    broken(lambda d: d.update(category=C), "category")
    read_release(root, "trn")
    src_name, _, wnid = loader_image_names(pid)
    image = root / "JPEGImages" / wnid / src_name
    data = image.read_bytes()
    image.unlink()
    with pytest.raises(ReleaseError, match="missing"):
        read_release(root, "trn")
    image.write_bytes(data)
    ann.rename(ann.with_suffix(".bak"))
    with pytest.raises(ReleaseError, match=r"annotation .* is missing"):
        read_release(root, "trn")
    ann.with_suffix(".bak").rename(ann)
    split = root / "Layout/large/trn.txt"
    split.write_text(split.read_text().rstrip("\n"))
    with pytest.raises(ReleaseError, match="newline"):
        read_release(root, "trn")


def test_empty_split_is_an_empty_file(tmp_path: Path) -> None:
    write_data(tmp_path / "data")
    sdir = write_select(tmp_path / "out", wnids=(C,))  # C has only trn pairs
    assert sdir.exists()
    ctx = context(tmp_path)
    out = ExportStage().run(ctx)
    root = release_root(ctx, out)
    assert (root / "Layout/large/val.txt").read_bytes() == b""
    assert read_release(root, "val") == [] and figures(out).pairs_by_split == {"trn": 6, "val": 0}


def test_image_numbers() -> None:
    assert image_numbers("n1", ["n1_5", "n1_10"]) == {"n1_5": "5", "n1_10": "10"}
    assert image_numbers("n1", ["b", "a", "n1_2"]) == {"n1_2": "2", "a": "3", "b": "4"}
    assert image_numbers("n1", ["z-1", "y:2", "n1_x"]) == {"n1_x": "0", "y:2": "1", "z-1": "2"}
    assert image_numbers("n1", ["n1_007", "n1_٣"]) == {"n1_007": "007", "n1_٣": "8"}  # ASCII digits only


def test_integer_box_and_scale_variation() -> None:
    assert integer_box([-3.2, 0.4, 99.6, 20.0], 50, 40) == [0, 0, 49, 20]
    assert integer_box([10.2, 10.2, 10.4, 10.4], 50, 40) == [10, 10, 11, 11]
    assert integer_box([49.2, 39.1, 49.4, 39.3], 50, 40) == [48, 38, 49, 39]
    with pytest.raises(ReleaseError):
        integer_box([60, 0, 70, 10], 50, 40)
    with pytest.raises(ReleaseError):
        integer_box([5, 5, 1, 10], 50, 40)
    assert [scale_variation(r) for r in (1.0, 1.49, 1.5, 1.99, 2.0, 7.0)] == [0, 0, 1, 1, 2, 2]


def test_unrepresentable_category_and_too_many_keypoints() -> None:
    for bad in ("n01-2", "a:b", "x*", "", ".hidden", "é"):
        with pytest.raises(ReleaseError):
            check_wnid(bad)
    assert check_wnid("n01440764") == "n01440764"
    with pytest.raises(ConfigError, match="40"):
        ExportStage().fingerprint_payload(BuildConfig(select=SelectConfig(keypoints=41)), Path("/data"))


def test_hardlink_falls_back_to_copy_across_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def cross_device(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    write_data(tmp_path / "data")
    write_select(tmp_path / "out")
    monkeypatch.setattr(os, "link", cross_device)
    ctx = context(tmp_path)
    out = ExportStage().run(ctx)
    methods(out, copy=figures(out).images - len(SPECIAL))
    written = figures(out)
    assert written.bytes_on_disk > written.bytes_images
    assert read_release(release_root(ctx, out), "trn")


def test_stale_temp_folders_go_and_foreign_folders_stay(tmp_path: Path) -> None:
    write_data(tmp_path / "data")
    write_select(tmp_path / "out")
    export = tmp_path / "out" / "export"
    stale = export / ".SC-ImageNet.tmp-999999999"  # no such process
    (stale / "JPEGImages").mkdir(parents=True)
    ExportStage().run(context(tmp_path))
    assert not stale.exists()
    foreign = tmp_path / "elsewhere" / "SC-ImageNet"
    (foreign / "notes").mkdir(parents=True)
    with pytest.raises(ReleaseError, match="refusing"):
        ExportStage().run(context(tmp_path, export_dir=tmp_path / "elsewhere"))
    assert (foreign / "notes").is_dir()


def test_annotations_survive_the_loaders_tensor_handling(built) -> None:
    """What CATs/DHPF do with each JSON value: kps → `tensor(v).t()` is (2, N) with N ≤ 40 (CATs pads
    to 40); boxes → `tensor(v).float()` feed CATs' `random.randint` crop bounds (integral, in range)."""
    import random
    import sys
    import warnings

    torch = pytest.importorskip("torch")
    ctx, out = built
    root = release_root(ctx, out)
    for p in read_release(root, "trn"):
        for side in ("src", "trg"):
            xy, n = torch.tensor(p.annotation[f"{side}_kps"]).t().float().size()
            assert (xy, n) == (2, K) and torch.zeros((xy, 40 - n)).shape == (2, 40 - K)
            box = torch.tensor(p.annotation[f"{side}_bndbox"]).float()
            w, h = getattr(p, f"{side}_imsize")
            if sys.version_info >= (3, 12):  # randrange rejects every float there (the loaders' problem)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                left, top = random.randint(0, box[0]), random.randint(0, box[1])
                assert random.randint(box[3], h) - top > 0 and random.randint(box[2], w) - left > 0
