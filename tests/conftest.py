import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import helpers  # noqa: E402
import sources  # noqa: E402
import runs  # noqa: E402

# The tests write their runs into temporary folders, outside the repository, on purpose.
os.environ[runs.OUTSIDE_REPO_OVERRIDE] = "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs the notebook or trains in worker processes "
                            "(pytest -m 'not slow' leaves them out)")


def config(**changes):
    """The notebook's default configuration, with changes; the mirror as the source."""
    return runs.RunConfig.defaults(**({"source": "mirror"} | changes))


@pytest.fixture(scope="session")
def mirror():
    dataset, _ = sources.load_emoji_dataset("mirror")
    return dataset


@pytest.fixture(scope="session")
def face_data(mirror):
    """The face subset, labelled, split and augmented as the notebook does it."""
    return helpers.prepare_data(mirror, config())


def write_parquet(path, rows):
    """A parquet in the hub's schema from (text, PIL image or raw bytes) rows."""
    import io

    from datasets import Dataset

    table = {"image": [], "text": []}
    for text, image in rows:
        if not isinstance(image, bytes):
            png = io.BytesIO()
            image.save(png, format="PNG")
            image = png.getvalue()
        table["image"].append({"bytes": image, "path": None})
        table["text"].append(text)
    Dataset.from_dict(table, features=sources.hub_features()).to_parquet(str(path))
    return path


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
