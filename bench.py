"""Benchmark (`make bench`): speed, the speed levers' effect on error, and our autoencoder
against the peers' models and PCA.

On the notebook's default configuration (read from its parameters cell) it measures
  - training throughput in images/s and GFLOPS, beside a float32 matmul's GFLOPS;
  - bfloat16 autocast and channels_last: speed, and test MSE after a full training;
  - ours at two sizes (the committed run's chosen size and 128), and three autoencoders
    that earlier groups reported (ASSIGNMENT.md describes them; rebuilt here in our own
    code), each with its own recipe and with ours; PCA at every size.
It prints a table, writes report/benchmark.json and report/benchmark.png, and asserts
nothing.
"""
import copy
import json
import platform
import time
from dataclasses import asdict, replace

import matplotlib
import torch
import torch.nn.functional as F
from torch import nn

import helpers
import runs
import sources

matplotlib.use("Agg")
CONFIG = runs.RunConfig.defaults(source="mirror", run_dir="runs/bench")
OUT = runs.REPO_ROOT / "report"
LEVER_STEPS = 200   # a short training, enough to compare float32 with bfloat16


def tiny_pool_cae():
    """(a) Conv 3-16-32 with max-pooling; the code is a 32x16x16 feature map (8,192 numbers)."""
    return helpers.EncoderDecoder(
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
    return helpers.EncoderDecoder(
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


def train_own_recipe(model, data, recipe):
    """Adam with the peer's settings (no fresh augmentation); keep the best val-MSE epoch."""
    x_train, x_val = data["train"].x, data["val"].x
    torch.manual_seed(CONFIG.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"],
                                 weight_decay=recipe.get("weight_decay", 0.0))
    schedule = (torch.optim.lr_scheduler.StepLR(optimizer, recipe["step_lr"], 0.1)
                if recipe.get("step_lr") else None)
    loss_fn = F.l1_loss if recipe["loss"] == "l1" else F.mse_loss
    best = (float("inf"), None)
    for _ in range(recipe["epochs"]):
        model.train()
        for idx in torch.randperm(len(x_train)).split(recipe["batch_size"] or len(x_train)):
            loss = loss_fn(model(x_train[idx])[0], x_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if schedule:
            schedule.step()
        val = helpers.evaluate(model, x_val)["mse"]
        if val < best[0]:
            best = (val, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[1])


def our_recipe(model, data):
    """The notebook's recipe (helpers.train at the run's budget) for any model."""
    helpers.train(model, data["train"].x, data["val"].x, CONFIG.recipe(),
                  device=torch.device("cpu"))


def row(name, recipe, code_size, model, seconds, data, images):
    mse = helpers.evaluate(model, data["test"].x)["mse"]
    result = {"model": name, "recipe": recipe, "code_size": code_size,
              "parameters": helpers.count_parameters(model), "test_mse": mse,
              "psnr": helpers.psnr(mse), "seconds": seconds,
              "images_per_second": images / seconds}
    print(f"{name:<28} {recipe:<5} code {code_size:>5}  test MSE {mse:.5f}  {seconds:6.0f} s",
          flush=True)
    return result


def compare(data, pca, sizes):
    rows = []
    our_images = CONFIG.steps * CONFIG.batch_size
    for k in sizes:
        fitted = helpers.fit(data, CONFIG.model(k), CONFIG.recipe())
        rows.append(row("ours", "ours", k, fitted.model, fitted.seconds, data, our_images))
    for name, (build, code_size, recipe) in PEERS.items():
        for which, fit, images in (("own", lambda m: train_own_recipe(m, data, recipe),
                                    recipe["epochs"] * len(data["train"].x)),
                                   ("ours", lambda m: our_recipe(m, data), our_images)):
            torch.manual_seed(CONFIG.seed)
            model = build()
            start = time.perf_counter()
            fit(model)
            rows.append(row(name, which, code_size, model, time.perf_counter() - start, data,
                            images))
    pca_rows = [{"code_size": k, "components": min(k, pca.rank),
                 "test_mse": pca.mse(data["test"].x, min(k, pca.rank))}
                for k in (8, 16, 32, 64, 128, 256, 512, 1024, 8192)]
    return rows, pca_rows


def matmul_gflops(n=2048, repeats=10):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def step_flops(model, batch):
    """FLOPs of one training step (forward and backward) on `batch`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        F.mse_loss(model(batch)[0], batch).backward()
    return counter.get_total_flops()


def throughput(data, pca, bf16=False, channels_last=False, steps=15):
    """Images per second of training steps at the notebook's width and batch, latent 128."""
    torch.manual_seed(0)
    model = helpers.Autoencoder(CONFIG.model(128))
    batch = data["train"].x[:CONFIG.batch_size]
    if channels_last:
        model, batch = model.to(memory_format=torch.channels_last), batch.contiguous(
            memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    recipe = replace(CONFIG.recipe(), bf16=bf16)
    model.train()
    for k in range(steps + 2):
        if k == 2:
            start = time.perf_counter()
        helpers.train_step(model, optimizer, batch, None, recipe, k)
    per_second = steps * len(batch) / (time.perf_counter() - start)
    return per_second, step_flops(model, batch) / len(batch)


def speed(data, pca):
    """Throughput with and without each lever, and the test MSE each one trains to."""
    matmul = matmul_gflops()
    result = {"matmul_gflops": matmul, "levers": {}}
    for name, lever in {"float32": {}, "bfloat16 autocast": {"bf16": True},
                        "channels_last": {"channels_last": True}}.items():
        images, flops = throughput(data, pca, **lever)
        result["levers"][name] = {"images_per_second": images,
                                  "gflops": images * flops / 1e9,
                                  "fraction_of_matmul": images * flops / 1e9 / matmul}
    result["flops_per_image"] = flops
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        helpers.augment(data["train"].x[:CONFIG.batch_size], generator)
    result["augmentation_ms_per_batch"] = (time.perf_counter() - start) / 20 * 1000
    for name, bf16 in (("float32", False), ("bfloat16 autocast", True)):
        torch.manual_seed(CONFIG.seed)
        model = helpers.Autoencoder(CONFIG.model(128))
        recipe = replace(CONFIG.recipe(steps=LEVER_STEPS), bf16=bf16)
        start = time.perf_counter()
        helpers.train(model, data["train"].x, data["val"].x, recipe, device=torch.device("cpu"))
        result["levers"][name] |= {"test_mse_short": helpers.evaluate(
            model, data["test"].x)["mse"], "seconds_short": time.perf_counter() - start}
    for name, lever in result["levers"].items():
        mse = lever.get("test_mse_short")
        print(f"{name:<18} {lever['images_per_second']:7.0f} images/s  "
              f"{lever['gflops']:6.1f} GFLOPS = {100 * lever['fraction_of_matmul']:4.0f} % of "
              f"a float32 matmul ({matmul:.0f} GFLOPS)"
              + (f"; test MSE after {LEVER_STEPS} steps {mse:.5f}" if mse else ""))
    print(f"one training step: {result['flops_per_image'] / 1e9:.2f} GFLOP per image; "
          f"augmentation {result['augmentation_ms_per_batch']:.1f} ms per batch")
    return result


def plot(rows, pca):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.8, 3.2))
    ax.plot([p["code_size"] for p in pca], [p["test_mse"] for p in pca], "--", color="gray",
            marker=".", label="PCA")
    markers = iter("os^Dv<>x+")
    for r in rows:
        filled = r["recipe"] == "own" or r["model"] == "ours"
        label = (f"ours, code {r['code_size']}" if r["model"] == "ours"
                 else f"{r['model']}, {r['recipe']} recipe")
        ax.plot(r["code_size"], r["test_mse"], next(markers), markersize=6,
                mfc=None if filled else "none", label=label)
    ax.set(xscale="log", yscale="log", xlabel="code size (numbers per image)",
           ylabel="test MSE per pixel", title="Test MSE against code size")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def main():
    machine = (f"{platform.machine()} ({torch.backends.cpu.get_cpu_capability()}), "
               f"{torch.get_num_threads()} CPU threads, "
               f"torch {torch.__version__}, Python {platform.python_version()}")
    print(f"Machine: {machine}")
    started = time.perf_counter()
    dataset, source = sources.load_emoji_dataset(CONFIG.source)
    data = helpers.prepare_data(dataset, CONFIG)
    pca = helpers.PCA(data["train"].x)
    print(f"Data (load, decode, split, augment, PCA): {time.perf_counter() - started:.1f} s")
    timings = speed(data, pca)
    metrics_path = OUT / "metrics.json"
    if metrics_path.is_file():
        runtime = json.loads(metrics_path.read_text())["runtime"]
        print(f"Last committed notebook run ({runtime['device']}, {runtime.get('cpu')}): "
              f"{runtime['seconds'] / 60:.1f} min; training time summed over the models trained "
              f"side by side: Part 1 {runtime['part1_seconds'] / 60:.1f} min, Part 2 "
              f"{runtime['part2_seconds'] / 60:.1f} min")
    chosen = json.loads(metrics_path.read_text())["part1"]["latent_dim"] \
        if metrics_path.is_file() else 128
    rows, pca_rows = compare(data, pca, sorted({chosen, 128}))
    result = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "source": source,
              "split_sizes": data.info["split_sizes"], "config": asdict(CONFIG),
              "peer_recipes": {k: v[2] for k, v in PEERS.items()}, "timings": timings,
              "rows": rows, "pca": pca_rows,
              "helpers_sha256": runs.provenance()["helpers_sha256"],
              "seconds": time.perf_counter() - started}
    runs.atomic_write(OUT / "benchmark.json",
                         lambda tmp: open(tmp, "w").write(json.dumps(result, indent=2)))
    fig = plot(rows, pca_rows)
    runs.atomic_write(OUT / "benchmark.png",
                         lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight"))
    print(f"Wrote {OUT / 'benchmark.json'} and the figure in {result['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
