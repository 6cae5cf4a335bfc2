"""project.py and the Makefile: the submission check, the zip, and the make targets' guards."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

import project
from conftest import ROOT, children, process_alive


# 1. The submission check covers what is zipped -----------------------------------------------

@pytest.fixture
def submission(tmp_path):
    """A copy of the committed deliverables."""
    root = tmp_path / "submission"
    for name in project.DELIVERABLES + ["report/metrics.json", "weights", "latents", "report/figures"]:
        source, target = ROOT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    return root


def edit_metrics(root, change):
    path = root / "report" / "metrics.json"
    metrics = json.loads(path.read_text())
    change(metrics)
    path.write_text(json.dumps(metrics))


def test_rewording_an_answer_needs_no_new_run_but_a_wrong_number_or_new_code_is_caught(submission):
    notebook = json.loads((submission / "homework2.ipynb").read_text())
    answer = next(c for c in notebook["cells"] if c["cell_type"] == "markdown"
                  and "**The final average test error is" in "".join(c["source"]))
    answer["source"] = ["### 1f. Error on the test set\nReworded: the test error is 0.0101 per pixel."]
    (submission / "homework2.ipynb").write_text(json.dumps(notebook))
    assert project.submission_problems(submission) == project.submission_problems(ROOT)
    answer["source"] = ["### 1f. Error on the test set\nThe test error is 0.0871 per pixel."]
    (submission / "homework2.ipynb").write_text(json.dumps(notebook))
    with open(submission / "requirements.txt", "a") as f:
        f.write("requests==2.0\n")
    problems = " ".join(project.submission_problems(submission))
    assert "answers check: cell" in problems and "'0.0871' is no number of this run" in problems
    assert "requirements.txt changed since the run" in problems


@pytest.mark.parametrize("name", ["weights/part1_autoencoder.pt", "report/metrics.json", "homework2.ipynb"])
def test_damaged_deliverables_give_one_line_reasons(submission, name):
    path = submission / name
    path.write_bytes(path.read_bytes()[:100])
    problems = project.submission_problems(submission)
    assert f"{name} is damaged or unreadable" in " ".join(problems)
    assert all("\n" not in p for p in problems)


def test_an_extra_file_in_an_output_folder_is_caught(submission):
    (submission / "report" / "figures" / "old_figure.png").write_bytes(b"png")
    assert "not made by it: ['report/figures/old_figure.png']" in " ".join(
        project.submission_problems(submission))


def test_the_submission_check_measures_the_saved_models_again(submission):
    assert not [p for p in project.submission_problems(submission) if "measured again" in p
                or "gives" in p or "are not the codes" in p or "class outputs" in p]
    edit_metrics(submission, lambda m: m["part1"].update(test_mse=m["part1"]["test_mse"] * 0.9))
    latents = torch.load(submission / "latents/part2_latents.pt", weights_only=True)
    latents["z"].zero_()
    torch.save(latents, submission / "latents/part2_latents.pt")
    problems = " ".join(project.submission_problems(submission))
    assert "metrics.json says part1.test_mse" in problems and "on the test split" in problems
    assert "latents/part2_latents.pt are not the codes of weights/part2_multitask.pt" in problems


def test_the_submission_check_catches_part_twos_weights_in_part_ones_file(submission):
    shutil.copy(submission / "weights/part2_multitask.pt", submission / "weights/part1_autoencoder.pt")
    assert "weights/part1_autoencoder.pt holds a model with 3 class outputs; part1's has 0" in " ".join(
        project.submission_problems(submission))


@pytest.mark.parametrize("names", ["", "   "])
def test_a_submission_without_the_groups_names_is_refused(submission, names):
    """Whatever the committed run holds: without names the check says so, with them (below) it does not."""
    edit_metrics(submission, lambda m: m["config"].update(group_members=names))
    problems = project.submission_problems(submission)
    assert [p for p in problems if p.startswith("group_members is empty: set it in the notebook's")]
    assert not [p for p in problems if "does not show the names" in p]


def test_names_written_only_into_metrics_json_are_not_in_the_pdf(submission):
    edit_metrics(submission, lambda m: m["config"].update(group_members="Ada Lovelace, Alan Turing"))
    problems = " ".join(project.submission_problems(submission))
    assert "group_members is empty" not in problems
    assert "does not show the names ['Ada Lovelace', 'Alan Turing']" in problems


# 2. The zip ----------------------------------------------------------------------------------

def test_a_full_disk_while_zipping_leaves_the_earlier_zip(tmp_path, monkeypatch):
    earlier = tmp_path / "homework2.zip"
    earlier.write_bytes(b"the earlier zip")
    monkeypatch.setattr(project, "submission_problems", lambda root: [])

    def full_disk(tmp):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(project.zipfile, "ZipFile", lambda *args, **kwargs: full_disk(None))
    with pytest.raises(SystemExit, match="No space left on device.*earlier zip there is unchanged"):
        project.make_submission(ROOT, earlier)
    assert earlier.read_bytes() == b"the earlier zip"


# 3. The Makefile cannot be steered around its guards -----------------------------------------

def make(*args, cwd=ROOT):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True,
                          text=True)


@pytest.mark.slow
def test_make_report_refuses_a_run_dir_inside_params():
    result = subprocess.run(["make", "--no-print-directory", "report",
                             "PARAMS=-p quick True -p run_dir runs/q"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "give the output folder as RUN_DIR" in result.stderr
    assert not (ROOT / ".homework2.run.ipynb").exists()


@pytest.mark.slow
@pytest.mark.parametrize("params, message", [
    ("-p sead 7", "no parameter 'sead'. Did you mean 'seed'?"),
    ("-p quik True", "no parameter 'quik'. Did you mean 'quick'?"),
    ("--prepare-only -p seed 3 -p quick True", "'--prepare-only -p seed' is not one"),
    ("-p quick", "'-p quick' is not one"),
])
def test_make_report_refuses_unknown_parameters_and_other_papermill_options(params, message):
    before = (ROOT / "homework2.ipynb").read_bytes()
    result = make("report", "RUN_DIR=runs/refused", f"PARAMS={params}")
    assert result.returncode != 0 and message in result.stderr
    assert "Its parameters: group_members, seed," in result.stderr or "is not one" in result.stderr
    assert (ROOT / "homework2.ipynb").read_bytes() == before
    assert not (ROOT / "runs" / "refused" / "homework2.ipynb").exists()


@pytest.mark.slow
def test_make_refuses_an_empty_run_dir_a_missing_notebook_and_another_folder(tmp_path):
    assert "RUN_DIR is empty" in make("report", "RUN_DIR=").stderr
    result = make("pdf", f"RUN_DIR={tmp_path / 'none'}")
    assert result.returncode != 0 and "does not exist; run make report" in result.stdout
    assert not (tmp_path / "none").exists()
    result = make("-f", f"{ROOT.name}/Makefile", "test", cwd=ROOT.parent)
    assert result.returncode != 0 and f"Run make in the repository folder: make -C {ROOT}" in result.stderr


@pytest.mark.slow
def test_make_clean_removes_caches_only(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    kept = ["runs/mine/weights/part1_autoencoder.pt", "weights/part1_autoencoder.pt",
            "report/metrics.json", ".venv/bin/python"]
    gone = [".pytest_cache/v/x", "__pycache__/helpers.pyc", "report/.pdf-tmp/x.tex"]
    for name in kept + gone:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    result = make("clean", cwd=tmp_path)
    assert result.returncode == 0 and "the venv stays" in result.stdout
    assert all((tmp_path / name).exists() for name in kept)
    assert not any((tmp_path / name).exists() for name in gone)


# 4. Stopping make stops what it started ------------------------------------------------------

def papermill_tree(run_dir):
    """Processes of a make report into run_dir: make, papermill, the kernel, its workers."""
    table = subprocess.run(["ps", "-ww", "-e", "-o", "pid=,args="], capture_output=True, text=True).stdout
    pids = [int(line.split()[0]) for line in table.splitlines() if str(run_dir) in line]
    found = set(pids)
    for pid in pids:
        found |= set(children(pid))
        for child in children(pid):
            found |= set(children(child))
    return {pid for pid in found if process_alive(pid)}


@pytest.mark.slow
def test_stopping_make_stops_the_notebook_its_kernel_and_its_workers(tmp_path):
    run_dir = tmp_path / "stopped run"
    with open(tmp_path / "make.out", "w") as out:
        make_process = subprocess.Popen(
            ["make", "--no-print-directory", "report", f"RUN_DIR={run_dir}",
             "PARAMS=-p quick True -p source mirror"], cwd=ROOT, stdout=out, stderr=out)
        deadline = time.time() + 60
        while len(papermill_tree(run_dir)) < 5 and time.time() < deadline:   # workers started
            time.sleep(0.5)
        started = papermill_tree(run_dir)
        assert len(started) >= 5, "the run did not start its workers"
        make_process.terminate()
        make_process.wait()
    deadline = time.time() + 20
    while any(process_alive(pid) for pid in started) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(process_alive(pid) for pid in started)
    assert not (run_dir / "homework2.ipynb").exists() and not (run_dir / "report").exists()


@pytest.mark.slow
def test_stopping_make_pdf_says_the_pdf_is_the_previous_one(tmp_path):
    (tmp_path / "report").mkdir()
    shutil.copy(ROOT / "homework2.ipynb", tmp_path)
    shutil.copy(ROOT / "report" / "homework2.pdf", tmp_path / "report")
    before = (tmp_path / "report" / "homework2.pdf").read_bytes()
    # A shell starts background jobs with Ctrl-C ignored, and children keep that: make gets the
    # default back, as it has in a terminal, however pytest itself was started.
    process = subprocess.Popen(["make", "--no-print-directory", "pdf", f"RUN_DIR={tmp_path}"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and "nbconvert" not in subprocess.run(
            ["ps", "-ww", "-g", str(process.pid), "-o", "args="], capture_output=True, text=True).stdout:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)   # Ctrl-C reaches the whole foreground group
    output = process.communicate(timeout=60)[0]
    assert "make pdf was stopped" in output and "still the previous PDF" in output
    assert (tmp_path / "report" / "homework2.pdf").read_bytes() == before
