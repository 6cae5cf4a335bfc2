"""The notebook end to end in quick mode, and reruns that must not touch the committed run."""
import hashlib
import json
import subprocess
import sys

import pytest
from filelock import FileLock

from conftest import ROOT
from project import LABELS, pdf_text

pytestmark = pytest.mark.slow   # every test here runs papermill or make

COMMITTED = ["homework2.ipynb", "weights/part1_autoencoder.pt", "weights/part2_multitask.pt",
             "latents/part1_latents.pt", "latents/part2_latents.pt", "report/metrics.json",
             "report/homework2.pdf"]


def digests():
    paths = COMMITTED + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "report" / "figures").glob("*"))
    return {p: hashlib.sha256((ROOT / p).read_bytes()).hexdigest()
            for p in paths if (ROOT / p).exists()}


def papermill(out_dir, *params, cwd=ROOT, check=True):
    """Execute the notebook in quick mode; returns the finished process."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["-p", "quick", "True", "-p", "source", "mirror", "-p", "run_dir", str(out_dir)]
    for name, value in params:   # a later -p overrides an earlier one
        args += ["-p", name, str(value)]
    return subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "homework2.ipynb"),
                           str(out_dir / "homework2.ipynb"), *args, "--log-level", "WARNING",
                           "--no-progress-bar"], check=check, cwd=cwd, capture_output=not check,
                          text=True)


def metrics_of(run_dir):
    return json.loads((run_dir / "report" / "metrics.json").read_text())


def numbers(metrics):
    """The run's results, without timings, ids, the folder and the device."""
    drop = ("runtime", "provenance", "run", "figures", "config")

    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k != "seconds"}
        return [untimed(v) for v in value] if isinstance(value, list) else value
    return untimed({k: v for k, v in metrics.items() if k not in drop})


def error_of(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    return errors[0]["evalue"] if errors else None


@pytest.mark.parametrize("seed", [4])
def test_another_seed_and_a_size_outside_the_quick_sweep_run_to_the_end_and_mismatches_are_reported(
        tmp_path, seed):
    papermill(tmp_path, ("seed", seed), ("latent_dim", 64))   # quick mode sweeps 16 and 128 only
    assert metrics_of(tmp_path)["part1"]["latent_dim"] == 64
    assert error_of(tmp_path / "homework2.ipynb") is None
    check = subprocess.run([sys.executable, str(ROOT / "runs.py"), "check-answers", str(tmp_path)],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "reported, not enforced" in check.stdout


def test_a_source_with_two_cat_pairs_shows_the_row_and_skips_the_held_out_evaluation(mirror, tmp_path):
    """Fewer pairs than the held-out evaluation needs: Part 3 shows only its row, and the run ends."""
    keep = {"crying cat face", "weary cat face"}
    subset = mirror.filter(lambda row: "cat" not in row["text"].split() or row["text"] in keep)
    subset.to_parquet(str(tmp_path / "two_pairs.parquet"))
    papermill(tmp_path / "run", ("source", tmp_path / "two_pairs.parquet"))
    metrics = metrics_of(tmp_path / "run")
    assert len(metrics["part3"]["pairs"]) == 2 and "analogy" not in metrics["part3"]
    assert error_of(tmp_path / "run" / "homework2.ipynb") is None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`make report` in quick mode into a fresh folder, with digests of the committed files."""
    run_dir = tmp_path_factory.mktemp("quick run")   # a space in the path, on purpose
    before = digests()
    subprocess.run(["make", "--no-print-directory", "report", f"RUN_DIR={run_dir}",
                    "PARAMS=-p quick True -p source mirror"], check=True, cwd=ROOT)
    return run_dir, before, digests()


def test_quick_run_writes_everything_into_its_run_dir(quick_run):
    run_dir, before, after = quick_run
    for path in ["homework2.ipynb", "weights/part1_autoencoder.pt", "weights/part2_multitask.pt",
                 "latents/part1_latents.pt", "latents/part2_latents.pt", "report/metrics.json",
                 "report/figures/part1_reconstructions.png", "report/figures/part3_row.png",
                 "report/homework2.pdf"]:
        assert (run_dir / path).is_file(), path
    assert not list(run_dir.glob(".staging-*"))
    FileLock(run_dir / ".run.lock").acquire(timeout=0)   # the finished run let go of it
    assert before == after, "a run into another run_dir changed the committed artifacts"
    assert metrics_of(run_dir)["config"]["quick"] is True


def test_the_notebook_make_report_leaves_runs_all_into_runs_latest(quick_run):
    """The executed notebook keeps papermill's other parameters but not run_dir, so Run All in
    Jupyter writes to the parameters cell's runs/latest, not into this folder again."""
    run_dir, _, _ = quick_run
    cells = json.loads((run_dir / "homework2.ipynb").read_text())["cells"]
    injected = ["".join(c["source"]) for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "quick = True" in injected[0] and "run_dir" not in injected[0]


def test_quick_run_pdf_holds_every_label_and_the_run_id(quick_run):
    run_dir, _, _ = quick_run
    text = pdf_text(run_dir / "report" / "homework2.pdf")
    for label in LABELS:
        assert f"{label}." in text, label
    assert metrics_of(run_dir)["run"]["id"] in text


def test_same_seed_same_numbers_other_seed_other_numbers(quick_run, tmp_path):
    """Seed 3 once crashed in a branch only its outcome took (neither part above the majority)."""
    run_dir, _, _ = quick_run
    papermill(tmp_path / "again")
    papermill(tmp_path / "other", ("seed", 3))
    first, again, other = (metrics_of(d) for d in (run_dir, tmp_path / "again", tmp_path / "other"))
    assert numbers(again) == numbers(first)
    assert numbers(other)["part1"]["test_mse"] != numbers(first)["part1"]["test_mse"]


@pytest.mark.parametrize("params, message", [
    ((("steps", 0),), "steps: 0 is not an integer from 2"),
    ((("lr", 1e6),), "lr=1000000.0"),
    ((("seed", 4294967295),), "seed: 4294967295"),
    ((("keywords", "zzzz"),), "keywords='zzzz'"),
])
def test_bad_parameter_stops_the_notebook_before_anything_is_written(tmp_path, params, message):
    before = digests()
    result = papermill(tmp_path, *params, check=False)
    assert result.returncode != 0
    assert message in error_of(tmp_path / "homework2.ipynb")
    assert not (tmp_path / "weights").exists() and not (tmp_path / "report").exists()
    assert digests() == before


def test_a_quick_run_into_the_repository_root_is_refused():
    before = digests()
    result = subprocess.run(["make", "--no-print-directory", "report", "RUN_DIR=.",
                             "PARAMS=-p quick True -p source mirror"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "never replaces the committed results" in result.stdout + result.stderr
    assert digests() == before
    (ROOT / ".homework2.run.ipynb").unlink(missing_ok=True)


def test_papermill_from_another_folder_says_how_to_find_helpers(tmp_path):
    result = papermill(tmp_path / "out", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "--cwd" in error_of(tmp_path / "out" / "homework2.ipynb")


def test_a_package_missing_from_the_kernel_is_named():
    """The setup cell's imports in a Python without filelock (which runs.py needs)."""
    cells = json.loads((ROOT / "homework2.ipynb").read_text())["cells"]
    setup = next("".join(c["source"]) for c in cells if "import helpers" in "".join(c["source"]))
    imports = setup[:setup.index("config = ")]
    code = f"import sys\nsys.modules['filelock'] = None\n{imports}"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert "The package 'filelock' is not installed in this kernel" in result.stderr
    assert "helpers.py was not found" not in result.stderr
