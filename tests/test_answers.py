"""The answer key: one assertion for each direction or comparison the notebook's markdown
answers state, read from the committed run's metrics.json, and the answers check (every
number an answer quotes is one the run produced) on the committed notebook.

When a rerun moves a number across one of these lines, the test names the answer to rewrite.
"""
import json
import shutil

import nbformat
import pytest

import runs
from conftest import ROOT

METRICS = ROOT / "report" / "metrics.json"
NOTEBOOK = ROOT / "homework2.ipynb"


@pytest.fixture(scope="module")
def m():
    return json.loads(METRICS.read_text())


# --- the answers check ------------------------------------------------------------------

def test_every_number_in_the_committed_answers_is_one_the_run_produced():
    assert runs.check_answers(NOTEBOOK, METRICS) == []


def test_the_answers_check_names_the_cell_the_number_and_the_runs_value(tmp_path):
    notebook = nbformat.read(str(NOTEBOOK), as_version=4)
    index = next(i for i, c in enumerate(notebook.cells)
                 if c.cell_type == "markdown" and "**The final average test error is" in c.source)
    notebook.cells[index].source = notebook.cells[index].source.replace(
        "test error is 0.0123", "test error is 0.0172", 1)
    nbformat.write(notebook, str(tmp_path / "homework2.ipynb"))
    problems = runs.check_answers(tmp_path / "homework2.ipynb", METRICS)
    assert len(problems) == 1
    assert problems[0].startswith(f"cell {index} (1f): '0.0172' is no number of this run")


def test_the_committed_run_is_checked_strictly_and_other_runs_are_not(m, tmp_path, capsys):
    assert runs.is_committed_run(ROOT, m)
    assert not runs.is_committed_run(tmp_path, m)
    assert not runs.is_committed_run(ROOT, m | {"config": m["config"] | {"quick": True}})
    folder = tmp_path / "run"
    (folder / "report").mkdir(parents=True)
    notebook = nbformat.read(str(NOTEBOOK), as_version=4)
    notebook.cells.append(nbformat.v4.new_markdown_cell("A number of no run: 0.123456."))
    nbformat.write(notebook, str(folder / "homework2.ipynb"))
    shutil.copy(METRICS, folder / "report" / "metrics.json")
    assert runs.main(["check-answers", str(folder)]) == 0
    assert "'0.123456' is no number of this run" in capsys.readouterr().out


# --- 1a-1g ------------------------------------------------------------------------------

def test_1a_split_before_augmenting(m):
    d = m["data"]
    assert d["duplicates"] == 0 and d["subset_size"] == sum(d["split_sizes"].values())
    assert [d["split_sizes"][s] for s in ("train", "val", "test")] == [63, 21, 21]
    assert d["matched"] - sum(d["excluded"].values()) == d["subset_size"]


def test_1c_the_rule_keeps_32_on_a_close_call(m):
    sweep, gain = {r["latent_dim"]: r for r in m["part1"]["sweep"]}, m["part1"]["min_gain"]
    assert m["part1"]["latent_dim"] == m["part1"]["rule_choice"] == 32
    assert sweep[16]["next_val_gain"] >= gain > sweep[32]["next_val_gain"]
    assert sweep[16]["next_val_gain"] - gain < 0.02          # "the choice is close"


def test_1c_below_pca_up_to_64_but_not_at_128(m):
    sweep = {r["latent_dim"]: r for r in m["part1"]["sweep"]}
    assert all(sweep[k]["ratio_to_pca"] < 1 for k in (16, 32, 64)) and sweep[128]["ratio_to_pca"] > 1
    assert sweep[64]["next_pca_val_gain"] > sweep[64]["next_val_gain"]   # the curves cross


def test_1e_below_pca_late_in_training_with_a_generalisation_gap(m):
    curve, part1 = m["part1"]["learning_curve"], m["part1"]
    assert curve["first_epoch_below"] < curve["stays_below_from_epoch"] < curve["kept_epoch"]
    assert curve["val_mse"] < part1["pca_val_mse"]
    assert part1["val_over_train"] > 2                        # "much better than new ones"
    assert curve["kept_epoch"] >= 0.9 * curve["epochs"]       # "still lowest late"


def test_1e_the_budget_and_half_of_it_are_enough(m):
    check = m["part1"]["budget_check"]
    assert check["gain_to_doubled"] < check["threshold"] and check["enough"]
    assert check["gain_to_budget"] < check["threshold"]


def test_1f_the_autoencoder_beats_pca_on_the_test_emoji(m):
    assert m["part1"]["difference_to_pca_ci"]["high"] < 0 and m["part1"]["ratio_to_pca"] < 1


def test_1g_below_pca_at_every_budget_and_the_rule_cost_error(m):
    part1 = m["part1"]
    half = next(r for r in part1["sweep"] if r["latent_dim"] == part1["latent_dim"])
    assert max(half["ratio_to_pca"], part1["ratio_to_pca"], part1["budget_check"]["doubled_ratio_to_pca"]) < 1
    assert part1["budget_check"]["doubled_test_mse"] >= part1["test_mse"]   # twice the steps did not help
    size128 = next(r for r in part1["sweep"] if r["latent_dim"] == 128)
    assert size128["test_mse"] < part1["test_mse"]


def test_1g_the_worst_test_emoji_are_the_clown_the_salute_and_the_scream(m):
    worst = m["part1"]["worst_test_emoji"]
    assert list(worst) == ["clown face", "saluting face", "face screaming in fear"]
    assert list(worst.values()) == sorted(worst.values(), reverse=True)


# --- 2a-2e ------------------------------------------------------------------------------

def test_2b_the_weighted_cross_entropy_is_a_small_part_of_the_loss(m):
    balance = m["part2"]["loss_balance"]
    assert balance["kept"] < balance["first"] < 0.1 and balance["kept"] < 0.01


def test_2c_the_classifier_fits_its_training_emoji_far_better_than_new_ones(m):
    kept, part2 = m["part2"]["kept_epoch"], m["part2"]
    assert kept["train_accuracy"] >= 0.995 and kept["val_accuracy"] < kept["train_accuracy"] - 0.2
    assert kept["val_accuracy"] > part2["val_majority_accuracy"]
    assert 2.5 < kept["val_ce"] / part2["uniform_ce"] < 3          # "almost three times"
    assert kept["val_mse"] > m["part1"]["learning_curve"]["val_mse"]


def test_2d_reconstruction_got_worse_with_the_auxiliary_task(m):
    assert m["part2"]["mse_change_ci"]["low"] > 0 and m["part2"]["relative_mse_change"] > 0


def test_2d_accuracy_cannot_be_told_from_the_majority_class(m):
    part2 = m["part2"]
    edge = part2["accuracy_minus_majority_ci"]
    assert edge["low"] < 0 < edge["high"] and part2["test_accuracy"] > part2["majority_baseline_accuracy"]
    assert part2["majority_class"] == "other"
    assert all(part2["recall"][c] > part2["class_share"][c] for c in part2["classes"])


def test_2d_the_five_emoji_go_the_same_way_as_the_test_set(m):
    five = m["part2"]["five_test_emoji"]
    assert five["part2_mse"] > five["part1_mse"] and m["part2"]["relative_mse_change"] > 0
    assert five["correct"] == 4


# --- 3a-3c ------------------------------------------------------------------------------

def test_3a_the_one_pair_vector_is_closer_for_the_crying_face(m):
    example = m["part3"]["example"]
    assert example["target"] == "crying face" and example["single"] < example["averaged"]


def test_3b_the_classifier_judges_human_well_and_cat_weakly(m):
    accuracy = m["part3"]["classifier_accuracy"]
    assert accuracy["test_human_faces"] > 0.95 and accuracy["held_out_cats"] < 0.75


def test_3b_p_cat_jumps_once_the_vector_is_added(m):
    sweep = m["part3"]["strength_sweep"]
    assert sweep["scales"][0] == 0 and sweep["cat_probability"][0] < 0.5
    assert all(p >= 0.995 for s, p in zip(sweep["scales"], sweep["cat_probability"]) if s >= 0.5)


def test_3b_latent_arithmetic_does_not_beat_pixel_arithmetic(m):
    a = m["part3"]["analogy"]
    assert a["latent_minus_pixel_ci"]["low"] < 0 < a["latent_minus_pixel_ci"]["high"]
    assert a["latent_mse"] < a["pixel_mse"] and a["latent_wins"] == a["pairs"] // 2


def test_3b_as_many_latent_as_pixel_composites_are_called_cats_and_no_reconstruction(m):
    a = m["part3"]["analogy"]
    assert a["latent_cats"] == a["pixel_cats"] and a["unchanged_cats"] == 0


def test_3b_the_floor_is_most_of_the_composites_error(m):
    a = m["part3"]["analogy"]
    assert a["floor_share"] > 0.5 and a["floor_mse"] < a["latent_mse"]


def test_3b_ears_like_the_cats_and_smoother_than_them(m):
    a = m["part3"]["analogy"]
    assert abs(a["latent_ears"] - a["truth_ears"]) < 0.05 and a["human_ears"] < 0.1
    assert a["latent_sharpness"] < a["truth_sharpness"]


def test_3b_the_figure_shows_the_kissing_face_and_the_weary_face(m):
    per_pair = m["part3"]["analogy"]["per_pair"]
    order = sorted(range(len(per_pair["latent_mse"])), key=per_pair["latent_mse"].__getitem__)
    assert per_pair["targets"][order[0]] == "kissing face with closed eyes"
    assert per_pair["targets"][order[-1]] == "weary face"
