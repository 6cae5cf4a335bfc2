"""The data pipeline: sources, subsets, splits, augmentation."""
import hashlib
import time
from dataclasses import replace

import pytest
import torch
from PIL import Image

import helpers
import sources
from conftest import config, point_hub_at, write_parquet


def test_mirror_has_the_hubs_schema(mirror):
    assert len(mirror) >= 1900
    assert mirror.features == sources.hub_features()
    assert mirror[0]["image"].mode == "RGB"
    assert mirror[0]["text"] == mirror[0]["text"].lower()


def test_parquet_path_route(tiny_parquet):
    dataset, used = sources.load_emoji_dataset(str(tiny_parquet))
    assert used == str(tiny_parquet)
    assert dataset["text"] == ["red face", "blue face", "green cat"]
    images, texts, skipped = sources.decode_images(dataset, [0, 2], image_size=16)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    assert images[0, 0].float().mean() > 250 and images[0, 2].float().mean() < 5
    assert skipped == 0


def test_auto_falls_back_to_mirror_quickly(offline_hub):
    start = time.perf_counter()
    dataset, used = sources.load_emoji_dataset("auto")
    assert used == "mirror" and len(dataset) >= 1900
    assert time.perf_counter() - start < 10


def test_auto_asks_the_hub_once_and_honours_offline_mode(monkeypatch, capsys):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    real = sources.hub_problem
    monkeypatch.setattr(sources, "hub_problem", lambda timeout: calls.append(timeout) or real(timeout))
    dataset, used = sources.load_emoji_dataset("auto")
    assert used == "mirror" and len(calls) == 1
    assert "OfflineModeIsEnabled" in capsys.readouterr().out


def test_hub_unreachable_says_use_mirror(offline_hub):
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="source='mirror'"):
        sources.load_emoji_dataset("hub")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("source, error, hint", [
    ("imagenet", ValueError, "Use one of"),
    ("missing/file.parquet", FileNotFoundError, "no such parquet"),
])
def test_bad_sources_are_named(source, error, hint):
    with pytest.raises(error, match=hint):
        sources.load_emoji_dataset(source)


def test_missing_mirror_says_make_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        sources.load_emoji_dataset("mirror", mirror_path=tmp_path / "none.parquet")


def test_unreadable_parquet(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file at all")
    with pytest.raises(ValueError, match="could not be read as parquet"):
        sources.load_emoji_dataset(str(broken))


def test_parquet_without_image_column(tmp_path):
    from datasets import Dataset

    path = tmp_path / "texts.parquet"
    Dataset.from_dict({"text": ["a face"]}).to_parquet(str(path))
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['image'\]"):
        sources.load_emoji_dataset(str(path))


def test_undecodable_image_and_bad_text_are_skipped_and_counted(tmp_path):
    square = Image.new("RGB", (32, 32), "red")
    path = write_parquet(tmp_path / "bad_rows.parquet", [
        ("red face", square), ("broken face", b"\x89PNG broken"), (None, square),
        ("green cat", square)])
    dataset, _ = sources.load_emoji_dataset(str(path))
    images, texts, skipped = sources.decode_images(dataset, range(4), image_size=8)
    assert skipped == 2 and texts == ["red face", "green cat"] and len(images) == 2
    chosen, _ = helpers.select_subset(dataset["text"], ["face"])
    assert chosen == [0, 1]   # the row without a text is never selected


def test_sixteen_bit_images_keep_their_grey_level(tmp_path):
    import numpy as np

    grey = Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16))
    assert grey.mode.startswith("I")
    path = write_parquet(tmp_path / "deep.parquet", [("grey face", grey)])
    dataset, _ = sources.load_emoji_dataset(str(path))
    images, _, skipped = sources.decode_images(dataset, [0], image_size=8)
    assert skipped == 0 and abs(float(images.float().mean()) - 127.5) < 2


def test_empty_source_says_it_has_no_rows(tmp_path):
    path = write_parquet(tmp_path / "empty.parquet", [])
    with pytest.raises(ValueError, match="has no rows"):
        sources.load_emoji_dataset(str(path))


def test_subset_rules():
    texts = ["cat face", "surface tension", "face palm", "dog", "man running", "Woman", None]
    assert helpers.select_subset(texts, ["face"])[0] == [0, 2]
    assert helpers.select_subset(texts, ["face"], whole_word=False)[0] == [0, 1, 2]
    assert helpers.select_subset(texts, ["dog", "man"])[0] == [3, 4]
    assert helpers.select_subset(texts, "woman")[0] == [5]


def test_exclusion_drops_whole_words_and_counts_them():
    texts = ["cat face", "grinning face", "face palm", "palmtree face", "clock face one", "sunglasses face"]
    chosen, dropped = helpers.select_subset(texts, ["face"], exclude=["cat", "palm", "clock", "sun"])
    assert chosen == [1, 3, 5]           # "palmtree" and "sunglasses" are other words
    assert dropped == {"cat": 1, "palm": 1, "clock": 1}
    with pytest.raises(ValueError, match="once exclude"):
        helpers.select_subset(["cat face"], ["face"], exclude=["cat"])


def test_keyword_matching_nothing_names_words_that_occur():
    with pytest.raises(ValueError, match="match no emoji text.*face"):
        helpers.select_subset(["cat face", "dog face"], ["zzz"])


def test_face_subset_is_smiley_faces(face_data):
    info = face_data.info
    assert info["subset_size"] == 105 and info["matched"] == 170
    assert sum(info["excluded"].values()) == 65 and info["excluded"]["clock"] == 24
    texts = [t for s in face_data.splits.values() for t in s.texts]
    assert not [t for t in texts if "cat" in t.split() or "clock" in t.split()]
    assert info["split_sizes"] == {"train": 61, "val": 22, "test": 22}
    assert info["augmented_sizes"] == {"train": 600, "val": 200, "test": 200}


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
    same = helpers.split_indices(50, seed=3) == helpers.split_indices(50, seed=3)
    other = helpers.split_indices(50, seed=3) != helpers.split_indices(50, seed=4)
    assert same and other
    sizes = {k: len(v) for k, v in helpers.split_indices(50, seed=3).items()}
    assert sizes == {"train": 30, "val": 10, "test": 10}


def test_too_small_subset_or_class_is_named_with_its_members():
    with pytest.raises(ValueError, match="too few to split 60/20/20"):
        helpers.split_indices(2, seed=0)
    labels = torch.tensor([0] * 10 + [1] * 2)
    texts = [f"face {i}" for i in range(12)]
    with pytest.raises(ValueError, match=r"class 'sad' has 2 emoji \['face 10', 'face 11'\]"):
        helpers.split_indices(12, seed=0, labels=labels, class_names=["glad", "sad"], texts=texts)


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


def test_class_rules_label_in_order_with_case_folding():
    labels, names = helpers.label_by_rules(
        ["Grinning face", "crying face", "face with tears of joy", "neutral face", "sleepy face",
         "sleeping face", "smiling face with tear", "disappointed but relieved face",
         "face with cowboy hat"], config().class_words)
    assert names == ["smile", "frown", "other"]
    assert labels.tolist() == [0, 1, 0, 2, 2, 2, 0, 1, 2]


def test_face_classes_are_large_enough_to_split(face_data):
    assert all(size >= 15 for size in face_data.info["class_sizes"].values())


def test_bootstrap_is_seeded_and_resamples_emoji_not_images():
    groups = torch.arange(12).repeat_interleave(5)
    values = groups.double() ** 1.5 + torch.rand(60, generator=torch.Generator().manual_seed(0))
    first = helpers.bootstrap(values, groups, seed=3)
    assert first == helpers.bootstrap(values, groups, seed=3)
    assert first["emoji"] == 12 and first["images"] == 60
    assert first["low"] < first["mean"] < first["high"]
    assert first != helpers.bootstrap(values, groups, seed=4)


@pytest.fixture
def endpoint(monkeypatch):
    """A local HTTP endpoint for the hub check that answers 404, or accepts and never answers."""
    import http.server
    import socket
    import threading

    servers = []

    def start(kind):
        if kind == "silent":
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            servers.append(listener)
            port = listener.getsockname()[1]
        else:
            class NotFound(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_error(404)

                def log_message(self, *args):
                    pass

            server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            port = server.server_address[1]
        point_hub_at(monkeypatch, f"http://127.0.0.1:{port}")

    yield start
    for server in servers:
        (server.close if isinstance(server, socket.socket) else server.shutdown)()


@pytest.mark.parametrize("kind", ["404", "silent"])
def test_auto_falls_back_when_the_hub_does_not_serve_the_dataset(endpoint, kind, capsys):
    endpoint(kind)
    start = time.perf_counter()
    dataset, used = sources.load_emoji_dataset("auto", hub_timeout=1.0)
    assert used == "mirror" and time.perf_counter() - start < 10
    assert "using the offline mirror, because" in capsys.readouterr().out
    with pytest.raises(ConnectionError, match="did not answer"):
        sources.load_emoji_dataset("hub", hub_timeout=1.0)


# What a student's or a hostile file's data does (issue 31) ---------------------------------

def test_a_class_that_no_emoji_falls_into_is_refused_before_training(mirror):
    rules = {"smile": ["smil", "grin"], "frown": ["frown"], "other": []}
    with pytest.raises(ValueError, match=r"class 'other' has 0 emoji \[\]"):
        helpers.prepare_data(mirror, config(keywords=["grinning", "frowning"], class_words=rules))


def test_image_paths_instead_of_bytes_are_named(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"image": ["pictures/grinning.png"] * 3, "text": ["a face"] * 3}).to_parquet(
        str(tmp_path / "paths.parquet"))
    dataset, _ = sources.load_emoji_dataset(str(tmp_path / "paths.parquet"))
    with pytest.raises(ValueError, match=r"the first because its image is a file path "
                                         r"\('pictures/grinning.png'\) instead of the picture's bytes"):
        sources.decode_images(dataset, [0, 1, 2])


def test_names_with_odd_spaces_still_make_the_pairs(mirror):
    noisy = mirror.map(lambda row: {"text": row["text"].replace(" ", "\u00a0") + " "})
    pairs = helpers.find_pairs(noisy)
    assert pairs.names == helpers.find_pairs(mirror).names and len(pairs.names) == 8


def test_a_parquet_source_under_the_home_folder(tiny_parquet, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_parquet.parent))
    dataset, used = sources.load_emoji_dataset("~/tiny.parquet")
    assert len(dataset) == 3 and used == "~/tiny.parquet"
