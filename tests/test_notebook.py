"""The notebook end to end in quick mode: outputs, PDF, untouched committed artifacts,
and determinism."""
import hashlib
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from test_artifacts import LABELS

COMMITTED = ["homework2.ipynb", "weights/part1_autoencoder.pt", "weights/part2_multitask.pt",
             "latents/part1_latents.pt", "latents/part2_latents.pt", "report/metrics.json",
             "report/homework2.pdf"]


def digests():
    return {p: hashlib.sha256((ROOT / p).read_bytes()).hexdigest()
            for p in COMMITTED if (ROOT / p).exists()}


def papermill(run_dir, *params):
    """Execute the notebook in quick mode into run_dir; returns its metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    args = ["-p", "quick", "True", "-p", "source", "mirror", "-p", "run_dir", str(run_dir)]
    for name, value in params:
        args += ["-p", name, str(value)]
    subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "homework2.ipynb"),
                    str(run_dir / "homework2.ipynb"), *args, "--log-level", "WARNING",
                    "--no-progress-bar"], check=True, cwd=ROOT)
    return json.loads((run_dir / "report" / "metrics.json").read_text())


def numbers(metrics):
    """The run's results, without timings and the device."""
    return {k: v for k, v in metrics.items() if k not in ("runtime", "provenance")} | {
        "part1": {k: v for k, v in metrics["part1"].items() if k != "seconds"} | {
            "sweep": [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["part1"]["sweep"]]},
        "part2": {k: v for k, v in metrics["part2"].items() if k != "seconds"}}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`make report` in quick mode into a fresh folder, with digests of the committed files."""
    run_dir = tmp_path_factory.mktemp("quick")
    before = digests()
    subprocess.run(["make", "--no-print-directory", "report", f"RUN_DIR={run_dir}",
                    "PARAMS=-p quick True -p source mirror"], check=True, cwd=ROOT)
    return run_dir, before, digests()


def test_quick_run_writes_everything_into_its_run_dir(quick_run):
    run_dir, before, after = quick_run
    for path in ["homework2.ipynb", "weights/part1_autoencoder.pt", "weights/part2_multitask.pt",
                 "latents/part1_latents.pt", "latents/part2_latents.pt", "report/metrics.json",
                 "report/figures/part1_reconstructions.png", "report/figures/part3_row.png"]:
        assert (run_dir / path).is_file(), path
    assert before == after, "a run into another run_dir changed the committed artifacts"


def test_quick_run_pdf_holds_every_question_label(quick_run):
    run_dir, _, _ = quick_run
    pdf = run_dir / "report" / "homework2.pdf"
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    for label in LABELS:
        assert f"{label}." in text, label


def test_same_seed_same_numbers_other_seed_other_numbers(quick_run, tmp_path):
    run_dir, _, _ = quick_run
    first = json.loads((run_dir / "report" / "metrics.json").read_text())
    again = papermill(tmp_path / "again")
    other = papermill(tmp_path / "other", ("seed", 1))
    assert numbers(again) == numbers(first)
    assert numbers(other)["part1"]["test_mse"] != numbers(first)["part1"]["test_mse"]


def test_bad_parameter_stops_the_notebook_with_a_clear_error(tmp_path):
    with pytest.raises(subprocess.CalledProcessError):
        papermill(tmp_path, ("epochs", 0))
    cells = json.loads((tmp_path / "homework2.ipynb").read_text())["cells"]
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors and "epochs: 0 is not a positive integer" in errors[0]["evalue"]
    assert not (tmp_path / "weights").exists()
