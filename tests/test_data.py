"""The data pipeline: sources, subsets, splits, augmentation."""
import hashlib
import time

import pytest
import torch

import helpers


def test_mirror_has_the_hubs_schema(mirror):
    assert len(mirror) >= 1900
    assert mirror.features == helpers.hub_features()
    assert mirror[0]["image"].mode == "RGB"
    assert mirror[0]["text"] == mirror[0]["text"].lower()


def test_parquet_path_route(tiny_parquet):
    dataset, used = helpers.load_emoji_dataset(str(tiny_parquet))
    assert used == str(tiny_parquet)
    assert dataset["text"] == ["red face", "blue face", "green cat"]
    images, texts, skipped = helpers.decode_images(dataset, [0, 2], image_size=16)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    assert images[0, 0].float().mean() > 250 and images[0, 2].float().mean() < 5
    assert skipped == 0


def test_auto_falls_back_to_mirror_quickly(offline_hub):
    start = time.perf_counter()
    dataset, used = helpers.load_emoji_dataset("auto")
    assert used == "mirror" and len(dataset) >= 1900
    assert time.perf_counter() - start < 10


def test_hub_unreachable_says_use_mirror(offline_hub):
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="source='mirror'"):
        helpers.load_emoji_dataset("hub")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("source, error, hint", [
    ("imagenet", ValueError, "Use one of"),
    ("missing/file.parquet", FileNotFoundError, "no such parquet"),
])
def test_bad_sources_are_named(source, error, hint):
    with pytest.raises(error, match=hint):
        helpers.load_emoji_dataset(source)


def test_missing_mirror_says_make_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        helpers.load_emoji_dataset("mirror", mirror_path=tmp_path / "none.parquet")


def test_unreadable_parquet(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file at all")
    with pytest.raises(ValueError, match="could not be read as parquet"):
        helpers.load_emoji_dataset(str(broken))


def test_parquet_without_image_column(tmp_path):
    from datasets import Dataset

    path = tmp_path / "texts.parquet"
    Dataset.from_dict({"text": ["a face"]}).to_parquet(str(path))
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['image'\]"):
        helpers.load_emoji_dataset(str(path))


def test_undecodable_image_is_skipped_and_counted(tiny_parquet, tmp_path):
    from datasets import Dataset

    dataset, _ = helpers.load_emoji_dataset(str(tiny_parquet))
    rows = dataset.cast_column("image", helpers.hub_features()["image"].__class__(decode=False))
    rows = rows.to_dict()
    rows["image"][1] = {"bytes": b"\x89PNG broken", "path": None}
    path = tmp_path / "one_broken.parquet"
    Dataset.from_dict(rows, features=helpers.hub_features()).to_parquet(str(path))
    dataset, _ = helpers.load_emoji_dataset(str(path))
    images, texts, skipped = helpers.decode_images(dataset, range(3), image_size=8)
    assert skipped == 1 and texts == ["red face", "green cat"] and len(images) == 2


def test_subset_rules():
    texts = ["cat face", "surface tension", "face palm", "dog", "man running", "woman"]
    assert helpers.select_subset(texts, ["face"]) == [0, 2]
    assert helpers.select_subset(texts, ["face"], whole_word=False) == [0, 1, 2]
    assert helpers.select_subset(texts, ["dog", "man"]) == [3, 4]
    assert helpers.select_subset(texts, "woman") == [5]


def test_keyword_matching_nothing_names_words_that_occur():
    with pytest.raises(ValueError, match="match no emoji text.*face"):
        helpers.select_subset(["cat face", "dog face"], ["zzz"])


def test_face_subset_sizes(face_data):
    splits, info = face_data
    assert info["subset_size"] == 170
    assert info["split_sizes"] == {"train": 102, "val": 34, "test": 34}
    assert info["augmented_sizes"] == {"train": 600, "val": 200, "test": 200}


def test_splits_are_disjoint_by_text_and_pixels(face_data):
    splits, _ = face_data
    digest = lambda image: hashlib.sha256(image.numpy().tobytes()).hexdigest()
    texts = [set(s["texts"]) for s in splits.values()]
    pixels = [{digest(im) for im in s["originals"]} for s in splits.values()]
    for group in (texts, pixels):
        assert not group[0] & group[1] and not group[0] & group[2] and not group[1] & group[2]


def test_split_is_stratified_and_follows_60_20_20(face_data):
    splits, _ = face_data
    for c in range(3):
        counts = [int((s["labels"] == c).sum()) for s in splits.values()]
        total = sum(counts)
        assert all(n >= 1 for n in counts)
        assert abs(counts[1] - 0.2 * total) <= 1 and abs(counts[2] - 0.2 * total) <= 1


def test_split_seed():
    same = helpers.split_indices(50, seed=3) == helpers.split_indices(50, seed=3)
    other = helpers.split_indices(50, seed=3) != helpers.split_indices(50, seed=4)
    assert same and other
    sizes = {k: len(v) for k, v in helpers.split_indices(50, seed=3).items()}
    assert sizes == {"train": 30, "val": 10, "test": 10}


def test_too_small_subset_or_class():
    with pytest.raises(ValueError, match="too few to split 60/20/20"):
        helpers.split_indices(2, seed=0)
    labels = torch.tensor([0] * 10 + [1] * 2)
    with pytest.raises(ValueError, match="class 1 has 2 emoji"):
        helpers.split_indices(12, seed=0, labels=labels)


def test_augmentation_targets_shape_range_and_determinism(face_data):
    splits, _ = face_data
    for split in splits.values():
        x = split["x"]
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 64, 64)
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        n = len(split["originals"])
        assert torch.equal(split["x"][:n], helpers.to_float(split["originals"]))
        assert torch.equal(split["y"], split["labels"][split["origin"]])
    originals = splits["val"]["originals"]
    a, _, _ = helpers.augment_to(originals, 100, seed=5)
    b, _, _ = helpers.augment_to(originals, 100, seed=5)
    c, _, _ = helpers.augment_to(originals, 100, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_class_rules_label_in_order():
    labels, names = helpers.label_by_rules(
        ["grinning face", "crying cat face", "cat face with tears of joy", "robot face"],
        helpers.FACE_CLASSES)
    assert names == ["happy", "unhappy", "other"]
    assert labels.tolist() == [0, 1, 0, 2]
