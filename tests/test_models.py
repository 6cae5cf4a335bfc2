"""Models, training, configuration checks, saving and latent arithmetic, on small tensors."""
import dataclasses
import json

import pytest
import torch

import helpers
import workers
import sources
import runs
from conftest import config


def small_model(**kwargs):
    return helpers.build_model(helpers.AEConfig(latent_dim=8, width=4, image_size=16, **kwargs))


def test_output_shape_equals_input_and_stays_in_range():
    model = small_model(num_classes=3).eval()
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        recon, z, logits = model(x)
    assert recon.shape == x.shape and z.shape == (5, 8) and logits.shape == (5, 3)
    assert 0 <= float(recon.min()) and float(recon.max()) <= 1


def test_the_model_is_a_plain_convolutional_autoencoder():
    """Every path from pixels to code and back runs through the convolutions."""
    model = small_model()
    assert [name for name, _ in model.named_children()] == ["encoder", "decoder"]
    assert isinstance(model.encoder[0][0], torch.nn.Conv2d)
    assert isinstance(model.decoder[-1][0], torch.nn.ConvTranspose2d)


def test_against_baseline_counts_epochs_from_one():
    history = {"val_mse": [0.5, 0.2, 0.4, 0.1, 0.05], "best_epoch": 4}
    curve = helpers.against_baseline(history, 0.3)
    assert curve["first_epoch_below"] == 2 and curve["stays_below_from_epoch"] == 4
    assert curve["kept_epoch"] == 5 and curve["val_mse"] == 0.05
    assert helpers.against_baseline(history, 0.01)["first_epoch_below"] is None


def test_random_pick_leaves_out_what_it_is_told():
    class Split:
        texts = [str(i) for i in range(10)]
    drawn = helpers.random_pick(Split, 5, 0, exclude=torch.tensor([0, 1, 2]))
    assert len(drawn) == 5 and not {0, 1, 2} & set(drawn.tolist())
    assert torch.equal(drawn, helpers.random_pick(Split, 5, 0, exclude=[2, 1, 0]))


def test_majority_class_counts_unique_emoji_not_images():
    class Split:
        labels = torch.tensor([2, 0, 2, 1, 2])
        y = torch.tensor([0] * 20 + [2] * 5)   # the augmented images must not decide it
    assert helpers.majority_class(Split) == 2


def test_the_example_pair_falls_back_to_the_last_one():
    pairs = helpers.Pairs(names=[("crying cat face", "crying face"), ("pouting cat face", "pouting face")],
                          with_images=None, without_images=None, unpaired=None, missing=[])
    assert pairs.index_of("crying face") == 0 and pairs.index_of("weary face") == 1


def test_pca_with_all_components_is_exact_and_fewer_are_worse():
    x = torch.rand(10, 3, 8, 8)
    pca = helpers.PCA(x)
    assert pca.mse(x, 9) < 1e-10
    assert pca.mse(x, 2) > 1e-3


@pytest.mark.parametrize("image_size", [48, 8])
def test_bad_image_size(image_size):
    with pytest.raises(ValueError, match="power of two"):
        helpers.AEConfig(latent_dim=8, width=4, image_size=image_size)


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


def tiny_run(seed, num_classes=0, lr=2e-3, steps=4):
    torch.manual_seed(123)
    x = torch.rand(24, 3, 16, 16)
    y = torch.arange(24) % 2
    model = small_model(num_classes=num_classes)
    recipe = helpers.TrainConfig(steps=steps, batch_size=8, lr=lr, weight_decay=1e-2, seed=seed, lam=0.1)
    extra = {"train_y": y[:16], "val_y": y[16:]} if num_classes else {}
    history = helpers.train(model, x[:16], x[16:], recipe, device=torch.device("cpu"), **extra)
    return model, history


def test_training_repeats_for_a_seed_and_changes_with_another():
    _, a = tiny_run(1)
    _, b = tiny_run(1)
    _, c = tiny_run(2)
    assert a["val_mse"] == b["val_mse"] and a["val_mse"] != c["val_mse"]
    assert set(a) == {"train_mse", "val_mse", "steps", "lr", "seconds", "best_epoch"}


def test_training_takes_exactly_the_budget_in_steps():
    """16 images in batches of 8 are 2 steps an epoch: 5 steps end inside the third epoch."""
    _, history = tiny_run(0, steps=5)
    assert history["steps"] == [2, 4, 5] and len(history["val_mse"]) == 3
    assert history["lr"][-1] < history["lr"][0] / 100     # the one-cycle schedule ends near zero


def test_training_with_a_head_records_classification_curves():
    model, history = tiny_run(0, num_classes=2)
    for key in ("train_ce", "val_ce", "train_accuracy", "val_accuracy"):
        assert len(history[key]) == 2
    assert history["val_mse"][history["best_epoch"]] == min(history["val_mse"])


def test_diverging_training_stops_at_once_with_the_fix():
    with pytest.raises(helpers.TrainingDiverged, match=r"diverged at step \d+: .*Lower the learning rate"):
        tiny_run(0, lr=1e30)


def test_size_rule_stops_where_doubling_stops_paying():
    rows = [{"latent_dim": k, "val_mse": v} for k, v in
            [(16, 1.0), (32, 0.7), (64, 0.5), (128, 0.45), (256, 0.44)]]
    for row, bigger in zip(rows, rows[1:] + [None]):
        row["next_val_gain"] = helpers.relative_drop(row["val_mse"], bigger and bigger["val_mse"])
    rule = helpers.choose_size(rows, 0.15)
    assert rule["choice"] == 64 and rule["gain_into_choice"] == pytest.approx(2 / 7)
    assert rule["gain_after_choice"] == pytest.approx(0.1) and not rule["close"]
    assert rule["gains"]["16->32"] == pytest.approx(0.3)
    assert helpers.choose_size(rows, 0.5)["choice"] == 16
    assert helpers.choose_size(rows, 0.01)["choice"] == 256    # every step paid: the largest
    assert helpers.choose_size(rows, 0.11)["close"]            # 64 -> 128 gains 10%, 1 point below


def test_lambda_rule_takes_the_best_accuracy_within_the_margin():
    rows = [{"lambda": lam, "val_mse_change": change, "val_accuracy": accuracy} for lam, change, accuracy in
            [(0.01, 0.02, 0.60), (0.1, 0.20, 0.70), (1.0, 0.60, 0.80)]]
    assert helpers.choose_lambda(rows, 0.25) == {"choice": 0.1, "mse_margin": 0.25, "within_margin": [0.01, 0.1]}
    assert helpers.choose_lambda(rows, 0.1)["choice"] == 0.01
    assert helpers.choose_lambda(rows, 1.0)["choice"] == 1.0
    assert helpers.choose_lambda(rows, 0.0)["choice"] == 0.01   # none within: the smallest
    rows[1]["val_accuracy"] = 0.60
    assert helpers.choose_lambda(rows, 0.25)["choice"] == 0.01  # a tie: the smaller lambda


def run_config(tmp_path, **changes):
    return config(run_dir=str(tmp_path / "run"), **changes)


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


class Identity(torch.nn.Module):
    """A stand-in autoencoder whose code is the image itself."""

    def encode(self, x):
        return x.flatten(1)

    def decode(self, z):
        return z.view(-1, 1, 2, 2)


class HalfSure(torch.nn.Module):
    """A stand-in cat classifier that is never sure."""

    def p_cat(self, x):
        return torch.full((len(x),), 0.5)


def test_held_out_analogies_leave_the_tested_pair_out():
    without = torch.full((4, 1, 2, 2), 0.2)
    shifts = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(4, 1, 1, 1)
    pairs = helpers.Pairs([("a", f"b{k}") for k in range(4)], without + shifts, without, without[:0], [])
    assert pairs.folds() == [[0, 2], [1, 3]] and pairs.fold_of(3) == 1
    composites, per_pair = helpers.held_out_composites([Identity(), Identity()], [HalfSure(), HalfSure()], pairs)
    # Pair 0 gets the mean shift of pairs 1, 2 and 3 (0.3) instead of its own 0.1.
    assert per_pair["latent_mse"].iloc[0] == pytest.approx(0.2 ** 2)
    assert list(per_pair["pixel_mse"]) == pytest.approx(list(per_pair["latent_mse"]))
    assert list(per_pair["unchanged_mse"]) == pytest.approx([0.01, 0.04, 0.09, 0.16])
    assert list(per_pair["floor_mse"]) == pytest.approx([0.0] * 4)
    assert composites["latent"].shape == (4, 1, 2, 2)
    summary = helpers.score_analogies(per_pair, composites, pairs, 0)
    assert summary["pairs"] == 4 and summary["latent_wins"] == 0 and summary["latent_cats"] == 4
    assert summary["latent_mse_ci"]["low"] <= summary["latent_mse"] <= summary["latent_mse_ci"]["high"]


def test_too_few_pairs_make_no_held_out_analogies():
    one = torch.full((2, 1, 2, 2), 0.2)
    pairs = helpers.Pairs([("a", "b0"), ("a", "b1")], one + 0.1, one, one[:0], [])
    assert helpers.held_out_composites([Identity(), Identity()], [HalfSure(), HalfSure()], pairs) == (None, None)


def test_a_fold_model_never_trains_on_the_cat_faces_of_its_fold(face_data):
    cats = torch.arange(4).view(4, 1, 1, 1).expand(4, 3, 8, 8) / 10
    pairs = helpers.Pairs([("a", "b")] * 4, cats, 1 - cats, torch.full((1, 3, 8, 8), 0.9), [])
    extra = helpers.cats_for_training(face_data, pairs, [0, 2], seed=0)
    first = extra[:, 0, 0, 0]
    assert first[:3].tolist() == pytest.approx([0.1, 0.3, 0.9], abs=1 / 255)   # cats 1 and 3, the unpaired one
    per_emoji = len(face_data["train"].x) / len(face_data["train"].originals)
    assert len(extra) == round(3 * per_emoji)


def test_ear_coverage_reads_the_top_corners_only():
    white = torch.ones(2, 3, 64, 64)
    assert helpers.ear_coverage(white) == 0
    eared = white.clone()
    eared[:, :, :10, :32] = torch.tensor([1.0, 0.6, 0.1]).view(3, 1, 1)   # left ear box coloured
    eared[:, :, 20:, :] = 0.0                                             # the face below does not count
    assert helpers.ear_coverage(eared) == 0.5


def test_cat_classifier_learns_a_visible_difference():
    generator = torch.Generator().manual_seed(0)
    cats = torch.rand(4, 3, 16, 16, generator=generator) * 0.2 + torch.tensor([0.8, 0.1, 0.1]).view(3, 1, 1)
    faces = torch.rand(12, 3, 16, 16, generator=generator) * 0.2 + torch.tensor([0.1, 0.1, 0.8]).view(3, 1, 1)
    classifier = helpers.train_cat_classifier(cats, faces, seed=0, steps=60)
    assert (classifier.p_cat(cats) > 0.5).all() and (classifier.p_cat(faces) < 0.5).all()


def test_pairs_are_checked_and_missing_ones_named(tmp_path, capsys):
    from PIL import Image
    from conftest import write_parquet

    square = Image.new("RGB", (8, 8), "red")
    path = write_parquet(tmp_path / "p.parquet", [("crying cat face", square),
                                                    ("crying face", square), ("pouting face", square)])
    dataset, _ = sources.load_emoji_dataset(str(path))
    pairs = helpers.find_pairs(dataset)
    assert pairs.names == [("crying cat face", "crying face")] and not pairs.held_out
    assert len(pairs.unpaired) == 0
    assert "pouting cat face" in pairs.missing and "only 1 complete pair" in capsys.readouterr().out
    path = write_parquet(tmp_path / "none.parquet", [("pouting face", square)])
    with pytest.raises(ValueError, match="at least one complete"):
        helpers.find_pairs(sources.load_emoji_dataset(str(path))[0])


def test_classification_scores_use_every_class():
    scores = helpers.classification_scores(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2]),
                                           ["a", "b", "c"])
    assert scores["accuracy"] == 0.75
    assert scores["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert scores["recall"] == {"a": 0.5, "b": 1.0, "c": 1.0}


def test_a_perfect_classifier_gets_a_macro_f1_of_one_when_a_class_is_absent():
    scores = helpers.classification_scores(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 0]),
                                           ["a", "b", "c"])
    assert scores["macro_f1"] == 1.0 and scores["accuracy"] == 1.0


def test_nearest_centroid_refuses_a_class_without_training_codes():
    z = torch.randn(6, 3)
    assert helpers.nearest_centroid_accuracy(z, torch.tensor([0, 0, 0, 1, 1, 1]), z,
                                             torch.tensor([0, 1, 2, 0, 1, 2])) is None


def test_models_trained_side_by_side_equal_models_trained_alone(face_data):
    """fit_all's processes do not change the numbers: one job alone, or two at once."""
    quick = config(steps=6, batch_size=64)
    jobs = [helpers.Job(quick.model(8), quick.recipe(seed=1)), helpers.Job(quick.model(8), quick.recipe())]
    together = helpers.fit_all(face_data, jobs)
    alone = helpers.fit(face_data, quick.model(8), quick.recipe())
    assert together[1].history["val_mse"] == alone.history["val_mse"]
    assert together[0].history["val_mse"] != alone.history["val_mse"]


def test_sweep_and_budget_check_spend_the_stated_steps(face_data):
    """Every size at the budget; the chosen size also at half and at twice it."""
    quick = config(steps=8, batch_size=64, latent_dims=[4, 8])
    pca = helpers.PCA(face_data["train"].x)
    sweep = helpers.latent_sweep(face_data, quick, pca)
    assert sweep.steps == 8 and [r["latent_dim"] for r in sweep.rows] == [4, 8]
    assert all(f.history["steps"][-1] == 8 for f in sweep.models.values())
    assert sweep.chosen in (4, 8) and sweep.lowest_val_size in (4, 8)
    half, doubled = helpers.fit_all(face_data, helpers.budget_jobs(quick, sweep.chosen))
    check = helpers.budget_check(sweep, half, doubled)
    assert doubled.history["steps"][-1] == 16
    assert (check["half_steps"], check["steps"], check["doubled_steps"]) == (4, 8, 16)
    assert check["val_mse"] == next(r["val_mse"] for r in sweep.rows if r["latent_dim"] == sweep.chosen)


def test_lambda_sweep_has_one_headed_model_and_row_per_lambda(face_data):
    """One model with a class head per lambda; each row's MSE change is against Part 1's."""
    quick = config(steps=4, batch_size=64, lambdas=[0.1, 1.0])
    jobs = helpers.lambda_jobs(quick, 8, len(face_data.class_names))
    fitted = dict(zip(quick.lambdas, helpers.fit_all(face_data, jobs)))
    rows, rule = helpers.lambda_sweep(fitted, part1_val_mse=0.05, mse_margin=quick.mse_margin)
    assert [f.model.config.num_classes for f in fitted.values()] == [3, 3]
    assert [r["lambda"] for r in rows] == [0.1, 1.0] and rule["choice"] in (0.1, 1.0)
    for row, f in zip(rows, fitted.values()):
        assert row["val_mse_change"] == pytest.approx(f.history["val_mse"][f.history["best_epoch"]] / 0.05 - 1)


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


def test_a_latent_dim_outside_the_sweep_is_trained_beside_it(face_data):
    """latent_dim set to a size the sweep does not hold: that size is trained with the sweep,
    stays out of its rows, and the budget check runs at it."""
    quick = config(steps=8, batch_size=64, latent_dims=[4], latent_dim=6)
    sweep = helpers.latent_sweep(face_data, quick, helpers.PCA(face_data["train"].x))
    assert (sweep.chosen, sweep.rule["choice"]) == (6, 4) and [r["latent_dim"] for r in sweep.rows] == [4]
    assert sweep.models[6].model.config.latent_dim == 6
    half, doubled = helpers.fit_all(face_data, helpers.budget_jobs(quick, sweep.chosen))
    check = helpers.budget_check(sweep, half, doubled)
    assert check["val_mse"] == min(sweep.models[6].history["val_mse"])
    assert check["enough"] == (check["gain_to_doubled"] < check["threshold"])


def test_cross_validation_holds_out_every_emoji_once(face_data):
    """The folds cover every unique emoji once; each fold's model never trains on its held-out
    emoji; the accuracy and the majority class are per emoji."""
    quick = config(steps=4, batch_size=64)
    every, folds = helpers.cv_folds(face_data, quick)
    held = torch.cat([held_out for held_out, _ in folds])
    assert sorted(held.tolist()) == list(range(len(every.labels)))
    for held_out, fold in folds:
        assert not set(every.texts[i] for i in held_out) & set(fold.texts)
        assert len(fold.x) >= len(fold.originals)
    cv = helpers.cross_validate(face_data, quick, 4, 0.1, steps=4)
    assert cv["emoji"] == len(every.labels) and cv["accuracy"]["images"] == len(every.labels)
    assert cv["difference"]["mean"] == pytest.approx(cv["accuracy"]["mean"] - cv["majority"]["mean"])
