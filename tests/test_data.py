"""helpers.py's data pipeline: the subset, its class labels, the splits and the augmentation."""
import hashlib
from dataclasses import replace

import pytest
import torch

import helpers
from conftest import config


# The subset (sources.py gives it; its numbers here) -------------------------------------------

def test_face_subset_is_smiley_faces(face_data):
    info = face_data.info
    assert info["subset_size"] == 105 and info["matched"] == 170
    assert sum(info["excluded"].values()) == 65 and info["excluded"]["clock"] == 24
    texts = [t for s in face_data.splits.values() for t in s.texts]
    assert not [t for t in texts if "cat" in t.split() or "clock" in t.split()]
    assert info["split_sizes"] == {"train": 61, "val": 22, "test": 22}
    assert info["augmented_sizes"] == {"train": 600, "val": 200, "test": 200}


# Class labels --------------------------------------------------------------------------------

def test_class_rules_label_in_order_with_case_folding():
    labels, names = helpers.label_by_rules(
        ["Grinning face", "crying face", "face with tears of joy", "neutral face", "sleepy face",
         "sleeping face", "smiling face with tear", "disappointed but relieved face",
         "face with cowboy hat"], config().class_words)
    assert names == ["smile", "frown", "other"]
    assert labels.tolist() == [0, 1, 0, 2, 2, 2, 0, 1, 2]


def test_face_classes_are_large_enough_to_split(face_data):
    assert all(size >= 15 for size in face_data.info["class_sizes"].values())


def test_a_class_that_no_emoji_falls_into_is_refused_before_training(mirror):
    rules = {"smile": ["smil", "grin"], "frown": ["frown"], "other": []}
    with pytest.raises(ValueError, match=r"class 'other' has 0 emoji \[\]"):
        helpers.prepare_data(mirror, config(keywords=["grinning", "frowning"], class_words=rules))


# Splits --------------------------------------------------------------------------------------

def test_splits_are_disjoint_by_text_and_pixels(face_data):
    digest = lambda image: hashlib.sha256(image.numpy().tobytes()).hexdigest()
    splits = face_data.splits.values()
    texts = [set(s.texts) for s in splits]
    pixels = [{digest(im) for im in s.originals} for s in splits]
    for group in (texts, pixels):
        assert not group[0] & group[1] and not group[0] & group[2] and not group[1] & group[2]


def test_split_is_stratified_and_follows_60_20_20(face_data):
    for c in range(len(face_data.class_names)):
        counts = [int((s.labels == c).sum()) for s in face_data.splits.values()]
        total = sum(counts)
        assert all(n >= 1 for n in counts)
        assert abs(counts[1] - 0.2 * total) <= 1 and abs(counts[2] - 0.2 * total) <= 1


def test_split_seed():
    labels, texts = torch.tensor([0] * 25 + [1] * 25), [f"face {i}" for i in range(50)]
    split = lambda seed: helpers.split_indices(labels, ["glad", "sad"], texts, seed)
    assert split(3) == split(3) and split(3) != split(4)
    assert {k: len(v) for k, v in split(3).items()} == {"train": 30, "val": 10, "test": 10}


def test_too_small_class_is_named_with_its_members():
    labels = torch.tensor([0] * 10 + [1] * 2)
    texts = [f"face {i}" for i in range(12)]
    with pytest.raises(ValueError, match=r"class 'sad' has 2 emoji \['face 10', 'face 11'\]: too few"):
        helpers.split_indices(labels, ["glad", "sad"], texts, seed=0)
    with pytest.raises(ValueError, match=r"class 'none' has 0 emoji \[\]: too few"):
        helpers.split_indices(labels * 0, ["glad", "none"], texts, seed=0)


# Augmentation --------------------------------------------------------------------------------

def test_augmented_splits_shape_range_and_origin(face_data):
    for split in face_data.splits.values():
        x = split.x
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 64, 64)
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        n = len(split.originals)
        assert torch.equal(x[:n], helpers.to_float(split.originals))
        assert torch.equal(split.y, split.labels[split.origin])


def test_augmentation_is_seeded():
    images = (torch.rand(4, 3, 16, 16) * 255).to(torch.uint8)
    a, _ = helpers.augment_to(images, 20, seed=5)
    b, _ = helpers.augment_to(images, 20, seed=5)
    c, _ = helpers.augment_to(images, 20, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augmentation_keeps_the_background_pure_white():
    """A red disc on white: after augmentation every pixel far from the disc is exactly 255."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2) < 12 ** 2
    image = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)
    image[0, 1:, disc] = 0
    copies, _ = helpers.augment_to(image, 50, seed=0)
    far = ((yy - 32) ** 2 + (xx - 32) ** 2) > 22 ** 2   # beyond any shift, scale or rotation
    assert (copies[:, :, far] == 255).all()
    assert (copies[:, :, :2, :2] == 255).all() and (copies[:, :, -2:, -2:] == 255).all()
    assert (copies[1:, 1, 28:36, 28:36] < 60).all()     # the disc is still there, still red


def test_the_fixed_copies_and_the_training_batches_share_one_augmentation(monkeypatch):
    real, calls = helpers.augment, []
    monkeypatch.setattr(helpers, "augment", lambda x, generator: calls.append(len(x)) or real(x, generator))
    helpers.augment_to((torch.rand(3, 3, 16, 16) * 255).to(torch.uint8), 5, seed=0)
    assert calls == [2]                        # the two fixed copies beyond the three originals
    x, calls[:] = torch.rand(8, 3, 16, 16), []
    recipe = helpers.TrainConfig(steps=3, batch_size=4, lr=1e-3, weight_decay=0.0, seed=0)
    model = helpers.build_model(helpers.AEConfig(latent_dim=4, width=4, image_size=16))
    helpers.train(model, x, x[:2], recipe, device=torch.device("cpu"))
    assert calls == [4, 4, 4]                  # every training batch, freshly distorted
    calls.clear()
    helpers.train(model, x, x[:2], replace(recipe, augment=False), device=torch.device("cpu"))
    assert calls == []


def test_bigger_split_than_target_keeps_its_originals():
    images = (torch.rand(7, 3, 8, 8) * 255).to(torch.uint8)
    out, origin = helpers.augment_to(images, 5, seed=0)
    assert torch.equal(out, images) and origin.tolist() == list(range(7))
