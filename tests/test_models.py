"""helpers.py's method on small tensors: model, training, evaluation, Parts 2 and 3."""
import pytest
import torch

import helpers
import sources
from conftest import config


def small_model(**kwargs):
    return helpers.build_model(helpers.AEConfig(latent_dim=8, width=4, image_size=16, **kwargs))


# The model -----------------------------------------------------------------------------------

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


@pytest.mark.parametrize("image_size", [48, 8])
def test_bad_image_size(image_size):
    with pytest.raises(ValueError, match="power of two"):
        helpers.AEConfig(latent_dim=8, width=4, image_size=image_size)


# Training ------------------------------------------------------------------------------------

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


# Part 1: PCA, the size rule, the sweep and the budget check ----------------------------------

def test_pca_with_all_components_is_exact_and_fewer_are_worse():
    x = torch.rand(10, 3, 8, 8)
    pca = helpers.PCA(x)
    assert pca.mse(x, 9) < 1e-10
    assert pca.mse(x, 2) > 1e-3


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


def test_against_baseline_counts_epochs_from_one():
    history = {"val_mse": [0.5, 0.2, 0.4, 0.1, 0.05], "best_epoch": 4}
    curve = helpers.against_baseline(history, 0.3)
    assert curve["first_epoch_below"] == 2 and curve["stays_below_from_epoch"] == 4
    assert curve["kept_epoch"] == 5 and curve["val_mse"] == 0.05
    assert helpers.against_baseline(history, 0.01)["first_epoch_below"] is None


@pytest.mark.slow
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


@pytest.mark.slow
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


# Evaluation ----------------------------------------------------------------------------------

def test_bootstrap_is_seeded_and_resamples_emoji_not_images():
    groups = torch.arange(12).repeat_interleave(5)
    values = groups.double() ** 1.5 + torch.rand(60, generator=torch.Generator().manual_seed(0))
    first = helpers.bootstrap(values, groups, seed=3)
    assert first == helpers.bootstrap(values, groups, seed=3)
    assert first["emoji"] == 12 and first["images"] == 60
    assert first["low"] < first["mean"] < first["high"]
    assert first != helpers.bootstrap(values, groups, seed=4)


class Reader(torch.nn.Module):
    """A stand-in model that halves the image as its reconstruction and reads its class off the
    first pixel."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        guess = (x[:, 0, 0, 0] * 10).round().long()
        return x / 2, x.flatten(1), torch.nn.functional.one_hot(guess, 3).float()


def test_part2_against_part1_counts_recall_per_class_and_the_majority():
    labels, guesses = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2])
    x = (guesses / 10).view(4, 1, 1, 1).expand(4, 3, 2, 2).clone()
    test = helpers.Split(x, ["a0", "a1", "b", "c"], labels, x, labels, torch.arange(4))
    train = helpers.Split(x, ["a0", "a1", "b", "c"], torch.tensor([0, 0, 0, 1]), x, labels, torch.arange(4))
    data = helpers.Data({"train": train, "val": test, "test": test}, ["a", "b", "c"], {})
    result = helpers.compare_parts(Reader(), Reader(), data, seed=0)
    assert result["recall"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    assert result["accuracy"]["mean"] == 0.75 and result["majority_class"] == "a"
    assert result["majority_accuracy"]["mean"] == 0.5 and result["relative_change"] == 0
    assert result["class_share"] == {"a": 0.75, "b": 0.25, "c": 0.0}


def test_random_pick_leaves_out_what_it_is_told():
    class Split:
        texts = [str(i) for i in range(10)]
    drawn = helpers.random_pick(Split, 5, 0, exclude=torch.tensor([0, 1, 2]))
    assert len(drawn) == 5 and not {0, 1, 2} & set(drawn.tolist())
    assert torch.equal(drawn, helpers.random_pick(Split, 5, 0, exclude=[2, 1, 0]))


# Part 2: the majority class, the lambda rule and sweep, cross-validation ---------------------

def test_majority_class_counts_unique_emoji_not_images():
    class Split:
        labels = torch.tensor([2, 0, 2, 1, 2])
        y = torch.tensor([0] * 20 + [2] * 5)   # the augmented images must not decide it
    assert helpers.majority_class(Split) == 2


def test_lambda_rule_takes_the_best_accuracy_within_the_margin():
    rows = [{"lambda": lam, "val_mse_change": change, "val_accuracy": accuracy} for lam, change, accuracy in
            [(0.01, 0.02, 0.60), (0.1, 0.20, 0.70), (1.0, 0.60, 0.80)]]
    assert helpers.choose_lambda(rows, 0.25) == {"choice": 0.1, "mse_margin": 0.25, "within_margin": [0.01, 0.1]}
    assert helpers.choose_lambda(rows, 0.1)["choice"] == 0.01
    assert helpers.choose_lambda(rows, 1.0)["choice"] == 1.0
    assert helpers.choose_lambda(rows, 0.0)["choice"] == 0.01   # none within: the smallest
    rows[1]["val_accuracy"] = 0.60
    assert helpers.choose_lambda(rows, 0.25)["choice"] == 0.01  # a tie: the smaller lambda


@pytest.mark.slow
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


@pytest.mark.slow
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


# Part 3: the pairs, held-out analogies, the cat classifier -----------------------------------

def test_the_example_pair_falls_back_to_the_last_one():
    pairs = helpers.Pairs(names=[("crying cat face", "crying face"), ("pouting cat face", "pouting face")],
                          with_images=None, without_images=None, unpaired=None, missing=[])
    assert pairs.index_of("crying face") == 0 and pairs.index_of("weary face") == 1


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


def test_names_with_odd_spaces_still_make_the_pairs(mirror):
    noisy = mirror.map(lambda row: {"text": row["text"].replace(" ", "\u00a0") + " "})
    pairs = helpers.find_pairs(noisy)
    assert pairs.names == helpers.find_pairs(mirror).names and len(pairs.names) == 8


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
