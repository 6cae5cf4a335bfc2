"""Shared by the tests: the project on the path, the slow marker, the configuration, data and processes."""
import os
import subprocess
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
    config.addinivalue_line("markers", "slow: runs the notebook, make, other Python processes or "
                            "training in worker processes (pytest -m 'not slow' leaves them out; "
                            "make test runs them)")


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


# Processes started by the tests (test_runs, test_workers, test_project) -------------------

def python(code, **kwargs):
    """Start `code` in a fresh Python that imports the project as the tests do."""
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT / "tests", text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


def children(pid):
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def process_alive(pid):
    """True while the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
