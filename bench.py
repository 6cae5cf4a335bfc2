"""Timings on this machine: training throughput, data cost per step, and the last run's parts.

Run with `make bench`. It prints figures; it asserts nothing.
"""
import json
import platform
import time

import torch

import helpers

DEFAULTS = {"latent_dim": 128, "width": 16, "batch_size": 32, "epochs": 3}


def main():
    device = helpers.pick_device()
    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, device {device}, "
          f"torch {torch.__version__}")
    start = time.perf_counter()
    dataset, source = helpers.load_emoji_dataset("mirror")
    splits, _ = helpers.prepare_data(dataset, ["face"], seed=0, class_words=helpers.FACE_CLASSES)
    print(f"Data: load, decode, split and augment to 600/200/200: {time.perf_counter() - start:.1f} s")

    x_train, x_val = splits["train"]["x"], splits["val"]["x"]
    model = helpers.Autoencoder(helpers.AEConfig(latent_dim=DEFAULTS["latent_dim"], width=DEFAULTS["width"]))
    model.start_from_pca(*helpers.fit_pca(x_train, DEFAULTS["latent_dim"]))
    config = helpers.TrainConfig(epochs=DEFAULTS["epochs"], batch_size=DEFAULTS["batch_size"])
    history = helpers.train(model, x_train, x_val, config, device=device, progress=False)
    per_epoch = sum(history["seconds"][1:]) / (len(history["seconds"]) - 1)
    print(f"Training: {per_epoch:.2f} s per epoch (600 images + validation), "
          f"{len(x_train) / per_epoch:.0f} images per second")

    generator = torch.Generator().manual_seed(0)
    batch = x_train[:DEFAULTS["batch_size"]].to(device)
    model.train()
    timings = {"jitter": 0.0, "step": 0.0}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(20):
        t = time.perf_counter()
        jittered = helpers.jitter(batch, generator)
        timings["jitter"] += time.perf_counter() - t
        t = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(jittered)[0], jittered)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings["step"] += time.perf_counter() - t
    print(f"Per batch of {DEFAULTS['batch_size']}: augmentation {1000 * timings['jitter'] / 20:.1f} ms, "
          f"training step {1000 * timings['step'] / 20:.1f} ms "
          f"({100 * timings['jitter'] / timings['step']:.1f}% of a step)")

    metrics_path = helpers.REPO_ROOT / "report" / "metrics.json"
    if metrics_path.is_file():
        runtime = json.loads(metrics_path.read_text())["runtime"]
        total = runtime["seconds"]
        print(f"Last committed run ({runtime['device']}): whole notebook {total / 60:.1f} min; "
              f"Part 1 with its sweep {runtime['part1_seconds'] / 60:.1f} min; "
              f"Part 2 with its seeds {runtime['part2_seconds'] / 60:.1f} min "
              f"({100 * runtime['part2_seconds'] / total:.0f}% of the run)")


if __name__ == "__main__":
    main()
