"""The bookkeeping of a notebook run, beside the method in helpers.py.

  1. RunConfig: every notebook parameter, checked once, and the model configuration and
     training recipe it hands out
  2. Tables, figures and text for the display cells (Markdown in Jupyter, LaTeX in the PDF)
  3. Run folder: one run at a time (a file lock), staging, atomic writes, weights and
     latents, and the provenance of the numbers
  4. The answers check: every number a markdown answer quotes is one the run produced
     (`python runs.py check-answers RUN_DIR`)
The notebook's hidden setup and display cells use this module; its visible cells call only
helpers.py.
"""
import ast
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

import helpers
import sources
import workers

REPO_ROOT = Path(__file__).resolve().parent
NOTEBOOK = REPO_ROOT / "homework2.ipynb"
OUTSIDE_REPO_OVERRIDE = "ALLOW_RUN_DIR_OUTSIDE_REPO"   # set to 1 to write a run elsewhere
MAX_SEED = 2 ** 31 - 1 - 1000   # seed + small offsets must stay valid for numpy and torch
QUICK_STEPS = 40                # optimizer steps per model in quick mode
RANK = helpers.SPLIT_TARGETS["train"] - 1   # the most directions PCA of the training images has
# The numeric parameters: (integer?, lowest, highest, what to give). A float lowest is
# excluded (above 0.0), an integer lowest allowed (at least 0); None picks by rule.
BOUNDS = {"seed": (True, 0, MAX_SEED, ""), "steps": (True, 2, 1_000_000, ""),
          "batch_size": (True, 1, 4096, ""), "width": (True, 1, 256, ""),
          "latent_dims": (True, 1, RANK, f"PCA of 600 training images has at most {RANK} directions"),
          "latent_dim": (True, 1, RANK, "or None to let the sweep choose"),
          "lr": (False, 0.0, 1, "a learning rate above 1 makes AdamW diverge; the default is 5e-3"),
          "weight_decay": (False, 0, 1, "AdamW's decay, e.g. 1e-2"),
          "lambdas": (False, 0.0, 100, "each a weight of the cross-entropy, e.g. 0.1"),
          "lam": (False, 0.0, 100, "the weight of the cross-entropy, e.g. 0.1, or None to let "
                                   "the lambda rule choose"),
          "mse_margin": (False, 0, 10, "a fraction, e.g. 0.25"),
          "min_gain": (False, 0.0, 1, "a fraction, e.g. 0.1")}
OPTIONAL = ("latent_dim", "lam")   # None lets the sweep's or the lambda rule choose
LISTS = {"latent_dims": "the sweep needs a list of at least one latent size, e.g. [16, 32, 64, 128]",
         "lambdas": "Part 2 needs a list of at least one weight of the cross-entropy, e.g. [0.01, 0.1]"}


# ----------------------------------------------------------------------------------------
# 1. Run configuration
# ----------------------------------------------------------------------------------------

def notebook_defaults(path=NOTEBOOK):
    """The parameters cell of the notebook, as Python values (the single source of defaults)."""
    import papermill

    return {name: ast.literal_eval(spec["default"])
            for name, spec in papermill.inspect_notebook(str(path)).items()}


@dataclass
class RunConfig:
    """Every parameter of the notebook, checked on creation; quick mode is `effective()`."""
    group_members: str
    seed: int
    source: str
    keywords: list
    exclude: list
    whole_word: bool
    class_words: dict
    latent_dims: list
    latent_dim: object
    min_gain: float
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    width: int
    lambdas: list
    lam: object
    mse_margin: float
    run_dir: str
    quick: bool

    @classmethod
    def from_values(cls, values):
        """Build from a mapping that holds (at least) every parameter, e.g. globals()."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    @classmethod
    def defaults(cls, **changes):
        return cls(**(notebook_defaults() | changes))

    def __post_init__(self):
        for name in ("whole_word", "quick"):
            setattr(self, name, as_bool(name, getattr(self, name)))
        for name, (integer, low, high, note) in BOUNDS.items():
            value = getattr(self, name)
            if name in LISTS:
                if not isinstance(value, list) or not value:
                    raise ValueError(f"{name}={value!r}: {LISTS[name]}.")
                for each in value:
                    check_bounds(name, each, integer, low, high, note)
                setattr(self, name, sorted(set(value)))
            elif value is not None or name not in OPTIONAL:
                check_bounds(name, value, integer, low, high, note)
        check_words("keywords", self.keywords, allow_empty=False)
        check_words("exclude", self.exclude, allow_empty=True)
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source={self.source!r}: use one of: {', '.join(sources.SOURCES)}.")
        if not isinstance(self.group_members, str):
            raise ValueError(f"group_members={self.group_members!r}: give the names as one "
                             "string, e.g. -p group_members 'Ada Lovelace, Alan Turing'.")
        check_class_words(self.class_words)
        if not isinstance(self.run_dir, str) or not self.run_dir.strip():
            raise ValueError(f"run_dir={self.run_dir!r}: give a folder, e.g. runs/mine.")
        folder = self.folder()
        if not folder.is_relative_to(REPO_ROOT) and os.environ.get(
                OUTSIDE_REPO_OVERRIDE) != "1":
            raise ValueError(
                f"run_dir={self.run_dir!r} is outside the repository ({folder}). Give a folder "
                f"inside it, e.g. -p run_dir runs/mine, or set {OUTSIDE_REPO_OVERRIDE}=1 to write "
                "there on purpose.")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"run_dir={self.run_dir!r} is a file, not a folder. Give a folder, "
                             "e.g. -p run_dir runs/mine.")
        if self.quick and folder == REPO_ROOT:
            raise ValueError(
                f"quick=True with run_dir={self.run_dir!r}: a quick run never replaces the "
                "committed results in the repository root. Give another folder, "
                "e.g. -p run_dir runs/quick.")

    def folder(self):
        """run_dir as an absolute path."""
        return Path(self.run_dir).expanduser().resolve()

    def effective(self):
        """The configuration that runs: quick mode keeps 2 latent sizes, 2 lambdas, 40 steps."""
        if not self.quick:
            return self
        dims = sorted({self.latent_dims[0], self.latent_dims[-1]})
        lambdas = sorted({self.lambdas[0], self.lambdas[-1]})
        return replace(self, latent_dims=dims, lambdas=lambdas, steps=QUICK_STEPS)

    def model(self, latent_dim, num_classes=0):
        """The architecture of one autoencoder of this run."""
        return helpers.AEConfig(latent_dim=latent_dim, width=self.width, num_classes=num_classes)

    def recipe(self, steps=None, seed=None, lam=0.0):
        """The training recipe of this run: its budget and seed unless told otherwise."""
        return helpers.TrainConfig(steps=steps or self.steps, batch_size=self.batch_size,
                                   lr=self.lr, weight_decay=self.weight_decay, lam=lam,
                                   seed=self.seed if seed is None else seed,
                                   bf16=workers.native_bf16())


def as_bool(name, value):
    """True/False, also from papermill's strings 'true' and 'false' (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{name}={value!r}: must be True or False.")


def check_bounds(name, value, integer, low, high, note):
    """An integer from `low` to `high`, or a finite number above a float `low` (at least an
    integer one) and at most `high`; else an error that names the parameter and the bounds."""
    low_open = isinstance(low, float)
    if (isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
            and (integer or math.isfinite(value)) and (low < value if low_open else low <= value)
            and value <= high):
        return
    if integer:
        raise ValueError(f"{name}: {value!r} is not an integer from {low} to {high}"
                         + (f" ({note})." if note else "."))
    bound = f"{'above' if low_open else 'at least'} {low:g} and at most {high}"
    raise ValueError(f"{name}={value!r}: must be a finite number {bound} ({note}).")


def check_words(name, words, allow_empty):
    ok = isinstance(words, list) and all(isinstance(w, str) and w.strip() for w in words)
    if not ok or (not words and not allow_empty):
        raise ValueError(f"{name}={words!r}: give a list of words, e.g. ['face'].")
    padded = [w for w in words if w != w.strip()]
    if padded:
        raise ValueError(f"{name}: {padded[0]!r} has spaces around it, so it would only match "
                         f"with them; write {padded[0].strip()!r}.")


def check_class_words(class_words):
    example = "e.g. {'happy': ['smil', 'grin'], 'unhappy': ['cry'], 'neutral': []}"
    if not isinstance(class_words, dict) or len(class_words) < 2:
        raise ValueError(f"class_words={class_words!r}: give at least two classes, {example}.")
    for k, (name, words) in enumerate(class_words.items()):
        last = k == len(class_words) - 1
        if not isinstance(name, str) or not isinstance(words, list) or (
                not words and not last) or not all(isinstance(w, str) and w for w in words):
            raise ValueError(f"class_words[{name!r}]={words!r}: each class needs a list of "
                             f"words; only the last may be empty (it takes the rest), {example}.")


# ----------------------------------------------------------------------------------------
# 2. Tables, figures and text for the notebook's display cells
# ----------------------------------------------------------------------------------------

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|$~^@&])")


def plain(text):
    """User or data text (names, words, paths) escaped so that Markdown, pandoc and LaTeX
    print it as it is: no emphasis, math, raw LaTeX or HTML from it."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def strict_json(value):
    """The value in plain Python types (tensors as lists, numpy scalars as numbers), with
    every NaN or infinity replaced by None, so that json.dumps writes strict JSON."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    elif isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


class Table:
    """A table for display: Markdown in Jupyter, a LaTeX tabular in the PDF (nbconvert
    prefers text/latex), which never wraps a row and never breaks across pages."""

    def __init__(self, frame, floatfmt):
        formats = floatfmt if isinstance(floatfmt, (tuple, list)) else [floatfmt] * frame.shape[1]
        self.numeric = [frame[c].dtype.kind in "if" for c in frame.columns]
        self.header = [str(c) for c in frame.columns]
        self.cells = [[cell_text(v, f) for v, f in zip(row, formats)]
                      for row in frame.itertuples(index=False)]

    def _repr_markdown_(self):
        lines = ["| " + " | ".join(map(plain, line)) + " |" for line in [self.header, *self.cells]]
        lines.insert(1, "| " + " | ".join("---:" if n else ":---" for n in self.numeric) + " |")
        return "\n".join(lines)

    def _repr_latex_(self):
        import pandas as pd

        styler = (pd.DataFrame(self.cells, columns=self.header).style.hide(axis="index")
                  .format(escape="latex").format_index(r"\textbf{{{}}}", escape="latex", axis=1))
        columns = "".join("r" if n else "l" for n in self.numeric)
        tabular = styler.to_latex(column_format=columns, hrules=True)
        return "\n".join([r"\begin{center}\small", tabular.rstrip(), r"\end{center}"])


def cell_text(value, fmt):
    """A cell as printed: floats in the column's format, integers with thousands separators."""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else format(value, fmt)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(rows, floatfmt=".4g", **columns):
    """A table from a list of dicts (or a DataFrame); `columns` picks and renames columns."""
    import pandas as pd

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    if columns:
        frame = frame[list(columns)].rename(columns=columns)
    return Table(frame, floatfmt)


def show_images(rows, row_titles=None, col_titles=None, size=1.0, title=None, fontsize=8,
                row_titles_across=False):
    """A grid of images: `rows` is a list of lists (or tensors) of (3, H, W) images.

    Each cell is `size` inches square; the figure grows to fit the column titles' lines.
    Row titles read upwards, or across beside their rows with `row_titles_across`. Titles
    print as written (see `figure_text`)."""
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    lines = max((t.count("\n") + 1 for t in col_titles or [""]), default=0) if col_titles else 0
    text_in = fontsize / 72 * 1.25
    height = size * n_rows + lines * text_in + (2 * text_in if title else 0) + 0.1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols + 0.4, height), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(row):
                image = row[c].float()
                image = image / 255 if image.max() > 1 else image
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            if col_titles and r == 0 and c < len(col_titles):
                ax.set_title(figure_text(col_titles[c]), fontsize=fontsize)
        if row_titles:
            across = dict(rotation=0, ha="right", va="center") if row_titles_across else {}
            axes[r, 0].set_ylabel(figure_text(row_titles[r]), fontsize=fontsize, **across)
    top = 1.0
    if title:
        fig.suptitle(figure_text(title), fontsize=fontsize + 0.5)
        top = 1 - 2 * text_in / height
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, top))
    return fig


def show_equation(images, titles, operators, size=0.85, fontsize=7.5, title=None):
    """One row of images with an operator ('-', '+', '=', or '' for a gap) printed between
    each image and the next, as the course writes latent arithmetic."""
    import matplotlib.pyplot as plt

    widths = [w for k in range(len(images)) for w in ([1.0] if k == 0 else [0.28, 1.0])]
    line = fontsize / 72 * 1.25
    above = (max(t.count("\n") + 1 for t in titles) + (1.6 if title else 0)) * line
    height = size + above + 0.1
    fig, axes = plt.subplots(1, len(widths), figsize=(size * sum(widths) + 0.2, height),
                             gridspec_kw={"width_ratios": widths, "wspace": 0.04})
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.05 / height, top=(0.05 + size) / height)
    for ax in axes:
        ax.axis("off")
    for k, (image, text) in enumerate(zip(images, titles)):
        axes[2 * k].imshow(image.float().permute(1, 2, 0).clamp(0, 1).numpy())
        axes[2 * k].set_title(figure_text(text), fontsize=fontsize)
    for k, operator in enumerate(operators):
        axes[2 * k + 1].text(0.5, 0.5, operator, fontsize=fontsize + 8, ha="center", va="center",
                             transform=axes[2 * k + 1].transAxes)
    if title:
        fig.suptitle(figure_text(title), fontsize=fontsize + 0.5, y=1 - 0.1 / height, va="top")
    return fig


def figure_text(text):
    """Text for a matplotlib title: a '$' in an emoji or class name prints as it is."""
    return text.replace("$", r"\$")


def wrap(text, width=14):
    """Break an emoji name into short lines for a figure title."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


FIGURE_WIDTH_IN = 6.0    # the PDF prints figures at most this wide (0.9 of the text width)
MIN_TEXT_PT = 7.0


def smallest_printed_text(fig):
    """The smallest font size (pt) of the figure's visible texts at the size it prints."""
    from matplotlib.text import Text

    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    scale = min(1.0, FIGURE_WIDTH_IN / box.width)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    return (min(sizes) if sizes else MIN_TEXT_PT) * scale, box.width * scale


# ----------------------------------------------------------------------------------------
# 3. Run folder: lock, staging, saving and loading, provenance
# ----------------------------------------------------------------------------------------

def atomic_write(path, write):
    """Call write(tmp_path), then move the finished file onto `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        write(str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def pid_alive(pid):
    """The process runs: it exists and is not a zombie (ended, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):   # no /proc (macOS): it exists, so it runs
        return True


class Run:
    """One notebook run into `run_dir`: it holds the folder's lock for the whole run, writes
    every output into a staging folder, and moves them into place only when `finish` is
    called at the very end, so a failed or interrupted run leaves the previous outputs
    untouched. The code's provenance is taken at the start and checked at the end."""

    FOLDERS = ("weights", "latents", "report/figures")   # where the run's files go
    METRICS = "report/metrics.json"                      # moved last: the completion marker
    _unfinished = {}                                     # run_dir -> this process's open Run

    def __init__(self, config):
        self.config = config
        self.dir = config.folder()
        self.id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        self.finished = False
        earlier = Run._unfinished.pop(self.dir, None)
        if earlier is not None:   # the setup cell run again in the same kernel
            print(f"Note: this kernel's run {earlier.id} into {self.dir} did not finish; it is "
                  "dropped and this run starts afresh.")
            earlier.release()
        self.lock = FileLock(self.dir / ".run.lock")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.lock.acquire(timeout=0)
        except Timeout:
            raise RuntimeError(
                f"run_dir {self.dir} is in use by another run. Wait for it to finish, or give "
                "this run another folder, e.g. -p run_dir runs/other.") from None
        except OSError as error:
            raise RuntimeError(
                f"run_dir {self.dir} cannot be written ({type(error).__name__}: "
                f"{error.strerror}). Give a folder you can write to, e.g. -p run_dir runs/mine."
            ) from None
        self.provenance = provenance()
        self._remove_debris()
        if any((self.dir / name).exists() for name in self.FOLDERS) and not (
                self.dir / self.METRICS).exists():
            print(f"Note: {self.dir} holds outputs without {self.METRICS}: an earlier run was "
                  "stopped while moving its outputs in, so they may mix two runs. This run "
                  "replaces the files it makes when it finishes.")
        self.staging = self.dir / f".staging-{self.id}"
        self.staging.mkdir()
        self.started = time.perf_counter()
        self.device = workers.pick_device()
        self.figures = {}
        Run._unfinished[self.dir] = self

    def _remove_debris(self):
        """Staging folders of earlier runs (no run holds the lock now) and temporary files
        of processes that are gone, in the folders a run writes to, by their exact names."""
        for stale in self.dir.glob(".staging-*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        for folder in (self.dir, self.dir / "report", *(self.dir / name for name in self.FOLDERS)):
            for tmp in folder.glob(".*.tmp"):
                pid = tmp.name.rsplit(".", 2)[-2]
                if tmp.is_file() and pid.isdigit() and not pid_alive(int(pid)):
                    tmp.unlink(missing_ok=True)

    def release(self):
        self.lock.release()
        if Run._unfinished.get(self.dir) is self:
            del Run._unfinished[self.dir]

    def path(self, relative):
        """Where the run writes `relative` until `finish` moves it into run_dir."""
        if self.finished:
            raise RuntimeError(
                f"run {self.id} has finished and moved its outputs into {self.dir}; running its "
                "last cells again would write nowhere. Run the notebook from the top for a new run.")
        return self.staging / relative

    def save_model(self, relative, model, **extra):
        """Save the state dict with the config that rebuilds the model and the run id."""
        payload = {"config": asdict(model.config), "state_dict": model.state_dict(),
                   "run_id": self.id, **extra}
        return atomic_write(self.path(relative), lambda tmp: torch.save(payload, tmp))

    def save_latents(self, relative, model, data):
        """The latent code of every image of every split, with text, label and split."""
        rows = {"z": [], "text": [], "label": [], "split": [], "origin": [], "run_id": self.id}
        for name, split in data.splits.items():
            rows["z"].append(helpers.evaluate(model, split.x)["z"])
            rows["text"] += [split.texts[i] for i in split.origin]
            rows["split"] += [name] * len(split.x)
            rows["origin"].append(split.origin)
            rows["label"].append(split.y)
        for key in ("z", "origin", "label"):
            rows[key] = torch.cat(rows[key])
        return atomic_write(self.path(relative), lambda tmp: torch.save(rows, tmp))

    def figure(self, fig, name):
        """Save a figure (PNG, 150 dpi), record its smallest text size in print, and show
        the saved file, so that the notebook and the PDF show exactly what was saved."""
        import matplotlib.pyplot as plt
        from IPython.display import Image, display

        smallest, width = smallest_printed_text(fig)
        self.figures[name] = {"smallest_text_pt": round(smallest, 2),
                              "printed_width_in": round(width, 2)}
        path = self.path(f"report/figures/{name}.png")
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150,
                                                   bbox_inches="tight"))
        plt.close(fig)
        display(Image(filename=str(path)))

    def finish(self, metrics):
        """Write metrics.json (strict JSON), then move the run's outputs into run_dir and
        unlock. Each file is moved into place on its own; the files an earlier run listed
        that this run did not make are removed, and files a person put there are left alone.
        metrics.json goes last, after the old one was removed, so a folder without it is one
        whose move was interrupted. A second call is refused (by `path`).

        Stops, leaving the previous outputs in place, when the code or the notebook changed
        on disk while the run was going."""
        if provenance() != self.provenance:
            raise RuntimeError(
                "helpers.py, sources.py, workers.py, requirements.txt or the notebook's code changed "
                "while this run was going, so its outputs may come from either version; nothing "
                f"was moved into {self.dir}. Run the notebook again.")
        metrics_path = self.path(self.METRICS)
        outputs = sorted(str(p.relative_to(self.staging)) for name in self.FOLDERS
                         for p in self.path(name).rglob("*") if p.is_file())
        metrics = metrics | {"run": {"id": self.id, "date": time.strftime("%Y-%m-%d"),
                                     "device": str(self.device)},
                             "figures": self.figures, "provenance": self.provenance,
                             "outputs": outputs + [self.METRICS]}
        metrics["runtime"] = metrics.get("runtime", {}) | {
            "device": str(self.device), "cpu": torch.backends.cpu.get_cpu_capability(),
            "seconds": time.perf_counter() - self.started}
        text = json.dumps(strict_json(metrics), indent=2, allow_nan=False)
        atomic_write(metrics_path, lambda tmp: Path(tmp).write_text(text))
        earlier = self.earlier_outputs()
        (self.dir / self.METRICS).unlink(missing_ok=True)
        for name in outputs:
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / name, self.dir / name)
        for name in sorted(set(earlier) - set(outputs)):
            (self.dir / name).unlink(missing_ok=True)
        (self.dir / self.METRICS).parent.mkdir(parents=True, exist_ok=True)
        os.replace(metrics_path, self.dir / self.METRICS)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.finished = True
        self.release()
        return [self.dir / name for name in metrics["outputs"]]

    def earlier_outputs(self):
        """The output files the run that last finished in run_dir listed (none if unknown)."""
        try:
            listed = json.loads((self.dir / self.METRICS).read_text()).get("outputs", [])
        except (OSError, ValueError, AttributeError):
            return []
        ours = lambda name: isinstance(name, str) and ".." not in Path(name).parts and any(
            name.startswith(folder + "/") for folder in self.FOLDERS)
        return [name for name in listed if ours(name)]


def load_model(path, expected_config=None, device="cpu"):
    """Rebuild a model from a file written by `Run.save_model`; returns it and the payload."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist. Run the notebook "
                                "(`make report`) to train and save the model.")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        config = helpers.AEConfig(**payload["config"])
        state = payload["state_dict"]
    except Exception as error:
        raise ValueError(f"weights file {path} is damaged or not ours "
                         f"({type(error).__name__}). Delete it and re-run the notebook.") from None
    if expected_config is not None and asdict(config) != asdict(expected_config):
        raise ValueError(f"weights file {path} was made for {asdict(config)}, not for "
                         f"{asdict(expected_config)}. Re-train, or use matching parameters.")
    model = helpers.build_model(config)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ValueError(f"weights file {path}: its tensors do not fit the model its own config "
                         f"describes ({asdict(config)}). Delete it and re-run the notebook.") from None
    return model.to(device).eval(), payload


def notebook_code_sha256(notebook_path=NOTEBOOK):
    """sha256 of the notebook's code cells (papermill's injected cell left out). The markdown
    is not hashed: an answer's wording can change without a new run (the answers check
    keeps its numbers true)."""
    import nbformat

    cells = nbformat.read(str(notebook_path), as_version=4).cells
    return hashlib.sha256("\n\n".join(
        c.source for c in cells if c.cell_type == "code"
        and "injected-parameters" not in c.metadata.get("tags", [])).encode("utf-8")).hexdigest()


def provenance(notebook_path=NOTEBOOK):
    """Hashes of what makes a run's numbers (the method and the modules it stands on, the
    notebook's code, the pinned requirements, all beside the notebook; not this bookkeeping,
    not the answers' text), and the versions it ran with."""
    import platform

    import datasets

    root = Path(notebook_path).parent
    digest = lambda name: hashlib.sha256((root / name).read_bytes()).hexdigest()
    return {"helpers_sha256": digest("helpers.py"), "sources_sha256": digest("sources.py"),
            "workers_sha256": digest("workers.py"),
            "notebook_code_sha256": notebook_code_sha256(notebook_path),
            "requirements_sha256": digest("requirements.txt"),
            "torch": torch.__version__, "datasets": datasets.__version__,
            "python": platform.python_version()}


# ----------------------------------------------------------------------------------------
# 4. The answers check
# ----------------------------------------------------------------------------------------

# A number as an answer writes it: optional sign, digits (thousands separated by commas), an
# optional fraction and an optional percent sign. Not inside a word or a longer number.
NUMBER = re.compile(r"(?<![\w.,-])([+-]?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(\s?%)?(?![\w.]\d)")
# What is not a number of the run: inline code, numbered-list markers, the question labels,
# part numbers, and the assignment's own constants where they are written as such.
NOT_RUN_NUMBERS = re.compile("|".join([
    r"`[^`]*`", r"^\s*\d+\.\s", r"\b[123][a-g]\b", r"\bParts? [123](?: and [123])?\b",
    r"\bCS 449\b", r"\b60/20/20\b", r"\b64x64\b", r"\b2,749\b", r"\b95%"]), re.M)


@dataclass(frozen=True)
class Quoted:
    """A number as written: its value, its decimals, and whether it is a percentage or signed."""
    text: str
    value: float
    decimals: int
    percent: bool
    signed: bool

    def matches(self, value):
        """Whether `value` (a fraction where this is a percentage) prints as this number. A
        whole number written without a percent sign (a count) matches only a whole number."""
        if not self.percent and not self.decimals and value != int(value):
            return False
        shown = value * 100 if self.percent else value
        shown = shown if self.signed else abs(shown)
        return round(shown, self.decimals) == round(self.value, self.decimals)


def quoted_numbers(text):
    """The numbers a piece of markdown or output text writes, as Quoted."""
    text = text.replace("\u2212", "-")
    found = []
    for match in NUMBER.finditer(text):
        sign, whole, fraction, percent = match.groups()
        value = float(whole.replace(",", "") + (fraction or ""))
        found.append(Quoted(match.group(0).strip(), -value if sign == "-" else value,
                            len(fraction) - 1 if fraction else 0, bool(percent), bool(sign)))
    return found


def run_values(metrics, cells):
    """Every number the run produced: metrics.json's leaves (with their keys) and the numbers
    printed in the notebook's outputs (a printed percentage as a fraction)."""
    values = []

    def walk(value, key):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else k)
        elif isinstance(value, list):
            for k, v in enumerate(value):
                walk(v, f"{key}[{k}]")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append((float(value), f"metrics.json {key}"))

    walk(metrics, "")
    for index, cell in enumerate(cells):
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            data = output.get("data", {})
            text = output.get("text", "") or data.get("text/markdown", "") or data.get("text/plain", "")
            for number in quoted_numbers("".join(text)):
                value = number.value / 100 if number.percent else number.value
                values.append((value, f"output of cell {index}"))
    return values


def check_answers(notebook_path, metrics_path):
    """Every number of the notebook's markdown that no number of the run prints as: one line
    per mismatch, naming the cell and its label, the number and the run's nearest value."""
    import nbformat

    cells = nbformat.read(str(notebook_path), as_version=4).cells
    values = run_values(json.loads(Path(metrics_path).read_text()), cells)
    problems, label = [], "title"
    for index, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        heading = re.search(r"^#+\s+([123][a-g])\.", cell.source, re.M)
        label = heading.group(1) if heading else label
        for number in quoted_numbers(NOT_RUN_NUMBERS.sub(" ", cell.source)):
            if any(number.matches(v) for v, _ in values):
                continue
            target = number.value / 100 if number.percent else number.value
            value, where = min(values, key=lambda item: abs(abs(item[0]) - abs(target)))
            problems.append(f"cell {index} ({label}): '{number.text}' is no number of this run; "
                            f"the nearest is {value:.6g} ({where}).")
    return problems


def is_committed_run(run_dir, metrics):
    """The run in the repository root with the notebook's default, full parameters: its
    answers must match it exactly."""
    config = metrics.get("config", {})
    defaults = notebook_defaults() | {"run_dir": config.get("run_dir"), "source": config.get("source")}
    return Path(run_dir).resolve() == REPO_ROOT and config == defaults


def main(argv):
    """python runs.py check-answers RUN_DIR: print every mismatch; fail only for the
    committed run (another run's answers are the committed run's, so they may differ)."""
    if len(argv) != 2 or argv[0] != "check-answers":
        raise SystemExit("usage: python runs.py check-answers RUN_DIR")
    run_dir = Path(argv[1])
    metrics_path, notebook_path = run_dir / Run.METRICS, run_dir / "homework2.ipynb"
    if not metrics_path.is_file() or not notebook_path.is_file():
        raise SystemExit(f"check-answers: {run_dir} holds no finished run (homework2.ipynb and "
                         f"{Run.METRICS}). Run `make report RUN_DIR={run_dir}` first.")
    problems = check_answers(notebook_path, metrics_path)
    strict = is_committed_run(run_dir, json.loads(metrics_path.read_text()))
    if not problems:
        print(f"Answers check: every number in the answers of {notebook_path} is one its run produced.")
        return 0
    print(f"Answers check: {len(problems)} number(s) in the answers are not this run's:")
    print("\n".join(f"- {p}" for p in problems))
    if strict:
        print("This is the committed run: edit those answers to the run's numbers, then `make pdf`.")
        return 1
    print("Not the committed run (other parameters, folder or quick mode): the answers are the "
          "committed run's, so these are reported, not enforced.")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
