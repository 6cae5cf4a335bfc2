"""What only the Makefile needs: the offline mirror, the notebook run, and the checked
submission zip.

  python project.py mirror       build data/emoji_mirror.parquet from the npm package
  python project.py run RUN_DIR MAKE_PID [PARAMS...]
                                 check RUN_DIR and PARAMS, execute the notebook into RUN_DIR,
                                 and stop it when make (process MAKE_PID) is stopped
  python project.py submission   check the deliverables, then write homework2.zip
"""
import difflib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat
from PIL import Image

import helpers
import runs
import sources

MIRROR_PACKAGE = "emoji-datasource-apple@16.0.0"
LABELS = ["1a", "1b", "1c", "1d", "1e", "1f", "1g", "2a", "2b", "2c", "2d", "2e",
          "3a", "3b", "3c"]
DELIVERABLES = ["homework2.ipynb", "report/homework2.pdf", "helpers.py", "sources.py", "workers.py",
                "runs.py", "requirements.txt"]


def build_mirror(path=sources.MIRROR_PATH):
    """Build the offline stand-in for the hub dataset from the npm package's Apple emoji.

    Each emoji with an Apple image becomes a row: its 64 px PNG composited on white (RGB)
    and its `name` lowercased, the same naming the hub uses in `text`.
    """
    from datasets import Dataset

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", MIRROR_PACKAGE, "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
            tar.extractall(tmp, filter="data")
        package = Path(tmp) / "package"
        entries = json.loads((package / "emoji.json").read_text())
        images, texts = [], []
        for entry in sorted(entries, key=lambda e: e["sort_order"]):
            if not entry.get("has_img_apple"):
                continue
            png = io.BytesIO()
            sources.to_rgb(Image.open(package / "img/apple/64" / entry["image"])).save(
                png, format="PNG")
            images.append({"bytes": png.getvalue(), "path": None})
            texts.append(entry["name"].lower())
    dataset = Dataset.from_dict({"image": images, "text": texts},
                                features=sources.hub_features())
    runs.atomic_write(path, lambda tmp: dataset.to_parquet(tmp))
    return Path(path)


PARAM_FLAGS = ("-p", "--parameters", "-y", "--parameters_yaml", "-r", "--parameters_raw")


def check_params(tokens, known):
    """Refuse, in one line, PARAMS that are not all `-p NAME VALUE` (or -y, -r) of a
    parameter the notebook has; run_dir is RUN_DIR's."""
    for at in range(0, len(tokens), 3):
        flag, given = tokens[at], tokens[at:at + 3]
        if flag not in PARAM_FLAGS or len(given) < 3:
            raise SystemExit(f"PARAMS takes only '-p NAME VALUE' (or -y NAME YAML) for each "
                             f"parameter; {' '.join(given)!r} is not one.")
        name = given[1]
        if name == "run_dir":
            raise SystemExit("PARAMS sets run_dir: give the output folder as RUN_DIR=... "
                             "instead, so the executed notebook and the PDF go to the same "
                             "folder as the outputs.")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SystemExit(f"PARAMS: the notebook has no parameter {name!r}.{hint} "
                             f"Its parameters: {', '.join(known)}.")


def without_run_dir(notebook):
    """The executed notebook with run_dir taken out of papermill's injected cell, so that
    Run All in Jupyter writes to the parameters cell's folder (runs/latest), never here."""
    for cell in notebook.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = "\n".join(line for line in cell.source.splitlines()
                                    if not line.startswith("run_dir ="))
    return notebook


def run_notebook(run_dir, make_pid, params):
    """make report's notebook step: check RUN_DIR and PARAMS before anything starts, execute
    the notebook with papermill, and put the executed notebook (without run_dir) in place
    only when it succeeded. A signal to this process (TERM, INT, HUP), or make's end, stops
    papermill; its kernel and the training processes follow it (each watches its parent),
    and run_dir keeps its previous outputs."""
    if not run_dir.strip():
        raise SystemExit("RUN_DIR is empty: name an output folder, e.g. make report "
                         "RUN_DIR=runs/mine (or leave RUN_DIR out for the committed run).")
    check_params(params, [name for name in runs.notebook_defaults() if name != "run_dir"])
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    executed, final = folder / ".homework2.run.ipynb", folder / "homework2.ipynb"
    papermill = subprocess.Popen(
        [sys.executable, "-m", "papermill", str(runs.NOTEBOOK), str(executed), "-p", "run_dir",
         run_dir, *params, "--cwd", str(runs.REPO_ROOT), "--log-level", "WARNING",
         "--no-progress-bar"])
    stop, parent = [], os.getppid()
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda number, frame: stop.append(signal.Signals(number).name))
    while papermill.poll() is None:
        if not stop and (os.getppid() != parent or not runs.pid_alive(make_pid)):
            stop.append("make ended")
        if stop:
            papermill.terminate()
            try:
                papermill.wait(timeout=30)
            except subprocess.TimeoutExpired:
                papermill.kill()
            executed.unlink(missing_ok=True)
            raise SystemExit(f"Stopped ({stop[0]}): the notebook run was ended; {folder} keeps "
                             "its previous outputs.")
        time.sleep(0.5)
    if papermill.returncode != 0:
        raise SystemExit(papermill.returncode)
    notebook = without_run_dir(nbformat.read(str(executed), as_version=4))
    runs.atomic_write(final, lambda tmp: nbformat.write(notebook, tmp))
    executed.unlink()


def pdf_text(path):
    result = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def submission_problems(root=runs.REPO_ROOT):
    """Everything that makes the committed outputs unfit to hand in (empty when fine)."""
    import torch

    root = Path(root)
    missing = [f for f in DELIVERABLES + ["report/metrics.json"] if not (root / f).is_file()]
    if missing:
        return [f"missing: {', '.join(missing)}. Run `make report` first."]
    problems = []

    def read(name, load):
        """The loaded file, or None with a one-line problem when it is damaged."""
        try:
            return load(root / name)
        except Exception as error:  # torch, json and nbformat raise many types for bad files
            problems.append(f"{name} is damaged or unreadable ({type(error).__name__}). "
                            "Run `make report` again.")
            return None

    metrics = read("report/metrics.json", lambda p: json.loads(p.read_text()))
    notebook = read("homework2.ipynb", lambda p: nbformat.read(str(p), as_version=4))
    if metrics is None or notebook is None:
        return problems
    run_id = metrics.get("run", {}).get("id")
    config = metrics.get("config", {})
    if config.get("quick"):
        problems.append("metrics.json comes from a quick run; run `make report` for the full one.")
    if not str(config.get("group_members", "")).strip():
        problems.append("group_members is empty: set it in the notebook's parameters cell "
                        "(or `make report PARAMS=\"-p group_members 'A. Name, B. Name'\"`).")
    current = runs.provenance(root / "homework2.ipynb")
    for key, what in (("helpers_sha256", "helpers.py"), ("sources_sha256", "sources.py"),
                      ("workers_sha256", "workers.py"), ("notebook_code_sha256", "the notebook's code"),
                      ("requirements_sha256", "requirements.txt")):
        if metrics.get("provenance", {}).get(key) != current[key]:
            problems.append(f"{what} changed since the run, so the PDF and the outputs no longer "
                            "match it. Run `make report` again.")
    problems += [f"answers check: {p} Edit the answer, then `make pdf`."
                 for p in runs.check_answers(root / "homework2.ipynb", root / runs.Run.METRICS)]
    for name in ("weights/part1_autoencoder.pt", "weights/part2_multitask.pt",
                 "latents/part1_latents.pt", "latents/part2_latents.pt"):
        payload = read(name, lambda p: torch.load(p, weights_only=True)) if (root / name).is_file() else {}
        found = payload.get("run_id") if isinstance(payload, dict) else None
        if payload is not None and found != run_id:
            problems.append(f"{name} comes from run {found}, metrics.json from run {run_id}.")
    listed = set(metrics.get("outputs", []))
    present = {str(p.relative_to(root)) for folder in runs.Run.FOLDERS
               for p in (root / folder).rglob("*") if p.is_file()} | {runs.Run.METRICS}
    if listed != present:
        problems.append(f"the output folders do not hold exactly the files of run {run_id} "
                        f"(not made by it: {sorted(present - listed)}; missing: "
                        f"{sorted(listed - present)}). Run `make report` again.")
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    if any(o["output_type"] == "error" for o in outputs):
        problems.append("the notebook holds an error: it did not run to the end.")
    if run_id is None or run_id not in json.dumps(outputs):
        problems.append(f"the notebook's outputs are not those of run {run_id}.")
    text = pdf_text(root / "report/homework2.pdf")
    if text is None:
        problems.append("report/homework2.pdf is not a readable PDF. Run `make pdf`.")
    else:
        if run_id is None or run_id not in text:
            problems.append(f"report/homework2.pdf is not the PDF of run {run_id}. Run `make pdf`.")
        absent = [label for label in LABELS if f"{label}." not in text]
        if absent:
            problems.append(f"report/homework2.pdf lacks the answers {', '.join(absent)}.")
        flat = " ".join(text.split())
        unnamed = [name for name in group_names(config.get("group_members", "")) if name not in flat]
        if unnamed:
            problems.append(f"report/homework2.pdf does not show the names {unnamed}. Run `make report`.")
    try:
        problems += outputs_problems(root, metrics)
    except Exception as error:  # a missing or damaged file, named above in its own words
        problems.append(f"the saved models could not be measured again ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}).")
    return problems


def group_names(members):
    return [" ".join(name.split()) for name in str(members).split(",") if name.strip()]


def outputs_problems(root, metrics):
    """The saved models and latents measured again against metrics.json: each weights file
    holds the model its part describes, re-evaluated on the test split it gives the test MSE
    (and Part 2 the accuracy) that metrics.json reports, and the latents are its codes."""
    from types import SimpleNamespace

    import torch

    config = metrics["config"]
    dataset, _ = sources.load_emoji_dataset(metrics["data"]["source"])
    data = helpers.prepare_data(dataset, SimpleNamespace(**config))
    problems = []
    for part, weights, heads in (("part1", "weights/part1_autoencoder.pt", 0),
                                 ("part2", "weights/part2_multitask.pt", len(data.class_names))):
        model, _ = runs.load_model(root / weights)
        if model.config.num_classes != heads:
            problems.append(f"{weights} holds a model with {model.config.num_classes} class "
                            f"outputs; {part}'s has {heads}. Run `make report` again.")
            continue
        results = {name: helpers.evaluate(model, split.x, split.y if heads else None)
                   for name, split in data.splits.items()}
        result = results["test"]
        measured = {"test_mse": result["mse"]} | ({"test_accuracy": result["accuracy"]} if heads else {})
        for key, value in measured.items():
            if not math.isclose(value, metrics[part][key], rel_tol=1e-3, abs_tol=1e-6):
                problems.append(f"metrics.json says {part}.{key} = {metrics[part][key]:.6g}, but "
                                f"{weights} gives {value:.6g} on the test split. Run `make report` again.")
        latents = torch.load(root / f"latents/{part}_latents.pt", weights_only=True)
        codes = torch.cat([r["z"] for r in results.values()])
        # Convolutions round differently on other CPUs (AVX2 against AVX-512): about 1e-3 on
        # codes as large as 40, so the tolerance scales with the codes.
        tolerance = 1e-4 * float(codes.abs().max())
        if latents["z"].shape != codes.shape or not torch.allclose(latents["z"], codes, atol=tolerance):
            problems.append(f"latents/{part}_latents.pt are not the codes of {weights}. "
                            "Run `make report` again.")
    return problems


def make_submission(root=runs.REPO_ROOT, zip_path=None):
    """Check every deliverable, then write homework2.zip (PDF at the top level)."""
    root = Path(root)
    problems = submission_problems(root)
    if problems:
        raise SystemExit("Not ready to submit:\n- " + "\n- ".join(problems))
    zip_path = Path(zip_path or root / "homework2.zip")
    names = {"report/homework2.pdf": "homework2.pdf"}

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for f in DELIVERABLES:
                archive.write(root / f, names.get(f, f))

    try:
        runs.atomic_write(zip_path, write)
    except OSError as error:
        raise SystemExit(f"Could not write {zip_path} ({error.strerror or type(error).__name__}); "
                         "any earlier zip there is unchanged. Free some space and run `make "
                         "submission` again.") from None
    print(f"Wrote {zip_path} with {', '.join(names.get(f, f) for f in DELIVERABLES)}")
    return zip_path


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "mirror":
        print(f"Wrote {build_mirror()}")
    elif command == "run" and len(sys.argv) >= 4:
        run_notebook(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    elif command == "submission":
        make_submission()
    else:
        raise SystemExit(__doc__)
