"""sources.py: the emoji dataset from the hub, the mirror or a parquet file; the keyword subset; decoding pictures."""
import os
import time

import pytest
import torch
from PIL import Image

import sources
from conftest import write_parquet


@pytest.fixture
def tiny_parquet(tmp_path):
    """A parquet in the hub's schema with three small coloured squares."""
    from PIL import Image

    return write_parquet(tmp_path / "tiny.parquet", [
        (text, Image.new("RGB", (32, 32), colour))
        for text, colour in [("red face", "red"), ("blue face", "blue"), ("green cat", "green")]])


def point_hub_at(monkeypatch, url):
    """Send huggingface_hub to `url`, as HF_ENDPOINT does when set before the import."""
    import huggingface_hub

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)


@pytest.fixture
def offline_hub(monkeypatch):
    """Point the hub check at a closed local port, so it fails at once."""
    point_hub_at(monkeypatch, "http://127.0.0.1:9")


# The mirror and parquet files ----------------------------------------------------------------

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


def test_a_parquet_source_under_the_home_folder(tiny_parquet, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_parquet.parent))
    dataset, used = sources.load_emoji_dataset("~/tiny.parquet")
    assert len(dataset) == 3 and used == "~/tiny.parquet"


def test_a_parquet_replaced_with_the_same_time_is_read_again(tmp_path):
    from PIL import Image

    square = Image.new("RGB", (8, 8), "red")
    path = write_parquet(tmp_path / "data.parquet", [("a face", square)] * 2)
    assert len(sources.load_emoji_dataset(str(path))[0]) == 2
    stamp = os.stat(path).st_mtime_ns
    write_parquet(path, [("a face", square)] * 5)
    os.utime(path, ns=(stamp, stamp))
    assert len(sources.load_emoji_dataset(str(path))[0]) == 5


# The hub, and falling back to the mirror when it fails ---------------------------------------

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


# Sources that cannot be used say why ---------------------------------------------------------

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


def test_empty_source_says_it_has_no_rows(tmp_path):
    path = write_parquet(tmp_path / "empty.parquet", [])
    with pytest.raises(ValueError, match="has no rows"):
        sources.load_emoji_dataset(str(path))


# The subset: rows by keyword -----------------------------------------------------------------

def test_subset_rules():
    texts = ["cat face", "surface tension", "face palm", "dog", "man running", "Woman", None]
    assert sources.select_subset(texts, ["face"])[0] == [0, 2]
    assert sources.select_subset(texts, ["face"], whole_word=False)[0] == [0, 1, 2]
    assert sources.select_subset(texts, ["dog", "man"])[0] == [3, 4]
    assert sources.select_subset(texts, "woman")[0] == [5]


def test_exclusion_drops_whole_words_and_counts_them():
    texts = ["cat face", "grinning face", "face palm", "palmtree face", "clock face one", "sunglasses face"]
    chosen, dropped = sources.select_subset(texts, ["face"], exclude=["cat", "palm", "clock", "sun"])
    assert chosen == [1, 3, 5]           # "palmtree" and "sunglasses" are other words
    assert dropped == {"cat": 1, "palm": 1, "clock": 1}
    with pytest.raises(ValueError, match="once exclude"):
        sources.select_subset(["cat face"], ["face"], exclude=["cat"])


def test_keyword_matching_nothing_names_words_that_occur():
    with pytest.raises(ValueError, match="match no emoji text.*face"):
        sources.select_subset(["cat face", "dog face"], ["zzz"])


def test_texts_that_are_not_strings_are_named():
    with pytest.raises(ValueError, match="holds no strings .only bytes.*UTF-8"):
        sources.select_subset([b"grinning face", b"\xff\xfe"], ["face"])


# Decoding the pictures -----------------------------------------------------------------------

def test_undecodable_image_and_bad_text_are_skipped_and_counted(tmp_path):
    square = Image.new("RGB", (32, 32), "red")
    path = write_parquet(tmp_path / "bad_rows.parquet", [
        ("red face", square), ("broken face", b"\x89PNG broken"), (None, square),
        ("green cat", square)])
    dataset, _ = sources.load_emoji_dataset(str(path))
    images, texts, skipped = sources.decode_images(dataset, range(4), image_size=8)
    assert skipped == 2 and texts == ["red face", "green cat"] and len(images) == 2
    chosen, _ = sources.select_subset(dataset["text"], ["face"])
    assert chosen == [0, 1]   # the row without a text is never selected


def test_sixteen_bit_images_keep_their_grey_level(tmp_path):
    import numpy as np

    grey = Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16))
    assert grey.mode.startswith("I")
    path = write_parquet(tmp_path / "deep.parquet", [("grey face", grey)])
    dataset, _ = sources.load_emoji_dataset(str(path))
    images, _, skipped = sources.decode_images(dataset, [0], image_size=8)
    assert skipped == 0 and abs(float(images.float().mean()) - 127.5) < 2


def test_an_image_too_large_to_decode_is_skipped_like_a_broken_one(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # a 100x100 PNG now counts as a bomb
    path = write_parquet(tmp_path / "bomb.parquet", [("big face", Image.new("RGB", (100, 100), "red")),
                                                     ("small face", Image.new("RGB", (20, 20), "red"))])
    images, texts, skipped = sources.decode_images(sources.load_emoji_dataset(str(path))[0], [0, 1])
    assert texts == ["small face"] and skipped == 1


def test_a_picture_that_is_not_square_keeps_its_shape_and_is_noted(tmp_path, capsys):
    from PIL import Image

    path = write_parquet(tmp_path / "tall.parquet", [("tall face", Image.new("RGB", (17, 33), "red"))])
    images, _, _ = sources.decode_images(sources.load_emoji_dataset(str(path))[0], [0], image_size=32)
    assert "1 image(s) are not square, e.g. 'tall face' (17x33)" in capsys.readouterr().out
    assert (images[0, :, :, :4] == 255).all() and (images[0, 1:, :, 14:18] < 30).all()   # white sides, red middle


def test_float_pictures_are_not_decoded_black():
    import numpy as np
    from PIL import Image

    for value, expected in ((0.5, 128), (200.0, 200)):
        picture = Image.fromarray(np.full((4, 4), value, dtype=np.float32), "F")
        assert abs(int(np.asarray(sources.to_rgb(picture))[0, 0, 0]) - expected) <= 1


def test_image_paths_instead_of_bytes_are_named(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"image": ["pictures/grinning.png"] * 3, "text": ["a face"] * 3}).to_parquet(
        str(tmp_path / "paths.parquet"))
    dataset, _ = sources.load_emoji_dataset(str(tmp_path / "paths.parquet"))
    with pytest.raises(ValueError, match=r"the first because its image is a file path "
                                         r"\('pictures/grinning.png'\) instead of the picture's bytes"):
        sources.decode_images(dataset, [0, 1, 2])
