"""Models, training, parameter checks, saving and latent arithmetic, on small tensors."""
import json
from dataclasses import asdict

import pytest
import torch

import helpers


def small_model(**kwargs):
    config = helpers.AEConfig(latent_dim=8, width=4, image_size=16, **kwargs)
    return helpers.Autoencoder(config)


def test_output_shape_equals_input_and_stays_in_range():
    model = small_model(num_classes=3).eval()
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        recon, z, logits = model(x)
    assert recon.shape == x.shape and z.shape == (5, 8) and logits.shape == (5, 3)
    assert 0 <= float(recon.min()) and float(recon.max()) <= 1


def test_model_started_from_pca_is_pca():
    x = torch.rand(40, 3, 16, 16)
    model = small_model().eval()
    mean, components = helpers.fit_pca(x, 8)
    model.start_from_pca(mean, components)
    with torch.no_grad():
        recon = model(x)[0]
    assert torch.allclose(recon, helpers.pca_reconstruct(x, mean, components), atol=1e-5)


def test_pca_with_all_components_is_exact_and_fewer_are_worse():
    x = torch.rand(10, 3, 8, 8)
    full = helpers.pca_reconstruct(x, *helpers.fit_pca(x, 10))
    assert torch.allclose(full, x, atol=1e-5)
    few = helpers.pca_reconstruct(x, *helpers.fit_pca(x, 2))
    assert helpers.mse_per_image(few, x).mean() > 1e-3


@pytest.mark.parametrize("change, message", [
    ({"image_size": 48}, "power of two"), ({"image_size": 8}, "power of two"),
    ({"latent_dim": 0}, "latent_dim=0"), ({"dropout": 1.5}, "dropout"),
])
def test_bad_model_config(change, message):
    with pytest.raises(ValueError, match=message):
        helpers.Autoencoder(helpers.AEConfig(**change))


GOOD = dict(seed=0, keywords=["face"], latent_dims=[16, 32], latent_dim=None, epochs=2,
            batch_size=32, lr=1e-3, weight_decay=0.01, width=16, lam=0.01, n_seeds=2)


@pytest.mark.parametrize("name, value, message", [
    ("latent_dims", [], "at least one latent size"),
    ("latent_dims", [16, -4], "latent_dims: -4 is not a positive integer"),
    ("latent_dim", 0, "latent_dim=0"),
    ("epochs", 0, "epochs: 0 is not a positive integer"),
    ("batch_size", 2.5, "batch_size: 2.5"),
    ("lr", 0.0, "lr=0.0: the learning rate must be positive"),
    ("lam", -1.0, "lam=-1.0: lambda"),
    ("keywords", [], "keywords"),
    ("n_seeds", 0, "n_seeds"),
])
def test_bad_parameters_are_named(name, value, message):
    helpers.check_parameters(**GOOD)
    with pytest.raises(ValueError, match=message):
        helpers.check_parameters(**{**GOOD, name: value})


def tiny_run(seed, num_classes=0):
    torch.manual_seed(123)
    x = torch.rand(24, 3, 16, 16)
    y = torch.arange(24) % 2
    model = small_model(num_classes=num_classes)
    model.start_from_pca(*helpers.fit_pca(x[:16], 8))
    config = helpers.TrainConfig(epochs=2, batch_size=8, seed=seed, lam=0.1)
    extra = {"train_y": y[:16], "val_y": y[16:]} if num_classes else {}
    history = helpers.train(model, x[:16], x[16:], config, device=torch.device("cpu"),
                            progress=False, **extra)
    return model, history


def test_training_repeats_for_a_seed_and_changes_with_another():
    _, a = tiny_run(1)
    _, b = tiny_run(1)
    _, c = tiny_run(2)
    assert a["val_mse"] == b["val_mse"] and a["val_mse"] != c["val_mse"]
    assert set(a) == {"train_mse", "val_mse", "seconds", "best_epoch"}


def test_training_with_a_head_records_classification_curves():
    model, history = tiny_run(0, num_classes=2)
    for key in ("train_ce", "val_ce", "train_accuracy", "val_accuracy"):
        assert len(history[key]) == 2
    assert history["val_mse"][history["best_epoch"]] == min(history["val_mse"])


def test_save_and_rebuild_model(tmp_path):
    model = small_model(num_classes=2).eval()
    path = helpers.save_model(tmp_path / "m.pt", model, note="x")
    rebuilt, payload = helpers.load_model(path)
    x = torch.rand(3, 3, 16, 16)
    assert payload["note"] == "x"
    assert torch.equal(rebuilt(x)[0], model(x)[0])


def test_bad_weights_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="make report"):
        helpers.load_model(tmp_path / "missing.pt")
    path = helpers.save_model(tmp_path / "m.pt", small_model())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="damaged"):
        helpers.load_model(truncated)
    other = helpers.AEConfig(latent_dim=16, width=4, image_size=16)
    with pytest.raises(ValueError, match="was made for"):
        helpers.load_model(path, expected_config=other)


def test_interrupted_save_keeps_the_previous_file(tmp_path):
    path = helpers.save_json(tmp_path / "metrics.json", {"old": 1})

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write('{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        helpers.atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_attribute_arithmetic_on_known_tensors():
    with_a = torch.tensor([[3.0, 1.0], [5.0, 2.0]])
    without = torch.tensor([[1.0, 1.0], [2.0, 1.0]])
    vector = helpers.attribute_vector(with_a, without)
    assert torch.equal(vector, torch.tensor([2.5, 0.5]))
    assert torch.equal(helpers.add_attribute(torch.zeros(2), vector, 2.0), torch.tensor([5.0, 1.0]))


class Identity(torch.nn.Module):
    """A stand-in autoencoder whose code is the image itself."""

    def encode(self, x):
        return x.flatten(1)

    def decode(self, z):
        return z.view(-1, 1, 2, 2)


def test_held_out_analogies_leave_the_tested_pair_out():
    without = torch.full((3, 1, 2, 2), 0.2)
    shifts = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1, 1)
    with_a = without + shifts
    result = helpers.held_out_analogies(Identity(), with_a, without)
    # Pair 0 gets the mean shift of pairs 1 and 2 (0.25) instead of its own 0.1.
    assert result["latent_mse"][0] == pytest.approx(0.15 ** 2)
    assert result["pixel_mse"] == pytest.approx(result["latent_mse"])
    assert result["unchanged_mse"] == pytest.approx([0.01, 0.04, 0.09])


def test_classification_scores():
    scores = helpers.classification_scores(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2]), 3)
    assert scores["accuracy"] == 0.75
    assert scores["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_probe_separates_separable_codes():
    z = torch.cat([torch.randn(20, 4) + 3, torch.randn(20, 4) - 3])
    y = torch.tensor([1] * 20 + [0] * 20)
    probability = helpers.fit_probe(z, y)(z)
    assert ((probability > 0.5) == y.bool()).all()


def test_jitter_keeps_shape_range_and_white_border():
    x = torch.ones(4, 3, 16, 16)
    out = helpers.jitter(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-5)


def test_latent_size_beyond_pca_rank_is_refused():
    with pytest.raises(ValueError, match="latent size 11 is more than PCA can give from 10"):
        helpers.fit_pca(torch.rand(10, 3, 8, 8), 11)
