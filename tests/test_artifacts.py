"""The committed outputs: they exist, come from one full run of the committed code, and
reproduce (what the answers say of them: test_answers.py)."""
import ast
import json
import math
import re
import subprocess

import pytest
import torch

import helpers
import sources
import project
import runs
from conftest import ROOT

METRICS = ROOT / "report" / "metrics.json"
NOTEBOOK = ROOT / "homework2.ipynb"
PDF = ROOT / "report" / "homework2.pdf"
LABELS = project.LABELS


@pytest.fixture(scope="module")
def metrics():
    return json.loads(METRICS.read_text())


@pytest.fixture(scope="module")
def run_data(metrics):
    """The split the committed run used, rebuilt from its recorded configuration."""
    config = runs.RunConfig(**(metrics["config"] | {"run_dir": "runs/check", "quick": False}))
    dataset, _ = sources.load_emoji_dataset(metrics["data"]["source"])
    return helpers.prepare_data(dataset, config)


@pytest.fixture(scope="module")
def cells():
    return json.loads(NOTEBOOK.read_text())["cells"]


def test_metrics_record_the_whole_configuration_and_every_sweep_size(metrics):
    assert set(metrics["config"]) == set(runs.notebook_defaults())
    assert [r["latent_dim"] for r in metrics["part1"]["sweep"]] == metrics["config"]["latent_dims"]
    analogy = metrics["part3"]["analogy"]
    assert analogy["latent_mse"] == pytest.approx(sum(analogy["per_pair"]["latent_mse"]) / analogy["pairs"])
    assert all(len(analogy["per_pair"][k]) == analogy["pairs"] for k in ("latent_mse", "pixel_mse", "latent_p_cat"))


def test_metrics_values_have_sensible_types_and_ranges(metrics):
    """Beyond the keys: MSEs in (0, 1), shares and accuracies in [0, 1], counts positive
    integers, every interval with low <= mean <= high, over all of metrics.json."""
    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def count(value, least=1):
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    def walk(value, path):
        key = path.rsplit(".", 1)[-1]
        if isinstance(value, dict):
            if {"low", "mean", "high"} <= set(value):                 # a bootstrap interval
                assert all(number(value[k]) for k in ("low", "mean", "high")), path
                assert value["low"] <= value["mean"] <= value["high"], path
                assert count(value["emoji"]) and value["images"] >= value["emoji"], path
                if any(word in key for word in ("minus", "difference", "change")):   # may be negative
                    assert -1 <= value["low"] and value["high"] <= 1, path
                elif key.endswith("mse_ci"):
                    assert 0 < value["low"] and value["high"] < 1, path
                elif key in ("accuracy", "majority") or key.endswith(("accuracy_ci", "majority_ci",
                                                                    "baseline_ci")):
                    assert 0 <= value["low"] and value["high"] <= 1, path
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]" if not isinstance(v, (int, float)) else path)
        elif key == "mse" or key.endswith("_mse"):
            assert number(value) and 0 < value < 1, (path, value)
        elif ("accuracy" in key or key.endswith(("_p_cat", "_share", "_ears", "cat_probability"))) \
                and "minus" not in key and number(value):
            assert 0 <= value <= 1, (path, value)
        elif key.endswith("seconds"):
            assert number(value) and value > 0, (path, value)

    walk(metrics, "metrics")
    data, part1, part2, part3 = (metrics[k] for k in ("data", "part1", "part2", "part3"))
    for name in ("rows", "matched", "subset_size"):
        assert count(data[name]), name
    assert count(data["skipped"], 0) and count(data["duplicates"], 0)
    for name in ("split_sizes", "augmented_sizes", "class_sizes", "excluded"):
        assert all(count(n) for n in data[name].values()), name
    assert all(data["augmented_sizes"][s] >= n for s, n in data["split_sizes"].items())
    assert sum(data["class_sizes"].values()) == data["subset_size"] == sum(data["split_sizes"].values())
    assert data["rows"] >= data["matched"] >= data["subset_size"]
    assert count(part1["latent_dim"]) and count(part1["parameters"]) and count(part1["steps"])
    for row in part1["sweep"]:
        assert count(row["latent_dim"]) and count(row["epochs"]) and 0 <= row["best_epoch"] <= row["epochs"]
        assert number(row["ratio_to_pca"]) and row["ratio_to_pca"] > 0
    assert all(number(gain) and -1 < gain < 1 for gain in part1["rule"]["gains"].values())
    assert 0 < part1["ratio_to_pca"] and number(part1["test_psnr"]) and part1["test_psnr"] > 0
    check = part1["budget_check"]
    assert 0 < check["half_steps"] < check["steps"] < check["doubled_steps"]
    assert number(part2["lambda"]) and part2["lambda"] > 0
    assert part2["majority_class"] in part2["classes"] and set(part2["recall"]) == set(part2["classes"])
    assert all(0 <= r <= 1 for r in part2["recall"].values())
    assert sum(part2["class_share"].values()) == pytest.approx(1)
    assert count(part2["cv"]["folds"], 2) and count(part2["cv"]["emoji"])
    assert 0 <= part2["best_epoch"] <= part2["epochs"]
    analogy = part3["analogy"]
    assert count(analogy["pairs"]) and analogy["pairs"] == len(part3["pairs"])
    for name in ("latent_wins", "latent_cats", "pixel_cats", "unchanged_cats", "latent_identity",
                 "pixel_identity"):
        assert count(analogy[name], 0) and analogy[name] <= analogy["pairs"], name
    low, high = analogy["floor_share_range"]
    assert 0 <= low <= analogy["floor_share"] <= high <= 1
    assert all(0 <= p <= 1 for p in part3["strength_sweep"]["cat_probability"])
    assert all(figure["smallest_text_pt"] > 0 and 0 < figure["printed_width_in"] <= 8.5
               for figure in metrics["figures"].values())
    assert all(re.fullmatch(r"[0-9a-f]{64}", metrics["provenance"][k])
               for k in ("helpers_sha256", "notebook_code_sha256", "requirements_sha256"))


def test_no_fold_model_trained_on_a_cat_face_it_is_judged_on(metrics):
    part3 = metrics["part3"]
    for fold, trained_on in zip(part3["folds"], part3["fold_models"]["extra_training_cats"]):
        assert fold and not {part3["pairs"][i][0] for i in fold} & set(trained_on)
    assert sorted(i for fold in part3["folds"] for i in fold) == list(range(len(part3["pairs"])))


def test_the_budget_is_counted_in_steps_and_checked_at_half_and_twice(metrics):
    part1, steps = metrics["part1"], metrics["config"]["steps"]
    check = part1["budget_check"]
    assert part1["steps"] == check["steps"] == part1["sweep_steps"] == steps
    assert (check["half_steps"], check["doubled_steps"]) == (steps // 2, 2 * steps)
    row = next(r for r in part1["sweep"] if r["latent_dim"] == part1["latent_dim"])
    assert check["val_mse"] == row["val_mse"]


def test_the_committed_run_is_a_full_run(metrics):
    assert metrics["config"]["quick"] is False
    assert metrics["config"] == {**runs.notebook_defaults(), "run_dir": ".",
                                 "source": metrics["config"]["source"]}


def test_committed_outputs_are_not_stale(metrics):
    """Fails when the method, the modules it stands on, the notebook's code or the pinned
    requirements changed after the committed run."""
    provenance = runs.provenance(NOTEBOOK)
    for key in ("helpers_sha256", "sources_sha256", "workers_sha256", "notebook_code_sha256",
                "requirements_sha256"):
        assert metrics["provenance"][key] == provenance[key], \
            f"{key.split('_sha256')[0]} changed since the committed run: re-run `make report` and commit its outputs"


def test_weights_latents_notebook_and_pdf_come_from_one_run(metrics):
    """Nothing stands in the way of a submission but, while they are not set, the group's names."""
    problems = project.submission_problems(ROOT)
    names_missing = [p for p in problems if p.startswith("group_members is empty")]
    assert bool(names_missing) == (not metrics["config"]["group_members"].strip())
    assert [p for p in problems if p not in names_missing] == []


def test_part1_weights_reproduce_the_reported_test_mse(metrics, run_data):
    model, payload = runs.load_model(ROOT / "weights" / "part1_autoencoder.pt")
    assert model.config.latent_dim == metrics["part1"]["latent_dim"]
    mse = helpers.evaluate(model, run_data["test"].x)["mse"]
    assert mse == pytest.approx(metrics["part1"]["test_mse"], rel=1e-4)


def test_part2_weights_reproduce_the_reported_accuracy_and_mse(metrics, run_data):
    model, payload = runs.load_model(ROOT / "weights" / "part2_multitask.pt")
    result = helpers.evaluate(model, run_data["test"].x, run_data["test"].y)
    assert result["mse"] == pytest.approx(metrics["part2"]["test_mse"], rel=1e-4)
    assert result["accuracy"] == pytest.approx(metrics["part2"]["test_accuracy"], abs=1e-6)


def test_latents_cover_every_image_of_every_split(metrics):
    for name in ("part1_latents.pt", "part2_latents.pt"):
        latents = torch.load(ROOT / "latents" / name, weights_only=True)
        n = sum(metrics["data"]["augmented_sizes"].values())
        assert latents["z"].shape == (n, metrics["part1"]["latent_dim"])
        assert len(latents["text"]) == len(latents["split"]) == len(latents["label"]) == n
        assert set(latents["split"]) == {"train", "val", "test"}


def test_notebook_answers_every_question_in_order_without_errors(cells):
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    positions = [text.find(f"### {label}.") for label in LABELS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert outputs, "the committed notebook has no outputs"
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"]


def test_notebook_defines_no_function_and_shows_little_code(cells):
    code = [c for c in cells if c["cell_type"] == "code"]
    assert not [c for c in code if re.search(r"^\s*def ", "".join(c["source"]), re.M)]
    hidden = {"remove-input", "remove-cell", "injected-parameters"}
    visible = [c for c in code if not hidden & set(c["metadata"].get("tags", []))]
    assert sum(len("".join(c["source"]).splitlines()) for c in visible) <= 150
    for c in code:
        if {"remove-input", "remove-cell"} & set(c["metadata"].get("tags", [])):
            assert c["metadata"]["jupyter"]["source_hidden"] is True


def test_committed_notebook_holds_no_widget_state():
    notebook = json.loads(NOTEBOOK.read_text())
    assert "widgets" not in notebook["metadata"]
    assert "application/vnd.jupyter.widget" not in NOTEBOOK.read_text()


def test_pdf_is_short_and_labelled_and_figures_are_readable(metrics):
    info = subprocess.run(["pdfinfo", str(PDF)], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) <= 10
    text = project.pdf_text(PDF)
    for label in LABELS:
        assert f"{label}." in text, label
    assert not re.search(r"\b1\.\d\.\d\s+1[a-g]\.", text), "LaTeX numbers in front of labels"
    for name, figure in metrics["figures"].items():
        assert figure["smallest_text_pt"] >= runs.MIN_TEXT_PT, name


def names_of(source):
    """The names a cell binds, and those it reads without binding them itself."""
    bound, read = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound, read - bound


def test_hidden_cells_only_display(cells):
    """Every number comes from a visible cell: no later cell reads a name that a hidden cell
    (other than the setup cell) bound."""
    from_hidden = {}
    for index, cell in enumerate(cells):
        tags = set(cell["metadata"].get("tags", []))
        if cell["cell_type"] != "code" or tags & {"parameters", "injected-parameters"}:
            continue
        bound, read = names_of("".join(cell["source"]))
        leaks = {name: from_hidden[name] for name in read if name in from_hidden}
        assert not leaks, f"cell {index} reads names bound in hidden cells (name: cell) {leaks}"
        hidden = tags & {"remove-input", "remove-cell"} and "setup" not in tags
        for name in bound:
            if hidden:
                from_hidden[name] = index
            else:
                from_hidden.pop(name, None)


def test_the_committed_notebook_sets_run_dir_only_in_its_parameters_cell():
    """Run All in Jupyter, or nbconvert --execute, must write to runs/latest, never here."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    setting = [("parameters" in c["metadata"].get("tags", []), line) for c in cells if c["cell_type"] == "code"
               for line in "".join(c["source"]).splitlines() if line.startswith("run_dir")]
    assert setting == [(True, 'run_dir = "runs/latest"   # outputs go under this folder; '
                              '`make report` passes "." for the committed run')]
