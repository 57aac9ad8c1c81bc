"""Data sources, the dataset digest and its cache, splits and subsets, batched augmentation."""

from __future__ import annotations

import os
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from leanfit.config import experiment_from_dict
from leanfit.data import fingerprint, sources
from leanfit.data.augment import BatchAugment, random_crop, random_flip
from leanfit.data.sources import load_dataset, skipped_files
from leanfit.data.splits import make_splits, stable_splits, stratified_subset
from leanfit.errors import ConfigError, DatasetError
from tests.support import Planted, without_permission_bypass, write_image_folder


def folder_experiment(root, tmp_path, **dataset):
    return experiment_from_dict(
        {
            "name": "f",
            "dataset": {"source": "imagefolder", "path": str(root), "image_size": 8, **dataset},
            "work_dir": str(tmp_path / "work"),
        }
    )


def test_digits_are_uint8_at_the_configured_size():
    exp = experiment_from_dict({"name": "d", "dataset": {"source": "digits", "image_size": 12}})
    ds = load_dataset(exp)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (1797, 1, 12, 12)
    assert ds.num_classes == 10 and int(ds.images.max()) > 200
    assert load_dataset(exp).digest == ds.digest


def test_image_folder_skips_and_lists_unreadable_files(tmp_path):
    root = write_image_folder(tmp_path / "imgs", {"cat": 6, "dog": 5})
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "dog" / "notes.txt").write_text("not an image")
    good = (root / "dog" / "img000.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    # what operating systems leave: no class, no file skipped, as .DS_Store
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._img000.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "dog" / "desktop.ini").write_text("[.ShellClassInfo]")
    # a link to a file that is gone (moved, an unmounted disk): a traceback before
    (root / "cat" / "moved.png").symlink_to(tmp_path / "elsewhere.png")
    ds = load_dataset(folder_experiment(root, tmp_path))
    assert ds.images.shape == (11, 3, 8, 8)
    assert ds.classes == ["cat", "dog"]
    assert sorted(name for name, _ in ds.skipped) == [
        "cat/broken.png",
        "cat/moved.png",
        "dog/notes.txt",
        "dog/truncated.png",
    ]
    assert all(why for _, why in ds.skipped)
    assert dict(ds.skipped)["cat/moved.png"] == (
        f"a link to {tmp_path / 'elsewhere.png'}, which does not exist"
    )


def test_decoded_images_are_cached_by_digest(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "imgs", {"a": 4, "b": 4})
    exp = folder_experiment(root, tmp_path)
    first = load_dataset(exp)
    from leanfit.data import sources

    calls = []
    monkeypatch.setattr(sources, "_decode_one", lambda *a: calls.append(a) or "not called")
    monkeypatch.setattr(fingerprint, "file_sha256", lambda p: calls.append(p) or "x")
    again = load_dataset(exp)
    assert calls == [], "unchanged files were read again"
    assert torch.equal(again.images, first.images) and again.digest == first.digest


def test_the_images_cache_is_read_as_tensors_never_unpickled_as_code(tmp_path):
    """The cache was a pickled dataset, loaded with `weights_only=False`: a file put in its
    place (the work folder is shared on a cluster) ran its code, silently (QA). It keeps
    tensors and JSON now; a planted file is rebuilt over, and nothing in it runs."""
    root = write_image_folder(tmp_path / "imgs", {"a": 4, "b": 4})
    exp = folder_experiment(root, tmp_path, layout="classes")
    first = load_dataset(exp)
    (cache,) = (tmp_path / "work" / "cache").glob("images-*.pt")
    marker = tmp_path / "ran"
    torch.save({"version": 3, "dataset": Planted(str(marker))}, cache)
    again = load_dataset(exp)
    assert not marker.exists()
    assert torch.equal(again.images, first.images) and again.files == first.files
    assert again.classes == first.classes and again.skipped == first.skipped
    kept = load_dataset(exp)  # (from the cache rebuilt)
    assert torch.equal(kept.images, first.images) and kept.dropped_classes == first.dropped_classes


def test_a_cache_folder_that_cannot_be_made_only_costs_reading_again(tmp_path):
    """A work folder this user cannot write (`leanfit validate` in a read-only folder): the
    manifest's cache ended the command in a traceback; the caches are a saving, not a need."""
    root = write_image_folder(tmp_path / "imgs", {"a": 4, "b": 4})
    (tmp_path / "work").write_text("a file where the work folder would be")
    exp = folder_experiment(root, tmp_path)  # its work_dir: tmp_path / "work", a file
    first = load_dataset(exp)  # (its cache folder work/cache cannot be made)
    assert len(first.images) == 8 and load_dataset(exp).digest == first.digest
    assert (tmp_path / "work").is_file()


def test_digest_is_stable_and_follows_content(tmp_path):
    root = write_image_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    cache = tmp_path / "manifest.json"
    d1 = fingerprint.fingerprint_folder(root, cache)
    assert fingerprint.fingerprint_folder(root, cache) == d1
    assert fingerprint.fingerprint_folder(root) == d1  # no cache: same digest
    path = root / "a" / "img000.png"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert fingerprint.fingerprint_folder(root, cache) != d1
    (root / "a" / "img000.png").unlink()
    assert fingerprint.fingerprint_folder(root, cache) != d1


def test_files_beside_the_class_folders_are_listed_and_are_not_the_data(tmp_path):
    """A README beside the class folders is no image of any class: said as a file not used, and
    left out of the digest, as a file the labels CSV does not name is (each edit of it ran the
    whole pipeline again, with nothing said)."""
    root = write_image_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    exp = folder_experiment(root, tmp_path)
    plain = load_dataset(exp).digest
    (root / "README.txt").write_text("collected in May")
    (root / ".DS_Store").write_bytes(b"\x00")  # (left out, and not said, as everywhere)
    with_readme = load_dataset(exp)
    assert with_readme.digest == plain
    assert with_readme.skipped == [("README.txt", "at the top of the folder, in no class folder")]
    assert skipped_files(with_readme.skipped) == "1 file(s)"
    (root / "README.txt").write_text("collected in May and June")
    assert load_dataset(exp).digest == plain
    (root / "b" / "img000.png").unlink()  # the data itself: a new digest
    assert load_dataset(exp).digest != plain


def test_manifest_is_sorted_relative_paths(tmp_path):
    root = write_image_folder(tmp_path / "imgs", {"b": 2, "a": 2})
    entries = fingerprint.build_manifest(root)
    assert [e.path for e in entries] == sorted(e.path for e in entries)
    assert all(not e.path.startswith("/") for e in entries)


def test_splits_are_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(5), [100, 50, 30, 20, 10])
    s = make_splits(labels, 0.2, 0.2, seed=3)
    all_idx = np.concatenate([s.train, s.val, s.test])
    assert len(np.unique(all_idx)) == len(labels)
    for c, n in enumerate([100, 50, 30, 20, 10]):
        assert (labels[s.val] == c).sum() == round(n * 0.2)
        assert (labels[s.test] == c).sum() == round(n * 0.2)
    again = make_splits(labels, 0.2, 0.2, seed=3)
    assert np.array_equal(again.val, s.val)
    assert not np.array_equal(make_splits(labels, 0.2, 0.2, seed=4).val, s.val)


def test_stable_splits_keep_each_classs_share_and_its_smallest_classes_whole():
    rng = np.random.default_rng(0)
    counts = [1000, 100, 20, 5, 3, 2, 1]
    labels = np.repeat(np.arange(len(counts)), counts)
    keys = rng.integers(0, 2**63, size=len(labels), dtype=np.uint64)
    s = stable_splits(keys, labels, 0.2, 0.1, seed=3)
    all_idx = np.concatenate([s.train, s.val, s.test])
    assert np.array_equal(np.sort(all_idx), np.arange(len(labels)))  # disjoint, all placed
    big = labels == 0
    assert abs(big[s.val].sum() - 200) < 40 and abs(big[s.test].sum() - 100) < 30
    for c, n in enumerate(counts):
        have = [int((labels[part] == c).sum()) for part in (s.train, s.val, s.test)]
        assert have[0] >= 1, (n, have)  # every class trains on something
        shuffled = make_splits(labels[labels == c], 0.2, 0.1, 0)
        # where the shuffle gives a class a validation or test image, so do stable splits
        assert (have[1] >= 1) == (len(shuffled.val) >= 1), (n, have)
        assert (have[2] >= 1) == (len(shuffled.test) >= 1), (n, have)
    assert np.array_equal(stable_splits(keys, labels, 0.2, 0.1, seed=3).val, s.val)
    assert not np.array_equal(stable_splits(keys, labels, 0.2, 0.1, seed=4).val, s.val)
    # a class of 3 gets one image of each split whatever its draw (with two placed in
    # validation it got no test image, "too few to draw one"); copies move together
    for seed in range(200):
        three = stable_splits(
            rng.integers(0, 2**63, size=3, dtype=np.uint64), [0] * 3, 0.2, 0.2, seed
        )
        assert [len(part) for part in (three.train, three.val, three.test)] == [1, 1, 1], seed
        copies = np.repeat(rng.integers(0, 2**63, size=2, dtype=np.uint64), [5, 1])
        split = stable_splits(copies, [0] * 6, 0.2, 0.2, seed)
        parts = (split.train, split.val, split.test)
        roles = [next(r for r, part in enumerate(parts) if i in part) for i in range(6)]
        assert len(set(roles[:5])) == 1 and roles.count(0) >= 1, (seed, roles)
    # another validation fraction leaves the test split as it was, and the other way round
    # (but in the smallest classes, where one image is moved to give each split one)
    grown = np.flatnonzero(labels <= 2)
    assert np.array_equal(np.intersect1d(stable_splits(keys, labels, 0.3, 0.1, 3).test, grown),
                          np.intersect1d(s.test, grown))  # fmt: skip
    assert np.array_equal(np.intersect1d(stable_splits(keys, labels, 0.2, 0.2, 3).val, grown),
                          np.intersect1d(s.val, grown))  # fmt: skip


def _split_of_each_file(experiment) -> dict[str, str]:
    from leanfit.train.trial import data_plan

    dataset = load_dataset(experiment)
    plan = data_plan(experiment, dataset)
    roles = {}
    for role, idx in (("train", plan.splits.train), ("val", plan.splits.val),
                      ("test", plan.splits.test)):  # fmt: skip
        roles |= {dataset.files[i]: role for i in idx}
    return roles


def _more_images(folder, names, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in names:
        pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)


@pytest.mark.parametrize("split", ["auto", "stable", "shuffled"])
def test_an_image_folders_images_stay_in_their_splits_as_it_grows(tmp_path, split):
    """An image folder's splits are drawn image by image (`split: auto` is stable there): images
    added, removed or moved to another class leave every other image in its split, so a test
    image never becomes a training image of the next run; copies of a picture share a split.
    `split: shuffled` draws them again (what it did before), which moves images."""
    root = tmp_path / "imgs"
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        _more_images(root / name, [f"a{i:03d}.png" for i in range(60)], seed=c)
    experiment = folder_experiment(root, tmp_path, split=split, val_fraction=0.2, test_fraction=0.2)
    before = _split_of_each_file(experiment)
    # another image size and fit decode every file to other pixels: the same splits (stable
    # ones by the files' content; they were drawn again by the pixels)
    redecoded = folder_experiment(root, tmp_path, split=split, image_size=12, fit="crop")
    assert _split_of_each_file(redecoded) == before
    # the folder a week later: new images in each class, a few removed, one moved class
    _more_images(root / "cat", [f"b{i:03d}.png" for i in range(40)], seed=7)
    _more_images(root / "dog", [f"b{i:03d}.png" for i in range(25)], seed=8)
    for name in ("a000.png", "a001.png", "a002.png"):
        (root / "cat" / name).unlink()
    (root / "dog" / "a010.png").rename(root / "cat" / "from_dog.png")
    after = _split_of_each_file(experiment)
    moved = [f for f in before if f in after and after[f] != before[f]]
    if split == "shuffled":
        assert len(moved) > 10
        return
    assert moved == [], moved
    assert after["cat/from_dog.png"] == before["dog/a010.png"]  # (its class moved, not its split)
    new = [role for f, role in after.items() if f not in before and "/b" in f]
    assert 0.1 < new.count("val") / len(new) < 0.35 and 0.1 < new.count("test") / len(new) < 0.35
    # copies of a picture (a re-upload under another name) land in the split of the first
    for f in list(after)[:30]:
        (root / f).with_name("copy-" + Path(f).name).write_bytes((root / f).read_bytes())
    copies = _split_of_each_file(experiment)
    for f, role in copies.items():
        if Path(f).name.startswith("copy-"):
            assert role == copies[str(Path(f).with_name(Path(f).name[len("copy-") :]))], f


def test_split_is_named_with_its_choices_when_misspelled():
    with pytest.raises(ConfigError, match="dataset.split") as e:
        experiment_from_dict({"name": "d", "dataset": {"source": "digits", "split": "hashed"}})
    assert "stable" in str(e.value) and "shuffled" in str(e.value)
    digits = {"name": "d", "dataset": {"source": "digits"}}
    assert not experiment_from_dict(digits).dataset.stable_splits
    digits["dataset"]["split"] = "stable"
    assert experiment_from_dict(digits).dataset.stable_splits
    # exactly 10% left for training is enough (0.45 + 0.45 was refused as a float's 0.9000…1)
    digits["dataset"] |= {"val_fraction": 0.45, "test_fraction": 0.45}
    assert experiment_from_dict(digits).dataset.val_fraction == 0.45


def test_split_written_as_what_auto_means_keeps_the_search_and_pipeline_keys(tmp_path):
    import hashlib
    import json

    from leanfit.steps import pipeline_key
    from leanfit.track.search import NOT_SEARCHED, key_settings, search_key

    folder = {"source": "imagefolder", "path": str(tmp_path)}

    def keys(**dataset):
        experiment = experiment_from_dict({"name": "f", "dataset": {**folder, **dataset}})
        return search_key(experiment, "d"), pipeline_key(experiment, "d")

    assert keys() == keys(split="stable")
    assert keys() != keys(split="shuffled")
    digits = {"source": "digits"}
    assert keys(**digits) == keys(**digits, split="shuffled") != keys(**digits, split="stable")
    # an image folder's search and pipeline run from before stable splits (their settings had
    # no `split`, and the splits were shuffled) are found again with `split: shuffled`
    old = experiment_from_dict({"name": "f", "dataset": {**folder, "split": "shuffled"}})
    settings = key_settings(old, NOT_SEARCHED)
    del settings["dataset"]["split"]
    blob = json.dumps({"settings": settings, "digest": "d"}, sort_keys=True)
    assert keys(split="shuffled")[0] == hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_subsets_are_stratified_and_nested():
    labels = np.repeat(np.arange(4), 40)
    quarter = stratified_subset(labels, 0.25, seed=1)
    half = stratified_subset(labels, 0.5, seed=1)
    assert np.bincount(labels[quarter]).tolist() == [10] * 4
    assert set(quarter) <= set(half)


def test_cifar10_absent_is_a_clear_error(tmp_path):
    exp = experiment_from_dict(
        {"name": "c", "dataset": {"source": "cifar10", "path": str(tmp_path)}}
    )
    with pytest.raises(DatasetError, match="download"):
        load_dataset(exp)


@pytest.mark.parametrize("policy", ["randaugment", "autoaugment", "trivialaugment", "none"])
@pytest.mark.parametrize("channels", [1, 3])
def test_augmentation_keeps_shape_and_dtype(policy, channels):
    x = torch.randint(0, 256, (64, channels, 16, 16), dtype=torch.uint8)
    out = BatchAugment(policy, n=2, m=9, crop_padding=2, flip=True)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8


def test_flip_and_crop_are_drawn_per_image():
    torch.manual_seed(0)
    x = torch.arange(16, dtype=torch.uint8).repeat(200, 1, 16, 1)  # each row is 0..15
    flipped = random_flip(x)
    is_flipped = (flipped[:, 0, 0, 0] == 15).float().mean()
    assert 0.3 < is_flipped < 0.7
    shifted = random_crop(x, 2)
    # interior pixels are the same image shifted: the first column tells the shift per image
    assert len(torch.unique(shifted[:, 0, 5, 5])) == 5


def test_randaugment_varies_within_a_batch():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8).repeat(64, 1, 1, 1)
    out = BatchAugment("randaugment", n=2, m=15, groups=8)(x)
    distinct = {out[i].numpy().tobytes() for i in range(64)}
    assert len(distinct) > 1


def test_sixteen_bit_rotated_and_transparent_files_decode_as_they_look(tmp_path):
    """Files a user's folder really holds: a 16-bit grey PNG (a scan; Pillow's conversion made
    it all white), a phone's JPEG stored sideways with an EXIF orientation, a palette PNG with a
    transparent colour (Pillow warned on each)."""
    import warnings

    from PIL import Image

    root = write_image_folder(tmp_path / "imgs", {"a": 2, "b": 2}, size=8)
    ramp = np.repeat(np.linspace(0, 65535, 8).astype(np.uint16)[None, :], 8, axis=0)
    Image.fromarray(ramp).save(root / "a" / "scan16.png")
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint16)).save(root / "a" / "dark16.png")
    upright = np.zeros((8, 8, 3), dtype=np.uint8)
    upright[:4] = 255  # the top half white, as the photo was taken
    sideways = Image.fromarray(np.rot90(upright, k=-1).copy())  # what the sensor stored
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation: turn 90 degrees counter-clockwise to show it
    sideways.save(root / "a" / "phone.jpg", exif=exif, quality=100)
    unit = np.repeat(np.linspace(0, 1, 8, dtype=np.float32)[None, :], 8, axis=0)
    Image.fromarray(unit, mode="F").save(root / "a" / "float.tif")  # a microscope's frame
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 250, 250, 250] + [0] * 762)
    palette.save(root / "b" / "icon.png", transparency=b"\x00\x80")  # alpha per colour

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        ds = load_dataset(folder_experiment(root, tmp_path, image_size=8))
    assert not [str(w.message) for w in warned if "Palette" in str(w.message)]
    assert not ds.skipped
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*"))
    image = dict(zip(names, ds.images, strict=True))  # the manifest's sorted order
    scan = image["a/scan16.png"][0].float()
    assert scan[:, 0].max() < 10 and scan[:, -1].min() > 245, scan  # dark to light, not all white
    assert scan[0].diff().min() >= 0
    assert image["a/dark16.png"].max() <= 1, "200 of 65,535 is black, not 200 of 255"
    ramp = image["a/float.tif"][0].float()
    assert ramp[:, 0].max() < 10 and ramp[:, -1].min() > 245, ramp  # [0, 1], not all black
    photo = image["a/phone.jpg"].float().mean(0)
    assert photo[:3].mean() > 200 and photo[5:].mean() < 50, photo  # upright: white on top
    assert image["b/icon.png"].float().mean() > 200


def test_transparent_icons_are_drawn_on_the_background_not_on_their_hidden_colour(tmp_path):
    """An icon set as Adwaita's symbolic icons ship: a black glyph whose background is black at
    alpha 0. Dropping the alpha made every such file one flat black image; each is drawn on white
    by default, a white-on-transparent glyph on black when the file asks for it."""
    from PIL import Image

    root = write_image_folder(tmp_path / "imgs", {"a": 2, "b": 2}, size=8)
    glyph = np.zeros((8, 8, 4), dtype=np.uint8)  # RGB 0 everywhere: black, hidden by the alpha
    glyph[2:6, 2:6, 3] = 255  # an opaque black square in the middle
    Image.fromarray(glyph).save(root / "a" / "icon-rgba.png")
    grey = np.zeros((8, 8, 2), dtype=np.uint8)  # a grey + alpha ("LA") glyph, the same square
    grey[2:6, 2:6, 1] = 255
    Image.fromarray(grey, mode="LA").save(root / "a" / "icon-la.png")
    light = np.full((8, 8, 4), 255, dtype=np.uint8)  # a white glyph on transparent white
    light[..., 3] = 0
    light[2:6, 2:6, 3] = 255
    Image.fromarray(light).save(root / "b" / "light.webp", lossless=True)
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*"))

    for channels in (1, 3):
        ds = load_dataset(folder_experiment(root, tmp_path, channels=channels))
        assert not ds.skipped
        image = dict(zip(names, ds.images.float(), strict=True))
        for name in ("a/icon-rgba.png", "a/icon-la.png"):
            icon = image[name].mean(0)
            assert icon[3:5, 3:5].max() < 30 and icon[0].min() > 225, (name, icon)  # on white
        assert image["b/light.webp"].mean() > 250  # white on white: what a viewer shows

    ds = load_dataset(folder_experiment(root, tmp_path, background="black"))  # not the cache's
    image = dict(zip(names, ds.images.float(), strict=True))
    light = image["b/light.webp"].mean(0)
    assert light[3:5, 3:5].min() > 225 and light[0].max() < 30, light
    assert image["a/icon-rgba.png"].max() < 30  # a black glyph on black, as asked


def test_a_wide_image_is_squeezed_cropped_or_padded_as_the_file_says(tmp_path):
    """A 48x16 image of three squares (black, grey, black) to 8x8: squeezed, each third is a
    third of the width; cropped, only the middle (grey) square is left; padded, the whole image
    fills the middle third of the height, on the background above and below it."""
    from PIL import Image

    root = write_image_folder(tmp_path / "imgs", {"a": 2, "b": 2}, size=8)
    wide = np.zeros((16, 48), dtype=np.uint8)
    wide[:, 16:32] = 128
    Image.fromarray(wide).save(root / "a" / "wide.png")
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*"))

    def decoded(**dataset):
        ds = load_dataset(folder_experiment(root, tmp_path, channels=1, **dataset))
        return dict(zip(names, ds.images.float(), strict=True))["a/wide.png"][0]

    squeezed = decoded()
    assert squeezed[:, :2].max() < 20 and squeezed[:, -2:].max() < 20  # black at both ends
    assert (squeezed[:, 3:5] - 128).abs().max() < 20  # grey in the middle third
    cropped = decoded(fit="crop")
    assert (cropped - 128).abs().max() < 20, cropped  # the grey centre square alone
    padded = decoded(fit="pad")
    assert padded[:2].min() > 250 and padded[-2:].min() > 250, padded  # white above and below
    assert padded[3:5, :2].max() < 20 and (padded[3:5, 3:5] - 128).abs().max() < 20
    on_black = decoded(fit="pad", background="black")
    assert on_black[:2].max() < 5 and on_black[-2:].max() < 5


def test_a_large_photo_decodes_at_a_reduced_scale_to_the_same_pixels(tmp_path):
    """A 1600x1200 JPEG read at 16 px is decoded by libjpeg at an eighth of its size (the draft
    mode) and then resized: its pixels are those of the full decode, within a level or two."""
    from pathlib import Path

    from PIL import Image

    from leanfit.data.sources import _decode_one

    y, x = np.mgrid[0:1200, 0:1600]
    photo = np.stack([x * 255 // 1600, y * 255 // 1200, (x + y) * 255 // 2800], -1)
    photo = photo + np.random.default_rng(0).integers(0, 30, photo.shape)
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(path, quality=90)

    with Image.open(path) as im:
        assert im.draft(None, (32, 32)) is not None  # the reduced decode is what is tested
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    from PIL.JpegImagePlugin import JpegImageFile

    with mock.patch.object(
        JpegImageFile, "draft", autospec=True, side_effect=JpegImageFile.draft
    ) as d:
        reduced = _decode_one(Path(path), 16, 3).transpose(1, 2, 0)
    assert d.call_args.args[1:] == (None, (32, 32))
    difference = np.abs(reduced.astype(int) - full.astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 4, difference


def test_an_image_above_pillows_limit_is_skipped_saying_its_size_and_the_fix(tmp_path, monkeypatch):
    """A scan of 192 million pixels was skipped with Pillow's "could be decompression bomb DOS
    attack", and one of 100 million printed Pillow's warning raw. Pillow's limit is lowered here
    so that small files stand for them."""
    import warnings
    from pathlib import Path

    from PIL import Image

    from leanfit.data.sources import _decode_one

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    Image.new("L", (60, 50), 90).save(tmp_path / "scan.png")  # 3,000 pixels: above twice it
    Image.new("L", (40, 40), 90).save(tmp_path / "large.png")  # 1,600: warned, decoded
    why = _decode_one(Path(tmp_path / "scan.png"), 8, 1)
    assert why == (
        "too large: 3,000 pixels, above the 2,000 Pillow decodes (its guard against "
        "decompression bombs); save a smaller copy of it"
    ), why
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("default")
        from leanfit.data.sources import prepare_pillow

        prepare_pillow.__globals__["_pillow_ready"] = False  # (as in a fresh process)
        decoded = _decode_one(Path(tmp_path / "large.png"), 8, 1)
    assert decoded.shape == (1, 8, 8) and not said, [str(w.message) for w in said]


def test_the_pipelines_fingerprint_step_lists_the_first_skipped_files_and_counts_the_rest(
    tmp_path, capsys
):
    """A folder of images with 25 sidecar notes beside them: the step says 25 were skipped,
    names the first 20 and says how many more, instead of stopping silently at 20."""
    import json

    from leanfit.steps import fingerprint as fingerprint_step

    root = write_image_folder(tmp_path / "imgs", {"a": 4, "b": 4}, size=8)
    for i in range(25):
        (root / "a" / f"note{i:02d}.txt").write_text("not an image")
    exp = experiment_from_dict(
        {
            "name": "f",
            "dataset": {"source": "imagefolder", "path": str(root), "image_size": 8},
            "work_dir": str(tmp_path / "work"),
            "tracking": {"uri": f"sqlite:///{tmp_path}/m.db"},
        }
    )
    fingerprint_step(exp, str(tmp_path / "manifest.json"))
    out = capsys.readouterr().out
    assert "25 unreadable file(s) skipped" in out, out
    assert "a/note19.txt: not an image file Pillow can read" in out and "note20" not in out, out
    assert "... and 5 more" in out, out
    assert len(json.loads((tmp_path / "manifest.json").read_text())["skipped"]) == 25


def test_a_folder_split_in_advance_gives_its_classes_and_its_splits(tmp_path):
    """data/train/cat/..., data/test/cat/...: the classes are the folders inside the split
    folders (before, "train" and "test" were the two classes), the test/ folder is the test
    split, the validation split is drawn from train/; a file loose in a split folder (a
    competition's unlabelled test images) belongs to no class and is listed."""
    from leanfit.data.check import NO_CLASS
    from leanfit.train.trial import data_plan

    root = tmp_path / "data"
    write_image_folder(root / "train", {"cat": 10, "dog": 10}, size=8)
    write_image_folder(root / "test", {"cat": 3, "dog": 2}, size=8, seed=1)
    (root / "test" / "cat" / "img000.png").replace(root / "test" / "unlabelled.png")
    # (the shuffled splits, exact in their fractions; the stable ones are checked below)
    exp = folder_experiment(root, tmp_path, val_fraction=0.2, test_fraction=0.3, split="shuffled")
    ds = load_dataset(exp)
    assert ds.classes == ["cat", "dog"] and len(ds.labels) == 24
    assert ds.skipped == [("test/unlabelled.png", NO_CLASS)]
    from leanfit.data.sources import skipped_notice

    assert skipped_notice(ds.skipped).startswith("skipped 1 file(s)\n")  # readable, not used
    plan = data_plan(exp, ds)
    s = plan.splits
    assert len(s.test) == 4 and ds.labels[s.test].tolist() == [0, 0, 1, 1]  # test/, all of it
    assert len(s.val) == 4 and ds.labels[s.val].bincount().tolist() == [2, 2]  # 20% of train/
    assert len(s.train) == 16
    assert len(np.unique(np.concatenate([s.train, s.val, s.test]))) == 24
    stable = data_plan(folder_experiment(root, tmp_path, val_fraction=0.2), ds).splits
    assert np.array_equal(stable.test, s.test)  # test/, whole, and the validation split from
    assert set(ds.labels[stable.val].tolist()) == {0, 1}  # train/ with each class in it
    assert len(stable.train) + len(stable.val) == 20
    # the test images are test/'s: the same pixels, and none of them in train or validation
    from PIL import Image

    dog = np.asarray(Image.open(root / "test" / "dog" / "img000.png").resize((8, 8)))
    found = [
        i for i in range(24) if np.abs(ds.images[i].numpy().transpose(1, 2, 0) - dog).max() < 1
    ]
    assert found and set(found) <= set(s.test.tolist()), found

    # A validation folder (any case) is the validation split; the same files read as classes
    # are another dataset, not the cached one
    write_image_folder(root / "Validation", {"cat": 2, "dog": 3}, size=8, seed=2)
    ds = load_dataset(exp)
    s = data_plan(exp, ds).splits
    assert (len(s.train), len(s.val), len(s.test)) == (20, 5, 4)
    assert ds.split_folders == {"Validation": "val", "test": "test", "train": "train"}
    flat = load_dataset(folder_experiment(root, tmp_path, layout="classes"))
    assert flat.classes == ["Validation", "test", "train"] and flat.predefined_test is None

    # a folder split into train/ and val/ only: the test split is drawn from train/
    (root / "test").rename(tmp_path / "test-aside")
    s = data_plan(exp, load_dataset(exp)).splits
    assert (len(s.train), len(s.val), len(s.test)) == (14, 5, 6)

    # a watcher names a class folder still empty as the folder it is
    from leanfit.trigger.watch import empty_class_folders

    (root / "train" / "bird").mkdir()
    assert empty_class_folders(exp) == ["train/bird"]


@pytest.mark.parametrize(
    "folders, layout, expected",
    [
        (["train/cat", "train/dog", "bird"], "auto", "beside other folders (bird)"),
        (["train/cat", "train/dog", "training/cat"], "auto", "2 folders for the train split"),
        (["val/cat", "val/dog", "test/cat"], "auto", "no train/ (or training/) folder"),
        (["train/cat", "train/dog", "test/cat", "test/bird"], "auto", "['bird']"),
        (["cat", "dog"], "splits", "dataset.layout: splits, but"),
    ],
)
def test_a_folder_split_in_advance_that_cannot_be_read_so_names_the_fix(
    tmp_path, folders, layout, expected
):
    root = tmp_path / "data"
    for i, folder in enumerate(folders):
        write_image_folder(root / folder.rpartition("/")[0], {folder.rpartition("/")[2]: 2}, 8, i)
    with pytest.raises(DatasetError, match=re.escape(expected)):
        load_dataset(folder_experiment(root, tmp_path, layout=layout))
    assert not (tmp_path / "work" / "cache").exists() or not list(
        (tmp_path / "work" / "cache").glob("images-*")
    )


@pytest.mark.parametrize("name", ["pets.zip", "pets.tar.gz", "pets.csv"])
def test_a_file_given_as_the_folder_names_the_fix(tmp_path, name):
    (tmp_path / name).write_bytes(b"PK\x03\x04")
    with pytest.raises(DatasetError) as e:
        load_dataset(folder_experiment(tmp_path / name, tmp_path))
    assert "is a file; give a folder of class folders" in str(e.value)
    archive = name != "pets.csv"
    assert ("(unpack the archive and give its folder)" in str(e.value)) == archive, str(e.value)


def test_a_flat_folder_with_a_labels_csv_gives_each_file_its_class(tmp_path):
    """Images in one folder and a CSV of (file, label), as Kaggle ships them: a file is named
    with or without its extension, relative to the folder; files the CSV leaves out and rows
    that name no file are listed; the labels are part of the data's digest."""
    from leanfit.data.check import NO_FILE, NOT_LABELLED

    classes = write_image_folder(tmp_path / "sorted", {"cat": 4, "dog": 4}, size=8)
    flat = tmp_path / "flat"
    (flat / "batch2").mkdir(parents=True)
    rows = []
    for c in ("cat", "dog"):
        for i, f in enumerate(sorted((classes / c).iterdir())):
            rel = f"{'batch2/' if i == 3 else ''}{c}-{f.name}"
            f.replace(flat / rel)
            rows.append((rel if i % 2 else rel.rsplit(".", 1)[0], c))  # ids without extension
    (flat / "stray.png").write_bytes((flat / "cat-img000.png").read_bytes())
    rows.append(("gone.png", "dog"))
    # a spreadsheet's export: a byte-order mark, semicolons, an extra column
    csv = "\ufeffid;notes;label\n" + "".join(f"{n};x;{c}\n" for n, c in rows)
    (tmp_path / "labels.csv").write_text(csv, encoding="utf-8")
    exp = folder_experiment(flat, tmp_path, labels=str(tmp_path / "labels.csv"))
    ds = load_dataset(exp)
    assert ds.classes == ["cat", "dog"] and ds.labels.bincount().tolist() == [4, 4]
    assert sorted(ds.skipped) == [("gone.png", NO_FILE), ("stray.png", NOT_LABELLED)]
    from PIL import Image

    dog = np.asarray(Image.open(flat / "batch2" / "dog-img003.jpg"))
    [at] = [i for i in range(8) if np.abs(ds.images[i].numpy().transpose(1, 2, 0) - dog).max() < 1]
    assert ds.classes[int(ds.labels[at])] == "dog"

    relabelled = csv.replace("batch2/dog-img003.jpg;x;dog", "batch2/dog-img003.jpg;x;cat")
    assert relabelled != csv
    (tmp_path / "labels.csv").write_text(relabelled, encoding="utf-8")
    again = load_dataset(exp)
    assert again.digest != ds.digest and again.labels.bincount().tolist() == [5, 3]

    (tmp_path / "three.csv").write_text("name,kind,source\ncat-img000,cat,a\ndog-img000,dog,a\n")
    picked = folder_experiment(
        flat, tmp_path, labels=str(tmp_path / "three.csv"), label_columns=["name", "source"]
    )
    with pytest.raises(DatasetError, match=re.escape("1 label(s), ['a']; at least two")):
        load_dataset(picked)  # the columns named were read
    bird = folder_experiment(
        flat, tmp_path, labels=str(tmp_path / "labels.csv"), classes=["cat", "bird"]
    )
    with pytest.raises(DatasetError, match=re.escape("dataset.classes: no label ['bird'] in")):
        load_dataset(bird)


@pytest.mark.parametrize(
    "text, columns, expected",
    [
        (None, None, "does not exist or is not a file"),
        ("a,b,c\nx.png,y,z\n", None, "set dataset.label_columns: [FILE_COLUMN, LABEL_COLUMN]"),
        ("file,label\nx.png,cat\nx.png,dog\n", None, "line 3: 'x.png' is labelled both 'cat'"),
        ("file,label\nx.png,\n", None, "line 2: 'x.png' has an empty label"),
        ("file,label\nnowhere.png,cat\n", None, "none of the 1 files"),
        ("file,label\n", None, "has no rows under its header"),
        ("file,label\nx.png,cat\n", ["path", "label"], "['path'] not in the header"),
    ],
)
def test_a_labels_csv_that_cannot_be_read_names_the_line_and_the_fix(
    tmp_path, text, columns, expected
):
    root = write_image_folder(tmp_path / "imgs", {"a": 2}, size=8)
    (root / "a" / "img000.png").replace(root / "x.png")
    if text is not None:
        (tmp_path / "labels.csv").write_text(text)
    exp = folder_experiment(root, tmp_path, labels="labels.csv", label_columns=columns)
    exp = experiment_from_dict(exp.model_dump(mode="json"), tmp_path)
    with pytest.raises(DatasetError, match=re.escape(expected)):
        load_dataset(exp)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    "dataset, expected",
    [
        ({"source": "digits", "labels": "l.csv"}, "for source: imagefolder"),
        ({"source": "imagefolder", "path": "s3://b/p", "labels": "l.csv"}, "local folder only"),
        ({"source": "imagefolder", "path": "p", "label_columns": ["f", "l"]}, "is not set"),
        ({"source": "imagefolder", "path": "p", "labels": "l.csv", "layout": "splits"}, "use one"),
    ],
)
def test_the_file_refuses_labels_where_they_cannot_apply(dataset, expected):
    with pytest.raises(Exception, match=re.escape(expected)):
        experiment_from_dict({"name": "x", "dataset": dataset})


def test_an_iphones_heic_photo_decodes_as_its_png_would(tmp_path):
    """HEIC, the format an iPhone saves its photos in: Pillow alone cannot read it (each file was
    skipped as not an image); through pillow-heif it decodes to the pixels of the same picture
    saved as PNG, within the compression's error."""
    import pillow_heif
    from PIL import Image

    picture = np.zeros((32, 48, 3), dtype=np.uint8)
    picture[:16, :24] = (230, 40, 40)  # four flat quarters: red, green, blue, white
    picture[:16, 24:] = (40, 200, 40)
    picture[16:, :24] = (40, 40, 220)
    picture[16:, 24:] = 250
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.fromarray(picture).save(root / c / "photo.png")
        # written by pillow-heif itself, without registering its plugin in this process
        pillow_heif.from_pillow(Image.fromarray(picture)).save(root / c / "photo.heic", quality=95)
    ds = load_dataset(folder_experiment(root, tmp_path, image_size=16))
    assert not ds.skipped and len(ds.labels) == 4
    png, heic = ds.images[1].float(), ds.images[0].float()  # sorted: photo.heic, photo.png
    assert (png - heic).abs().mean() < 4, (png - heic).abs().mean()
    assert heic[0, :6, :6].mean() > 180 and heic[2, :6, :6].mean() < 90  # red where red was


# Image folders as QA pass 24 found them: linked folders, broken EXIF, names that are not UTF-8,
# files this user cannot read, named pipes, Unicode-form twins.


def test_an_ordinary_folders_digest_is_what_it_was(tmp_path):
    """The digest and the manifest feed saved searches' keys, caches, stable splits and the
    watcher: the changes for linked, unreadable and non-UTF-8 files leave an ordinary folder's
    digest as it was (pinned: computed before them)."""
    for rel, data in {"cat/a.png": b"a" * 10, "cat/sub/b.png": b"b", "dog/c.jpg": b"c" * 3}.items():
        (tmp_path / "d" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / rel).write_bytes(data)
    assert fingerprint.fingerprint_folder(tmp_path / "d") == (
        "6967cf338514ba6f32411ff40c1b5ea3d5cfbff5c269863168421d8aeb332dee"
    )


def test_linked_class_folders_and_linked_folders_in_them_are_read(tmp_path):
    """A class folder that is a link (to another disk), and a folder linked inside a class
    folder: the walk did not follow links, so such a dataset had the empty manifest's digest,
    shared by every one of them (dataset B got A's cached images), and a linked photos/ folder
    was silently left out. Links are followed now, each folder read once: a loop is listed."""
    store = write_image_folder(tmp_path / "store", {"red": 5, "blue": 4, "cat": 3, "dog": 3})
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    for name in ("red", "blue"):
        (tmp_path / "A" / name).symlink_to(store / name)
    for name in ("cat", "dog"):
        (tmp_path / "B" / name).symlink_to(store / name)
    a = load_dataset(folder_experiment(tmp_path / "A", tmp_path))
    b = load_dataset(folder_experiment(tmp_path / "B", tmp_path))
    assert a.classes == ["blue", "red"] and len(a.images) == 9
    assert b.classes == ["cat", "dog"] and len(b.images) == 6 and b.digest != a.digest
    write_image_folder(tmp_path / "more", {"red": 2}, seed=3)
    (tmp_path / "more" / "red" / "img000.png").rename(store / "red" / "new.png")
    assert load_dataset(folder_experiment(tmp_path / "A", tmp_path)).digest != a.digest

    # a folder linked inside a class folder, and a link back up (a loop): read once, listed
    root = write_image_folder(tmp_path / "ds", {"red": 2, "blue": 2})
    (root / "red" / "photos").symlink_to(store / "red")
    (root / "blue" / "loop").symlink_to(root / "blue")
    ds = load_dataset(folder_experiment(root, tmp_path))
    photos = {f"red/photos/{f.name}" for f in (store / "red").iterdir()}
    assert {f for f in ds.files if f.startswith("red/photos/")} == photos and len(photos) == 6
    assert dict(ds.skipped) == {"blue/loop": sources.READ_ALREADY}
    # predict reads a folder of linked class folders as training does ("no files" before)
    from leanfit.models.predict import image_files

    assert len(image_files([tmp_path / "A"])) == 10


def test_a_photo_whose_exif_pillow_cannot_write_back_is_read_unturned(tmp_path):
    """A JPEG with an EXIF tag of another type than the standard's: Pillow decodes it, but
    ImageOps.exif_transpose raised struct.error, and validate, run and predict ended in a
    traceback. Its pixels are used as stored."""
    from PIL import Image

    root = write_image_folder(tmp_path / "imgs", {"red": 3, "blue": 3})
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Canon"  # orientation: turn it; the camera's make
    Image.new("RGB", (40, 30), (200, 30, 40)).save(tmp_path / "ok.jpg", exif=exif)
    data = (tmp_path / "ok.jpg").read_bytes()
    # the make's tag renumbered as PhotometricInterpretation (a SHORT), still typed ASCII
    (root / "red" / "camera.jpg").write_bytes(
        data.replace(b"\x01\x0f\x00\x02", b"\x01\x06\x00\x02", 1)
    )
    ds = load_dataset(folder_experiment(root, tmp_path))
    assert "red/camera.jpg" in ds.files and ds.skipped == []


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    """'caf\\xe9.png' from an old zip: hashing its name raised UnicodeEncodeError (validate,
    run, watch). It is read now, its name hashed as its bytes on disk."""
    root = write_image_folder(tmp_path / "imgs", {"red": 3, "blue": 3})
    before = load_dataset(folder_experiment(root, tmp_path)).digest
    os.link(root / "red" / "img000.png", os.fsencode(root / "red") + b"/caf\xe9.png")
    ds = load_dataset(folder_experiment(root, tmp_path))
    assert len(ds.images) == 7 and "red/caf\udce9.png" in ds.files and ds.digest != before
    assert sources._path_key(Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xe9")))


def load_unprivileged(root: Path, tmp_path: Path, **dataset) -> dict:
    """load_dataset as a user who cannot read what its permissions forbid (the tests run as
    root here, who reads anything: its override capabilities dropped with setpriv)."""
    import json
    import subprocess
    import sys

    prefix = without_permission_bypass()
    code = f"""
import json
from leanfit.config import experiment_from_dict
from leanfit.data.sources import load_dataset
from leanfit.errors import DatasetError
exp = experiment_from_dict({{"name": "f", "work_dir": {str(tmp_path / "work")!r},
    "dataset": {{"source": "imagefolder", "path": {str(root)!r}, "image_size": 8, **{dataset!r}}}}})
try:
    ds = load_dataset(exp)
    print(json.dumps({{"files": ds.files, "skipped": ds.skipped, "digest": ds.digest,
                      "dropped": ds.dropped_classes}}))
except DatasetError as e:
    print(json.dumps({{"error": str(e)}}))
"""
    done = subprocess.run(
        [*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_files_and_folders_this_user_cannot_read_are_listed(tmp_path):
    """A file this user cannot read ended in a PermissionError traceback; a sub-folder was
    silently left out; a class folder was said to hold no files. Each is listed with why now,
    and the digest changes when it can be read."""
    root = write_image_folder(tmp_path / "imgs", {"red": 4, "blue": 4})
    write_image_folder(root / "red" / "more", {"x": 2})
    (root / "red" / "img001.jpg").chmod(0)
    (root / "red" / "more").chmod(0)
    try:
        got = load_unprivileged(root, tmp_path)
        assert dict(map(tuple, got["skipped"])) == {
            "red/img001.jpg": sources.UNREADABLE_FILE,
            "red/more": sources.UNREADABLE_FOLDER,
        }
        assert len(got["files"]) == 7
        (root / "red" / "img001.jpg").chmod(0o644)
        again = load_unprivileged(root, tmp_path)
        assert again["digest"] != got["digest"] and len(again["files"]) == 8
        (root / "blue").chmod(0)
        refused = load_unprivileged(root, tmp_path)["error"]
        assert "class folder(s) 'blue' (a folder this user cannot read" in refused, refused
        skipped = load_unprivileged(root, tmp_path, empty_classes="skip")
        assert skipped["error"].startswith("dataset.path:"), skipped  # (one class left)
    finally:
        for path in (root / "red" / "img001.jpg", root / "red" / "more", root / "blue"):
            path.chmod(0o755)


def test_a_named_pipe_is_listed_never_opened(tmp_path):
    """A named pipe in a class folder: hashing and decoding open()ed it, which blocks until
    something writes to it: validate hung, and predict hung past SIGTERM."""
    import threading

    from leanfit.models.predict import image_files

    root = write_image_folder(tmp_path / "imgs", {"red": 3, "blue": 3})
    os.mkfifo(root / "red" / "pipe.png")
    result: dict = {}

    def load():
        result["ds"] = load_dataset(folder_experiment(root, tmp_path))
        files = image_files([root / "red", root / "red" / "pipe.png"])
        result["decoded"] = sources._decode_one(files[-1], 8, 3)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "blocked on the named pipe"
    assert dict(result["ds"].skipped) == {"red/pipe.png": "not a regular file: a named pipe"}
    assert result["decoded"] == "not a regular file: a named pipe"


def test_dataset_path_with_a_tilde_is_the_home_folder_wherever_the_file_is(tmp_path, monkeypatch):
    """`dataset.path: ~/pics` was joined to the experiment file's folder before ~ was expanded:
    it worked only for a file given by its bare name from its own folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    exp = experiment_from_dict(
        {"name": "t", "dataset": {"source": "imagefolder", "path": "~/pics", "labels": "~/l.csv"}},
        tmp_path / "exp",
    )
    assert exp.dataset_path() == (tmp_path / "home" / "pics").resolve()
    assert exp.labels_path() == (tmp_path / "home" / "l.csv").resolve()


def test_class_folders_that_differ_only_in_unicode_form_are_refused(tmp_path):
    """'caf\\u00e9' (NFC) and 'cafe\\u0301' (NFD, made on a Mac) look alike: two classes of one
    name, which predict's folder score merged. Refused, naming both and the fix."""
    root = write_image_folder(tmp_path / "imgs", {"caf\u00e9": 3, "cafe\u0301": 3, "tea": 3})
    with pytest.raises(DatasetError) as e:
        load_dataset(folder_experiment(root, tmp_path))
    said = "class folders 'cafe\u0301' ('cafe\\u0301') and 'caf\u00e9' ('caf\\xe9')"
    assert said in str(e.value), str(e.value)
    assert "rename one, or merge them into one" in str(e.value)


def test_one_readable_class_names_the_unreadable_one_and_its_files(tmp_path):
    """Where only one class had a readable image, the error named neither the class nor why
    its files could not be read."""
    root = write_image_folder(tmp_path / "imgs", {"red": 3})
    (root / "blue").mkdir()
    (root / "blue" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"class\(es\) \['blue'\] .* hold no readable image"):
        load_dataset(folder_experiment(root, tmp_path))


def test_a_class_folder_given_as_the_dataset_says_to_give_the_folder_above(tmp_path):
    root = write_image_folder(tmp_path / "imgs", {"red": 3})
    with pytest.raises(DatasetError, match="holds 3 file.s. and no class folders.*folder above"):
        load_dataset(folder_experiment(root / "red", tmp_path))


def test_windows_system_folders_are_ignored_whatever_their_case(tmp_path):
    assert fingerprint.ignored("System Volume Information") and fingerprint.ignored("$Recycle.Bin")
    assert fingerprint.ignored("thumbs.db") and not fingerprint.ignored("thumbs")
