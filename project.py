"""What only the Makefile needs: the offline mirror, and the checked submission zip.

  python project.py mirror       build data/emoji_mirror.parquet from the npm package
  python project.py submission   check the deliverables, then write homework2.zip
"""
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nbformat
from PIL import Image

import helpers
import runs

MIRROR_PACKAGE = "emoji-datasource-apple@16.0.0"
LABELS = ["1a", "1b", "1c", "1d", "1e", "1f", "1g", "2a", "2b", "2c", "2d", "2e",
          "3a", "3b", "3c"]
DELIVERABLES = ["homework2.ipynb", "report/homework2.pdf", "helpers.py", "runs.py", "requirements.txt"]


def build_mirror(path=helpers.MIRROR_PATH):
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
            helpers.to_rgb(Image.open(package / "img/apple/64" / entry["image"])).save(
                png, format="PNG")
            images.append({"bytes": png.getvalue(), "path": None})
            texts.append(entry["name"].lower())
    dataset = Dataset.from_dict({"image": images, "text": texts},
                                features=helpers.hub_features())
    runs.atomic_write(path, lambda tmp: dataset.to_parquet(tmp))
    return Path(path)


def pdf_text(path):
    result = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def submission_problems(root=helpers.REPO_ROOT):
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
    for key, what in (("helpers_sha256", "helpers.py"), ("notebook_code_sha256", "the notebook's code"),
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
    return problems


def make_submission(root=helpers.REPO_ROOT, zip_path=None):
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

    runs.atomic_write(zip_path, write)
    print(f"Wrote {zip_path} with {', '.join(names.get(f, f) for f in DELIVERABLES)}")
    return zip_path


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "mirror":
        print(f"Wrote {build_mirror()}")
    elif command == "submission":
        make_submission()
    else:
        raise SystemExit(__doc__)
