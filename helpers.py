"""The method behind homework2.ipynb: convolutional autoencoders on the emoji dataset.

Sections, in the order the notebook uses them:
  1. Data: labels by rules, a stratified split, one augmentation (sources.py gives the
     subset of unique emoji it starts from)
  2. Model: a DCGAN-style convolutional autoencoder
  3. Training: the recipe (budget in optimizer steps), `fit_all`, PCA, Part 1's size sweep
     and budget check
  4. Evaluation: errors, bootstrap intervals over unique emoji, the comparison with PCA
  5. Part 2: the class head, the joint loss, the lambda rule, cross-validation, Part 2
     against Part 1
  6. Part 3: latent arithmetic, held out pair by pair, and a cat classifier to judge it
Beside it: sources.py reads and decodes the emoji, workers.py trains models in processes
of their own, runs.py keeps the run's books (parameters, run folder, tables and figures).
"""
import copy
import math
import re
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import workers
from sources import clean_text, decode_images, drop_duplicates, select_subset

SPLIT_TARGETS = {"train": 600, "val": 200, "test": 200}


# ----------------------------------------------------------------------------------------
# 1. Data
# ----------------------------------------------------------------------------------------

def label_by_rules(texts, class_words):
    """Integer labels and class names: each text gets the first class (in order) one of whose
    stems starts a word of it; a last class with no stems takes the rest."""
    names = list(class_words)
    patterns = [re.compile("|".join(rf"\b{re.escape(w.lower())}" for w in words))
                if words else None for words in class_words.values()]
    labels = []
    for text in texts:
        label = next((k for k, p in enumerate(patterns) if p is None or p.search(text.lower())),
                     None)
        if label is None:
            raise ValueError(f"{text!r} fits no class of class_words; give the last class an "
                             "empty word list to take the rest.")
        labels.append(label)
    return torch.tensor(labels), names


def split_indices(labels, class_names, texts, seed, fractions=(0.6, 0.2, 0.2)):
    """Seeded train/val/test split of the emoji, stratified by class (60/20/20 in each)."""
    generator = torch.Generator().manual_seed(seed)
    splits = {"train": [], "val": [], "test": []}
    for c, name in enumerate(class_names):   # every class named, so an empty one is caught
        group = torch.nonzero(labels == c).flatten()
        if len(group) < 3:
            raise ValueError(
                f"The class {name!r} has {len(group)} emoji {[texts[i] for i in group.tolist()]}: "
                "too few to split 60/20/20 with at least one per split. Change class_words "
                "(more words for it, or drop the class) or widen the keywords.")
        order = group[torch.randperm(len(group), generator=generator)].tolist()
        n_val = max(1, round(fractions[1] * len(group)))
        n_test = max(1, round(fractions[2] * len(group)))
        splits["val"] += order[:n_val]
        splits["test"] += order[n_val:n_val + n_test]
        splits["train"] += order[n_val + n_test:]
    return {name: sorted(idx) for name, idx in splits.items()}


# One augmentation, used for the fixed copies of each split and for the fresh distortion of
# every training batch: a random flip, rotation, scale and shift (bilinear, white outside),
# then a brightness and saturation change of the emoji only (white stays white).
AUGMENT = {"flip": 0.5, "degrees": 12.0, "translate": 0.06, "scale": 0.08,
           "brightness": 0.1, "saturation": 0.15}


def augment(x, generator):
    """Distort each image of a float batch (N, 3, H, W) in [0, 1] with its own draw."""
    n, device = x.shape[0], x.device
    uniform = lambda: torch.rand(n, generator=generator, device=device) * 2 - 1
    angle = uniform() * math.radians(AUGMENT["degrees"])
    scale = 1 + uniform() * AUGMENT["scale"]
    flip = torch.where(torch.rand(n, generator=generator, device=device) < AUGMENT["flip"],
                       -1.0, 1.0)
    shift = [uniform() * 2 * AUGMENT["translate"] for _ in range(2)]  # grid spans [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[0]], 1),
                         torch.stack([sin * flip, cos, shift[1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = 1 - F.grid_sample(1 - x, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
    emoji = (moved < 1).any(1, keepdim=True)           # every pixel that is not pure white
    gray = moved.mean(1, keepdim=True)
    saturation = (1 + uniform() * AUGMENT["saturation"]).view(n, 1, 1, 1)
    brightness = (1 + uniform() * AUGMENT["brightness"]).view(n, 1, 1, 1)
    coloured = ((gray + (moved - gray) * saturation) * brightness).clamp(0, 1)
    return torch.where(emoji, coloured, moved)


def augment_to(images, target, seed):
    """Grow a split to `target` uint8 images: the originals, then augmented copies cycling
    through them (so every emoji keeps its share); also each image's original's index."""
    origin = torch.arange(max(target, len(images))) % len(images)
    if target <= len(images):
        return images, origin
    generator = torch.Generator().manual_seed(seed)
    copies = augment(to_float(images[origin[len(images):]]), generator)
    copies = (copies * 255).round().to(torch.uint8)
    return torch.cat([images, copies]), origin


def to_float(images):
    """uint8 (N, 3, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255)


@dataclass
class Split:
    """One split: its unique emoji and the augmented images made from them."""
    originals: torch.Tensor   # uint8 (n, 3, H, W), one per unique emoji
    texts: list               # their names
    labels: torch.Tensor      # their classes
    x: torch.Tensor           # float (N, 3, H, W): the originals, then augmented copies
    y: torch.Tensor           # the class of each image
    origin: torch.Tensor      # the index (into originals) each image was made from


@dataclass
class Data:
    splits: dict
    class_names: list
    info: dict

    def __getitem__(self, name):
        return self.splits[name]


def prepare_data(dataset, config, image_size=64):
    """The whole data pipeline: subset -> unique emoji -> labels -> split -> augment."""
    subset, excluded = select_subset(dataset["text"], config.keywords, config.exclude,
                                     config.whole_word)
    images, texts, skipped = decode_images(dataset, subset, image_size)
    keep = drop_duplicates(images, texts)
    images, texts = images[keep], [texts[i] for i in keep]
    if skipped:
        print(f"Skipped {skipped} row(s) whose image could not be decoded or whose text "
              "was not a string.")
    labels, class_names = label_by_rules(texts, config.class_words)
    parts = split_indices(labels, class_names, texts, config.seed)
    splits = {}
    for k, (name, index) in enumerate(parts.items()):
        index = torch.tensor(index)
        images_k, origin = augment_to(images[index], SPLIT_TARGETS[name], config.seed * 10 + k)
        splits[name] = Split(originals=images[index], texts=[texts[i] for i in index],
                             labels=labels[index], x=to_float(images_k),
                             y=labels[index][origin], origin=origin)
    info = {"matched": len(subset) + sum(excluded.values()), "excluded": excluded,
            "skipped": skipped, "duplicates": len(subset) - skipped - len(keep),
            "subset_size": len(keep), "class_names": class_names,
            "class_sizes": {c: int((labels == k).sum()) for k, c in enumerate(class_names)},
            "split_sizes": {n: len(s.texts) for n, s in splits.items()},
            "augmented_sizes": {n: len(s.x) for n, s in splits.items()}}
    return Data(splits, class_names, info)


# ----------------------------------------------------------------------------------------
# 2. Model
# ----------------------------------------------------------------------------------------

@dataclass
class AEConfig:
    """Everything needed to rebuild an autoencoder (the run's values: `RunConfig.model`)."""
    latent_dim: int
    width: int                # channels after the first stride; doubled at each stride
    image_size: int = 64      # a power of two, at least 16
    num_classes: int = 0      # > 0: Part 2's model, with a class head on the code

    def __post_init__(self):
        size = self.image_size
        if not isinstance(size, int) or size < 16 or size & (size - 1):
            raise ValueError(f"image_size={size!r}: the architecture halves the image down to "
                             "4x4, so it takes a power of two of at least 16 (e.g. 32, 64).")


def down_block(c_in, c_out, norm=True):
    """Halve the resolution: a strided 4x4 convolution, BatchNorm, LeakyReLU (DCGAN)."""
    layers = [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers, nn.LeakyReLU(0.2))


def up_block(c_in, c_out):
    """Double the resolution: a transposed 4x4 convolution, BatchNorm, ReLU (DCGAN)."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class EncoderDecoder(nn.Module):
    """Image -> code -> image, from any encoder and decoder: the interface that training and
    evaluation use (bench.py puts the peers' models behind it too)."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def classify(self, z):
        """Class logits of the codes: None here; Part 2's model has a class head."""
        return None

    def forward(self, x):
        """The reconstruction, the latent code and the class logits (None without a head)."""
        z = self.encoder(x)
        return self.decoder(z), z, self.classify(z)


class Autoencoder(EncoderDecoder):
    """DCGAN-style: strided convolutions halve the image down to 4x4 while doubling the
    channels, a linear layer gives the latent code; the decoder mirrors it and ends in a
    sigmoid, so the output has the input's shape and range."""

    def __init__(self, config: AEConfig):
        steps = int(math.log2(config.image_size)) - 2
        channels = [config.width * 2 ** k for k in range(steps)]
        top = channels[-1]
        encoder = nn.Sequential(
            down_block(3, channels[0], norm=False),
            *[down_block(a, b) for a, b in zip(channels, channels[1:])],
            nn.Sequential(nn.Flatten(), nn.Linear(top * 16, config.latent_dim)))
        decoder = nn.Sequential(
            nn.Sequential(nn.Linear(config.latent_dim, top * 16), nn.ReLU(),
                          nn.Unflatten(1, (top, 4, 4))),
            *[up_block(a, b) for a, b in zip(channels[::-1], channels[::-1][1:])],
            nn.Sequential(nn.ConvTranspose2d(channels[0], 3, 4, 2, 1), nn.Sigmoid()))
        super().__init__(encoder, decoder)
        self.config = config


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------
# 3. Training
# ----------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """The recipe of one training run (the run's values: `RunConfig.recipe`); its budget is
    counted in optimizer steps."""
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    lam: float = 0.0          # weight of the classification loss; 0 without a head
    augment: bool = True      # a fresh distortion of every training batch (AUGMENT)
    bf16: bool = False        # bfloat16 autocast on the CPU: only where it has bfloat16 units


class TrainingDiverged(RuntimeError):
    pass


WARMUP_SHARE = 0.3   # the one-cycle schedule's share of steps spent raising the learning rate
BUDGET_GAIN = 0.10   # a budget is enough when doubling it gains less than this (validation MSE)


def train(model, train_x, val_x, config: TrainConfig, train_y=None, val_y=None, device=None):
    """Train for `config.steps` AdamW steps with a one-cycle schedule and end on the epoch
    with the best validation MSE. Returns the history per epoch (train/val MSE, steps, the
    last step's learning rate, seconds; with labels, Part 2's cross-entropy and accuracy)."""
    device = device or workers.pick_device()
    torch.manual_seed(config.seed)
    model.to(device, memory_format=torch.channels_last)   # faster convolutions (make bench)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    train_x, val_x = train_x.to(device), val_x.to(device)
    if train_y is not None:
        train_y, val_y = train_y.to(device), val_y.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=config.steps,
                                                   pct_start=WARMUP_SHARE)
    history, best, step = {}, (float("inf"), 0, None), 0
    while step < config.steps:
        start = time.perf_counter()
        step, (mse, ce, accuracy), lr = train_epoch(model, optimizer, schedule, train_x, train_y,
                                                    config, generator, step)
        val = evaluate(model, val_x, val_y)
        epoch = {"train_mse": mse, "val_mse": val["mse"], "steps": step, "lr": lr}
        if train_y is not None:
            epoch |= {"train_ce": ce, "train_accuracy": accuracy, "val_ce": val["ce"],
                      "val_accuracy": val["accuracy"]}
        epoch["seconds"] = time.perf_counter() - start
        for key, value in epoch.items():
            history.setdefault(key, []).append(value)
        if val["mse"] < best[0]:
            best = (val["mse"], len(history["val_mse"]) - 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return history | {"best_epoch": best[1]}


def train_epoch(model, optimizer, schedule, train_x, train_y, config, generator, step):
    """One pass over the training images in a fresh order, each batch freshly distorted
    (AUGMENT), ending early where the budget does. Returns the step count after it, the mean
    MSE, cross-entropy and accuracy over its images, and the learning rate of its last step."""
    model.train()
    order = torch.randperm(len(train_x), generator=generator, device=train_x.device)
    sums, seen = torch.zeros(3), 0
    for idx in order.split(config.batch_size)[:config.steps - step]:
        x = augment(train_x[idx], generator) if config.augment else train_x[idx]
        x = x.contiguous(memory_format=torch.channels_last)
        y = None if train_y is None else train_y[idx]
        mse, ce, correct = train_step(model, optimizer, x, y, config, step)
        lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        step += 1
        seen += len(idx)
        sums += torch.tensor([mse * len(idx), ce * len(idx), correct])
    return step, [float(total) / seen for total in sums], lr


def train_step(model, optimizer, x, y, config, step):
    """One optimizer step on a batch: the MSE, or Part 2's joint loss when the model has a
    class head. Returns the batch's MSE, cross-entropy and correct count (0 without a head);
    stops with TrainingDiverged when the loss is not finite."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16 and x.device.type == "cpu"):
        recon, _, logits = model(x)
    mse = F.mse_loss(recon.float(), x)
    loss, ce, correct = (mse, 0.0, 0) if logits is None else joint_loss(mse, logits, y, config.lam)
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"Training diverged at step {step + 1}: the loss became {loss.item()}. Lower the "
            f"learning rate (lr={config.lr:g}) or lam={config.lam:g}; nothing of this run was saved.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return mse.item(), ce, correct


class PCA:
    """PCA of the flattened training images, fitted once; any number of components."""

    def __init__(self, train_x):
        flat = train_x.flatten(1).double()
        self.mean = flat.mean(0)
        _, _, self.directions = torch.linalg.svd(flat - self.mean, full_matrices=False)
        self.rank = min(len(flat) - 1, flat.shape[1])

    def reconstruct(self, x, k):
        mean, directions = self.mean, self.directions[:k]
        flat = x.flatten(1).double() - mean
        return ((flat @ directions.T) @ directions + mean).clamp(0, 1).float().view_as(x)

    def mse(self, x, k):
        return float(mse_per_image(self.reconstruct(x, k), x).mean())


@dataclass
class Fitted:
    """A trained model with its training history."""
    model: Autoencoder
    history: dict
    seconds: float


@dataclass
class Job:
    """One model to train: its architecture, its recipe, images added to the training split
    (Part 3's cat faces), if any, and a fold of its own (cross-validation), if any."""
    model: AEConfig
    recipe: TrainConfig
    extra_train: torch.Tensor = None
    fold: "Split" = None      # replaces the training split; the fold's own originals validate


def fit(data, model_config, recipe, extra_train=None):
    """Train one model: `fit_all` with one job, so it trains exactly as it would beside others."""
    return fit_all(data, [Job(model_config, recipe, extra_train)])[0]


def fit_all(data, jobs):
    """Train every job; returns their `Fitted` in order. On the CPU each model trains in a
    single-threaded process of its own, one per core (workers.py); on an accelerator they
    train one after the other in this process."""
    if workers.pick_device().type != "cpu":
        return [fit_job(data, job) for job in jobs]
    return workers.map_in_processes(fit_job, data, jobs)


def fit_job(data, job):
    """Build a model from the recipe's seed and train it on the training split (and the
    job's extra images), with class labels when the model has a head."""
    torch.manual_seed(job.recipe.seed)  # the initial weights depend on the seed alone
    model = build_model(job.model)
    train_split = job.fold or data["train"]
    val_x, val_y = ((to_float(job.fold.originals), job.fold.labels) if job.fold
                    else (data["val"].x, data["val"].y))
    labels = {"train_y": train_split.y, "val_y": val_y} if job.model.num_classes else {}
    train_x = train_split.x if job.extra_train is None else torch.cat([train_split.x,
                                                                       job.extra_train])
    start = time.perf_counter()
    history = train(model, train_x, val_x, job.recipe, **labels)
    return Fitted(model.cpu().eval(), history, time.perf_counter() - start)


@dataclass
class Sweep:
    """Part 1's latent-size experiment: one model per size, all at the run's budget."""
    rows: list           # one dict per size, in increasing size
    models: dict         # latent size -> Fitted
    steps: int           # the budget of every model (optimizer steps)
    chosen: int          # the latent size kept
    rule: dict           # the size rule's choice, each step's gain, the deciding margin

    @property
    def lowest_val_size(self):
        """The size with the lowest validation MSE (Part 3's rule)."""
        return min(self.rows, key=lambda row: row["val_mse"])["latent_dim"]


def latent_sweep(data, config, pca):
    """One model per latent size at the run's budget beside PCA with as many components, and
    the size rule (`choose_size`). Each row: errors, test / PCA, and how much the next size
    cuts the validation MSE (None for the largest). A `latent_dim` outside the sweep trains
    beside it."""
    x_val, x_test = data["val"].x, data["test"].x
    dims = sorted(set(config.latent_dims) | {config.latent_dim or config.latent_dims[0]})
    jobs = [Job(config.model(k), config.recipe()) for k in dims]
    models = dict(zip(dims, fit_all(data, jobs)))
    rows = [{"latent_dim": k, "val_mse": min(f.history["val_mse"]),
             "test_mse": evaluate(f.model, x_test)["mse"],
             "pca_val_mse": pca.mse(x_val, k), "pca_test_mse": pca.mse(x_test, k),
             "best_epoch": f.history["best_epoch"] + 1, "epochs": len(f.history["val_mse"]),
             "seconds": f.seconds} for k, f in models.items() if k in config.latent_dims]
    for row, bigger in zip(rows, rows[1:] + [None]):
        row["ratio_to_pca"] = row["test_mse"] / row["pca_test_mse"]
        row["next_val_gain"] = relative_drop(row["val_mse"], bigger and bigger["val_mse"])
        row["next_pca_val_gain"] = relative_drop(row["pca_val_mse"],
                                                 bigger and bigger["pca_val_mse"])
    rule = choose_size(rows, config.min_gain)
    return Sweep(rows, models, config.steps, config.latent_dim or rule["choice"], rule)


def choose_size(rows, min_gain, close=0.02):
    """The size rule: the smallest size after which the next size tried cuts validation MSE
    by less than `min_gain` (a fraction); the largest size when every step pays. Returns the
    choice, every step's gain, the gains that decided (into the choice and out of it) and
    whether one of them lies within `close` of the threshold."""
    gains = [row["next_val_gain"] for row in rows[:-1]]
    k = next((i for i, gain in enumerate(gains) if gain < min_gain), len(rows) - 1)
    deciding = [gains[i] for i in (k - 1, k) if 0 <= i < len(gains)]
    return {"choice": rows[k]["latent_dim"], "min_gain": min_gain,
            "gains": {f"{a['latent_dim']}->{b['latent_dim']}": g
                      for a, b, g in zip(rows, rows[1:], gains)},
            "gain_into_choice": gains[k - 1] if k > 0 else None,
            "gain_after_choice": gains[k] if k < len(gains) else None,
            "close": any(abs(g - min_gain) < close for g in deciding), "close_within": close}


def relative_drop(before, after):
    """How much a value fell, as a fraction of where it was (None without an after)."""
    return None if after is None else (before - after) / before


def budget_jobs(config, latent_dim):
    """The budget check's two models: the chosen size at half and at twice the budget."""
    return [Job(config.model(latent_dim), config.recipe(steps=config.steps // 2)),
            Job(config.model(latent_dim), config.recipe(steps=2 * config.steps))]


def budget_check(sweep, half, doubled):
    """The best validation MSE of the chosen size at half the budget, at the budget (the
    sweep's model) and at twice it, and what each doubling gained."""
    best = lambda fitted: min(fitted.history["val_mse"])
    check = {"half_steps": half.history["steps"][-1], "half_val_mse": best(half),
             "steps": sweep.steps, "val_mse": best(sweep.models[sweep.chosen]),
             "doubled_steps": doubled.history["steps"][-1], "doubled_val_mse": best(doubled)}
    gain = relative_drop(check["val_mse"], check["doubled_val_mse"])
    return check | {"gain_to_budget": relative_drop(check["half_val_mse"], check["val_mse"]),
                    "gain_to_doubled": gain, "threshold": BUDGET_GAIN,
                    "enough": gain < BUDGET_GAIN, "seconds": half.seconds + doubled.seconds}


# ----------------------------------------------------------------------------------------
# 4. Evaluation
# ----------------------------------------------------------------------------------------

def mse_per_image(a, b):
    return (a - b).pow(2).flatten(1).mean(1)


def psnr(mse):
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    return 10 * math.log10(1 / mse)


@torch.no_grad()
def evaluate(model, x, y=None, batch_size=256):
    """Per-image MSE, reconstructions, latent codes and class logits of `x`, and averages."""
    model.eval()
    device = next(model.parameters()).device
    errors, recons, codes, logits = [], [], [], []
    for batch in x.split(batch_size):
        batch = batch.to(device)
        recon, z, out = model(batch)
        errors.append(mse_per_image(recon, batch).cpu())
        recons.append(recon.cpu())
        codes.append(z.cpu())
        if out is not None:
            logits.append(out.cpu())
    result = {"per_image_mse": torch.cat(errors), "recon": torch.cat(recons),
              "z": torch.cat(codes)}
    result["mse"] = float(result["per_image_mse"].mean())
    if logits:
        result["logits"] = torch.cat(logits)
        if y is not None:
            result["ce"] = float(F.cross_entropy(result["logits"], y))
            result["accuracy"] = float((result["logits"].argmax(1) == y).float().mean())
    return result


def bootstrap(values, groups, seed, reps=2000):
    """Mean of `values` and a 95 % interval that resamples whole groups (unique emoji): the
    augmented copies of one emoji are not independent, so they are drawn together."""
    values = torch.as_tensor(values, dtype=torch.float64)
    groups = torch.as_tensor(groups)
    ids = groups.unique()
    sums = torch.stack([values[groups == g].sum() for g in ids])
    counts = torch.stack([(groups == g).sum() for g in ids]).double()
    generator = torch.Generator().manual_seed(seed)
    draw = torch.randint(len(ids), (reps, len(ids)), generator=generator)
    means = sums[draw].sum(1) / counts[draw].sum(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return {"mean": float(values.mean()), "low": float(low), "high": float(high),
            "emoji": len(ids), "images": len(values)}


def against_baseline(history, baseline):
    """A learning curve against a baseline's validation MSE: the epoch (1-based) where it
    first falls below, the epoch from which it stays below, and the epoch kept with its
    validation MSE."""
    val = history["val_mse"]
    below = [e for e, v in enumerate(val, 1) if v < baseline]
    last_above = max((e for e, v in enumerate(val, 1) if v >= baseline), default=0)
    kept = history["best_epoch"]
    return {"first_epoch_below": below[0] if below else None,
            "stays_below_from_epoch": last_above + 1 if last_above < len(val) else None,
            "kept_epoch": kept + 1, "epochs": len(val), "val_mse": val[kept]}


def compare_to_pca(per_image_mse, pca, k, split, seed):
    """A model's errors on a split against PCA's with k components on the same images: each
    mean with its interval, the interval of the mean difference, and the ratio of means."""
    pca_errors = mse_per_image(pca.reconstruct(split.x, k), split.x)
    model, baseline = (bootstrap(e, split.origin, seed) for e in (per_image_mse, pca_errors))
    return {"model": model, "pca": baseline, "ratio": model["mean"] / baseline["mean"],
            "difference": bootstrap(per_image_mse - pca_errors, split.origin, seed)}


def random_pick(split, count, seed, exclude=()):
    """A seeded random draw of `count` unique emoji of a split (indices into originals),
    leaving out those in `exclude`."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split.texts), generator=generator)
    left_out = {int(i) for i in exclude}
    return torch.tensor([int(i) for i in order if int(i) not in left_out][:count]).sort().values


def worst_emoji(split, per_image_mse, count):
    """The `count` unique emoji with the highest mean error over their images."""
    per_emoji = torch.zeros(len(split.texts)).index_add_(0, split.origin, per_image_mse)
    per_emoji /= torch.bincount(split.origin, minlength=len(split.texts))
    return per_emoji.argsort(descending=True)[:count], per_emoji


# ----------------------------------------------------------------------------------------
# 5. Part 2: the classification head as an auxiliary task
# ----------------------------------------------------------------------------------------

class ClassHeadAutoencoder(Autoencoder):
    """Part 2's model: the autoencoder with a linear class head that reads its latent code."""

    def __init__(self, config: AEConfig):
        super().__init__(config)
        self.classifier = nn.Linear(config.latent_dim, config.num_classes)

    def classify(self, z):
        return self.classifier(z)


def build_model(config: AEConfig):
    """Part 1's autoencoder, or Part 2's with a class head when `config.num_classes` > 0."""
    return ClassHeadAutoencoder(config) if config.num_classes else Autoencoder(config)


def joint_loss(mse, logits, y, lam):
    """Part 2's loss of a batch, MSE + lam x cross-entropy of the class head; also the
    cross-entropy and the number of images classified correctly."""
    ce = F.cross_entropy(logits.float(), y)
    return mse + lam * ce, ce.item(), int((logits.argmax(1) == y).sum())


def lambda_jobs(config, latent_dim, heads):
    """One model with a class head per lambda of the run, at Part 1's size, recipe and budget."""
    return [Job(config.model(latent_dim, heads), config.recipe(lam=lam)) for lam in config.lambdas]


def lambda_sweep(fitted, part1_val_mse, mse_margin):
    """A row per lambda (`fitted` maps it to its model): validation MSE and accuracy at the
    epoch kept, and the loss balance (`loss_balance`); and the lambda rule's choice."""
    rows = []
    for lam, f in fitted.items():
        kept = f.history["best_epoch"]
        rows.append({"lambda": lam, "val_mse": f.history["val_mse"][kept],
                     "val_accuracy": f.history["val_accuracy"][kept],
                     "val_mse_change": f.history["val_mse"][kept] / part1_val_mse - 1,
                     **{f"ce_share_{k}": v for k, v in loss_balance(f.history, lam).items()}})
    return rows, choose_lambda(rows, mse_margin)


def choose_lambda(rows, mse_margin):
    """The lambda rule: among the lambdas whose validation MSE is at most `mse_margin` (a
    fraction) above Part 1's, the one with the highest validation accuracy (the smaller
    lambda on a tie); the smallest lambda when none is within the margin."""
    within = [row for row in rows if row["val_mse_change"] <= mse_margin]
    best = max(within, key=lambda row: (row["val_accuracy"], -row["lambda"])) if within \
        else min(rows, key=lambda row: row["lambda"])
    return {"choice": best["lambda"], "mse_margin": mse_margin,
            "within_margin": [row["lambda"] for row in within]}


def loss_balance(history, lam):
    """lambda x cross-entropy over MSE: on the training batches of the first epoch and of
    the epoch kept, and on the validation images at the epoch kept."""
    kept = history["best_epoch"]
    ratio = lambda split, epoch: lam * history[f"{split}_ce"][epoch] / history[f"{split}_mse"][epoch]
    return {"first": ratio("train", 0), "kept": ratio("train", kept),
            "val_kept": ratio("val", kept)}


def majority_class(split):
    """The class of most of a split's unique emoji (the lower index on a tie)."""
    return int(torch.bincount(split.labels).argmax())


CV_FOLDS = 4   # folds of the cross-validation over every emoji


def cv_folds(data, config, folds=CV_FOLDS):
    """Stratified folds over every unique emoji (all splits): the emoji as one split, and per
    fold its held-out emoji and its training split (the others, augmented like the run's)."""
    from sklearn.model_selection import StratifiedKFold

    parts = list(data.splits.values())
    originals, labels = (torch.cat([getattr(p, k) for p in parts]) for k in ("originals", "labels"))
    every = Split(originals, [t for p in parts for t in p.texts], labels, to_float(originals),
                  labels, torch.arange(len(labels)))   # every unique emoji, no copies
    folds = max(2, min(folds, int(torch.bincount(every.labels).min())))
    per_emoji = len(data["train"].x) / len(data["train"].originals)
    result = []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=config.seed)
    for k, (train, held_out) in enumerate(splitter.split(every.labels, every.labels)):
        train = torch.tensor(train)
        images, origin = augment_to(every.originals[train], round(len(train) * per_emoji),
                                    config.seed * 10 + 7 + k)
        fold = Split(originals=every.originals[train], texts=[every.texts[i] for i in train],
                     labels=every.labels[train], x=to_float(images),
                     y=every.labels[train][origin], origin=origin)
        result.append((torch.tensor(held_out), fold))
    return every, result


def cross_validate(data, config, latent_dim, lam, steps):
    """Part 2's accuracy over every emoji: one model per fold (Part 1's size and recipe, the
    chosen lambda, `steps`), each predicting the class of its held-out emoji from their
    original pictures. Returns per-emoji results and the accuracy, the majority class's (the
    fold's training majority) and their difference, with intervals over emoji."""
    start = time.perf_counter()
    every, folds = cv_folds(data, config)
    heads = len(data.class_names)
    jobs = [Job(config.model(latent_dim, heads), config.recipe(steps=steps, lam=lam), fold=fold)
            for _, fold in folds]
    correct = torch.zeros(len(every.labels))
    is_majority = torch.zeros(len(every.labels))
    for (held_out, fold), fitted in zip(folds, fit_all(data, jobs)):
        logits = evaluate(fitted.model, every.x[held_out])["logits"]
        correct[held_out] = (logits.argmax(1) == every.labels[held_out]).float()
        is_majority[held_out] = (every.labels[held_out] == majority_class(fold)).float()
    interval = lambda values: bootstrap(values, every.origin, config.seed)
    return {"folds": len(folds), "emoji": len(every.labels), "steps": steps, "lambda": lam,
            "accuracy": interval(correct), "majority": interval(is_majority),
            "difference": interval(correct - is_majority),
            "seconds": time.perf_counter() - start}


def compare_parts(model1, model2, data, seed):
    """Part 2's model against Part 1's on the test split, with intervals over unique test
    emoji: each part's MSE and the change, Part 2's accuracy against the majority class's
    (of the training emoji), each class's recall and its share of the training emoji."""
    test = data["test"]
    result1, result2 = evaluate(model1, test.x), evaluate(model2, test.x, test.y)
    predicted = result2["logits"].argmax(1)
    majority = majority_class(data["train"])
    correct, is_majority = (predicted == test.y).double(), (test.y == majority).double()
    interval = lambda values: bootstrap(values, test.origin, seed)
    recall = lambda k: float(correct[test.y == k].mean()) if (test.y == k).any() else 0.0
    return {"mse": {"part1": interval(result1["per_image_mse"]),
                    "part2": interval(result2["per_image_mse"])},
            "mse_change": interval(result2["per_image_mse"] - result1["per_image_mse"]),
            "relative_change": result2["mse"] / result1["mse"] - 1,
            "accuracy": interval(correct), "majority_class": data.class_names[majority],
            "majority_accuracy": interval(is_majority),
            "accuracy_minus_majority": interval(correct - is_majority),
            "recall": {name: recall(k) for k, name in enumerate(data.class_names)},
            "class_share": {name: float((data["train"].labels == k).double().mean())
                            for k, name in enumerate(data.class_names)}}


# ----------------------------------------------------------------------------------------
# 6. Part 3: latent arithmetic
# ----------------------------------------------------------------------------------------

CAT_PAIRS = [  # (with the attribute, without it): the cat and the human version of a face
    ("grinning cat face with smiling eyes", "grinning face with smiling eyes"),
    ("cat face with tears of joy", "face with tears of joy"),
    ("smiling cat face with open mouth", "smiling face with open mouth"),
    ("smiling cat face with heart-shaped eyes", "smiling face with heart-shaped eyes"),
    ("kissing cat face with closed eyes", "kissing face with closed eyes"),
    ("pouting cat face", "pouting face"),
    ("crying cat face", "crying face"),
    ("weary cat face", "weary face"),
]
UNPAIRED_CATS = ["cat face", "cat face with wry smile"]  # no human partner: always trained on
MIN_HELD_OUT_PAIRS = 3   # one pair to test, at least two to average the vector over
CAT_FOLDS = 2            # each fold's cat faces are held out from one model's training


@dataclass
class Pairs:
    names: list                  # (with, without) names found in the data
    with_images: torch.Tensor    # float (n, 3, H, W)
    without_images: torch.Tensor
    unpaired: torch.Tensor       # float images of the cat faces without a partner
    missing: list                # names of the data that were not found
    unpaired_names: list = field(default_factory=list)

    @property
    def held_out(self):
        return len(self.names) >= MIN_HELD_OUT_PAIRS

    def folds(self):
        """Pair indices of each fold: every CAT_FOLDS-th pair."""
        return [list(range(f, len(self.names), CAT_FOLDS)) for f in range(CAT_FOLDS)]

    def fold_of(self, pair):
        return pair % CAT_FOLDS

    @property
    def human_faces(self):
        return [without for _, without in self.names]

    def index_of(self, human_face):
        """The pair whose human face is named `human_face`, else the last pair."""
        names = self.human_faces
        return names.index(human_face) if human_face in names else len(names) - 1

    def others(self, pair):
        """Every pair but one: what its attribute vector is averaged over."""
        return [k for k in range(len(self.names)) if k != pair]

    def cats_outside(self, fold):
        """The names and images of every cat face outside a fold: what its models learn from."""
        keep = [i for i in range(len(self.names)) if i not in fold]
        names = [self.names[i][0] for i in keep] + self.unpaired_names
        return names, torch.cat([self.with_images[keep], self.unpaired])


def find_pairs(dataset, pairs=CAT_PAIRS, unpaired=UNPAIRED_CATS):
    """Decode the attribute pairs present in the data and name the missing ones; stops
    (before any training) when no pair is complete."""
    texts = [clean_text(t) if isinstance(t, str) else None for t in dataset["text"]]
    where = {t: i for i, t in reversed(list(enumerate(texts))) if t}
    found = [p for p in pairs if p[0] in where and p[1] in where]
    alone = [name for name in unpaired if name in where]
    missing = sorted({name for p in pairs for name in p if name not in where})
    if missing:
        print(f"Part 3: {len(missing)} emoji of the attribute pairs are not in this source: "
              f"{', '.join(missing)}.")
    if not found:
        raise ValueError("Part 3 needs at least one complete (cat, human) pair of "
                         f"{[p[0] for p in pairs]}, and this source has none. "
                         "Use source='mirror' or the hub.")
    names = [n for p in found for n in p] + alone
    images, decoded, _ = decode_images(dataset, [where[n] for n in names])
    if len(decoded) != len(names):
        raise ValueError("Part 3: some pair images could not be decoded; use another source.")
    if len(found) < MIN_HELD_OUT_PAIRS:
        print(f"Part 3: only {len(found)} complete pair(s); the held-out evaluation needs "
              f"{MIN_HELD_OUT_PAIRS}, so only the arithmetic row is shown.")
    x = to_float(images)
    n = 2 * len(found)
    return Pairs(found, x[0:n:2], x[1:n:2], x[n:], missing, alone)


def cats_for_training(data, pairs, fold, seed):
    """The cat faces a fold's model trains on: every cat face outside the fold, with as many
    augmented copies per face as the subset's training emoji have."""
    _, cats = pairs.cats_outside(fold)
    train = data["train"]
    images, _ = augment_to((cats * 255).round().to(torch.uint8),
                           round(len(cats) * len(train.x) / len(train.originals)), seed)
    return to_float(images)


def fit_fold_models(data, config, pairs, latent_dim):
    """One autoencoder per fold, at the run's recipe and budget, trained on the training split
    and the cat faces of the other folds: no model sees the cat face of a pair it is tested on."""
    jobs = [Job(config.model(latent_dim), config.recipe(),
                cats_for_training(data, pairs, fold, config.seed + f))
            for f, fold in enumerate(pairs.folds())]
    return fit_all(data, jobs)


class CatClassifier(nn.Module):
    """A small CNN on real emoji pixels: the logit of 'this is a cat face'."""

    def __init__(self, width=16):
        super().__init__()
        self.net = nn.Sequential(down_block(3, width, norm=False), down_block(width, 2 * width),
                                 down_block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(4 * width, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)

    @torch.no_grad()
    def p_cat(self, x):
        return torch.sigmoid(self(x))


def train_cat_classifier(cats, faces, seed, steps=400, batch_size=32, lr=2e-3):
    """Cat faces against human faces, on real pixels: every batch is half cats, half human
    faces, each freshly distorted (AUGMENT), so the few cats weigh as much as the faces."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = CatClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    half = batch_size // 2
    y = torch.cat([torch.ones(half), torch.zeros(half)])
    pick = lambda images: images[torch.randint(len(images), (half,), generator=generator)]
    model.train()
    for _ in range(steps):
        x = augment(torch.cat([pick(cats), pick(faces)]), generator)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def fit_cat_classifiers(data, pairs, seed):
    """One classifier per fold, trained on the cat faces outside the fold and the training
    emoji; its accuracy is measured on the fold's cat faces and the test emoji."""
    faces, test_faces = to_float(data["train"].originals), to_float(data["test"].originals)
    classifiers, held_out_cats, test_humans = [], [], []
    for f, fold in enumerate(pairs.folds()):
        classifier = train_cat_classifier(pairs.cats_outside(fold)[1], faces, seed + f)
        classifiers.append(classifier)
        held_out_cats += (classifier.p_cat(pairs.with_images[fold]) >= 0.5).tolist()
        test_humans += (classifier.p_cat(test_faces) < 0.5).tolist()
    accuracy = {"held_out_cats": sum(held_out_cats) / len(held_out_cats),
                "test_human_faces": sum(test_humans) / len(test_humans),
                "cats": len(held_out_cats), "human_faces": len(test_humans) // len(classifiers)}
    return classifiers, accuracy


COMPOSITES = ("latent", "pixel", "unchanged", "floor")   # what Part 3 decodes for each pair


@torch.no_grad()
def held_out_composites(models, classifiers, pairs):
    """For each pair i, with the model and classifier of i's fold (neither saw i's cat face):
    the cat vector averaged over the other pairs added to i's human face in latent space
    (decoded) and on pixels (clipped), the human face reconstructed unchanged, and the true
    cat face reconstructed (the floor). Returns the images of each kind and a DataFrame, a
    row per pair: MSE to the true cat face, P(cat), identity kept, ears and sharpness."""
    import pandas as pd

    if not pairs.held_out:
        return None, None
    n = len(pairs.names)
    images, rows = {kind: [None] * n for kind in COMPOSITES}, [None] * n
    nearest = lambda image: int((pairs.without_images - image).pow(2).flatten(1).mean(1).argmin())
    for fold, model, classifier in zip(pairs.folds(), models, classifiers):
        model.eval()
        z_with, z_without = model.encode(pairs.with_images), model.encode(pairs.without_images)
        for i in fold:
            others = pairs.others(i)
            z_vector = (z_with[others] - z_without[others]).mean(0)
            pixel_vector = (pairs.with_images[others] - pairs.without_images[others]).mean(0)
            made = {"latent": model.decode(z_without[i:i + 1] + z_vector)[0],
                    "pixel": (pairs.without_images[i] + pixel_vector).clamp(0, 1),
                    "unchanged": model.decode(z_without[i:i + 1])[0],
                    "floor": model.decode(z_with[i:i + 1])[0]}
            rows[i] = {f"{kind}_mse": float((image - pairs.with_images[i]).pow(2).mean())
                       for kind, image in made.items()}
            rows[i] |= {f"{kind}_p_cat": float(classifier.p_cat(made[kind][None]))
                        for kind in COMPOSITES[:3]}
            rows[i] |= {f"{kind}_identity": nearest(made[kind]) == i for kind in COMPOSITES[:2]}
            for kind, image in made.items():
                images[kind][i] = image
    images = {kind: torch.stack(made) for kind, made in images.items()}
    per_pair = pd.DataFrame(rows, index=pairs.human_faces)
    per_pair["latent_ears"] = [ear_coverage(image[None]) for image in images["latent"]]
    per_pair["latent_sharpness"] = [sharpness(image[None]) for image in images["latent"]]
    per_pair["truth_sharpness"] = [sharpness(image[None]) for image in pairs.with_images]
    return images, per_pair


def score_analogies(per_pair, images, pairs, seed):
    """The held-out analogies in numbers: mean MSEs with intervals over pairs, counts of
    wins, cats and identities kept, the floor's share, ear coverage and sharpness."""
    mean = lambda column: sum(per_pair[column]) / len(per_pair)
    count = lambda where: int(where.sum())
    interval = lambda values: bootstrap(list(values), torch.arange(len(per_pair)), seed)
    latent, pixel, floor = per_pair["latent_mse"], per_pair["pixel_mse"], per_pair["floor_mse"]
    shares = floor / latent
    return {"pairs": len(per_pair), **{f"{kind}_mse": mean(f"{kind}_mse") for kind in COMPOSITES},
            "latent_mse_ci": interval(latent), "pixel_mse_ci": interval(pixel),
            "latent_minus_pixel_ci": interval(latent - pixel),
            "latent_wins": count(latent < pixel),
            **{f"{kind}_cats": count(per_pair[f"{kind}_p_cat"] >= 0.5) for kind in COMPOSITES[:3]},
            **{f"{kind}_identity": count(per_pair[f"{kind}_identity"]) for kind in COMPOSITES[:2]},
            "latent_sharpness": mean("latent_sharpness"), "truth_sharpness": mean("truth_sharpness"),
            "latent_ears": mean("latent_ears"), "pixel_ears": ear_coverage(images["pixel"]),
            "unchanged_ears": ear_coverage(images["unchanged"]),
            "truth_ears": ear_coverage(pairs.with_images),
            "human_ears": ear_coverage(pairs.without_images),
            "floor_share": mean("floor_mse") / mean("latent_mse"),
            "floor_share_range": [float(shares.min()), float(shares.max())]}


def representative_donor(model, pairs, target):
    """The pair (not the target's) whose own cat vector is closest to the vector averaged
    over every pair but the target's."""
    with torch.no_grad():
        vectors = model.encode(pairs.with_images) - model.encode(pairs.without_images)
    others = pairs.others(target)
    distance = (vectors[others] - vectors[others].mean(0)).norm(dim=1)
    return others[int(distance.argmin())]


@torch.no_grad()
def analogy_row(model, pairs, target, donor, scales=(0.0, 0.5, 1.0, 1.5, 2.0)):
    """The course's row for pair `target`: cat(donor) - human(donor) + human(target), and
    the same with the vector averaged over every pair but the target's, at several scales."""
    z_with, z_without = model.encode(pairs.with_images), model.encode(pairs.without_images)
    others = pairs.others(target)
    single = z_with[donor] - z_without[donor]
    averaged = (z_with[others] - z_without[others]).mean(0) if others else single
    base = z_without[target]
    images = {"single": model.decode((base + single)[None])[0],
              "averaged": model.decode((base + averaged)[None])[0],
              "scaled": model.decode(torch.stack([base + s * averaged for s in scales]))}
    truth = pairs.with_images[target]
    mse = {k: float((images[k] - truth).pow(2).mean()) for k in ("single", "averaged")}
    return images, mse, list(scales), others


def ear_coverage(images):
    """Share of coloured (not near-white) pixels in the two boxes at the top corners where the
    cat faces draw their ears and the round human faces leave white background."""
    side = images.shape[-1]
    rows, left = slice(0, side * 10 // 64), slice(side * 6 // 64, side * 16 // 64)
    right = slice(side - side * 16 // 64, side - side * 6 // 64)
    boxes = torch.cat([images[..., rows, left], images[..., rows, right]], dim=-1)
    return float((boxes.min(dim=-3).values < 0.8).float().mean())


def sharpness(images):
    """Mean absolute difference between neighbouring pixels: lower means blurrier."""
    return float((images[..., 1:, :] - images[..., :-1, :]).abs().mean()
                 + (images[..., :, 1:] - images[..., :, :-1]).abs().mean())
