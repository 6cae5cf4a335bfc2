"""Benchmark (`make bench`): timings, and our autoencoder against the peers' models and PCA.

On the notebook's default split (face subset, seed 0) it trains
  - ours at every latent size of the notebook's sweep, and ours without the linear path;
  - three autoencoders that earlier submissions used (ASSIGNMENT.md describes them; rebuilt
    here in our own code), each with its own recipe and with ours;
and fits PCA at every size. It prints a table, writes report/benchmark.json and
report/figures/benchmark.png, and states the machine. It asserts nothing.
"""
import copy
import json
import platform
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

import helpers

SEED = 0
LATENT_DIMS = [16, 32, 64, 128, 256]
OUR_RECIPE = helpers.TrainConfig(epochs=40, batch_size=32, lr=2e-3, weight_decay=1e-2, seed=SEED)
WIDTH = 16
OUT = helpers.REPO_ROOT / "report"


class PeerAutoencoder(nn.Module):
    """An encoder and a decoder behind our models' interface: x -> (recon, code, None)."""
    classifier = None

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        z = self.encoder(x)
        return self.decoder(z), z.flatten(1), None


def tiny_pool_cae():
    """(a) Conv 3-16-32 with max-pooling; the code is a 32x16x16 feature map (8,192 numbers)."""
    return PeerAutoencoder(
        nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.ConvTranspose2d(32, 16, 2, stride=2), nn.ReLU(),
                      nn.ConvTranspose2d(16, 3, 2, stride=2), nn.Sigmoid()))


def strided_cae(code_size, batch_norm, dropout):
    """(b)/(c) Four strided 3x3 convs 32-64-128-256 to a vector code, mirrored decoder."""
    channels = [3, 32, 64, 128, 256]
    act = (lambda: nn.LeakyReLU(0.2)) if batch_norm else nn.ReLU
    norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
    down = [layer for a, b in zip(channels, channels[1:])
            for layer in (nn.Conv2d(a, b, 3, stride=2, padding=1), norm(b), act())]
    up = []
    for a, b in zip(channels[::-1], channels[::-1][1:]):
        up.append(nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1))
        up += [norm(b), act()] if b != 3 else [nn.Sigmoid()]
    return PeerAutoencoder(
        nn.Sequential(*down, nn.Flatten(), nn.Dropout(dropout), nn.Linear(256 * 16, code_size)),
        nn.Sequential(nn.Linear(code_size, 256 * 16), act(), nn.Unflatten(1, (256, 4, 4)), *up))


PEERS = {
    # name: (builder, code size, own recipe as described)
    "(a) tiny max-pool CAE": (tiny_pool_cae, 8192, dict(
        optimiser="Adam", lr=0.0075, batch_size=None, epochs=150, step_lr=100, loss="mse",
        note="described with 1,000 epochs; capped at 150 here (after StepLR the rate is tiny)")),
    "(b) strided CAE, dropout": (lambda: strided_cae(128, False, 0.2), 128, dict(
        optimiser="Adam", lr=1e-3, weight_decay=1e-5, batch_size=64, epochs=40, loss="mse")),
    "(c) strided CAE, BN, L1": (lambda: strided_cae(1024, True, 0.0), 1024, dict(
        optimiser="Adam", lr=1e-3, batch_size=64, epochs=40, loss="l1")),
}


def train_own_recipe(model, x_train, x_val, recipe):
    """Adam with the peer's settings (no fresh augmentation); keep the best val-MSE epoch."""
    torch.manual_seed(SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"],
                                 weight_decay=recipe.get("weight_decay", 0.0))
    schedule = (torch.optim.lr_scheduler.StepLR(optimizer, recipe["step_lr"], 0.1)
                if recipe.get("step_lr") else None)
    loss_fn = F.l1_loss if recipe["loss"] == "l1" else F.mse_loss
    batch_size = recipe["batch_size"] or len(x_train)
    best = (float("inf"), None)
    for _ in range(recipe["epochs"]):
        model.train()
        for idx in torch.randperm(len(x_train)).split(batch_size):
            x = x_train[idx]
            loss = loss_fn(model(x)[0], x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if schedule:
            schedule.step()
        val = helpers.evaluate(model, x_val)["mse"]
        if val < best[0]:
            best = (val, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[1])


def measure(name, recipe, code_size, build, fit, x_test, epochs, n_train):
    """Build a model from the seed, train it with `fit`, and time and score it."""
    helpers.seed_everything(SEED)
    model = build()
    start = time.perf_counter()
    fit(model)
    seconds = time.perf_counter() - start
    mse = helpers.evaluate(model, x_test)["mse"]
    row = {"model": name, "recipe": recipe, "code_size": code_size,
           "parameters": helpers.count_parameters(model), "test_mse": mse,
           "psnr": helpers.psnr(mse), "seconds": seconds,
           "images_per_second": epochs * n_train / seconds}
    print(f"{name:<28} {recipe:<5} code {code_size:>5}  test MSE {mse:.5f}  {seconds:6.0f} s",
          flush=True)
    return row


def compare(splits):
    x_train, x_val, x_test = (splits[n]["x"] for n in ("train", "val", "test"))
    n = len(x_train)

    def ours_model(latent, linear_path=True):
        model = helpers.Autoencoder(helpers.AEConfig(latent_dim=latent, width=WIDTH,
                                                     linear_path=linear_path))
        if linear_path:
            model.start_from_pca(*helpers.fit_pca(x_train, latent))
        return model

    def our_recipe(model):
        helpers.train(model, x_train, x_val, OUR_RECIPE, progress=False,
                      device=torch.device("cpu"))

    runs = [("ours", "ours", latent, lambda latent=latent: ours_model(latent), our_recipe,
             OUR_RECIPE.epochs) for latent in LATENT_DIMS]
    runs.append(("ours without linear path", "ours", LATENT_DIMS[-1],
                 lambda: ours_model(LATENT_DIMS[-1], linear_path=False), our_recipe,
                 OUR_RECIPE.epochs))
    for name, (build, code_size, recipe) in PEERS.items():
        own = lambda model, recipe=recipe: train_own_recipe(model, x_train, x_val, recipe)
        runs.append((name, "own", code_size, build, own, recipe["epochs"]))
        runs.append((name, "ours", code_size, build, our_recipe, OUR_RECIPE.epochs))
    rows = [measure(name, recipe, code, build, fit, x_test, epochs, n)
            for name, recipe, code, build, fit, epochs in runs]
    pca = []
    for k in sorted(set(LATENT_DIMS + [8, 512] + [c for _, c, _ in PEERS.values()])):
        components = min(k, n - 1)  # PCA has at most n - 1 directions on n images
        recon = helpers.pca_reconstruct(x_test, *helpers.fit_pca(x_train, components))
        pca.append({"code_size": k, "components": components,
                    "test_mse": float(helpers.mse_per_image(recon, x_test).mean())})
    return rows, pca


def dominated(rows):
    """For each peer row: does ours reach a lower test MSE with a code no larger?"""
    ours = [r for r in rows if r["model"] == "ours"]
    verdicts = {}
    for r in rows:
        if r["model"].startswith("("):
            better = [o for o in ours if o["code_size"] <= r["code_size"]
                      and o["test_mse"] < r["test_mse"]]
            verdicts[f"{r['model']} / {r['recipe']}"] = bool(better)
    return verdicts


def plot(rows, pca):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.plot([p["code_size"] for p in pca], [p["test_mse"] for p in pca], "--", color="gray",
            marker=".", label="PCA")
    ours = [r for r in rows if r["model"] == "ours"]
    ax.plot([r["code_size"] for r in ours], [r["test_mse"] for r in ours], "o-", color="C0",
            label="ours")
    markers = iter("s^Dvx<>")
    for r in rows:
        if r["model"] != "ours":
            filled = r["recipe"] == "own"
            ax.plot(r["code_size"], r["test_mse"], next(markers), markersize=7,
                    mfc=None if filled else "none", label=f"{r['model']}, {r['recipe']} recipe")
    ax.set(xscale="log", yscale="log", xlabel="code size (numbers per image)",
           ylabel="test MSE per pixel", title="Rate-distortion: test MSE against code size")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def timings(splits):
    """Training throughput and the cost of the per-batch augmentation."""
    x_train, x_val = splits["train"]["x"], splits["val"]["x"]
    model = helpers.Autoencoder(helpers.AEConfig(latent_dim=128, width=WIDTH))
    model.start_from_pca(*helpers.fit_pca(x_train, 128))
    config = helpers.TrainConfig(epochs=3)
    history = helpers.train(model, x_train, x_val, config, progress=False,
                            device=torch.device("cpu"))
    per_epoch = sum(history["seconds"][1:]) / (len(history["seconds"]) - 1)
    generator = torch.Generator().manual_seed(0)
    batch = x_train[:config.batch_size]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    spent = {"augmentation": 0.0, "step": 0.0}
    for _ in range(20):
        start = time.perf_counter()
        x = helpers.jitter(batch, generator)
        spent["augmentation"] += time.perf_counter() - start
        start = time.perf_counter()
        loss = F.mse_loss(model(x)[0], x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        spent["step"] += time.perf_counter() - start
    result = {"seconds_per_epoch": per_epoch, "images_per_second": len(x_train) / per_epoch,
              "augmentation_ms_per_batch": 1000 * spent["augmentation"] / 20,
              "step_ms_per_batch": 1000 * spent["step"] / 20}
    print(f"Training (latent 128): {per_epoch:.2f} s per epoch, "
          f"{result['images_per_second']:.0f} images per second; per batch of "
          f"{config.batch_size}: augmentation {result['augmentation_ms_per_batch']:.1f} ms, "
          f"step {result['step_ms_per_batch']:.1f} ms "
          f"({100 * spent['augmentation'] / spent['step']:.1f}% of a step)")
    metrics_path = OUT / "metrics.json"
    if metrics_path.is_file():
        runtime = json.loads(metrics_path.read_text())["runtime"]
        print(f"Last committed notebook run ({runtime['device']}): "
              f"{runtime['seconds'] / 60:.1f} min in all; Part 1 with its sweep "
              f"{runtime['part1_seconds'] / 60:.1f} min; Part 2 with its seeds "
              f"{runtime['part2_seconds'] / 60:.1f} min "
              f"({100 * runtime['part2_seconds'] / runtime['seconds']:.0f}% of the run)")
    return result


def main():
    machine = (f"{platform.machine()}, {torch.get_num_threads()} CPU threads, "
               f"torch {torch.__version__}, Python {platform.python_version()}")
    print(f"Machine: {machine}")
    started = time.perf_counter()
    dataset, source = helpers.load_emoji_dataset("mirror")
    splits, info = helpers.prepare_data(dataset, ["face"], SEED, class_words=helpers.FACE_CLASSES)
    print(f"Data (load, decode, split, augment): {time.perf_counter() - started:.1f} s")
    speed = timings(splits)
    rows, pca = compare(splits)
    verdicts = dominated(rows)
    print(helpers.markdown_table(
        ["model", "recipe", "code size", "parameters", "test MSE", "PSNR", "seconds", "images/s"],
        [[r["model"], r["recipe"], r["code_size"], f"{r['parameters']:,}", f"{r['test_mse']:.5f}",
          f"{r['psnr']:.2f}", f"{r['seconds']:.0f}", f"{r['images_per_second']:.0f}"]
         for r in rows]))
    for peer, beaten in verdicts.items():
        print(f"ours on or below {peer}: {'yes' if beaten else 'NO'}")
    result = {"machine": machine, "device": "cpu", "date": time.strftime("%Y-%m-%d"),
              "source": source, "split_sizes": info["split_sizes"], "seed": SEED,
              "our_recipe": asdict(OUR_RECIPE), "peer_recipes": {k: v[2] for k, v in PEERS.items()},
              "timings": speed, "rows": rows, "pca": pca, "ours_dominates": verdicts,
              "helpers_sha256": helpers.provenance()["helpers_sha256"],
              "seconds": time.perf_counter() - started}
    helpers.save_json(OUT / "benchmark.json", result)
    helpers.save_figure(plot(rows, pca), OUT / "figures" / "benchmark.png")
    print(f"Wrote {OUT / 'benchmark.json'} and the figure in {result['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
