"""Two feedback loops, simulated: where they form, and a control where they do not.

Both simulations run in epochs (one window of the loop check per epoch) and switch the
*loop* system on at ``onset``; the *control* system is the same system with the loop broken.
Both run the same measures (:mod:`.measures`) and the same alarm (:mod:`.alarm`) that the
loop component runs on served traffic, so ``benchmarks/bench_loops.py`` and the tests score
the alarm by the delay from onset to alarm on the loops and by alarms on the controls.

- :func:`recommender`: a song recommender ranks items for users; clicks follow each item's true
  appeal times a position bias. Before ``onset`` (and always in the control) the model is
  retrained each epoch on the *exploration* slice of the last ``memory`` epochs (random lists
  served to ``explore`` of the users, clicks de-biased by position), an unbiased estimate of
  appeal. From ``onset`` the loop system retrains on *all* its clicks since then (play counts)
  and ranks by them, popularity reinforcement: items shown more are clicked more, so they are
  shown more still. The holdout comparison (:func:`holdout`) judges, on the exploration slice,
  whether the favourites of either system are liked.
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
from .holdout import HoldoutComparison, _judge
from .measures import gini, normalised_entropy, position_weights, top_share

__all__ = ["SimulationRun", "allocation", "holdout", "recommender", "score"]


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
                churn: float = 0.04, memory: int = 20, reinforcement: float = 4.0, holdout_epochs: int = 60,
                favourites: float = 0.05) -> SimulationRun:
    """Simulate the recommender; ``loop=False`` is the control (see the module docstring).

    Tastes move: each epoch the appeal of a ``churn`` share of the items is drawn afresh (new
    songs, songs going out of fashion). The control re-estimates appeal each epoch from the
    exploration slice of the last ``memory`` epochs, so it finds the new favourites; the loop
    keeps showing its old ones, whatever users now think of them.

    The holdout comparison (``extra``): in each of the last ``holdout_epochs`` epochs the model's
    favourites are the top ``favourites`` share of items by that epoch's model exposure, chosen by
    a model trained on earlier epochs only, so the epoch's random slice judges them out of sample
    (favourites picked from exposure pooled over the same epochs whose exploration clicks trained
    the model would be judged on the data that chose them). Pooled over the epochs:
    ``holdout_ctr_favourites`` / ``holdout_ctr_rest`` (clicks per position-weighted impression on
    the random slice) and their counts, and ``model_ctr_favourites`` (the same favourites on the
    model's own traffic).
    """
    rng = np.random.default_rng(seed)
    appeal = rng.beta(2.0, 30.0, n_items)                      # true click probability at rank 1
    bias = position_weights(k, "dcg")                          # position bias of clicks and exposure
    run = SimulationRun("recommender", loop, onset)
    n_explore = round(explore * users)
    n_model = users - n_explore
    n_fav = max(1, round(favourites * n_items))
    plays = np.zeros(n_items)
    past: list[tuple[np.ndarray, np.ndarray]] = []             # exploration clicks, weighted shows per epoch
    score = np.full(n_items, appeal.mean())                    # the initial model: every item alike
    hold = np.zeros(6)  # favourites' holdout clicks, shows; the rest's; favourites' model clicks, model shows
    share = []
    for t in range(epochs):
        moved = rng.random(n_items) < churn
        appeal[moved] = rng.beta(2.0, 30.0, int(moved.sum()))
        # model traffic: Plackett-Luce top-k draws (Gumbel trick) on log scores
        popular = loop and t >= onset
        logits = (reinforcement if popular else temperature) * np.log(np.maximum(score, 1e-9))
        g = logits[None, :] + rng.gumbel(size=(n_model, n_items))
        lists = np.argpartition(-g, k, axis=1)[:, :k]
        order = np.take_along_axis(g, lists, 1).argsort(1)[:, ::-1]
        lists = np.take_along_axis(lists, order, 1)
        shown = np.broadcast_to(bias, lists.shape)
        exposure = np.zeros(n_items)
        np.add.at(exposure, lists, shown)
        clicks_model = rng.random(lists.shape) < appeal[lists] * bias[None, :]
        # exploration traffic: random lists
        ex = np.argsort(rng.random((n_explore, n_items)), axis=1)[:, :k]
        ex_shown = np.broadcast_to(bias, ex.shape)
        clicks_ex = rng.random(ex.shape) < appeal[ex] * bias[None, :]
        run.add(_exposure_measures(exposure))
        if t >= epochs - holdout_epochs:  # the holdout comparison, out of sample (see the docstring)
            fav = np.zeros(n_items, bool)
            fav[np.argsort(exposure)[-n_fav:]] = True
            fe, fl = fav[ex], fav[lists]
            hold += (clicks_ex[fe].sum(), ex_shown[fe].sum(), clicks_ex[~fe].sum(), ex_shown[~fe].sum(),
                     clicks_model[fl].sum(), shown[fl].sum())
            share.append(exposure[fav].sum() / exposure.sum())
        # retrain for the next epoch
        c = np.zeros(n_items)
        w = np.zeros(n_items)
        np.add.at(c, ex, clicks_ex)
        np.add.at(w, ex, ex_shown)
        past = (past + [(c, w)])[-memory:]
        if loop and t + 1 >= onset:
            np.add.at(plays, lists, clicks_model)
            plays += c
            score = plays + 1.0                                # popularity: play counts since onset
        else:
            c, w = sum(x for x, _ in past), sum(x for _, x in past)
            score = (c + 2.0 * appeal.mean()) / (w + 2.0)      # de-biased CTR, shrunk to the mean
    cf, sf, cr, sr, mc, ms = (float(x) for x in hold)
    run.extra = {"appeal": appeal, "holdout_clicks_favourites": cf, "holdout_shows_favourites": sf,
                 "holdout_clicks_rest": cr, "holdout_shows_rest": sr,
                 "holdout_ctr_favourites": cf / max(sf, 1e-9), "holdout_ctr_rest": cr / max(sr, 1e-9),
                 "model_clicks_favourites": mc, "model_shows_favourites": ms,
                 "model_ctr_favourites": mc / max(ms, 1e-9),
                 "favourites_exposure_share": float(np.mean(share)) if share else float("nan")}
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


def holdout(run: SimulationRun, *, lift: float = 2.0, z: float = 1.96, min_share: float = 0.5,
            min_clicks: int = 30) -> HoldoutComparison:
    """The recommender's holdout comparison over its last ``holdout_epochs`` (favourites chosen
    per epoch), judged as the loop component judges served traffic (:mod:`.holdout`)."""
    e = run.extra
    return _judge((), e["favourites_exposure_share"], e["holdout_clicks_favourites"], e["holdout_shows_favourites"],
                  e["holdout_clicks_rest"], e["holdout_shows_rest"], e["model_ctr_favourites"],
                  min_clicks=min_clicks, z=z, min_share=min_share, lift=lift)


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")
