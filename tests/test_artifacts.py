"""The committed outputs: they exist, match the code that made them, and reproduce."""
import json

import pytest
import torch

import helpers
from conftest import ROOT

METRICS = ROOT / "report" / "metrics.json"
NOTEBOOK = ROOT / "homework2.ipynb"
LABELS = ["1a", "1b", "1c", "1d", "1e", "1f", "1g", "2a", "2b", "2c", "2d", "2e", "3a", "3b", "3c"]


@pytest.fixture(scope="module")
def metrics():
    return json.loads(METRICS.read_text())


@pytest.fixture(scope="module")
def run_data(metrics):
    """The split the committed run used, rebuilt from its recorded parameters."""
    params = metrics["parameters"]
    dataset, _ = helpers.load_emoji_dataset(metrics["data"]["source"])
    splits, _ = helpers.prepare_data(dataset, params["keywords"], params["seed"],
                                     class_words=helpers.FACE_CLASSES)
    return splits


def test_metrics_hold_every_reported_key(metrics):
    for section, keys in {
        "data": ["source", "subset_size", "split_sizes"],
        "part1": ["latent_dim", "test_mse", "pca_test_mse", "sweep"],
        "part2": ["lambda", "test_mse", "test_accuracy", "majority_baseline_accuracy", "per_seed"],
        "part3": ["attribute", "analogy"],
        "runtime": ["device", "seconds"],
        "provenance": ["helpers_sha256", "notebook_code_sha256"],
    }.items():
        assert set(keys) <= set(metrics[section]), section
    for key in ("pairs", "latent_mse", "pixel_mse", "unchanged_mse"):
        assert key in metrics["part3"]["analogy"]
    assert all({"latent_dim", "val_mse", "test_mse"} <= set(r) for r in metrics["part1"]["sweep"])


def test_committed_outputs_are_not_stale(metrics):
    """Fails when helpers.py or the notebook's code changed after the committed run."""
    provenance = helpers.provenance(NOTEBOOK)
    assert metrics["provenance"]["helpers_sha256"] == provenance["helpers_sha256"], \
        "helpers.py changed since the committed run: re-run `make report` and commit its outputs"
    assert metrics["provenance"]["notebook_code_sha256"] == provenance["notebook_code_sha256"], \
        "the notebook's code changed since the committed run: re-run `make report`"


def test_part1_weights_reproduce_the_reported_test_mse(metrics, run_data):
    model, payload = helpers.load_model(ROOT / "weights" / "part1_autoencoder.pt")
    assert model.config.latent_dim == metrics["part1"]["latent_dim"]
    mse = helpers.evaluate(model, run_data["test"]["x"])["mse"]
    assert mse == pytest.approx(metrics["part1"]["test_mse"], rel=1e-4)


def test_part2_weights_reproduce_the_reported_accuracy_and_mse(metrics, run_data):
    model, payload = helpers.load_model(ROOT / "weights" / "part2_multitask.pt")
    result = helpers.evaluate(model, run_data["test"]["x"], run_data["test"]["y"])
    assert result["mse"] == pytest.approx(metrics["part2"]["test_mse"], rel=1e-4)
    assert result["accuracy"] == pytest.approx(metrics["part2"]["test_accuracy"], abs=1e-6)


def test_latents_cover_every_image_of_every_split(metrics):
    for name in ("part1_latents.pt", "part2_latents.pt"):
        latents = torch.load(ROOT / "latents" / name, weights_only=True)
        n = sum(metrics["data"]["augmented_sizes"].values())
        assert latents["z"].shape == (n, metrics["part1"]["latent_dim"])
        assert len(latents["text"]) == len(latents["split"]) == len(latents["label"]) == n
        assert set(latents["split"]) == {"train", "val", "test"}


def test_notebook_answers_every_question_in_order_without_errors():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    positions = [text.find(f"### {label}.") for label in LABELS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert outputs, "the committed notebook has no outputs"
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"]


def test_pdf_exists():
    pdf = ROOT / "report" / "homework2.pdf"
    assert pdf.is_file() and pdf.read_bytes()[:4] == b"%PDF"


def test_submission_zip_holds_the_deliverables(tmp_path):
    import zipfile

    path = helpers.make_submission(zip_path=tmp_path / "homework2.zip")
    names = set(zipfile.ZipFile(path).namelist())
    assert names == {"homework2.pdf", "homework2.ipynb", "helpers.py", "requirements.txt"}
