"""Train the example model and save its artifacts.

    python -m services.train [--out DIR]

Trains a scikit-learn pipeline (standardise + logistic regression) on
scikit-learn's bundled breast-cancer data set (569 rows, 30 numeric
features; no download), and writes to DIR (default ``services/artifacts``):

- ``model.pkl``      the fitted pipeline (pickle)
- ``reference.npz``  the training split (``X_train``, ``y_train``), a held-out
  split (``X_test``, ``y_test``), ``feature_names`` and the model's
  predictions on the training split (``pred_train``), for profiles and replays.
- ``manifest.json``  the deployment manifest: SHA-256 of the model, reference and profile, the pinned
  versions of the packages the model needs, the fingerprint of
  ``services.features:prepare``; signed when ``--key`` names an Ed25519
  private key (``guarded-serving keygen``). The example service verifies it.
- ``profile.npz``    the edge-case reference profile of the training split
  (detectors fitted on 70% of it, calibrated on the held-out 30%), with the
  model's predictions on it (see ``guarded_serving.edge_cases.profile``).

Unless ``--no-examples``, ``main`` also prepares the image and text examples in
``DIR/digits`` (:mod:`services.train_digits`) and ``DIR/sentiment``
(:mod:`services.train_sentiment`).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from services.features import prepare

DEFAULT_DIR = Path(__file__).resolve().parent / "artifacts"
# The example's demo signing key (``.key`` private 0600, ``.pub`` public), outside the artifact directory and
# never committed. For a demo only: in production the private key stays with whoever releases models and the
# public key is configured from somewhere the deployment cannot write.
DEMO_KEY = Path(__file__).resolve().parent.parent / ".state" / "keys" / "demo-signing"
MODEL_NAME, MODEL_VERSION = "breast_cancer", "1"
#: Packages the pickled model needs at serving time, pinned in the manifest.
MODEL_PACKAGES = ("scikit-learn", "numpy", "scipy")


def train(out: Path = DEFAULT_DIR, seed: int = 0, key: Path | None = None) -> Path:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    X_train, X_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=seed, stratify=data.target)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(prepare(X_train), y_train)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "model.pkl", "wb") as fh:
        pickle.dump(model, fh, protocol=5)
    feature_names = [n.replace(" ", "_") for n in data.feature_names]
    pred_train = model.predict_proba(prepare(X_train))[:, 1]
    pred_test = model.predict_proba(prepare(X_test))[:, 1]  # the label-free estimate calibrates on these
    np.savez(out / "reference.npz", X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
             feature_names=np.array(feature_names), pred_train=pred_train, pred_test=pred_test)
    from guarded_serving.edge_cases import build_profile

    prof = build_profile(X_train, predictions=pred_train, feature_names=feature_names,
                         calibration_fraction=0.3, seed=seed, source="breast_cancer train split")
    prof.save(out / "profile.npz")
    acc = float((model.predict(prepare(X_test)) == y_test).mean())
    write_manifest(out, key=key)
    print(f"trained breast_cancer model: test accuracy {acc:.3f}; artifacts in {out}")
    return out


def load_model(artifact_dir: Path = DEFAULT_DIR, *, read=None):
    """The pickled model of ``artifact_dir``; a clear error when it was never trained.

    ``read(path) -> bytes`` reads the file (``guard.open_artifact``: verified bytes, so a tampered
    pickle is refused before it is unpickled); default: read it as is."""
    model_path = Path(artifact_dir) / "model.pkl"
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path} not found: run `python -m services.train` first")
    if read is not None:
        return pickle.loads(read(model_path))
    with open(model_path, "rb") as fh:
        return pickle.load(fh)


def answer(model, inputs) -> dict:
    """The example's reply for rows of 30 features: labels (malignant=0, benign=1) and probabilities of benign."""
    proba = model.predict_proba(prepare(inputs))[:, 1]
    return {"label": (proba >= 0.5).astype(int).tolist(), "probability": proba.round(6).tolist()}


def write_manifest(out: Path = DEFAULT_DIR, *, key: Path | None = None) -> Path:
    """Write ``out/manifest.json`` for the artifacts in ``out`` (signed with ``key`` if given)."""
    from guarded_serving.integrity import create_manifest, sign_manifest

    profile = out / "profile.npz"
    man = create_manifest(name=MODEL_NAME, version=MODEL_VERSION, root=out,
                          artifacts=[("model", out / "model.pkl"), ("reference", out / "reference.npz")],
                          packages=MODEL_PACKAGES, preprocessing="services.features:prepare",
                          profile=profile if profile.exists() else None)
    if key is not None:
        man = sign_manifest(man, key)
    return man.save(out / "manifest.json")


def demo_key() -> Path:
    """The demo private key, generated once (0700 directory, 0600 key)."""
    from guarded_serving.integrity.signing import generate_keypair

    priv = DEMO_KEY.with_name(DEMO_KEY.name + ".key")
    if not priv.exists():
        DEMO_KEY.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        generate_keypair(DEMO_KEY)
    return priv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--key", type=Path, help="sign the manifest with this Ed25519 private key (PEM); default: the "
                    "demo key .state/keys/demo-signing.key, created if missing")
    ap.add_argument("--unsigned", action="store_true", help="write an unsigned manifest (health then says degraded)")
    ap.add_argument("--no-examples", action="store_true",
                    help="only the tabular model (skip the digits and sentiment examples)")
    args = ap.parse_args(argv)
    key = args.key
    if key is None and not args.unsigned:
        key = demo_key()
    train(args.out, args.seed, key)
    if not args.no_examples:  # the image and text examples, in subdirectories (a few seconds)
        from services import train_digits, train_sentiment

        train_digits.train(args.out / "digits", args.seed)
        train_sentiment.train(args.out / "sentiment", args.seed)


if __name__ == "__main__":
    main()
