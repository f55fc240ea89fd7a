"""Two feedback loops, simulated: where they form, and a control where they do not.

Both simulations run in epochs (one window of the loop check per epoch) and switch the
*loop* system on at ``onset``; the *control* system is the same system with the loop broken.
Both run the same measures (:mod:`.measures`) and the same alarm (:mod:`.alarm`) that the
loop component runs on served traffic, so ``benchmarks/bench_loops.py`` and the tests score
the alarm by the delay from onset to alarm on the loops and by alarms on the controls.

- :func:`recommender`: a song recommender ranks items for users; clicks follow each item's true
  appeal times a position bias. Before ``onset`` (and always in the control) the model is
  retrained each epoch on the previous epoch's *exploration* slice (random lists served to
  ``explore`` of the users, clicks de-biased by position), an unbiased estimate of appeal. From
  ``onset`` the loop system retrains on *all* its clicks since then (play counts), popularity
  reinforcement: items shown more are clicked more, so they are shown more still.
- :func:`allocation`: in the style of Ensign et al., "Runaway feedback loops in predictive
  policing" (FAT* 2018): patrols are allocated over districts; incidents are discovered in
  proportion to patrols times the district's true rate. The loop system sends patrols where
  most incidents were *observed* last epoch; the control re-weights each observed count by the
  inverse of the allocation that produced it (Ensign et al.'s fix), an unbiased rate estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .alarm import ConcentrationAlarm
from .measures import gini, normalised_entropy, position_weights, top_share

__all__ = ["SimulationRun", "allocation", "recommender", "score"]


@dataclass
class SimulationRun:
    """Per-epoch measures of one simulated system (``measures[name][epoch]``)."""

    name: str
    loop: bool
    onset: int
    measures: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.measures.setdefault(k, []).append(float(v))

    @property
    def epochs(self) -> int:
        return len(next(iter(self.measures.values()), []))


def _exposure_measures(e: np.ndarray, top_fraction: float = 0.01) -> dict[str, float]:
    return {"gini": gini(e), "entropy": normalised_entropy(e), "coverage": float(np.count_nonzero(e) / len(e)),
            "top_share": top_share(e, fraction=top_fraction)}


def recommender(*, loop: bool, seed: int = 0, epochs: int = 120, onset: int = 40, n_items: int = 300,
                users: int = 500, k: int = 10, explore: float = 0.1, temperature: float = 2.0,
                churn: float = 0.02) -> SimulationRun:
    """Simulate the recommender; ``loop=False`` is the control (see the module docstring).

    Tastes move: each epoch the appeal of a ``churn`` share of the items is drawn afresh (new
    songs, songs going out of fashion). The control finds the new favourites through its
    exploration slice; the loop keeps showing its old ones, whatever users now think of them.
    """
    rng = np.random.default_rng(seed)
    appeal = rng.beta(2.0, 30.0, n_items)                      # true click probability at rank 1
    bias = position_weights(k, "dcg")                          # position bias of clicks and exposure
    run = SimulationRun("recommender", loop, onset)
    n_explore = round(explore * users)
    n_model = users - n_explore
    # the initial model: a first exploration epoch
    score = np.full(n_items, appeal.mean())
    plays = np.zeros(n_items)
    fav_hold_clicks = fav_hold_shows = rest_hold_clicks = rest_hold_shows = 0.0
    for t in range(epochs):
        moved = rng.random(n_items) < churn
        appeal[moved] = rng.beta(2.0, 30.0, int(moved.sum()))
        # model traffic: Plackett-Luce top-k draws (Gumbel trick) on log scores
        logits = temperature * np.log(np.maximum(score, 1e-9))
        g = logits[None, :] + rng.gumbel(size=(n_model, n_items))
        lists = np.argpartition(-g, k, axis=1)[:, :k]
        order = np.take_along_axis(g, lists, 1).argsort(1)[:, ::-1]
        lists = np.take_along_axis(lists, order, 1)
        exposure = np.zeros(n_items)
        np.add.at(exposure, lists, np.broadcast_to(bias, lists.shape))
        clicks_model = rng.random(lists.shape) < appeal[lists] * bias[None, :]
        # exploration traffic: random lists
        ex = np.array([rng.choice(n_items, k, replace=False) for _ in range(n_explore)]).reshape(n_explore, k)
        clicks_ex = rng.random(ex.shape) < appeal[ex] * bias[None, :]
        run.add(_exposure_measures(exposure))
        # the holdout comparison: exploration CTR of the model's favourites (top 5% of exposure) vs the rest
        fav = np.zeros(n_items, bool)
        fav[np.argsort(exposure)[-max(1, n_items // 20):]] = True
        shows = np.broadcast_to(bias, ex.shape)
        if t >= epochs - 20:  # the last 20 epochs
            fav_hold_clicks += clicks_ex[fav[ex]].sum()
            fav_hold_shows += shows[fav[ex]].sum()
            rest_hold_clicks += clicks_ex[~fav[ex]].sum()
            rest_hold_shows += shows[~fav[ex]].sum()
        model_ctr_fav = clicks_model[fav[lists]].sum() / max(1.0, np.broadcast_to(bias, lists.shape)[fav[lists]].sum())
        run.measures.setdefault("model_ctr_favourites", []).append(float(model_ctr_fav))
        # retrain for the next epoch
        if loop and t + 1 >= onset:
            np.add.at(plays, lists, clicks_model)
            np.add.at(plays, ex, clicks_ex)
            score = plays + 1.0                                # popularity: play counts since onset
        else:
            c = np.zeros(n_items)
            w = np.zeros(n_items)
            np.add.at(c, ex, clicks_ex)
            np.add.at(w, ex, np.broadcast_to(bias, ex.shape))
            score = (c + 2.0 * appeal.mean()) / (w + 2.0)      # de-biased CTR, shrunk to the mean
    run.extra = {"appeal": appeal,
                 "holdout_ctr_favourites": fav_hold_clicks / max(fav_hold_shows, 1.0),
                 "holdout_ctr_rest": rest_hold_clicks / max(rest_hold_shows, 1.0)}
    return run


def allocation(*, loop: bool, seed: int = 0, epochs: int = 120, onset: int = 40, districts: int = 20,
               patrols: int = 400, rate: float = 0.5, spread: float = 0.2, floor: float = 0.05) -> SimulationRun:
    """Simulate the patrol allocation loop; ``loop=False`` is the inverse-allocation control.

    ``rate`` is incidents discovered per patrol in a district of average crime rate, ``spread``
    the relative spread of true rates across districts, ``floor`` the share of patrols spread
    evenly whatever the model says (so every district keeps some presence).
    """
    rng = np.random.default_rng(seed)
    true = rate * rng.uniform(1 - spread, 1 + spread, districts)
    run = SimulationRun("allocation", loop, onset)
    est = np.full(districts, rate)
    for t in range(epochs):
        share = floor / districts + (1 - floor) * est / est.sum()
        sent = share * patrols
        observed = rng.poisson(true * sent)
        run.add(_exposure_measures(sent, top_fraction=0.05))
        if loop and t + 1 >= onset:
            est = observed + 0.5                               # where most incidents were observed
        else:
            est = (observed + 0.5) / sent                      # re-weighted by 1 / allocation
    run.extra = {"true_rates": true}
    return run


def score(run: SimulationRun, *, alpha: float = 0.01, measures: dict[str, str] | None = None,
          start: int = 5, block: int = 1) -> dict[str, Any]:
    """Feed the run's windows from ``start`` (after the initial model settled) to a
    :class:`~.alarm.ConcentrationAlarm`; the alarm window, the measure that raised it, and the
    delay from onset (a loop) or a false alarm (a control, or any alarm before onset)."""
    alarm = ConcentrationAlarm(alpha=alpha, measures=measures or {"gini": "up", "top_share": "up",
                                                                  "entropy": "down", "coverage": "down"},
                               block=block)
    at = None
    for t in range(start, run.epochs):
        if alarm.update({m: run.measures[m][t] for m in alarm.measures if m in run.measures}):
            at = t
            break
    delay = None
    false_alarm = at is not None and (not run.loop or at < run.onset)
    if at is not None and run.loop and at >= run.onset:
        delay = at - run.onset
    return {"alarm_at": at, "measure": alarm.first_, "delay": delay, "false_alarm": false_alarm,
            "missed": run.loop and at is None}


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")
