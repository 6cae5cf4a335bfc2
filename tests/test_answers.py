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
        "test error is 0.0101", "test error is 0.0172", 1)
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
    assert [d["split_sizes"][s] for s in ("train", "val", "test")] == [61, 22, 22]
    assert d["matched"] - sum(d["excluded"].values()) == d["subset_size"]


def test_1c_every_size_at_the_budget_and_the_rule_keeps_64(m):
    part1 = m["part1"]
    sweep, gain, rule = {r["latent_dim"]: r for r in part1["sweep"]}, part1["min_gain"], part1["rule"]
    assert part1["sweep_steps"] == part1["steps"] and all(r["epochs"] == sweep[64]["epochs"] for r in sweep.values())
    assert part1["latent_dim"] == rule["choice"] == 64
    assert sweep[16]["next_val_gain"] >= gain and sweep[32]["next_val_gain"] >= gain > sweep[64]["next_val_gain"]
    assert not rule["close"]                                               # not called a close call


def test_1c_below_pca_up_to_64_and_level_with_it_at_128(m):
    sweep = {r["latent_dim"]: r for r in m["part1"]["sweep"]}
    assert all(sweep[size]["ratio_to_pca"] < 1 for size in (16, 32, 64))
    assert 1 < sweep[128]["ratio_to_pca"] < 1.02                         # "PCA has caught up there"
    assert sweep[64]["next_pca_val_gain"] > sweep[64]["next_val_gain"]   # the curves draw together
    assert sweep[128]["test_mse"] < sweep[64]["test_mse"]
    assert sweep[128]["val_mse"] < sweep[128]["pca_val_mse"]             # below PCA on validation there


def test_1e_below_pca_late_in_training_with_a_generalisation_gap(m):
    curve, part1 = m["part1"]["learning_curve"], m["part1"]
    assert curve["first_epoch_below"] < curve["stays_below_from_epoch"] < curve["kept_epoch"]
    assert curve["val_mse"] < part1["pca_val_mse"]
    assert part1["val_over_train"] > 1.5                      # "better than new ones"
    assert 0.9 * curve["epochs"] < curve["kept_epoch"] < curve["epochs"]   # late, not the last epoch


def test_1e_the_budget_is_enough_and_half_of_it_would_not_have_been(m):
    check = m["part1"]["budget_check"]
    assert 0 < check["gain_to_doubled"] < check["threshold"] and check["enough"]
    assert check["gain_to_budget"] > check["threshold"]


def test_1f_the_autoencoder_beats_pca_on_the_test_emoji(m):
    assert m["part1"]["difference_to_pca_ci"]["high"] < 0 and m["part1"]["ratio_to_pca"] < 1


def test_1g_below_pca_at_the_budget_and_twice_it(m):
    part1 = m["part1"]
    assert max(part1["ratio_to_pca"], part1["budget_check"]["doubled_ratio_to_pca"]) < 1
    assert part1["budget_check"]["doubled_test_mse"] < part1["test_mse"]   # twice the steps lowered it slightly


def test_1g_the_worst_test_emoji_are_the_horns_the_hat_and_the_exploding_head(m):
    worst = m["part1"]["worst_test_emoji"]
    assert list(worst) == ["smiling face with horns", "face with cowboy hat", "shocked face with exploding head"]
    assert list(worst.values()) == sorted(worst.values(), reverse=True)


# --- 2a-2e ------------------------------------------------------------------------------

def test_2a_no_stem_names_a_picture_feature(m):
    rules = m["part2"]["class_rules"]
    assert not {"cowboy", "nerd", "tongue", "clown", "party"} & {w for words in rules.values() for w in words}


def test_2b_the_rule_keeps_the_only_lambda_within_the_margin(m):
    part2 = m["part2"]
    rows, rule = part2["lambda_sweep"], part2["lambda_rule"]
    assert len(rows) >= 3 and part2["lambda"] == rule["choice"] == 0.01 and rule["within_margin"] == [0.01]
    mses = [r["val_mse"] for r in rows]
    assert mses == sorted(mses) and all(r["val_mse_change"] > 0 for r in rows)   # "the larger lambda, the worse"
    assert all(0 < r["val_accuracy"] - part2["val_majority_accuracy"] < 0.031 for r in rows)   # "at most three points above"
    shares = [r["ce_share_first"] for r in rows]
    assert shares[0] < 0.1 and shares[-1] > 1                  # "a few percent up to twice the MSE"
    assert part2["loss_balance"]["kept"] < 0.01


def test_2c_the_classifier_fits_its_training_emoji_and_not_new_ones(m):
    kept, part2 = m["part2"]["kept_epoch"], m["part2"]
    assert kept["train_accuracy"] >= 0.995
    assert 0 < kept["val_accuracy"] - part2["val_majority_accuracy"] < 0.03   # "barely above"
    assert 3.95 < kept["val_ce"] / part2["uniform_ce"] < 4.05      # "four times"
    assert kept["val_mse"] > m["part1"]["learning_curve"]["val_mse"]


def test_2d_reconstruction_got_worse_with_the_auxiliary_task(m):
    assert m["part2"]["mse_change_ci"]["low"] > 0 and m["part2"]["relative_mse_change"] > 0


def test_2d_accuracy_cannot_be_told_from_the_majority_class_on_the_test_split(m):
    part2 = m["part2"]
    edge = part2["accuracy_minus_majority_ci"]
    assert edge["low"] < 0 < edge["high"] and part2["test_accuracy"] < part2["majority_baseline_accuracy"]
    assert part2["majority_class"] == "other"
    assert part2["recall"]["frown"] < part2["class_share"]["frown"]
    assert all(part2["recall"][c] > part2["class_share"][c] for c in ("smile", "other"))


def test_2d_cross_validation_leans_above_chance_without_clearing_zero(m):
    cv, test = m["part2"]["cv"], m["part2"]["accuracy_minus_majority_ci"]
    assert cv["emoji"] == m["data"]["subset_size"] and cv["lambda"] == m["part2"]["lambda"]
    assert cv["difference"]["low"] < 0 < cv["difference"]["mean"] and -0.02 < cv["difference"]["low"]
    assert cv["difference"]["high"] - cv["difference"]["low"] < test["high"] - test["low"]   # "far tighter"


def test_2d_the_five_emoji_go_the_same_way_as_the_test_set(m):
    five = m["part2"]["five_test_emoji"]
    assert five["part2_mse"] > five["part1_mse"] and m["part2"]["relative_mse_change"] > 0
    assert five["correct"] == 4


# --- 3a-3c ------------------------------------------------------------------------------

def test_3a_the_one_pair_vector_is_closer_for_the_crying_face(m):
    example = m["part3"]["example"]
    assert example["target"] == "crying face" and example["single"] < example["averaged"]


def test_3b_the_classifier_judges_human_and_cat_faces_well(m):
    accuracy = m["part3"]["classifier_accuracy"]
    assert accuracy["test_human_faces"] > 0.95 and accuracy["held_out_cats"] == 1.0


def test_3b_p_cat_jumps_once_the_vector_is_added(m):
    sweep = m["part3"]["strength_sweep"]
    assert sweep["scales"][0] == 0 and sweep["cat_probability"][0] < 0.5
    assert all(p >= 0.95 for s, p in zip(sweep["scales"], sweep["cat_probability"]) if s >= 0.5)


def test_3a_part_three_takes_the_size_with_the_lowest_validation_mse(m):
    sweep = m["part1"]["sweep"]
    assert m["part3"]["latent_dim"] == min(sweep, key=lambda r: r["val_mse"])["latent_dim"] == 128


def test_3b_latent_arithmetic_is_closer_on_most_pairs_but_not_clearly(m):
    a = m["part3"]["analogy"]
    assert a["latent_mse"] < a["pixel_mse"] and a["latent_wins"] == 6
    assert a["latent_minus_pixel_ci"]["low"] < 0 < a["latent_minus_pixel_ci"]["high"] < 0.001   # "just includes zero"


def test_3b_seven_latent_and_seven_pixel_composites_are_called_cats_and_no_reconstruction(m):
    a = m["part3"]["analogy"]
    assert a["latent_cats"] == a["pixel_cats"] == a["pairs"] - 1 and a["unchanged_cats"] == 0
    per_pair = a["per_pair"]
    pouting = per_pair["targets"].index("pouting face")                  # "the pouting face fails both"
    assert max(per_pair["latent_p_cat"][pouting], per_pair["pixel_p_cat"][pouting]) < 0.5
    assert m["part3"]["strength_sweep"]["cat_probability"][1] > 0.985   # "0.99 already at s = 0.5"


def test_3b_the_floor_is_under_half_of_the_composites_error(m):
    a = m["part3"]["analogy"]
    assert a["floor_share"] < 0.5 and a["floor_mse"] < a["latent_mse"]


def test_3b_ears_like_the_cats_and_smoother_than_them(m):
    a = m["part3"]["analogy"]
    assert abs(a["latent_ears"] - a["truth_ears"]) < 0.05 and a["human_ears"] < 0.1
    assert a["latent_sharpness"] < a["truth_sharpness"]


def test_3b_the_figure_shows_the_kissing_face_and_the_weary_face(m):
    per_pair = m["part3"]["analogy"]["per_pair"]
    order = sorted(range(len(per_pair["latent_mse"])), key=per_pair["latent_mse"].__getitem__)
    assert per_pair["targets"][order[0]] == "kissing face with closed eyes"
    assert per_pair["targets"][order[-1]] == "weary face"
