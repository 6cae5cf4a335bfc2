"""The emoji the method starts from: the rows of the Hugging Face hub's dataset (or of the
offline mirror that `make data` builds, or of a parquet file in the hub's schema), the
subset whose names hold a keyword, decoded to tensors, each emoji once.

  1. Loading: the hub when it answers (`source="auto"`), else the mirror
  2. The subset: rows by keyword, pictures decoded (RGB on white, square), duplicates dropped
Bad input stops here, with what to do about it, before any training.
"""
import io
import re
import tempfile
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

datasets.disable_progress_bars()

REPO_ROOT = Path(__file__).resolve().parent
MIRROR_PATH = REPO_ROOT / "data" / "emoji_mirror.parquet"
HUB_DATASET = "valhalla/emoji-dataset"
SOURCES = ("auto", "hub", "mirror", "a path to a .parquet file")


# ----------------------------------------------------------------------------------------
# 1. Loading: the hub, the offline mirror or a parquet file
# ----------------------------------------------------------------------------------------

def hub_features():
    """The features of the hub dataset: a PNG image and its lowercase name."""
    from datasets import Features, Image as ImageFeature, Value

    return Features({"image": ImageFeature(), "text": Value("string")})


def hub_problem(timeout=3.0):
    """None when the hub serves the dataset's metadata within `timeout` s, else the reason.

    huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE, as `load_dataset` does."""
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info(HUB_DATASET, timeout=timeout)
        return None
    except Exception as error:  # offline, refused, timed out, not found: all mean "no"
        return (f"the hub did not serve {HUB_DATASET} within {timeout:g} s "
                f"({type(error).__name__})")


def load_emoji_dataset(source="auto", mirror_path=MIRROR_PATH, hub_timeout=3.0):
    """The emoji rows (a `datasets.Dataset` with columns `image` and `text`) and the source
    used: "hub", "mirror", "auto" (the hub if it serves the dataset within `hub_timeout`
    seconds, else the mirror) or a path to a parquet file in the hub's schema."""
    from datasets import load_dataset

    if source in ("auto", "hub"):
        problem = hub_problem(hub_timeout)   # the one probe
        if problem and source == "hub":
            raise ConnectionError(
                f"source='hub': the Hugging Face hub did not answer: {problem}. "
                "Use source='mirror' (offline copy, built by `make data`) or source='auto'.")
        if problem:
            print(f"source='auto': using the offline mirror, because {problem}.")
        source = "mirror" if problem else "hub"
    if source == "hub":
        dataset = load_dataset(HUB_DATASET, split="train")
    elif source == "mirror":
        if not Path(mirror_path).is_file():
            raise FileNotFoundError(
                f"source='mirror': {mirror_path} does not exist. Build it with `make data`.")
        dataset = _load_parquet(mirror_path, "source='mirror'")
    elif str(source).endswith(".parquet"):
        if not Path(source).expanduser().is_file():
            raise FileNotFoundError(
                f"source={source!r}: no such parquet file. Give an existing path, "
                "or use source='mirror' or 'auto'.")
        dataset = _load_parquet(Path(source).expanduser(), f"source={source!r}")
    else:
        raise ValueError(f"source={source!r} is unknown. Use one of: {', '.join(SOURCES)}.")
    missing = {"image", "text"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"source={source!r} lacks the column(s) {sorted(missing)}; it needs 'image' "
            "(PNG) and 'text' (string) like valhalla/emoji-dataset.")
    if len(dataset) == 0:
        raise ValueError(f"source={source!r} has no rows. Point source at a file with emoji.")
    print(f"Data source: {source} ({len(dataset)} rows)")
    return dataset.select_columns(["image", "text"]), str(source)


def _load_parquet(path, what):
    import pyarrow.parquet as pq
    from datasets import Dataset

    try:
        rows = pq.read_metadata(str(path)).num_rows
    except Exception:  # not readable as parquet: reported below
        rows = None
    if rows == 0:
        raise ValueError(f"{what} has no rows. Point source at a file with emoji.")
    try:  # a fresh cache: the datasets cache knows a file by path and time, not by content
        with tempfile.TemporaryDirectory() as cache:
            return Dataset.from_parquet(str(path), cache_dir=cache, keep_in_memory=True)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ValueError(
            f"{what}: {path} could not be read as parquet ({type(error).__name__}). "
            "Rebuild the mirror with `make data`, or point source at a valid parquet file."
        ) from error


# ----------------------------------------------------------------------------------------
# 2. The subset: rows by keyword, decoded, each emoji once
# ----------------------------------------------------------------------------------------

def word_pattern(words, whole_word=True):
    parts = [re.escape(w.lower()) for w in words]
    return re.compile("|".join(rf"\b{p}\b" if whole_word else p for p in parts))


def select_subset(texts, keywords, exclude=(), whole_word=True):
    """Indices of the texts (lowercased; whole words unless told otherwise) with a keyword
    and no excluded word, and {excluded word: rows it dropped}. Non-strings are skipped."""
    if isinstance(keywords, str):
        keywords = [keywords]
    if not keywords:
        raise ValueError("keywords is empty: give at least one word, e.g. ['face'].")
    wanted = word_pattern(keywords, whole_word)
    unwanted = [(w, word_pattern([w], whole_word)) for w in exclude]
    chosen, dropped = [], Counter()
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not wanted.search(text.lower()):
            continue
        hit = next((w for w, p in unwanted if p.search(text.lower())), None)
        if hit:
            dropped[hit] += 1
        else:
            chosen.append(i)
    if not chosen and not any(isinstance(t, str) for t in texts):
        kinds = sorted({type(t).__name__ for t in texts})
        raise ValueError(f"The text column holds no strings (only {', '.join(kinds)}), so no "
                         "keyword can match. Store the emoji names as UTF-8 strings.")
    if not chosen:
        common = Counter(w for t in texts if isinstance(t, str) for w in t.lower().split())
        hint = ", ".join(w for w, _ in common.most_common(12))
        raise ValueError(
            f"keywords={list(keywords)} match no emoji text"
            + (f" once exclude={list(exclude)} is applied" if dropped else "")
            + f". Words that do occur often: {hint}.")
    return chosen, dict(dropped)


def decode_images(dataset, indices, image_size=64):
    """Decode rows to uint8 tensors (N, 3, size, size), RGB on white; returns them, their
    texts (`clean_text`) and how many rows were skipped: those whose image cannot be decoded
    (broken, or a decompression bomb) or whose text is not a string. A picture that is not
    square is centred on white first (a note says how many)."""
    from datasets import Image as ImageFeature

    raw = dataset.cast_column("image", ImageFeature(decode=False))
    images, texts, skipped, not_square, first_problem = [], [], 0, [], None
    for i in indices:
        row = raw[int(i)]
        try:
            picture = Image.open(io.BytesIO(row["image"]["bytes"]))
            picture.load()
            picture = to_rgb(picture)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, TypeError,
                ValueError, KeyError) as error:
            skipped += 1
            first_problem = first_problem or undecodable(row["image"], error)
            continue
        if not isinstance(row["text"], str):
            skipped += 1
            first_problem = first_problem or f"its text is {type(row['text']).__name__}, not a string"
            continue
        if picture.width != picture.height:
            not_square.append(f"{row['text']!r} ({picture.width}x{picture.height})")
            picture = to_square(picture)
        picture = picture.resize((image_size, image_size), Image.LANCZOS)
        images.append(torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1))
        texts.append(clean_text(row["text"]))
    if not_square:
        print(f"Note: {len(not_square)} image(s) are not square, e.g. {not_square[0]}; each was "
              f"centred on a white square before resizing to {image_size}x{image_size}.")
    if not images:
        raise ValueError(f"None of the {len(indices)} selected rows could be decoded; the first "
                         f"because {first_problem}. The image column must hold each picture's "
                         "PNG (or JPEG) bytes and the text column strings, as on the hub.")
    return torch.stack(images), texts, skipped


def undecodable(image, error):
    """Why a row's image could not be decoded, in words."""
    if isinstance(image, dict) and image.get("bytes") is None and image.get("path"):
        return f"its image is a file path ({image['path']!r}) instead of the picture's bytes"
    return f"its image could not be read ({type(error).__name__})"


def to_rgb(picture):
    """An RGB copy of a PIL image: transparent parts on white, 16-bit channels scaled to 8,
    float pixels (mode F) read as 0-1 when none exceeds 1, else as 0-255."""
    if picture.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        gray = np.asarray(picture, dtype=np.float64)
        if picture.mode == "F":
            gray = gray * 255 if gray.max(initial=0) <= 1 else gray
        else:
            gray = gray / (257 if picture.mode.startswith("I;16") else 65535 / 255)
        picture = Image.fromarray(gray.clip(0, 255).round().astype(np.uint8), "L")
    white = Image.new("RGBA", picture.size, "white")
    return Image.alpha_composite(white, picture.convert("RGBA")).convert("RGB")


def to_square(picture):
    """Centre a picture that is not square on a white square, so resizing keeps its shape."""
    side = max(picture.size)
    square = Image.new("RGB", (side, side), "white")
    square.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
    return square


def clean_text(text):
    """An emoji name as the rules compare it: lowercase, single spaces (non-breaking,
    doubled and trailing spaces are a file's noise, not part of the name)."""
    return " ".join(text.lower().split())


def drop_duplicates(images, texts):
    """Keep the first of every group of rows with the same pixels or the same text."""
    seen_pixels, seen_texts, keep = set(), set(), []
    for i, (image, text) in enumerate(zip(images, texts)):
        pixels = image.numpy().tobytes()
        if pixels in seen_pixels or text in seen_texts:
            continue
        seen_pixels.add(pixels)
        seen_texts.add(text)
        keep.append(i)
    return keep
