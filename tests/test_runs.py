"""The run's bookkeeping against careless and hostile use: where a run may write, the lock,
the end of a run, strict JSON, escaped text, the submission check, and clear errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import helpers
import workers
import sources
import project
import runs
from conftest import ROOT, config, write_parquet


def run_config(tmp_path, **changes):
    return config(run_dir=str(tmp_path / "run"), **changes)


def small_model():
    return helpers.Autoencoder(helpers.AEConfig(latent_dim=8, width=4, image_size=16)).eval()


def python(code, **kwargs):
    """Start `code` in a fresh Python that imports the project as the tests do."""
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT / "tests", text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


# 1. Where a run may write, and what it clears -------------------------------------------

@pytest.mark.parametrize("where", [str(ROOT.parent), "/", str(Path.home()), "../elsewhere"])
def test_a_run_dir_outside_the_repository_needs_the_override(monkeypatch, where):
    monkeypatch.delenv(runs.OUTSIDE_REPO_OVERRIDE)
    monkeypatch.chdir(ROOT)
    with pytest.raises(ValueError, match="outside the repository.*ALLOW_RUN_DIR_OUTSIDE_REPO=1"):
        config(run_dir=where)
    assert config(run_dir="runs/inside").run_dir == "runs/inside"


def test_only_the_debris_of_dead_runs_is_cleared(tmp_path):
    folder = tmp_path / "run"
    for name in ("weights", "notes", ".git"):
        (folder / name).mkdir(parents=True)
    (folder / ".staging-file").write_text("not a staging folder")
    dead, alive = folder / "weights" / ".m.pt.999999999.tmp", folder / "weights" / f".m.pt.{os.getpid()}.tmp"
    others = [folder / "notes" / ".draft.999999999.tmp", folder / ".git" / ".x.999999999.tmp",
              folder / ".decoy.tmp"]
    for path in (dead, alive, *others):
        path.write_bytes(b"half")
    (folder / ".staging-old").mkdir()
    (folder / ".staging-old" / "weights").mkdir()
    run = runs.Run(run_config(tmp_path))
    assert not dead.exists() and alive.exists() and all(p.exists() for p in others)
    assert not (folder / ".staging-old").exists() and (folder / ".staging-file").is_file()
    run.release()


# 2. A real lock ------------------------------------------------------------------------------

def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    first = runs.Run(run_config(tmp_path))
    code = ("import runs; from conftest import config\n"
            f"runs.Run(config(run_dir={str(tmp_path / 'run')!r}))\n")
    second = python(code, stderr=subprocess.PIPE)
    assert second.wait() != 0 and "in use by another run" in second.stderr.read()
    first.release()
    runs.Run(run_config(tmp_path)).release()


def test_of_four_runs_started_at_once_one_holds_the_folder_and_its_death_frees_it(tmp_path):
    folder = tmp_path / "run"
    code = ("import time, runs; from conftest import config\n"
            "try:\n"
            f"    run = runs.Run(config(run_dir={str(folder)!r})); print('held', flush=True)\n"
            "except RuntimeError: print('refused', flush=True)\n"
            "time.sleep(30)\n")
    racers = [python(code, stdout=subprocess.PIPE) for _ in range(4)]
    answers = [p.stdout.readline().strip() for p in racers]
    assert sorted(answers) == ["held", "refused", "refused", "refused"]
    for racer in racers:
        racer.send_signal(signal.SIGKILL)
        racer.wait()
    runs.Run(run_config(tmp_path)).release()      # the OS freed the lock of the killed holder


def test_an_unwritable_run_dir_says_so(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runs.FileLock, "acquire", refuse)
    with pytest.raises(RuntimeError, match="cannot be written .PermissionError: Permission denied"):
        runs.Run(run_config(tmp_path))


def test_a_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("a file")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run_config(tmp_path)


# 3. The Makefile cannot be steered around its guards --------------------------------------

def test_make_report_refuses_a_run_dir_inside_params():
    result = subprocess.run(["make", "--no-print-directory", "report",
                             "PARAMS=-p quick True -p run_dir runs/q"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "give the output folder as RUN_DIR" in result.stderr
    assert not (ROOT / ".homework2.run.ipynb").exists()


# 4. Provenance from the start, and the same code in every process -------------------------

def test_a_run_whose_code_changed_meanwhile_does_not_finish(tmp_path, monkeypatch):
    run = runs.Run(run_config(tmp_path))
    run.save_model("weights/m.pt", small_model())
    monkeypatch.setattr(runs, "provenance", lambda: {**run.provenance, "helpers_sha256": "edited"})
    with pytest.raises(RuntimeError, match="changed while this run was going"):
        run.finish({"config": {}})
    assert not (run.dir / "weights").exists() and not (run.dir / "report").exists()
    run.release()


def test_a_training_process_refuses_other_code(monkeypatch):
    monkeypatch.setitem(workers._WORKER, "parent_method_sha256", "other code")
    with pytest.raises(RuntimeError, match="helpers.py changed on disk"):
        workers._run_job(None)


# 5. All or nothing at the end ---------------------------------------------------------------

def finished_run(tmp_path, figures):
    run = runs.Run(run_config(tmp_path))
    run.save_model("weights/m.pt", small_model())
    for name in figures:
        runs.atomic_write(run.path(f"report/figures/{name}.png"), lambda tmp: Path(tmp).write_bytes(b"png"))
    run.finish({"config": {}})
    return run


def test_a_run_leaves_only_its_own_outputs(tmp_path):
    finished_run(tmp_path, ["a", "b"])
    second = finished_run(tmp_path, ["a"])
    folder = second.dir
    assert sorted(p.name for p in (folder / "report" / "figures").iterdir()) == ["a.png"]
    metrics = json.loads((folder / "report" / "metrics.json").read_text())
    assert metrics["run"]["id"] == second.id
    assert metrics["outputs"] == ["report/figures/a.png", "weights/m.pt", "report/metrics.json"]
    assert not list(folder.glob(".staging-*"))


def test_an_interrupted_move_is_recognised(tmp_path, monkeypatch, capsys):
    finished_run(tmp_path, ["a"])
    run = runs.Run(run_config(tmp_path))
    run.save_model("weights/m.pt", small_model())
    real_replace, calls = os.replace, []

    def killed_after_two(*args):
        calls.append(args)
        if len(calls) > 2:
            raise KeyboardInterrupt
        real_replace(*args)

    monkeypatch.setattr(runs.os, "replace", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run.finish({"config": {}})
    monkeypatch.setattr(runs.os, "replace", real_replace)
    run.release()
    assert not (run.dir / "report" / "metrics.json").exists()
    runs.Run(run_config(tmp_path)).release()
    assert "stopped while moving its outputs in" in capsys.readouterr().out


# 6. Training processes die with their parent ----------------------------------------------

def children(pid):
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def test_training_processes_die_with_their_parent():
    code = ("import torch, helpers\n"
            "x = torch.rand(16, 3, 16, 16); y = torch.zeros(16, dtype=torch.long)\n"
            "split = helpers.Split(x[:8].mul(255).byte(), ['a'] * 8, y[:8], x, y, torch.arange(16) % 8)\n"
            "data = helpers.Data({'train': split, 'val': split}, ['a'], {})\n"
            "job = helpers.Job(helpers.AEConfig(4, 4, 16), helpers.TrainConfig(10 ** 6, 8, 1e-3, 0.0, 0))\n"
            "helpers.fit_all(data, [job, job])\n")
    parent = python(code)
    deadline = time.time() + 60
    while len(workers := children(parent.pid)) < 2 and time.time() < deadline:
        time.sleep(0.5)
    assert len(workers) >= 2, "the training processes did not start"
    time.sleep(2)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 15
    while any(process_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in workers if process_alive(pid)]


def process_alive(pid):
    """True while the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# 7. Strict JSON --------------------------------------------------------------------------------

def test_metrics_json_is_strict_json(tmp_path):
    run = runs.Run(run_config(tmp_path))
    run.finish({"config": {}, "p_cat": [0.5, float("nan")], "ratio": float("inf")})

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    metrics = json.loads((run.dir / "report" / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["p_cat"] == [0.5, None] and metrics["ratio"] is None


# 8. User and data text prints as it is ------------------------------------------------------

HOSTILE = r"$x$ \textbf{b} <i>x</i> **c** `d` a_b [l](u) | & \input{/etc/hostname}"


def test_user_text_survives_markdown_pandoc_and_latex_as_written():
    if not shutil.which("pandoc"):
        pytest.skip("pandoc is not installed (make system)")
    escaped = runs.plain(HOSTILE)
    for to in ("plain", "latex"):
        out = subprocess.run(["pandoc", "-f", "markdown", "-t", to], input=escaped, text=True,
                             capture_output=True, check=True).stdout
        if to == "plain":
            assert " ".join(out.split()) == HOSTILE
        else:
            assert "\\textbf{" not in out and "\\input{" not in out and "$x$" not in out
    table = runs.table([{"name": HOSTILE}])
    assert runs.plain(HOSTILE) in table._repr_markdown_()
    latex = table._repr_latex_()
    assert runs.latex_text(HOSTILE) in latex and "\\textbf{b}" not in latex and "\\input{" not in latex


def test_figure_titles_print_dollars_as_written():
    import matplotlib

    matplotlib.use("Agg")
    fig = runs.show_images([[torch.rand(3, 8, 8)]], col_titles=["cost $5 and $6"], title="a $b$")
    fig.canvas.draw()     # mathtext would fail or swallow the dollars
    assert fig.axes[0].get_title() == r"cost \$5 and \$6"


# 9. The submission check covers what is zipped --------------------------------------------

@pytest.fixture
def submission(tmp_path):
    """A copy of the committed deliverables."""
    root = tmp_path / "submission"
    for name in project.DELIVERABLES + ["report/metrics.json", "weights", "latents", "report/figures"]:
        source, target = ROOT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    return root


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


# 10. Loud cases stop with one line; small silent ones get a note or an error --------------

def test_weights_without_a_state_dict_or_with_contradicting_tensors(tmp_path):
    torch.save({"config": {"latent_dim": 8, "width": 4, "image_size": 16}}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="damaged or not ours .KeyError"):
        runs.load_model(tmp_path / "a.pt")
    state = small_model().state_dict()
    torch.save({"config": {"latent_dim": 9, "width": 4, "image_size": 16}, "state_dict": state},
               tmp_path / "b.pt")
    with pytest.raises(ValueError, match="do not fit the model its own config describes"):
        runs.load_model(tmp_path / "b.pt")


def test_texts_that_are_not_strings_are_named():
    with pytest.raises(ValueError, match="holds no strings .only bytes.*UTF-8"):
        helpers.select_subset([b"grinning face", b"\xff\xfe"], ["face"])


def test_a_keyword_with_spaces_around_it_is_refused():
    with pytest.raises(ValueError, match="'face ' has spaces around it, so it would only match with them; write 'face'"):
        config(keywords=["face "])


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


def test_a_parquet_replaced_with_the_same_time_is_read_again(tmp_path):
    from PIL import Image

    square = Image.new("RGB", (8, 8), "red")
    path = write_parquet(tmp_path / "data.parquet", [("a face", square)] * 2)
    assert len(sources.load_emoji_dataset(str(path))[0]) == 2
    stamp = os.stat(path).st_mtime_ns
    write_parquet(path, [("a face", square)] * 5)
    os.utime(path, ns=(stamp, stamp))
    assert len(sources.load_emoji_dataset(str(path))[0]) == 5


# 11. Clicking through, stopping, mistyping: what a student does to a run ------------------

def make(*args, cwd=ROOT):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True,
                          text=True)


def test_running_the_last_cell_again_keeps_the_outputs(tmp_path):
    run = runs.Run(run_config(tmp_path))
    run.save_model("weights/part1_autoencoder.pt", small_model())
    run.finish({})
    with pytest.raises(RuntimeError, match="has finished and moved its outputs"):
        run.save_model("weights/part1_autoencoder.pt", small_model())
    with pytest.raises(RuntimeError, match="has finished and moved its outputs"):
        run.finish({})
    assert (run.dir / "weights" / "part1_autoencoder.pt").is_file()
    assert json.loads((run.dir / run.METRICS).read_text())["outputs"] == [
        "weights/part1_autoencoder.pt", "report/metrics.json"]


def test_the_setup_cell_run_twice_in_one_kernel_starts_afresh(tmp_path, capsys):
    first = runs.Run(run_config(tmp_path))
    second = runs.Run(run_config(tmp_path))
    assert f"this kernel's run {first.id}" in capsys.readouterr().out
    assert not first.staging.exists() and second.staging.is_dir()
    second.release()


def test_a_run_leaves_a_persons_own_files_in_its_folders(tmp_path):
    folder = tmp_path / "run"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "my_model.pt").write_text("mine")
    finished_run(tmp_path, ["a"])
    finished_run(tmp_path, ["a"])
    assert (folder / "weights" / "my_model.pt").read_text() == "mine"
    assert (folder / "weights" / "m.pt").is_file()


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


def test_make_refuses_an_empty_run_dir_a_missing_notebook_and_another_folder(tmp_path):
    assert "RUN_DIR is empty" in make("report", "RUN_DIR=").stderr
    result = make("pdf", f"RUN_DIR={tmp_path / 'none'}")
    assert result.returncode != 0 and "does not exist; run make report" in result.stdout
    assert not (tmp_path / "none").exists()
    result = make("-f", f"{ROOT.name}/Makefile", "test", cwd=ROOT.parent)
    assert result.returncode != 0 and f"Run make in the repository folder: make -C {ROOT}" in result.stderr


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
    process = subprocess.Popen(["make", "--no-print-directory", "pdf", f"RUN_DIR={tmp_path}"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and "nbconvert" not in subprocess.run(
            ["ps", "-ww", "-g", str(process.pid), "-o", "args="], capture_output=True, text=True).stdout:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)   # Ctrl-C reaches the whole foreground group
    output = process.communicate(timeout=60)[0]
    assert "make pdf was stopped" in output and "still the previous PDF" in output
    assert (tmp_path / "report" / "homework2.pdf").read_bytes() == before


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


def edit_metrics(root, change):
    path = root / "report" / "metrics.json"
    metrics = json.loads(path.read_text())
    change(metrics)
    path.write_text(json.dumps(metrics))


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


def test_names_written_only_into_metrics_json_are_not_in_the_pdf(submission):
    edit_metrics(submission, lambda m: m["config"].update(group_members="Ada Lovelace, Alan Turing"))
    problems = " ".join(project.submission_problems(submission))
    assert "group_members is empty" not in problems
    assert "does not show the names ['Ada Lovelace', 'Alan Turing']" in problems
