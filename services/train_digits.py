"""Train the image example (scikit-learn's 8x8 digits) and save its artifacts.

    python -m services.train_digits [--out DIR]

The data ships inside scikit-learn (1,797 grey images of 8x8 pixels, intensities
0-16; no download). A logistic regression on the 64 pixels (scaled to 0-1) is the
model; the guard watches the images through the *array* view (per-image
descriptors: brightness, contrast, extremes, saturation, sharpness), profiled on
the training split. Writes to DIR (default ``services/artifacts/digits``):

- ``model.pkl``      the fitted pipeline (pickle), input ``(n, 8, 8)`` images
- ``reference.npz``  ``X_train``/``y_train``, ``X_test``/``y_test`` (images, 0-16) and
  the model's top-class probability on the training split (``pred_train``)
- ``profile.npz``    the edge-case profile of the training images (array view)

:func:`edge_cases` makes the images the example's guard must flag: blank images,
negatives, digits shifted off-centre, and images from another data set (letters
drawn with numpy, random noise).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parent / "artifacts" / "digits"
MAX_INTENSITY = 16.0


def flatten(images: np.ndarray) -> np.ndarray:
    """``(n, 8, 8)`` images (0-16) -> ``(n, 64)`` pixels scaled to 0-1: the model's own preprocessing."""
    images = np.asarray(images, dtype=np.float64)
    return images.reshape(len(images), -1) / MAX_INTENSITY


def load_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split (70/30, stratified) of the digits as ``(n, 8, 8)`` float images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    return train_test_split(d.images.astype(np.float64), d.target, test_size=0.3, random_state=seed,
                            stratify=d.target)


def train(out: Path = DEFAULT_DIR, seed: int = 0) -> Path:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X_train, X_test, y_train, y_test = load_split(seed)
    model = make_pipeline(FunctionTransformer(flatten), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(X_train, y_train)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "model.pkl", "wb") as fh:
        pickle.dump(model, fh, protocol=5)
    pred_train = model.predict_proba(X_train).max(axis=1)
    np.savez(out / "reference.npz", X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
             pred_train=pred_train)
    from guarded_serving.edge_cases import build_profile

    prof = build_profile(X_train, view="array", predictions=pred_train, calibration_fraction=0.3, seed=seed,
                         source="sklearn digits train split (8x8 images, 0-16)")
    prof.save(out / "profile.npz")
    acc = float((model.predict(X_test) == y_test).mean())
    print(f"trained digits model: test accuracy {acc:.3f}; artifacts in {out}")
    return out


def load_model(artifact_dir: Path = DEFAULT_DIR):
    """The pickled model of ``artifact_dir``; a clear error when it was never trained."""
    path = Path(artifact_dir) / "model.pkl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m services.train` first")
    with open(path, "rb") as fh:
        return pickle.load(fh)


# -- edge cases -----------------------------------------------------------------------------

_LETTERS = {  # 8x8 strokes, 1 = ink
    "A": ["..####..", ".##..##.", "##....##", "##....##", "########", "##....##", "##....##", "##....##"],
    "E": ["########", "##......", "##......", "######..", "##......", "##......", "##......", "########"],
    "H": ["##....##", "##....##", "##....##", "########", "########", "##....##", "##....##", "##....##"],
    "K": ["##...##.", "##..##..", "##.##...", "####....", "####....", "##.##...", "##..##..", "##...##."],
    "M": ["##....##", "###..###", "########", "##.##.##", "##....##", "##....##", "##....##", "##....##"],
    "T": ["########", "########", "...##...", "...##...", "...##...", "...##...", "...##...", "...##..."],
    "W": ["##....##", "##....##", "##....##", "##.##.##", "########", "###..###", "##....##", "##....##"],
    "X": ["##....##", ".##..##.", "..####..", "...##...", "...##...", "..####..", ".##..##.", "##....##"],
}


def letters(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` capital letters drawn with numpy at full intensity (images from another data set)."""
    glyphs = np.array([[[c == "#" for c in row] for row in g] for g in _LETTERS.values()], dtype=np.float64)
    return glyphs[rng.integers(0, len(glyphs), n)] * MAX_INTENSITY


def shift(images: np.ndarray, rng: np.random.Generator, by: int = 3) -> np.ndarray:
    """Each image moved ``by`` pixels towards a random corner (zero fill): a digit off-centre."""
    out = np.zeros_like(images)
    for i, img in enumerate(images):
        dy, dx = rng.choice([-by, by]), rng.choice([-by, by])
        src = img[max(0, -dy):img.shape[0] - max(0, dy), max(0, -dx):img.shape[1] - max(0, dx)]
        out[i, max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def edge_cases(X_test: np.ndarray, n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """The example's edge cases, ``n`` images each (from held-out test images where they derive from digits)."""
    rng = np.random.default_rng(seed)
    base = X_test[rng.permutation(len(X_test))[:n]]
    return {
        "blank": np.zeros((n, 8, 8)),
        "negative": MAX_INTENSITY - base,
        "shifted": shift(base, rng),
        "letters": letters(n, rng),
        "noise": rng.uniform(0, MAX_INTENSITY, (n, 8, 8)).round(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    train(args.out, args.seed)


if __name__ == "__main__":
    main()
