"""Input views: any model input as a matrix of monitored features, one row per sample.

The model always gets its input untouched; a view only *reads* it to give the
detectors (edge cases, drift, skew, rules) numbers to work on. A view is an
estimator: ``fit(samples)`` learns what it needs from training samples (record
columns and categories, a text vocabulary, an image layout, an embedding
projection) and returns self; ``transform(value, field)`` turns one call's
input into an ndarray of shape (n_rows, n_features) or raises
:class:`~guarded_serving.errors.InvalidInputError` naming the field and what
was expected. A fitted view saves its settings in the reference profile, so
serving computes exactly the view training computed.

=============  ==============================================  =========================================
kind           input                                           features per row
=============  ==============================================  =========================================
``numbers``    2-D matrix, 1-D vector or scalar (one row)     the numbers (NaN/inf/shape checks)
``records``    pandas DataFrame, list of dicts, dict of        numeric columns as numbers, categorical
               columns                                         columns as codes (unseen category: -1)
``text``       a string or a list of strings                   length (chars, tokens), shares of
                                                               non-letters, digits, upper case, non-ASCII,
                                                               longest repeated run, out-of-vocabulary
                                                               share, script; optional ``embed``
``array``      ndarray or torch tensor (n, ...) of any rank,   height/width/channels, per-channel mean
               CPU or CUDA (images, audio, sequences)          and std, min, max, saturated share,
                                                               sharpness (computed where the data lives)
``embedding``  (n, d) vectors                                  a k-dim projection fitted on training
                                                               vectors, and the vector norm
``features``   anything, through your ``features(value)``      whatever it returns (n_rows x k)
=============  ==============================================  =========================================
"""

from __future__ import annotations

import importlib
import math
import re
import unicodedata
from collections import Counter
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from .errors import ConfigError, InvalidInputError

__all__ = ["KINDS", "ArrayView", "EmbeddingView", "FeatureView", "InputView", "NumberView", "RecordsView",
           "TextView", "guess_kind", "make_view", "view_from_state"]

KINDS = ("numbers", "records", "text", "array", "embedding", "features")
_NUMERIC = frozenset("fiub")


class InputView:
    """Base class: a fitted view turns an input into (n_rows, n_features) floats."""

    kind: ClassVar[str] = "view"

    #: learned: names of the monitored features, and which of them are categorical codes
    feature_names_: list[str]
    categorical_: tuple[int, ...] = ()

    def fit(self, samples: Any) -> "InputView":
        self.feature_names_ = self._names(samples)
        return self

    def transform(self, value: Any, field: str = "input") -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, samples: Any) -> np.ndarray:
        return self.fit(samples).transform(samples, "training data")

    @property
    def n_features_(self) -> int:
        return len(self.feature_names_)

    def _names(self, samples: Any) -> list[str]:
        raise NotImplementedError

    # -- persistence (the profile stores it) ---------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able settings and learned state, and arrays (stored beside the profile's)."""
        return {"kind": self.kind, "feature_names": list(self.feature_names_),
                "categorical": list(self.categorical_)}, {}

    def _set_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "InputView":
        self.feature_names_ = list(state["feature_names"])
        self.categorical_ = tuple(state.get("categorical", ()))
        return self

    # -- explanations in the view's language --------------------------------------------
    def describe(self, feature: int, value: float, lo: float, hi: float) -> str | None:
        """A reason for a value of ``feature`` outside its training range [lo, hi], or None
        for the generic wording."""
        return None

    def headline(self, row: np.ndarray) -> str | None:
        """A reason about the whole sample that says more than any one feature (an empty text,
        a blank image), or None."""
        return None


# -- numbers ---------------------------------------------------------------------------
class NumberView(InputView):
    """Numeric matrices (rows x features); a 1-D vector or a scalar is one row.

    Parameters
    ----------
    n_features : int, optional
        Expected columns (learned by ``fit`` when not given).
    allow_nan : bool or ndarray of bool, default=False
        Where NaN is accepted (everywhere, nowhere, or per feature).
    max_rows : int, default=10000
    feature_names : sequence of str, optional
    """

    kind = "numbers"

    def __init__(self, *, n_features: int | None = None, allow_nan: Any = False, max_rows: int = 10_000,
                 feature_names: Sequence[str] | None = None) -> None:
        self.n_features = n_features
        self.allow_nan = allow_nan
        self.max_rows = max_rows
        self.feature_names = feature_names

    def _names(self, samples: Any) -> list[str]:
        x = self.transform(samples, "training data")
        return list(self.feature_names or [f"x{j}" for j in range(x.shape[1])])

    def fit(self, samples: Any) -> "NumberView":
        self.allow_nan, keep = True, self.allow_nan
        x = self.transform(samples, "training data")
        self.allow_nan = keep
        self.n_features = x.shape[1]
        self.feature_names_ = list(self.feature_names or [f"x{j}" for j in range(x.shape[1])])
        return self

    def transform(self, value: Any, field: str = "input") -> np.ndarray:
        from .validation import as_feature_matrix

        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            value = [[value]]
        elif isinstance(value, np.ndarray) and value.ndim == 1:
            value = value[None, :]
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value):
            value = [value]
        names = getattr(self, "feature_names_", None) or self.feature_names or ()
        return as_feature_matrix(value, field, n_features=self.n_features, max_rows=self.max_rows,
                                 allow_nan=self.allow_nan, feature_names=names)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        s, a = super().get_state()
        s["n_features"] = self.n_features
        return s, a

    def _set_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "NumberView":
        super()._set_state(state, arrays)
        self.n_features = state.get("n_features")
        return self


# -- records ----------------------------------------------------------------------------
class RecordsView(InputView):
    """Tabular records with named columns: a pandas DataFrame, a list of dicts, or a dict of columns.

    Numeric columns pass as numbers (None/NaN missing); other columns are categorical and
    coded by the categories seen in training; an unseen category is coded -1 (an edge-case
    signal the detectors and explanations name).

    Parameters
    ----------
    columns : sequence of str, optional
        Columns to monitor, in order (default: all columns of the training records).
    categorical : sequence of str, optional
        Columns to treat as categorical even if numeric (default: the non-numeric ones).
    """

    kind = "records"

    def __init__(self, *, columns: Sequence[str] | None = None, categorical: Sequence[str] | None = None) -> None:
        self.columns = columns
        self.categorical = categorical

    def fit(self, samples: Any) -> "RecordsView":
        cols = _columns(samples, "training data")
        names = list(self.columns or cols)
        missing = [c for c in names if c not in cols]
        if missing:
            raise ConfigError(f"columns {missing} are not in the training records (columns: {list(cols)})")
        forced = set(self.categorical or ())
        self.codes_: dict[str, dict[str, int]] = {}
        for c in names:
            vals = cols[c]
            if c in forced or not all(v is None or _is_number(v) for v in vals):
                seen = sorted({_key(v) for v in vals if not _is_missing(v)})
                self.codes_[c] = {v: i for i, v in enumerate(seen)}
        self.feature_names_ = names
        self.categorical_ = tuple(i for i, c in enumerate(names) if c in self.codes_)
        return self

    def transform(self, value: Any, field: str = "input") -> np.ndarray:
        if isinstance(value, list) and value and not self.codes_ and isinstance(value[0], Mapping):
            # all-numeric records: one C-level conversion (None -> NaN), else the careful path below
            try:
                names = self.feature_names_
                out = np.array([[r[c] for c in names] for r in value], dtype=np.float64)
                if out.ndim == 2:
                    return out
            except (KeyError, TypeError, ValueError):
                pass
        cols = _columns(value, field)
        n = len(next(iter(cols.values()))) if cols else 0
        if n == 0:
            raise InvalidInputError(field, "empty batch: expected at least one record")
        out = np.empty((n, len(self.feature_names_)), dtype=np.float64)
        for j, c in enumerate(self.feature_names_):
            if c not in cols:
                raise InvalidInputError(field, f"record field {c!r} is missing (expected fields "
                                               f"{self.feature_names_[:10]})")
            vals = cols[c]
            codes = self.codes_.get(c)
            if codes is None:
                try:
                    out[:, j] = [np.nan if _is_missing(v) else float(v) for v in vals]
                except (TypeError, ValueError):
                    bad = next(v for v in vals if not (_is_missing(v) or _is_number(v)))
                    raise InvalidInputError(field, f"record field {c!r}: expected a number, got {bad!r}") from None
            else:
                out[:, j] = [np.nan if _is_missing(v) else codes.get(_key(v), -1) for v in vals]
        return out

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        s, a = super().get_state()
        s["codes"] = self.codes_
        return s, a

    def _set_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "RecordsView":
        super()._set_state(state, arrays)
        self.codes_ = {k: dict(v) for k, v in state["codes"].items()}
        return self

    def describe(self, feature: int, value: float, lo: float, hi: float) -> str | None:
        name = self.feature_names_[feature]
        if name in self.codes_ and value == -1:
            seen = list(self.codes_[name])[:8]
            return f"{name} has a category never seen in training (seen: {', '.join(seen)})"
        return None

    def category(self, feature: int, code: float) -> str | None:
        """The category a code stands for (explanations)."""
        for k, v in self.codes_.get(self.feature_names_[feature], {}).items():
            if v == code:
                return k
        return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _key(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def _columns(value: Any, field: str) -> dict[str, list[Any]]:
    """Column name -> values, from a DataFrame, a list of dicts, a dict of columns or one dict."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # pandas DataFrame (duck-typed)
        return {str(c): value[c].tolist() for c in value.columns}
    if isinstance(value, Mapping):
        if value and all(isinstance(v, (list, tuple, np.ndarray)) for v in value.values()):
            cols = {str(k): list(v) for k, v in value.items()}
            lengths = {len(v) for v in cols.values()}
            if len(lengths) > 1:
                raise InvalidInputError(field, f"columns have different lengths {sorted(lengths)}")
            return cols
        value = [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(r, Mapping) for r in value):
        names: dict[str, None] = {}
        for r in value:
            names.update(dict.fromkeys(str(k) for k in r))
        return {c: [r.get(c) for r in value] for c in names}
    raise InvalidInputError(field, f"expected records (a DataFrame, a list of dicts or a dict of columns), "
                                   f"got {type(value).__name__}")


# -- text -------------------------------------------------------------------------------
_TOKEN = re.compile(r"\w+", re.UNICODE)
_RUN = re.compile(r"(.)\1{2,}", re.DOTALL)
_ASCII_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))
_ASCII_UPPER = bytes(range(65, 91))
_ASCII_DIGITS = bytes(range(48, 58))
_ASCII = bytes(range(128))
_SCRIPTS = ("latin", "greek", "cyrillic", "arabic", "hebrew", "cjk", "other")


class TextView(InputView):
    """Descriptors of each text: a string, or a list of strings (one row each).

    Parameters
    ----------
    vocabulary_size : int, default=5000
        Most frequent training tokens kept for the out-of-vocabulary share.
    max_chars : int, default=1_000_000
        Longer texts are an input error (HTTP 400).
    embed : str, optional
        ``"module:function"`` mapping a list of texts to an (n, k) array, appended to the
        descriptors (stored by name in the profile, imported when the view is loaded).
    """

    kind = "text"
    _BASE = ("n_chars", "n_tokens", "nonletter_share", "digit_share", "upper_share", "nonascii_share",
             "longest_run", "oov_share", "script")

    def __init__(self, *, vocabulary_size: int = 5000, max_chars: int = 1_000_000, embed: str | None = None) -> None:
        self.vocabulary_size = vocabulary_size
        self.max_chars = max_chars
        self.embed = embed

    def fit(self, samples: Any) -> "TextView":
        texts = self._texts(samples, "training data")
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(w.lower() for w in _TOKEN.findall(t))
        self.vocabulary_ = frozenset(w for w, _ in counts.most_common(self.vocabulary_size))
        self._embed_fn = _import_callable(self.embed) if self.embed else None
        names = list(self._BASE)
        if self._embed_fn is not None:
            k = np.asarray(self._embed_fn(texts[:1])).shape[1]
            names += [f"embed{j}" for j in range(k)]
        self.feature_names_ = names
        self.categorical_ = (self._BASE.index("script"),)
        return self

    def _texts(self, value: Any, field: str) -> list[str]:
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1):
            texts = list(value)
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise InvalidInputError(field, f"item {i}: expected a string, got {type(t).__name__}")
        else:
            raise InvalidInputError(field, f"expected a string or a list of strings, got {type(value).__name__}")
        if not texts:
            raise InvalidInputError(field, "empty batch: expected at least one text")
        for i, t in enumerate(texts):
            if len(t) > self.max_chars:
                raise InvalidInputError(field, f"item {i}: text of {len(t):,} characters exceeds the limit of "
                                               f"{self.max_chars:,}")
        return texts

    def transform(self, value: Any, field: str = "input") -> np.ndarray:
        texts = self._texts(value, field)
        vocab = self.vocabulary_
        rows = [_text_row(t, vocab) for t in texts]
        out = np.array(rows, dtype=np.float64)
        if self._embed_fn is not None:
            out = np.hstack([out, np.asarray(self._embed_fn(texts), dtype=np.float64)])
        return out

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        s, a = super().get_state()
        s.update(vocabulary=sorted(self.vocabulary_), embed=self.embed, max_chars=self.max_chars,
                 vocabulary_size=self.vocabulary_size)
        return s, a

    def _set_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "TextView":
        super()._set_state(state, arrays)
        self.vocabulary_ = frozenset(state["vocabulary"])
        self.embed, self.max_chars = state.get("embed"), state.get("max_chars", self.max_chars)
        self._embed_fn = _import_callable(self.embed) if self.embed else None
        return self

    def describe(self, feature: int, value: float, lo: float, hi: float) -> str | None:
        name = self.feature_names_[feature]
        above = value > hi
        if name == "n_chars":
            if value == 0:
                return "the text is empty (training texts had at least " f"{lo:,.0f} characters)"
            return (f"text of {value:,.0f} characters, {'longer' if above else 'shorter'} than every training "
                    f"text ({'max' if above else 'min'} {hi if above else lo:,.0f})")
        if name == "n_tokens":
            return (f"{value:,.0f} words, {'more' if above else 'fewer'} than any training text "
                    f"({'max' if above else 'min'} {hi if above else lo:,.0f})")
        shares = {"nonletter_share": "characters that are not letters", "digit_share": "digits",
                  "upper_share": "capital letters", "nonascii_share": "non-ASCII characters",
                  "oov_share": "words never seen in training"}
        if name in shares:
            return (f"{value:.0%} {shares[name]}, {'more' if above else 'less'} than in any training text "
                    f"(range {lo:.0%} to {hi:.0%})")
        if name == "longest_run":
            return f"a character repeated {value:.0f} times in a row (training texts: at most {hi:.0f})"
        if name == "script":
            return f"written in {_SCRIPTS[int(value)] if 0 <= value < len(_SCRIPTS) else 'an unusual'} script"
        return None

    def headline(self, row: np.ndarray) -> str | None:
        return "the text is empty" if row[0] == 0 else None


def _text_row(t: str, vocab: frozenset[str]) -> tuple[float, ...]:
    n = len(t)
    b = t.encode("utf-8", "surrogatepass")
    nb = len(b)
    ascii_only = nb == n
    letters_ascii = nb - len(b.translate(None, _ASCII_LETTERS))
    if ascii_only:
        letters = letters_ascii
    else:  # non-ASCII letters count as letters (é, ж, 中)
        letters = sum(1 for c in t if c.isalpha())
    upper = nb - len(b.translate(None, _ASCII_UPPER)) if ascii_only else sum(1 for c in t if c.isupper())
    digits = nb - len(b.translate(None, _ASCII_DIGITS))
    nonascii = 0 if ascii_only else n - (nb - len(b.translate(None, _ASCII)))
    tokens = _TOKEN.findall(t)
    oov = sum(1 for w in tokens if w.lower() not in vocab) if tokens else 0
    run = max((len(m.group(0)) for m in _RUN.finditer(t)), default=1 if n else 0)
    inv = 1.0 / n if n else 0.0
    return (float(n), float(len(tokens)), (n - letters) * inv, digits * inv, upper / letters if letters else 0.0,
            nonascii * inv, float(run), oov / len(tokens) if tokens else 0.0,
            0.0 if ascii_only else float(_script(t)))


def _script(t: str) -> int:
    counts = [0] * len(_SCRIPTS)
    for c in t:
        if c.isalpha():
            name = unicodedata.name(c, "")
            if name.startswith("LATIN"):
                counts[0] += 1
            elif name.startswith("GREEK"):
                counts[1] += 1
            elif name.startswith("CYRILLIC"):
                counts[2] += 1
            elif name.startswith("ARABIC"):
                counts[3] += 1
            elif name.startswith("HEBREW"):
                counts[4] += 1
            elif name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")):
                counts[5] += 1
            else:
                counts[6] += 1
    return int(np.argmax(counts)) if any(counts) else 0


def _import_callable(spec: str) -> Callable[..., Any]:
    mod, _, name = spec.partition(":")
    if not mod or not name:
        raise ConfigError(f"embed={spec!r} is invalid: expected 'module:function'")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"embed={spec!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"embed={spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


# -- arrays and tensors ------------------------------------------------------------------
class ArrayView(InputView):
    """Per-sample descriptors of arrays of any rank, numpy or torch, on CPU or CUDA.

    A batch is an array of shape (n, ...): images (n, H, W), (n, H, W, C) or (n, C, H, W),
    audio (n, T), sequences. Descriptors are computed where the data lives (torch ops on
    the tensor's device), so only the (n, k) descriptor matrix is copied to the host.

    Parameters
    ----------
    channels : {"auto", "first", "last", "none"}, default="auto"
        Where the channel axis is, for rank-4 batches (auto: last when it has 1, 3 or 4
        entries, else first).
    max_channels : int, default=4
        Per-channel mean and std for at most this many channels (the rest pooled).
    """

    kind = "array"

    def __init__(self, *, channels: str = "auto", max_channels: int = 4) -> None:
        self.channels = channels
        self.max_channels = max_channels

    def fit(self, samples: Any) -> "ArrayView":
        x = _host_or_device(samples, "training data")
        if x.ndim < 2:
            raise ConfigError(f"array training data must be (n, ...) with n samples, got shape {tuple(x.shape)}")
        self.sample_shape_ = tuple(int(d) for d in x.shape[1:])
        self.channel_axis_ = self._channel_axis(len(self.sample_shape_) + 1, self.sample_shape_)
        n_ch = 1 if self.channel_axis_ is None else min(self.sample_shape_[self.channel_axis_ - 1], self.max_channels)
        self.n_channels_ = n_ch
        lo, hi = float(_to_numpy(x.min())), float(_to_numpy(x.max()))
        self.value_range_ = (lo, hi)
        names = ["rank", "size0", "size1"]
        for c in range(n_ch):
            names += [f"mean_c{c}", f"std_c{c}"]
        names += ["min", "max", "saturated_share", "sharpness"]
        self.feature_names_ = names
        return self

    def _channel_axis(self, ndim: int, shape: tuple[int, ...]) -> int | None:
        if self.channels == "none" or ndim != 4:
            return None
        if self.channels == "first":
            return 1
        if self.channels == "last":
            return 3
        return 3 if shape[-1] in (1, 3, 4) else 1

    def transform(self, value: Any, field: str = "input") -> np.ndarray:
        x = _host_or_device(value, field)
        if x.ndim == len(self.sample_shape_):  # one sample without the batch axis
            x = x[None]
        if x.ndim < 2 or x.shape[0] == 0:
            raise InvalidInputError(field, f"expected a batch of arrays (n, ...), got shape {tuple(x.shape)}")
        cax = self._channel_axis(x.ndim, tuple(x.shape[1:]))
        if not isinstance(x, np.ndarray):
            return self._transform_tensor(x, cax)
        n = x.shape[0]
        xf = x.astype(np.float64, copy=False)
        if cax is not None and cax != 1:  # channels to axis 1
            xf = np.moveaxis(xf, cax, 1)
        spatial = xf.shape[2:] if cax is not None else xf.shape[1:]
        n_ch = self.n_channels_
        out = np.empty((n, len(self.feature_names_)))
        out[:, 0] = x.ndim - 1
        out[:, 1] = spatial[0] if len(spatial) >= 1 else 1
        out[:, 2] = spatial[1] if len(spatial) >= 2 else 1
        flat = xf.reshape(n, -1)
        if cax is None:
            groups = [flat] * n_ch
        else:
            per = xf.reshape(n, xf.shape[1], -1)
            groups = [per[:, c] if c < per.shape[1] else flat for c in range(n_ch)]
        col = 3
        for g in groups:
            m = g.shape[1]
            mean = g.sum(1) / m
            out[:, col] = mean
            out[:, col + 1] = np.sqrt(np.maximum(np.einsum("ij,ij->i", g, g) / m - mean * mean, 0.0))
            col += 2
        lo, hi = self.value_range_
        out[:, col] = flat.min(1)
        out[:, col + 1] = flat.max(1)
        out[:, col + 2] = np.count_nonzero((flat <= lo) | (flat >= hi), axis=1) / flat.shape[1]
        out[:, col + 3] = _sharpness(xf, False, cax is not None)
        return out

    def _transform_tensor(self, x: Any, cax: int | None) -> np.ndarray:
        """The same descriptors with torch ops on the tensor's device; only (n, k) comes back."""
        import torch

        n = x.shape[0]
        xf = x.float()
        if cax is not None and cax != 1:
            xf = xf.permute(0, 3, 1, 2)
        spatial = tuple(xf.shape[2:]) if cax is not None else tuple(xf.shape[1:])
        flat = xf.reshape(n, -1)
        cols: list[Any] = []
        if cax is None:
            groups = [flat] * self.n_channels_
        else:
            per = xf.reshape(n, xf.shape[1], -1)
            groups = [per[:, c] if c < per.shape[1] else flat for c in range(self.n_channels_)]
        for g in groups:
            cols += [g.mean(1), g.std(1, unbiased=False)]
        lo, hi = self.value_range_
        cols += [flat.min(1).values, flat.max(1).values, ((flat <= lo) | (flat >= hi)).float().mean(1),
                 _sharpness(xf, True, cax is not None)]
        desc = torch.stack([c.double() for c in cols], dim=1).cpu().numpy()
        const = np.array([x.ndim - 1, spatial[0] if spatial else 1, spatial[1] if len(spatial) > 1 else 1], float)
        return np.column_stack([np.tile(const, (n, 1)), desc])

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        s, a = super().get_state()
        s.update(sample_shape=list(self.sample_shape_), channel_axis=self.channel_axis_, n_channels=self.n_channels_,
                 value_range=list(self.value_range_), channels=self.channels, max_channels=self.max_channels)
        return s, a

    def _set_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "ArrayView":
        super()._set_state(state, arrays)
        self.sample_shape_ = tuple(state["sample_shape"])
        self.channel_axis_ = state["channel_axis"]
        self.n_channels_ = int(state["n_channels"])
        self.value_range_ = tuple(state["value_range"])
        self.channels, self.max_channels = state.get("channels", "auto"), state.get("max_channels", 4)
        return self

    def describe(self, feature: int, value: float, lo: float, hi: float) -> str | None:
        name = self.feature_names_[feature]
        above = value > hi
        if name.startswith("mean_c"):
            return (f"mean intensity {value:.3g}, {'brighter' if above else 'darker'} than every training "
                    f"sample (range {lo:.3g} to {hi:.3g})")
        if name.startswith("std_c"):
            return (f"contrast (std) {value:.3g}, {'higher' if above else 'lower'} than every training sample "
                    f"(range {lo:.3g} to {hi:.3g})" + (" (a blank sample)" if value == 0 else ""))
        if name in ("size0", "size1", "rank"):
            return f"shape differs from training ({name}={value:.0f}; training {lo:.0f})"
        if name == "saturated_share":
            return f"{value:.0%} of values at the training extremes (training at most {hi:.0%})"
        if name == "sharpness":
            return f"sharpness {value:.3g}, {'above' if above else 'below'} every training sample ({lo:.3g} to {hi:.3g})"
        return None

    def headline(self, row: np.ndarray) -> str | None:
        stds = [row[i] for i, n in enumerate(self.feature_names_) if n.startswith("std_c")]
        return f"a blank sample (every value {row[-4]:.3g})" if stds and max(stds) == 0 else None


def _host_or_device(value: Any, field: str) -> Any:
    """A numpy array, or the torch tensor itself (left on its device)."""
    mod = type(value).__module__
    if mod.startswith("torch"):
        return value.detach()
    try:
        x = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(field, f"expected an array of numbers (n, ...), got a ragged sequence ({exc})") from None
    if x.dtype.kind not in _NUMERIC:
        raise InvalidInputError(field, f"expected an array of numbers, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        r = int(np.argwhere(~np.isfinite(x))[0][0])
        raise InvalidInputError(field, f"sample {r} has NaN or inf values")
    return x


def _to_numpy(t: Any) -> np.ndarray:
    if isinstance(t, np.ndarray) or np.isscalar(t):
        return np.asarray(t)
    return t.detach().cpu().numpy()  # type: ignore[no-any-return]


def _sharpness(xf: Any, torch_like: bool, has_channels: bool) -> Any:
    """Mean absolute difference between neighbours along the last axis (and the one before
    for images): high for sharp or noisy samples, zero for flat ones."""
    n = xf.shape[0]
    d = xf[..., 1:] - xf[..., :-1]
    spatial_dims = xf.ndim - (2 if has_channels else 1)
    d2 = xf[..., 1:, :] - xf[..., :-1, :] if spatial_dims >= 2 else None
    if torch_like:
        total = d.abs().reshape(n, -1).mean(1)
        return total if d2 is None else total + d2.abs().reshape(n, -1).mean(1)
    total = np.abs(d).reshape(n, -1).mean(1)
    return total if d2 is None else total + np.abs(d2).reshape(n, -1).mean(1)


# -- embeddings --------------------------------------------------------------------------
class EmbeddingView(InputView):
    """Long vectors (n, d): a k-dimensional PCA projection fitted on training vectors, and the norm.

    Parameters
    ----------
    n_components : int, default=16
    """

    kind = "embedding"

    def __init__(self, *, n_components: int = 16) -> None:
        self.n_components = n_components

    def fit(self, samples: Any) -> "EmbeddingView":
        x = NumberView(max_rows=10_000_000).transform(samples, "training data")
        self.mean_ = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        k = min(self.n_components, vt.shape[0])
        self.components_ = np.ascontiguousarray(vt[:k])
        self.dim_ = x.shape[1]
        self.feature_names_ = [f"pc{j}" for j in range(k)] + ["norm"]
        self._prepare()
        return self

    def _prepare(self) -> None:
        # one matrix product per call: [components; 0] rows give the projection, the offset
        # removes the mean's projection
        self._numbers = NumberView(n_features=self.dim_)
        self._proj_t = np.ascontiguousarray(self.components_.T)
        self._offset = self.mean_ @ self._proj_t

    def transform(self, value: Any, field: str = "input") -> np.ndarray:
        x = self._numbers.transform(value, field)
        out = np.empty((x.shape[0], self._proj_t.shape[1] + 1))
        np.matmul(x, self._proj_t, out=out[:, :-1])
        out[:, :-1] -= self._offset
        out[:, -1] = np.sqrt(np.einsum("ij,ij->i", x, x))
        return out

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        s, a = super().get_state()
        s["dim"] = int(self.dim_)
        return s, {"mean": self.mean_, "components": self.components_}

    def _set_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "EmbeddingView":
        super()._set_state(state, arrays)
        self.dim_ = int(state["dim"])
        self.mean_, self.components_ = np.asarray(arrays["mean"]), np.asarray(arrays["components"])
        self._prepare()
        return self

    def describe(self, feature: int, value: float, lo: float, hi: float) -> str | None:
        if self.feature_names_[feature] == "norm":
            return f"vector norm {value:.3g}, outside every training vector's ({lo:.3g} to {hi:.3g})"
        return None


# -- your own features ---------------------------------------------------------------------
class FeatureView(InputView):
    """``features(value) -> array (n_rows, k)``: your own monitored features for any input.

    Parameters
    ----------
    features : callable or "module:function"
    feature_names : sequence of str, optional
    """

    kind = "features"

    def __init__(self, features: Callable[[Any], Any] | str, *, feature_names: Sequence[str] | None = None) -> None:
        self.features = features
        self.feature_names = feature_names

    def _fn(self) -> Callable[[Any], Any]:
        return _import_callable(self.features) if isinstance(self.features, str) else self.features

    def fit(self, samples: Any) -> "FeatureView":
        x = self.transform(samples, "training data")
        self.feature_names_ = list(self.feature_names or [f"f{j}" for j in range(x.shape[1])])
        return self

    def transform(self, value: Any, field: str = "input") -> np.ndarray:
        out = self._fn()(value)
        x = np.asarray(out, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise InvalidInputError(field, f"the features function returned shape {x.shape}; expected (rows, k)")
        return x

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        s, a = super().get_state()
        if not isinstance(self.features, str):
            raise ConfigError("a profile can store features=... only as 'module:function'")
        s["features"] = self.features
        return s, a

    def _set_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "FeatureView":
        super()._set_state(state, arrays)
        self.features = state["features"]
        return self


# -- construction ---------------------------------------------------------------------------
_CLASSES: dict[str, type[InputView]] = {"numbers": NumberView, "records": RecordsView, "text": TextView,
                                         "array": ArrayView, "embedding": EmbeddingView, "features": FeatureView}


def make_view(kind: "str | InputView", **params: Any) -> InputView:
    """An (unfitted) view of ``kind`` (one of :data:`KINDS`), or ``kind`` itself when it is a view."""
    if isinstance(kind, InputView):
        return kind
    if kind not in _CLASSES:
        raise ConfigError(f"input_kind={kind!r} is invalid: expected one of {KINDS}")
    return _CLASSES[kind](**params)


def view_from_state(state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> InputView:
    """A fitted view from what :meth:`InputView.get_state` returned (stored in a profile)."""
    kind = state.get("kind")
    if kind not in _CLASSES:
        raise ConfigError(f"a profile's view has kind {kind!r}; this version reads {KINDS}")
    view = _CLASSES[kind].__new__(_CLASSES[kind])
    for k, v in _CLASSES[kind]().__dict__.items() if kind != "features" else ():
        setattr(view, k, v)
    return view._set_state(state, arrays)


def guess_kind(value: Any) -> str:
    """The view kind for an input, from its type: text, records, array (rank > 2 or a tensor) or numbers."""
    if isinstance(value, str):
        return "text"
    if type(value).__module__.startswith("torch"):
        return "array" if value.ndim != 2 else "numbers"
    if hasattr(value, "columns") and hasattr(value, "to_dict"):
        return "records"
    if isinstance(value, Mapping):
        return "records"
    if isinstance(value, (list, tuple)) and value:
        first = value[0]
        if isinstance(first, str):
            return "text"
        if isinstance(first, Mapping):
            return "records"
    if isinstance(value, np.ndarray) and value.ndim > 2:
        return "array"
    return "numbers"
