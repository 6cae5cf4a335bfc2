import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import helpers  # noqa: E402


@pytest.fixture(scope="session")
def mirror():
    dataset, _ = helpers.load_emoji_dataset("mirror")
    return dataset


@pytest.fixture(scope="session")
def face_data(mirror):
    """The face subset, labelled, split and augmented as the notebook does it."""
    return helpers.prepare_data(mirror, ["face"], seed=0, class_words=helpers.FACE_CLASSES)


@pytest.fixture
def tiny_parquet(tmp_path):
    """A parquet in the hub's schema with three small coloured squares."""
    from datasets import Dataset
    import io
    from PIL import Image

    rows = {"image": [], "text": []}
    for text, colour in [("red face", "red"), ("blue face", "blue"), ("green cat", "green")]:
        png = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(png, format="PNG")
        rows["image"].append({"bytes": png.getvalue(), "path": None})
        rows["text"].append(text)
    path = tmp_path / "tiny.parquet"
    Dataset.from_dict(rows, features=helpers.hub_features()).to_parquet(str(path))
    return path


@pytest.fixture
def offline_hub(monkeypatch):
    """Point the hub check at a closed local port, so it fails at once."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
