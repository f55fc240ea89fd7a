"""Output views: what a model answered, as monitored numbers per row.

The counterpart of :mod:`guarded_serving.views` for results. A view reads a call's
result (an array, a list, or a dict holding one under a usual key) and gives one
row per answer:

================  ===========================================  ============================================
kind              result                                       columns
================  ===========================================  ============================================
``probabilities`` (n,) positive-class scores in [0, 1] or        confidence, margin, entropy, class
                  (n, k) class probabilities
``classes``       (n,) integer labels                           class
``values``        (n,) or (n, k) regression values              the values
``text``          a string or a list of strings                 n_chars, n_tokens, empty, repeated share,
                                                               longest repeated run
``ranking``       a list of ranked item-id lists                length, distinct share (the ids themselves
                                                               are kept for exposure counts)
================  ===========================================  ============================================

Confidence, margin and entropy of class probabilities feed prediction drift and a
label-free estimate of performance; text columns feed the output content check.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

__all__ = ["OUTPUT_KINDS", "extract_output", "guess_output_kind", "output_columns", "text_outputs"]

OUTPUT_KINDS = ("probabilities", "classes", "values", "text", "ranking")
_KEYS = ("probability", "probabilities", "scores", "prediction", "predictions", "label", "labels", "text",
         "texts", "answer", "answers", "reply", "items", "ranking", "recommendations")
_TOKEN = re.compile(r"\w+", re.UNICODE)
_RUN = re.compile(r"(.)\1{2,}", re.DOTALL)


def extract_output(result: Any) -> Any:
    """The answers inside ``result``: itself, or a dict's value under a usual key; None if none."""
    if isinstance(result, dict):
        for key in _KEYS:
            if key in result:
                return result[key]
        return None
    return result


def guess_output_kind(out: Any) -> str | None:
    """The output kind of extracted answers (see :data:`OUTPUT_KINDS`), or None if not understood."""
    if isinstance(out, str):
        return "text"
    if isinstance(out, (list, tuple)) and out:
        first = out[0]
        if isinstance(first, str):
            return "text"
        if isinstance(first, (list, tuple)):
            return "ranking" if not all(isinstance(v, float) for v in first) else "probabilities"
    try:
        a = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if a.size == 0 or a.ndim not in (1, 2):
        return None
    if a.ndim == 2 and a.shape[1] > 1 and np.all(a >= 0) and np.allclose(a.sum(1), 1.0, atol=1e-3):
        return "probabilities"
    if a.ndim == 1 and np.all(a == np.round(a)):
        return "classes"
    if a.ndim == 1 and np.all((a >= 0) & (a <= 1)):
        return "probabilities"
    return "values"


def output_columns(out: Any, kind: str) -> tuple[list[str], np.ndarray]:
    """``(names, matrix (n, c))`` of the monitored columns of answers ``out`` of ``kind``."""
    if kind == "text":
        texts = [out] if isinstance(out, str) else [str(t) for t in out]
        return ["n_chars", "n_tokens", "empty", "repeated_share", "longest_run"], np.array(
            [_text_columns(t) for t in texts], dtype=np.float64).reshape(len(texts), 5)
    if kind == "ranking":
        rows = [(float(len(r)), len(set(map(str, r))) / len(r) if len(r) else 1.0) for r in out]
        return ["length", "distinct_share"], np.array(rows, dtype=np.float64).reshape(len(rows), 2)
    a = np.asarray(out, dtype=np.float64)
    if kind == "probabilities":
        p = np.column_stack([1.0 - a, a]) if a.ndim == 1 else a
        top2 = np.sort(p, axis=1)[:, -2:]
        q = np.clip(p, 1e-12, 1.0)
        entropy = -(p * np.log(q)).sum(1) / np.log(p.shape[1])
        return ["confidence", "margin", "entropy", "class"], np.column_stack(
            [top2[:, 1], top2[:, 1] - top2[:, 0], entropy, p.argmax(1)])
    if kind == "classes":
        return ["class"], a.reshape(-1, 1)
    v = a.reshape(len(a), -1)
    return [f"value{j}" for j in range(v.shape[1])] if v.shape[1] > 1 else ["value"], v


def _text_columns(t: str) -> tuple[float, float, float, float, float]:
    tokens = [w.lower() for w in _TOKEN.findall(t)]
    counts = Counter(tokens)
    repeated = sum(c - 1 for c in counts.values()) / len(tokens) if tokens else 0.0
    run = max((len(m.group(0)) for m in _RUN.finditer(t)), default=1 if t else 0)
    return float(len(t)), float(len(tokens)), float(not t.strip()), repeated, float(run)


def text_outputs(result: Any) -> Sequence[str] | None:
    """The text answers in ``result`` (a string, a list of strings, or a dict holding one), or None."""
    out = extract_output(result)
    if isinstance(out, str):
        return [out]
    if isinstance(out, (list, tuple)) and out and all(isinstance(t, str) for t in out):
        return list(out)
    return None
