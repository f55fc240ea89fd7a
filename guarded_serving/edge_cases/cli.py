"""``guarded-serving profile``: build a reference profile from training data.

    guarded-serving profile DATA -o profile.npz [--feature-names a,b,c] [--categorical colour,3]
                            [--predictions preds.npy] [--key X] [--calibration-fraction 0.2]
                            [--calibration HELD_OUT]

``--calibration HELD_OUT`` (same format and columns as DATA) gives the rows that
calibrate the p-values, held out from training (e.g. a later period); every row of
DATA then fits the detectors. Without it a random ``--calibration-fraction`` of DATA
is held out. The report says the smallest false-positive rate the calibration rows
can reach, ``1 / (n + 1)``, and how many rows a target rate needs.

``DATA`` is a ``.npy`` (memory-mapped), a ``.npz`` (array ``--key``, default the
first of ``X``, ``X_train``, ``data``, or the only array) or a ``.csv`` (a header
row gives feature names; empty, ``NA``, ``NaN`` or ``?`` fields are missing
values; categorical columns hold numeric codes). Rows are streamed in chunks
with a progress line on stderr, so millions of rows fit in bounded memory.

``--kind`` reads other inputs through a view (:mod:`guarded_serving.views`),
whose settings the profile keeps so serving computes the same features:

- ``text``: a ``.txt`` file with one text per line, or ``.jsonl`` (a JSON string,
  or an object whose ``--text-key`` field, default ``text``, holds the text);
- ``records``: a ``.csv`` with a header (text fields are categorical), ``.jsonl``
  objects, or ``.parquet`` (needs pandas and pyarrow);
- ``array``: a ``.npy``/``.npz`` batch of shape (n, ...) (images, audio, sequences);
- ``embedding``: a ``.npy``/``.npz`` matrix (n, d) of vectors.

These are read whole (a view is fitted on them first). Also runnable as
``python -m guarded_serving.edge_cases.cli``.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._progress import Progress
from ..errors import ConfigError

__all__ = ["add_subparser", "main", "run"]

_MISSING_TOKENS = {"", "na", "nan", "?", "null", "none"}


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``profile`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("profile", help="build a reference profile from training data",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(p)
    p.set_defaults(func=run)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="training data: .npy, .npz or .csv")
    p.add_argument("-o", "--out", type=Path, required=True, help="profile file to write (.npz)")
    p.add_argument("--key", help="array name inside an .npz")
    p.add_argument("--feature-names", help="comma-separated names (default: the CSV header, or f0, f1, ...)")
    p.add_argument("--categorical", default="", help="comma-separated categorical columns (names or indices)")
    p.add_argument("--predictions", type=Path, help="the model's predictions on DATA (.npy, .npz or .csv), "
                                                    "kept for the reference subsample")
    p.add_argument("--prediction-key", help="array name inside a predictions .npz")
    p.add_argument("--calibration-fraction", type=float, default=0.2)
    p.add_argument("--calibration", type=Path, help="held-out rows that calibrate the p-values (same format and "
                                                    "columns as DATA); every DATA row then fits")
    p.add_argument("--sample-size", type=int, default=100_000, help="fitting rows kept for quantiles")
    p.add_argument("--calibration-size", type=int, default=20_000)
    p.add_argument("--reference-size", type=int, default=5_000)
    p.add_argument("--chunk-rows", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--kind", choices=("numbers", "records", "text", "array", "embedding"), default="numbers",
                   help="how DATA is read into monitored features (default: a numeric matrix)")
    p.add_argument("--text-key", default="text", help="field holding the text in .jsonl objects (--kind text)")


def _read_header(path: Path) -> list[str] | None:
    with open(path, newline="") as fh:
        first = next(csv.reader(fh), None)
    if not first:
        raise ConfigError(f"{path} is empty")
    try:
        [float(t) for t in first if t.strip().lower() not in _MISSING_TOKENS]
        return None
    except ValueError:
        return [t.strip() for t in first]


def _parse_csv_chunk(lines: list[str], path: Path, start: int, n_cols: int) -> np.ndarray:
    try:
        arr = np.loadtxt(io.StringIO("".join(lines)), delimiter=",", dtype=np.float64, ndmin=2)
        if arr.shape[1] == n_cols:
            return arr
    except ValueError:
        pass
    out = np.empty((len(lines), n_cols))
    for i, row in enumerate(csv.reader(lines)):
        if len(row) != n_cols:
            raise ConfigError(f"{path}, line {start + i + 1}: {len(row)} fields, expected {n_cols}")
        for j, tok in enumerate(row):
            t = tok.strip()
            if t.lower() in _MISSING_TOKENS:
                out[i, j] = np.nan
                continue
            try:
                out[i, j] = float(t)
            except ValueError:
                raise ConfigError(f"{path}, line {start + i + 1}, column {j + 1}: {tok!r} is not a number "
                                  "(categorical features must be numeric codes)") from None
    return out


def iter_chunks(path: Path, *, key: str | None, chunk_rows: int
                ) -> tuple[int, list[str] | None, int | None, Iterator[tuple[np.ndarray, int]]]:
    """``(n_features, names, total_units, chunks)``; chunks yield ``(rows, progress_units_done)``."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    if suffix in (".npy", ".npz"):
        if suffix == ".npy":
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            z = np.load(path, allow_pickle=False)
            names = list(z.files)
            k = key or next((c for c in ("X", "X_train", "data") if c in names), names[0] if len(names) == 1 else None)
            if k is None or k not in names:
                raise ConfigError(f"{path} holds arrays {names}: choose one with --key")
            X = z[k]
        if X.ndim != 2:
            raise ConfigError(f"{path}: expected a 2-D array (rows x features), got shape {X.shape}")
        n = len(X)

        def gen_np() -> Iterator[tuple[np.ndarray, int]]:
            for i in range(0, n, chunk_rows):
                yield np.asarray(X[i:i + chunk_rows], dtype=np.float64), min(i + chunk_rows, n)

        return int(X.shape[1]), None, n, gen_np()
    if suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
        names = _read_header(path)
        with open(path, newline="") as fh:
            first = next(csv.reader(fh))
        n_cols = len(first)
        size = path.stat().st_size

        def gen_csv() -> Iterator[tuple[np.ndarray, int]]:
            with open(path, newline="") as fh:
                line_no, done = 0, 0  # done: characters read (fh.tell() is disabled while iterating)
                if names is not None:
                    done += len(fh.readline())
                    line_no = 1
                while True:
                    raw = list(itertools.islice(fh, chunk_rows))
                    done += sum(map(len, raw))
                    lines = [ln for ln in raw if ln.strip()]
                    if not lines:
                        return
                    yield _parse_csv_chunk(lines, path, line_no, n_cols), min(done, size)
                    line_no += len(lines)

        return n_cols, names, size, gen_csv()
    raise ConfigError(f"{path}: unsupported file type {suffix!r}; expected .npy, .npz or .csv")


def _load_predictions(path: Path, key: str | None) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if path.suffix.lower() == ".npz":
        z = np.load(path, allow_pickle=False)
        k = key or (z.files[0] if len(z.files) == 1 else None)
        if k is None or k not in z.files:
            raise ConfigError(f"{path} holds arrays {list(z.files)}: choose one with --prediction-key")
        return z[k]
    chunks = [c for c, _ in iter_chunks(path, key=None, chunk_rows=100_000)[3]]
    P = np.concatenate(chunks) if chunks else np.zeros((0, 1))
    return P[:, 0] if P.shape[1] == 1 else P


def _resolve_columns(spec: str, names: list[str]) -> list[int]:
    out = []
    for tok in (t.strip() for t in spec.split(",") if t.strip()):
        if tok in names:
            out.append(names.index(tok))
        elif tok.lstrip("-").isdigit() and 0 <= int(tok) < len(names):
            out.append(int(tok))
        else:
            raise ConfigError(f"--categorical: {tok!r} is neither a feature name nor a column index "
                              f"(features: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
    return out


def read_raw(path: Path, kind: str, *, key: str | None = None, text_key: str = "text") -> Any:
    """Training samples of ``kind`` from ``path`` (see the module docstring for the formats)."""
    import json

    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if kind in ("array", "embedding"):
        if suffix not in (".npy", ".npz"):
            raise ConfigError(f"{path}: --kind {kind} reads .npy or .npz arrays, got {suffix!r}")
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        z = np.load(path, allow_pickle=False)
        k = key or (z.files[0] if len(z.files) == 1 else None)
        if k is None or k not in z.files:
            raise ConfigError(f"{path} holds arrays {list(z.files)}: choose one with --key")
        return z[k]
    if suffix == ".jsonl":
        out = []
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"{path}, line {i}: not JSON ({exc})") from None
                if kind == "text":
                    obj = obj.get(text_key) if isinstance(obj, dict) else obj
                    if not isinstance(obj, str):
                        raise ConfigError(f"{path}, line {i}: expected a string or an object with a string "
                                          f"{text_key!r} field")
                elif not isinstance(obj, dict):
                    raise ConfigError(f"{path}, line {i}: expected a JSON object (a record)")
                out.append(obj)
        return out
    if kind == "text":
        with open(path, encoding="utf-8") as fh:
            return [line.rstrip("\n") for line in fh]
    if suffix == ".parquet":
        try:
            import pandas as pd
        except ImportError:
            raise ConfigError("reading .parquet needs pandas and pyarrow (pip install pandas pyarrow)") from None
        return pd.read_parquet(path)
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return [{k: _csv_value(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    raise ConfigError(f"{path}: --kind {kind} reads .csv, .jsonl or .parquet, got {suffix!r}")


def _csv_value(v: str | None) -> Any:
    if v is None or v.strip().lower() in _MISSING_TOKENS:
        return None
    try:
        return float(v)
    except ValueError:
        return v


def run(args: argparse.Namespace) -> int:
    """Build and save the profile described by parsed ``args``; returns an exit status."""
    from .builder import ProfileBuilder, build_profile

    if getattr(args, "kind", "numbers") != "numbers":
        raw = read_raw(args.data, args.kind, key=args.key, text_key=args.text_key)
        preds = _load_predictions(args.predictions, args.prediction_key) if args.predictions else None
        if preds is not None and len(preds) != len(raw):
            raise ConfigError(f"--predictions has {len(preds)} rows but {args.data} has {len(raw)} samples")
        cal_raw = (read_raw(args.calibration, args.kind, key=args.key, text_key=args.text_key)
                   if getattr(args, "calibration", None) else None)
        prof = build_profile(raw, view=args.kind, predictions=preds, calibration_fraction=args.calibration_fraction,
                             calibration=cal_raw,
                             sample_size=args.sample_size, calibration_size=args.calibration_size,
                             reference_size=args.reference_size, seed=args.seed,
                             source=os.path.basename(str(args.data)))
        return _report(prof, args.out)

    n_cols, header_names, total, chunks = iter_chunks(args.data, key=args.key, chunk_rows=args.chunk_rows)
    names = header_names or [f"f{i}" for i in range(n_cols)]
    if args.feature_names:
        names = [t.strip() for t in args.feature_names.split(",")]
        if len(names) != n_cols:
            raise ConfigError(f"--feature-names gives {len(names)} names for {n_cols} columns in {args.data}")
    categorical = _resolve_columns(args.categorical, names)
    preds = _load_predictions(args.predictions, args.prediction_key) if args.predictions else None
    b = ProfileBuilder(n_cols, feature_names=names, categorical=categorical,
                       calibration_fraction=args.calibration_fraction, sample_size=args.sample_size,
                       calibration_size=args.calibration_size, reference_size=args.reference_size,
                       seed=args.seed, source=os.path.basename(str(args.data)),
                       held_out_calibration=getattr(args, "calibration", None) is not None)
    bar = Progress(total, "profile", quiet=args.quiet)
    rows = 0
    for X, done in chunks:
        P = None
        if preds is not None:
            if rows + len(X) > len(preds):
                raise ConfigError(f"--predictions has {len(preds)} rows, fewer than the data")
            P = np.asarray(preds[rows:rows + len(X)])
        b.update(X, P)
        rows += len(X)
        bar.update(done, f"{rows:,} rows, {rows / max(bar.elapsed(), 1e-9):,.0f} rows/s")
    bar.update(total or rows, f"{rows:,} rows", force=True)
    bar.close()
    if preds is not None and len(preds) != rows:
        raise ConfigError(f"--predictions has {len(preds)} rows but {args.data} has {rows}")
    if getattr(args, "calibration", None) is not None:
        c_cols, _, _, c_chunks = iter_chunks(args.calibration, key=args.key, chunk_rows=args.chunk_rows)
        if c_cols != n_cols:
            raise ConfigError(f"--calibration {args.calibration} has {c_cols} columns; {args.data} has {n_cols}")
        for C, _ in c_chunks:
            b.update_calibration(C)
    return _report(b.finish(), args.out)


def calibration_report(n: int) -> str:
    """What ``n`` calibration rows allow: the smallest reachable false-positive rate and the rows
    common targets need (a p-value is at least ``1 / (n + 1)``)."""
    needs = ", ".join(f"edge_fpr={a:g} needs >= {rows_needed(a):,}" for a in (0.05, 0.01, 0.001))
    return (f"calibration: {n:,} rows; smallest reachable edge_fpr 1/(n+1) = {1 / (n + 1):.3g}; {needs} rows "
            "(more rows give finer p-values: the flag rate on clean rows is floor(fpr (n+1)) / (n+1))")


def rows_needed(fpr: float) -> int:
    """Calibration rows needed for ``edge_fpr=fpr`` to be reachable: the least n with 1/(n+1) <= fpr."""
    return max(int(math.ceil(1.0 / fpr - 1.0 - 1e-9)), 1)


def _report(prof: Any, out: Path) -> int:
    sha = prof.save(out)
    print(f"wrote {out}: {prof.summary()}\nsha256 {sha}\n{calibration_report(prof.n_calibration)}")
    if prof.n_calibration < 99:
        print(f"warning: only {prof.n_calibration} calibration rows; the smallest reachable edge_fpr is "
              f"{1 / (prof.n_calibration + 1):.3g}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="guarded-serving profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
