"""Generated songs and listeners for the recommender example (no downloads), and its model.

Everything comes from one seed, so the service and the replay that plays its listeners agree:

- ``N_SONGS`` songs and ``N_USERS`` listeners with taste vectors in 8 dimensions; the chance
  that listener ``u`` plays song ``i`` when it is shown first is ``sigmoid(taste_u . song_i + bias_i)``
  (times the position bias ``1 / log2(rank + 1)`` further down the list);
- a reference listening log (what users chose before the model existed): play counts per song,
  the reference popularity the loop check compares exposure with.

:class:`SongRecommender` ranks songs for a listener by taste match plus ``weight * log(1 + plays)``
of the plays it has been told about, with Gumbel noise so lists vary. While nobody reports plays
it is a stationary personalised recommender; once the plays of its own lists feed back into it
(``record_plays``), songs it showed are played more and shown more: a popularity loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["N_SONGS", "N_USERS", "Catalogue", "SongRecommender", "catalogue", "song_id"]

N_SONGS = 400
N_USERS = 3000
DIM = 8


def song_id(i: int) -> str:
    return f"song-{i:03d}"


@dataclass(frozen=True)
class Catalogue:
    taste: np.ndarray        # (N_USERS, DIM)
    songs: np.ndarray        # (N_SONGS, DIM)
    bias: np.ndarray         # (N_SONGS,)
    popularity: np.ndarray   # (N_SONGS,) reference play counts

    def play_probability(self, user: int, song: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Chance that ``user`` plays ``song`` shown at 1-based ``rank``."""
        z = self.songs[song] @ self.taste[user] + self.bias[song]
        return 1.0 / (1.0 + np.exp(-z)) / np.log2(rank + 1.0)


def catalogue(seed: int = 7) -> Catalogue:
    rng = np.random.default_rng(seed)
    taste = rng.normal(0, 0.6, (N_USERS, DIM))
    songs = rng.normal(0, 0.6, (N_SONGS, DIM))
    bias = rng.normal(-3.0, 0.5, N_SONGS)
    # the reference log: 20 random songs offered to each listener, plays drawn from their tastes
    offered = rng.integers(0, N_SONGS, (N_USERS, 20))
    z = np.einsum("ud,ukd->uk", taste, songs[offered]) + bias[offered]
    played = rng.random(offered.shape) < 1.0 / (1.0 + np.exp(-z))
    popularity = np.bincount(offered[played], minlength=N_SONGS).astype(float) + 1.0
    return Catalogue(taste, songs, bias, popularity)


class SongRecommender:
    """Top-k songs per listener: taste match + ``weight * log(1 + plays)`` + Gumbel noise."""

    def __init__(self, cat: Catalogue, *, weight: float = 1.5, temperature: float = 0.7, seed: int = 0) -> None:
        self.cat = cat
        self.weight = weight
        self.temperature = temperature
        self.plays = np.zeros(N_SONGS)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """(len(users), k) song indices, best first."""
        with self._lock:
            score = self.cat.taste[users] @ self.cat.songs.T + self.weight * np.log1p(self.plays)[None, :]
            score = score + self.temperature * self._rng.gumbel(size=score.shape)
        top = np.argpartition(-score, k, axis=1)[:, :k]
        order = np.take_along_axis(score, top, 1).argsort(1)[:, ::-1]
        return np.take_along_axis(top, order, 1)

    def explore(self, n: int, k: int) -> np.ndarray:
        """Random lists (the exploration slice)."""
        with self._lock:
            return np.array([self._rng.choice(N_SONGS, k, replace=False) for _ in range(n)]).reshape(n, k)

    def record_plays(self, songs: list[int]) -> None:
        """Retrain on plays (the loop, when they are plays of the model's own lists)."""
        if songs:
            with self._lock:
                np.add.at(self.plays, np.asarray(songs, dtype=int), 1.0)
