"""runs.py: the parameters, the run folder and saved models, printed text, the answers check."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

import helpers
import workers
import runs
from conftest import ROOT, config, python


def run_config(tmp_path, **changes):
    return config(run_dir=str(tmp_path / "run"), **changes)


def small_model():
    return helpers.Autoencoder(helpers.AEConfig(latent_dim=8, width=4, image_size=16)).eval()


# 1. The run's parameters and their checks ----------------------------------------------------

def test_defaults_come_from_the_notebooks_parameters_cell():
    defaults = runs.notebook_defaults()
    assert set(defaults) == {f.name for f in dataclasses.fields(runs.RunConfig)}
    assert config().steps == defaults["steps"]


def test_the_recipe_and_the_model_come_from_the_run_configuration_alone():
    """TrainConfig and AEConfig have no defaults of their own for what the parameters set."""
    for cls in (helpers.TrainConfig, helpers.AEConfig):
        with pytest.raises(TypeError):
            cls()
    run = config(steps=10, batch_size=4, lr=1e-3, weight_decay=0.5, width=8, seed=3, lam=2.0)
    bf16 = workers.native_bf16()
    assert run.recipe() == helpers.TrainConfig(steps=10, batch_size=4, lr=1e-3, weight_decay=0.5, seed=3, bf16=bf16)
    assert run.recipe(steps=20, seed=4, lam=run.lam) == helpers.TrainConfig(20, 4, 1e-3, 0.5, 4, lam=2.0, bf16=bf16)
    assert run.model(16, num_classes=3) == helpers.AEConfig(latent_dim=16, width=8, num_classes=3)


@pytest.mark.parametrize("name, value, message", [
    ("latent_dims", [], "at least one latent size"),
    ("latent_dims", [16, -4], "latent_dims: -4 is not an integer from 1 to 599"),
    ("latent_dims", [16, 4096], "latent_dims: 4096 is not an integer from 1 to 599 .PCA"),
    ("latent_dim", 0, "latent_dim: 0"),
    ("steps", 0, "steps: 0 is not an integer from 2"),
    ("batch_size", 2.5, "batch_size: 2.5"),
    ("lr", 0.0, "lr=0.0: must be a finite number above 0"),
    ("lr", 1e6, "lr=1000000.0: .* diverge"),
    ("lr", "0.01", "lr='0.01'"),
    ("lam", -1.0, "lam=-1.0"),
    ("lam", 0.0, "lam=0.0: must be a finite number above 0"),
    ("lam", float("nan"), "lam=nan: must be a finite number"),
    ("lambdas", [], "at least one weight"),
    ("lambdas", [0.1, -1.0], "lambdas=-1.0"),
    ("mse_margin", -0.1, "mse_margin=-0.1"),
    ("weight_decay", float("inf"), "weight_decay=inf"),
    ("keywords", [], "keywords"),
    ("seed", -1, "seed: -1 is not an integer from 0"),
    ("seed", 4294967295, "seed: 4294967295"),
    ("seed", 10 ** 20, "seed: 1000000"),
    ("quick", "maybe", "quick='maybe': must be True or False"),
    ("whole_word", 1, "whole_word=1"),
    ("class_words", {"happy": []}, "at least two classes"),
    ("class_words", {"happy": [], "sad": ["cry"]}, "only the last may be empty"),
    ("min_gain", 0, "min_gain=0"),
    ("group_members", ["a"], "group_members"),
])
def test_bad_parameters_are_named(name, value, message):
    with pytest.raises(ValueError, match=message):
        config(**{name: value})


def test_papermill_booleans_are_understood():
    assert config(quick="false").quick is False
    assert config(quick="True", run_dir="runs/x").quick is True
    assert config(whole_word="FALSE").whole_word is False


def test_quick_mode_never_writes_into_the_repository_root():
    with pytest.raises(ValueError, match="never replaces the committed results"):
        config(quick=True, run_dir=".")
    quick = config(quick=True, run_dir="runs/q", latent_dims=[64], lambdas=[0.3, 0.01, 0.1]).effective()
    assert quick.latent_dims == [64] and quick.steps == runs.QUICK_STEPS and quick.lambdas == [0.01, 0.3]


def test_a_keyword_with_spaces_around_it_is_refused():
    with pytest.raises(ValueError, match="'face ' has spaces around it, so it would only match with them; write 'face'"):
        config(keywords=["face "])


# 2. Where a run may write, and what it clears ------------------------------------------------

@pytest.mark.parametrize("where", [str(ROOT.parent), "/", str(Path.home()), "../elsewhere"])
def test_a_run_dir_outside_the_repository_needs_the_override(monkeypatch, where):
    monkeypatch.delenv(runs.OUTSIDE_REPO_OVERRIDE)
    monkeypatch.chdir(ROOT)
    with pytest.raises(ValueError, match="outside the repository.*ALLOW_RUN_DIR_OUTSIDE_REPO=1"):
        config(run_dir=where)
    assert config(run_dir="runs/inside").run_dir == "runs/inside"


def test_a_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("a file")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run_config(tmp_path)


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


# 3. A real lock ------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    first = runs.Run(run_config(tmp_path))
    code = ("import runs; from conftest import config\n"
            f"runs.Run(config(run_dir={str(tmp_path / 'run')!r}))\n")
    second = python(code, stderr=subprocess.PIPE)
    assert second.wait() != 0 and "in use by another run" in second.stderr.read()
    first.release()
    runs.Run(run_config(tmp_path)).release()


@pytest.mark.slow
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


# 4. Saved models, and provenance from the start ----------------------------------------------

def test_run_stages_outputs_and_moves_them_only_at_the_end(tmp_path):
    run = runs.Run(run_config(tmp_path))
    model = small_model().eval()
    run.save_model("weights/m.pt", model, note="x")
    assert not (run.dir / "weights").exists()
    moved = run.finish({"config": {}})
    assert {p.name for p in moved} == {"m.pt", "metrics.json"}
    rebuilt, payload = runs.load_model(run.dir / "weights" / "m.pt")
    x = torch.rand(3, 3, 16, 16)
    assert payload["note"] == "x" and payload["run_id"] == run.id
    assert torch.equal(rebuilt(x)[0], model(x)[0])
    metrics = json.loads((run.dir / "report" / "metrics.json").read_text())
    assert metrics["run"]["id"] == run.id and metrics["provenance"] == runs.provenance()
    runs.Run(run_config(tmp_path)).release()     # finish released the lock


def test_bad_weights_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="make report"):
        runs.load_model(tmp_path / "missing.pt")
    run = runs.Run(run_config(tmp_path))
    path = run.save_model("m.pt", small_model())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="damaged"):
        runs.load_model(truncated)
    other = helpers.AEConfig(latent_dim=16, width=4, image_size=16)
    with pytest.raises(ValueError, match="was made for"):
        runs.load_model(path, expected_config=other)
    run.release()


def test_weights_without_a_state_dict_or_with_contradicting_tensors(tmp_path):
    torch.save({"config": {"latent_dim": 8, "width": 4, "image_size": 16}}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="damaged or not ours .KeyError"):
        runs.load_model(tmp_path / "a.pt")
    state = small_model().state_dict()
    torch.save({"config": {"latent_dim": 9, "width": 4, "image_size": 16}, "state_dict": state},
               tmp_path / "b.pt")
    with pytest.raises(ValueError, match="do not fit the model its own config describes"):
        runs.load_model(tmp_path / "b.pt")


def test_a_run_whose_code_changed_meanwhile_does_not_finish(tmp_path, monkeypatch):
    run = runs.Run(run_config(tmp_path))
    run.save_model("weights/m.pt", small_model())
    monkeypatch.setattr(runs, "provenance", lambda: {**run.provenance, "helpers_sha256": "edited"})
    with pytest.raises(RuntimeError, match="changed while this run was going"):
        run.finish({"config": {}})
    assert not (run.dir / "weights").exists() and not (run.dir / "report").exists()
    run.release()


# 5. All or nothing at the end ----------------------------------------------------------------

def finished_run(tmp_path, figures):
    run = runs.Run(run_config(tmp_path))
    run.save_model("weights/m.pt", small_model())
    for name in figures:
        runs.atomic_write(run.path(f"report/figures/{name}.png"), lambda tmp: Path(tmp).write_bytes(b"png"))
    run.finish({"config": {}})
    return run


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    path = runs.atomic_write(tmp_path / "metrics.json",
                                lambda tmp: open(tmp, "w").write('{"old": 1}'))

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write('{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


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


def test_metrics_json_is_strict_json(tmp_path):
    run = runs.Run(run_config(tmp_path))
    run.finish({"config": {}, "p_cat": [0.5, float("nan")], "ratio": float("inf")})

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    metrics = json.loads((run.dir / "report" / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["p_cat"] == [0.5, None] and metrics["ratio"] is None


# 6. Clicking through and running cells again: what a student does to a run -------------------

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


# 7. User and data text prints as it is -------------------------------------------------------

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
    assert "\\textbf{b}" not in latex and "\\input{" not in latex and r"\$x\$" in latex
    assert r"\textbackslash input\{/etc/hostname\}" in latex and r"a\_b" in latex


def test_figure_titles_print_dollars_as_written():
    import matplotlib

    matplotlib.use("Agg")
    fig = runs.show_images([[torch.rand(3, 8, 8)]], col_titles=["cost $5 and $6"], title="a $b$")
    fig.canvas.draw()     # mathtext would fail or swallow the dollars
    assert fig.axes[0].get_title() == r"cost \$5 and \$6"


# 8. The answers check ------------------------------------------------------------------------

@pytest.mark.parametrize("written, value, matches", [
    ("0.78", 0.7771, True), ("0.79", 0.7771, False), ("12.9%", 0.1289, True), ("13%", 0.1289, True),
    ("12.8%", 0.1289, False), ("6,000", 6000, True), ("-0.0048", -0.00481, True), ("-0.0048", 0.00481, False),
    ("+0.40", 0.4001, True), ("0.0048", -0.00481, True), ("149", 149, True), ("149", 149.4, False),
])
def test_a_quoted_number_matches_a_value_at_the_precision_written(written, value, matches):
    [number] = runs.quoted_numbers(f"it is {written} here")
    assert number.matches(value) is matches


def test_labels_list_markers_code_and_the_assignments_constants_are_not_run_numbers():
    text = ("### 1f. Error\n1. **Split** 60/20/20 of 64x64 pictures (CS 449; 2,749 rows; 95% interval), "
            "see 2d and Parts 1 and 2, `Sequential: 1-1`, then 0.0122 and 4x4 kernels and 63/21/21.")
    left = runs.quoted_numbers(runs.NOT_RUN_NUMBERS.sub(" ", text))
    assert [n.text for n in left] == ["0.0122", "63", "21", "21"]
