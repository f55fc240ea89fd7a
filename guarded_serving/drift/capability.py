"""The ``drift`` configuration section and its factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..component import Capability, Component
from ..settings import Section, check_bool, check_integer, check_level, check_number, fail

if TYPE_CHECKING:
    from ..context import GuardContext

__all__ = ["DRIFT", "DriftSettings"]


@dataclass(frozen=True, kw_only=True)
class DriftSettings(Section):
    """Distribution shift and train-serving skew.

    Parameters
    ----------
    drift : bool, default=False
        Turn on distribution-shift and skew monitoring (:mod:`guarded_serving.drift`).
    drift_store : str or None, default=None
        Where windows are pooled: a ``redis://`` / ``rediss://`` URL (every host's workers;
        keys under ``<name>:<version>:drift``; password from the URL or
        ``$GUARDED_STORE_PASSWORD``), or a SQLite file (the host's workers); ``None`` means
        ``$GUARDED_STORE_URL`` when set, else ``$GUARDED_STATE_DIR/drift-<name>.sqlite``
        (default state dir ``.state/``).
    drift_reference : str or None, default=None
        ``.npz`` with ``reference`` (or ``X_train``), optional ``reference_predictions``
        (or ``pred_train``), ``feature_names``, ``categorical``; ``None`` means the
        reference rows another component provides (the edge-case profile's).
    drift_window : int, default=2000
        Latest pooled rows each window test uses.
    drift_min_samples : int, default=200
        Smaller windows never alarm.
    drift_alpha : float, default=0.01
        Benjamini-Hochberg false discovery rate across features.
    drift_min_effect : float, default=0.15
        Smallest effect that alarms (Wasserstein-1 in reference std; total variation).
    skew_first_n : int, default=500
        Rows after startup compared with the training profile for skew.
    skew_alpha : float, default=0.001
        The (stricter) level of the skew check.
    sequential_alpha : float, default=0.01
        Bound on the probability that the sequential alarm ever fires on stationary data.
    drift_interval_s : float, default=5.0
        Period of the background flush-and-test worker.
    drift_buffer_rows : int, default=10000
        Bound of each worker's in-memory buffer between flushes; beyond it a uniform
        reservoir sample of the interval's calls (the sampling rate is stated in the drift reasons).
    drift_retention_rows : int, default=100000
        Rows per stream the store keeps.
    drift_joint_test : bool, default=True
        Add the joint (multivariate, MMD) row to each window test: a change in how features
        vary together with unchanged marginals.
    drift_sequential_max_rows : int, default=1000
        Most pooled rows the sequential alarm consumes per cycle; beyond it a uniform random
        subsample of the cycle's new rows (its cost per cycle stays bounded at any row rate).
    drift_store_digits : int or None, default=None
        Round input rows to this many significant digits before they are written to the store
        (``None``: raw values). The store keeps the latest ``drift_retention_rows`` input rows,
        model outputs and edge-case p-values per stream (oldest dropped first), nothing else;
        where raw values are sensitive, 2 or 3 digits keep the window tests meaningful while
        the exact rows are not kept.
    """

    section = "drift"
    drift: bool = False
    drift_store: str | None = None
    drift_reference: str | None = None
    drift_window: int = 2000
    drift_min_samples: int = 200
    drift_alpha: float = 0.01
    drift_min_effect: float = 0.15
    skew_first_n: int = 500
    skew_alpha: float = 0.001
    sequential_alpha: float = 0.01
    drift_interval_s: float = 5.0
    drift_buffer_rows: int = 10_000
    drift_retention_rows: int = 100_000
    drift_joint_test: bool = True
    drift_sequential_max_rows: int = 1000
    drift_store_digits: int | None = None

    @property
    def enabled(self) -> bool:
        return self.drift

    def __post_init__(self) -> None:
        check_bool("drift", self.drift)
        for fname in ("drift_store", "drift_reference"):
            v = getattr(self, fname)
            if v is not None and (not isinstance(v, str) or not v):
                fail(fname, v, "None, a redis:// URL or a non-empty path string" if fname == "drift_store"
                     else "None or a non-empty path string")
        check_integer("drift_window", self.drift_window, lo=2)
        check_integer("drift_min_samples", self.drift_min_samples, lo=1)
        check_level("drift_alpha", self.drift_alpha)
        check_number("drift_min_effect", self.drift_min_effect, lo=0)
        check_integer("skew_first_n", self.skew_first_n, lo=2)
        check_level("skew_alpha", self.skew_alpha, "0.001")
        check_level("sequential_alpha", self.sequential_alpha)
        check_number("drift_interval_s", self.drift_interval_s, lo=0, lo_open=True, valid="seconds > 0")
        check_integer("drift_buffer_rows", self.drift_buffer_rows, lo=1)
        check_integer("drift_retention_rows", self.drift_retention_rows, lo=1)
        check_bool("drift_joint_test", self.drift_joint_test)
        check_integer("drift_sequential_max_rows", self.drift_sequential_max_rows, lo=1)
        if self.drift_store_digits is not None:
            check_integer("drift_store_digits", self.drift_store_digits, lo=1, hi=17)


def from_config(section: DriftSettings, context: "GuardContext") -> Component | None:
    if not section.enabled:
        return None
    from .component import DriftComponent  # lazily: scipy.stats costs ~0.5 s of import time

    return DriftComponent(store=section.drift_store, window=section.drift_window, alpha=section.drift_alpha,
                          min_effect=section.drift_min_effect, min_samples=section.drift_min_samples,
                          skew_first_n=section.skew_first_n, skew_alpha=section.skew_alpha,
                          sequential_alpha=section.sequential_alpha, interval_s=section.drift_interval_s,
                          buffer_rows=section.drift_buffer_rows, retention_rows=section.drift_retention_rows,
                          reference_path=section.drift_reference, joint_test=section.drift_joint_test,
                          sequential_max_rows=section.drift_sequential_max_rows,
                          store_digits=section.drift_store_digits)


DRIFT = Capability("drift", DriftSettings, from_config)  # type: ignore[arg-type]
