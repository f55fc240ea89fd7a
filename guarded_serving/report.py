"""``guarded-serving report``: one self-contained HTML file (plots embedded) about a served guard.

::

    guarded-serving report --url http://127.0.0.1:3000 --duration 120 --interval 5 \\
        --store .state/drift-breast_cancer.sqlite --reference services/artifacts/reference.npz \\
        -o report.html --record samples.jsonl
    guarded-serving report --samples samples.jsonl --store ... --reference ... -o report.html

Sources: the guard's **health and stats**, sampled from ``GET <url>/guard/health`` and
``/guard/stats`` every ``--interval`` seconds for ``--duration`` seconds (or read back from a
``--record``-ed JSONL file), and the guard's **store** (the drift store, shared by the workers):
the rows it pooled and the conformal p-values of the edge-case detector, with their times (a
SQLite file, or the Redis URL many hosts share: its window is drawn, but Redis keeps no times,
so the edge-rate plot falls back to the sampled stats).

Sections: latency over time against the SLO (and the burn rate), the health-check timeline,
reference-vs-current distributions of the drifted features (the largest effects when none
drifted), the edge-case rate against its expected level, and performance realised vs
estimated (when the guard's stats carry ``performance``; the capability does not exist yet).

Health and stats describe the worker that answered each request (state is per process); the
store is shared by every worker. matplotlib is needed (``pip install guarded-serving[report]``).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ._progress import Progress
from .errors import ConfigError

__all__ = ["Report", "add_subparser", "collect_samples", "main", "render_html", "run"]

_STATUS_RANK = {"ok": 0, "unavailable": 1, "degraded": 2, "failing": 3}
_STATUS_COLORS = ("#3a9d5d", "#b9c0c8", "#f0a030", "#d43f3a")


# -- gathering -------------------------------------------------------------------------------
def _get_json(url: str, timeout: float = 10.0) -> Any:
    req = urllib.request.Request(url, headers={"accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # /guard/health answers 503 with the report when failing
        return json.loads(e.read())


def collect_samples(url: str, *, duration_s: float, interval_s: float, quiet: bool = False,
                    record: Path | None = None, stop: Any = None) -> list[dict[str, Any]]:
    """Sample ``/guard/health`` and ``/guard/stats`` of ``url`` for ``duration_s`` seconds
    (or until the ``threading.Event`` ``stop`` is set, after one sample at least)."""
    base = url.rstrip("/")
    n = max(1, int(duration_s // interval_s) + 1)
    bar = Progress(n, "report: sampling", quiet=quiet)
    samples: list[dict[str, Any]] = []
    out = open(record, "w") if record is not None else None
    try:
        t_next = time.monotonic()
        for i in range(n):
            s = {"t": time.time(), "health": _get_json(base + "/guard/health"), "stats": _get_json(base + "/guard/stats")}
            samples.append(s)
            if out is not None:
                out.write(json.dumps(s) + "\n")
                out.flush()
            bar.update(i + 1, f"{i + 1}/{n} samples", force=True)
            if i + 1 < n:
                t_next += interval_s
                wait = max(0.0, t_next - time.monotonic())
                if stop is not None:
                    if stop.wait(wait):
                        break
                else:
                    time.sleep(wait)
    finally:
        bar.close()
        if out is not None:
            out.close()
    return samples


def read_samples(path: Path) -> list[dict[str, Any]]:
    samples = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not samples:
        raise ConfigError(f"{path} holds no samples")
    return samples


class Report:
    """What the report shows, gathered from samples, the store and the reference (plain data)."""

    def __init__(self, samples: Sequence[dict[str, Any]], *, store: Any = None, reference: np.ndarray | None = None,
                 feature_names: Sequence[str] | None = None, model: str | None = None, window: int = 500,
                 edge_fpr: float | None = None) -> None:
        if not samples:
            raise ConfigError("a report needs at least one health/stats sample")
        self.samples = list(samples)
        last = self.samples[-1]["stats"]
        self.model = model or last.get("model", "model")
        self.version = str(last.get("version", ""))
        self.store, self.reference, self.window = store, reference, window
        self.feature_names = list(feature_names) if feature_names is not None else None
        edge = last.get("edge_cases") or {}
        self.edge_fpr = edge_fpr if edge_fpr is not None else edge.get("fpr")

    # each section returns (title, figure or None, text)
    def latency(self) -> tuple[Any, str]:
        plt = _pyplot()
        t = _times(self.samples)
        lat = [s["stats"].get("latency_ms") or {} for s in self.samples]
        slo = next((x.get("slo") for x in reversed(lat) if x.get("slo")), None)
        fig, (ax, bx) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True, height_ratios=(2, 1))
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", "-")):
            ax.plot(t, [_num(x.get(q)) for x in lat], style, marker=".", label=q)
        if slo:
            ax.axhline(slo, color="#d43f3a", lw=1.5, label=f"SLO {slo:g} ms")
        ax.set_ylabel("latency (ms)")
        ax.legend(loc="upper left", ncols=4, fontsize=8)
        ax.grid(alpha=0.3)
        burn = [s["stats"].get("burn_rate") or {} for s in self.samples]
        for w in sorted({k for b in burn for k in b}, key=lambda k: float(k.rstrip("s") or 0)):
            bx.plot(t, [_num(b.get(w)) for b in burn], marker=".", label=f"burn rate {w}")
        bx.axhline(14.4, color="#d43f3a", ls=":", lw=1, label="14.4 (fast burn)")
        bx.set_ylabel("burn rate")
        bx.legend(loc="upper left", ncols=3, fontsize=8)
        bx.grid(alpha=0.3)
        _time_axis(bx)
        last = self.samples[-1]["stats"]
        text = (f"{last.get('calls', 0)} calls ({last.get('ok', 0)} ok, {last.get('errors', 0)} errors, "
                f"{last.get('invalid_inputs', 0)} invalid, {last.get('rejected', 0)} rejected); "
                f"{last.get('slo_violations', 0)} slower than the SLO. Quantiles are the answering worker's "
                "rolling window.")
        return fig, text

    def health_timeline(self) -> tuple[Any, str]:
        plt = _pyplot()
        from matplotlib.colors import ListedColormap

        names: list[str] = []
        for s in self.samples:
            for name in s["health"].get("checks", {}):
                if name not in names:
                    names.append(name)
        grid = np.full((len(names), len(self.samples)), np.nan)
        for j, s in enumerate(self.samples):
            for i, name in enumerate(names):
                c = s["health"].get("checks", {}).get(name)
                if c is not None:
                    grid[i, j] = _STATUS_RANK.get(c["status"], 1)
        fig, ax = plt.subplots(figsize=(10, 0.28 * len(names) + 1.4))
        t = _times(self.samples)
        x0, x1 = _num_time(t[0]), _num_time(t[-1]) if len(t) > 1 else _num_time(t[0]) + 1 / 86400
        ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=ListedColormap(_STATUS_COLORS), vmin=0, vmax=3,
                  extent=(x0, x1, len(names) - 0.5, -0.5))
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.xaxis_date()
        _time_axis(ax)
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=c, label=k) for k, c in zip(_STATUS_RANK, _STATUS_COLORS)],
                  loc="upper center", bbox_to_anchor=(0.5, -0.12 if len(names) > 10 else -0.3), ncols=4, fontsize=8)
        last = self.samples[-1]["health"]
        bad = {n: c for n, c in last.get("checks", {}).items() if c["status"] in ("degraded", "failing")}
        text = f"Overall status at the end: {last.get('status')} (ready: {last.get('ready')})."
        if bad:
            text += " Not ok at the end: " + "; ".join(f"{n}: {c['status']} ({c['reason']})" for n, c in bad.items())
        return fig, text

    def drift(self) -> tuple[Any, str]:
        stats = self.samples[-1]["stats"].get("drift") or {}
        feats = stats.get("features") or {}
        if self.store is None or self.reference is None:
            return None, "No store or reference given (--store, --reference): distributions not drawn."
        current = self.store.window(f"{self.model}:inputs", self.window)
        if current.size == 0:
            return None, f"The store holds no rows for {self.model}."
        names = self.feature_names or [f"f{i}" for i in range(self.reference.shape[1])]
        drifted = [f for f, r in feats.items() if r.get("drifted")]
        chosen = drifted or sorted(feats, key=lambda f: -_num(feats[f].get("effect"), -1.0))
        chosen = [f for f in chosen if f in names][:6] or names[:3]
        plt = _pyplot()
        cols = min(3, len(chosen))
        rows = (len(chosen) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(10, 2.8 * rows), squeeze=False)
        for ax, f in zip(axes.flat, chosen):
            j = names.index(f)
            ref, cur = self.reference[:, j], current[:, j]
            ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
            both = np.concatenate([ref, cur])
            lo, hi = np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 1.0)
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
            ax.hist(ref, bins=bins, density=True, alpha=0.55, label="reference", color="#4878a8")
            ax.hist(cur, bins=bins, density=True, alpha=0.55, label="current", color="#e07b39")
            r = feats.get(f, {})
            ax.set_title(f"{f}\np={_num(r.get('p_value')):.2g}, effect {_num(r.get('effect')):.2f}", fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(chosen):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
        fig.tight_layout()
        what = (f"{len(drifted)} feature(s) drifted in the latest pooled window" if drifted
                else "No feature drifted in the latest pooled window; the largest effects are shown")
        seq = stats.get("sequential") or {}
        text = (f"{what} ({len(current)} current rows from the store against {len(self.reference)} reference rows)."
                + (f" Sequential evidence: 10^{seq.get('log10_capital')} (alarm at 10^{seq.get('threshold_log10')}"
                   f"{', fired' if seq.get('alarm') else ''})." if seq else ""))
        return fig, text

    def edge_rate(self) -> tuple[Any, str]:
        plt = _pyplot()
        fpr = self.edge_fpr
        batches = self.store.batches(f"{self.model}:p_values") if self.store is not None and hasattr(
            self.store, "batches") else []
        fig, ax = plt.subplots(figsize=(10, 3))
        if batches and fpr is not None:
            ts = np.concatenate([np.full(len(a), ts) for ts, a in batches])
            p = np.concatenate([a[:, 0] for _, a in batches])
            edges = np.linspace(ts.min(), ts.max() + 1e-6, min(40, max(2, len(batches))) + 1)
            idx = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, len(edges) - 2)
            n = np.bincount(idx, minlength=len(edges) - 1)
            k = np.bincount(idx, weights=(p <= fpr).astype(float), minlength=len(edges) - 1)
            keep = n > 0
            mid = [datetime.fromtimestamp(x, timezone.utc) for x in (edges[:-1] + edges[1:])[keep] / 2]
            ax.step(mid, k[keep] / n[keep], where="mid", label="flagged share of rows (store, all workers)")
            text = (f"{int(k.sum())} of {int(n.sum())} rows in the store flagged ({k.sum() / n.sum():.1%}); "
                    f"expected about {fpr:.1%} (edge_fpr) on traffic like the training data.")
        else:
            t = _times(self.samples)
            rate = [(s["stats"].get("edge_cases") or {}).get("flag_rate") for s in self.samples]
            ax.plot(t, [_num(r) for r in rate], marker=".", label="flagged share of rows (answering worker)")
            text = "Flag rate from the sampled stats (no store p-values given)."
        if fpr is not None:
            ax.axhline(fpr, color="#3a9d5d", ls="--", label=f"expected ({fpr:g})")
            ax.axhline(3 * fpr, color="#d43f3a", ls=":", label="alert level (3x)")
        ax.set_ylabel("share of rows")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
        _time_axis(ax)
        return fig, text

    def performance(self) -> tuple[Any, str]:
        perf = [s["stats"].get("performance") for s in self.samples]
        if not any(perf):
            return None, ("No performance figures: this guard has no performance capability yet (its stats carry "
                          "no 'performance'). Realised (from delayed labels) and estimated performance will be "
                          "plotted here once it exists.")
        plt = _pyplot()
        t = _times(self.samples)
        fig, ax = plt.subplots(figsize=(10, 3))
        for kind in ("realised", "estimated", "expected"):
            metrics = sorted({m for p in perf if p for m in (p.get(kind) or {})})
            for m in metrics:
                ax.plot(t, [_num(((p or {}).get(kind) or {}).get(m)) for p in perf], marker=".", label=f"{kind} {m}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        _time_axis(ax)
        return fig, "Performance as the guard's stats report it."

    def sections(self) -> Iterable[tuple[str, Any, str]]:
        yield "Latency against the SLO", *self.latency()
        yield "Health checks over time", *self.health_timeline()
        yield "Drift: reference vs current", *self.drift()
        yield "Edge-case rate", *self.edge_rate()
        yield "Performance: realised vs estimated", *self.performance()


# -- rendering ----------------------------------------------------------------------------------
def render_html(report: Report, *, quiet: bool = True) -> str:
    """The report as one HTML document; every plot is an embedded PNG (``data:`` URI)."""
    parts = []
    names = ("latency", "health", "drift", "edge", "performance")
    bar = Progress(len(names), "report: plotting", quiet=quiet)
    for i, (title, fig, text) in enumerate(report.sections()):
        img = ""
        if fig is not None:
            img = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{_png(fig)}">'
        parts.append(f'<section id="{names[i]}"><h2>{html.escape(title)}</h2>{img}<p>{html.escape(text)}</p></section>')
        bar.update(i + 1, title, force=True)
    bar.close()
    t = _times(report.samples)
    span = f"{t[0]:%Y-%m-%d %H:%M:%S} to {t[-1]:%H:%M:%S} UTC, {len(report.samples)} samples"
    head = html.escape(f"{report.model} v{report.version}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>guarded-serving report: {head}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1060px; margin: 1.5em auto; color: #222; }}
h1 {{ font-size: 1.5em; margin-bottom: 0.1em; }} h2 {{ font-size: 1.15em; border-bottom: 1px solid #ddd; }}
.meta {{ color: #666; }} img {{ max-width: 100%; }} p {{ line-height: 1.4; }}
</style></head><body>
<h1>guarded-serving report: {head}</h1>
<p class="meta">{html.escape(span)}; generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC</p>
{''.join(parts)}
</body></html>
"""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - an optional dependency
        raise ConfigError("guarded-serving report needs matplotlib: pip install 'guarded-serving[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _times(samples: Sequence[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromtimestamp(s["t"], timezone.utc) for s in samples]


def _num_time(t: datetime) -> float:
    from matplotlib.dates import date2num

    return float(date2num(t))


def _time_axis(ax: Any) -> None:
    from matplotlib.dates import DateFormatter

    ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))
    ax.tick_params(axis="x", labelsize=8)


def _num(v: Any, default: float = float("nan")) -> float:
    try:
        return float(v) if v is not None else default
    except (TypeError, ValueError):
        return default


# -- command line ----------------------------------------------------------------------------------
def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``report`` subcommand."""
    p = subparsers.add_parser("report", help="write an HTML report with plots of a served guard",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="the service, e.g. http://127.0.0.1:3000 (samples /guard/health and /guard/stats)")
    src.add_argument("--samples", type=Path, help="samples recorded earlier with --record (JSONL)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to sample --url (default 60; 0: one sample)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    p.add_argument("--record", type=Path, help="also write the samples taken to this JSONL file")
    p.add_argument("--store", help="the guard's drift store: a SQLite file, e.g. .state/drift-MODEL.sqlite, or the "
                                   "Redis URL of many hosts, e.g. redis://127.0.0.1:6379/0 (keys of the model and "
                                   "version in the stats; password from the URL or GUARDED_STORE_PASSWORD)")
    p.add_argument("--reference", type=Path, help="reference rows (.npz: reference or X_train, feature_names)")
    p.add_argument("--model", help="model name in the store (default: from the stats)")
    p.add_argument("--window", type=int, default=500, help="current rows drawn from the store (default 500)")
    p.add_argument("-o", "--out", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0 or args.duration < 0:
        raise ConfigError("--interval must be > 0 and --duration >= 0")
    if args.url:
        samples = collect_samples(args.url, duration_s=args.duration, interval_s=args.interval, quiet=args.quiet,
                                  record=args.record)
    else:
        samples = read_samples(args.samples)
    store = reference = names = None
    if args.store is not None:
        from .store import is_url, open_store

        if is_url(args.store):
            last = samples[-1]["stats"] if samples else {}
            model, version = args.model or last.get("model", "model"), str(last.get("version", "1"))
            store = open_store(args.store, retention=10**9, namespace=f"{model}:{version}:drift")
        else:
            if not Path(args.store).exists():
                raise ConfigError(f"--store {args.store} does not exist")
            from .store.sqlite import SQLiteWindowStore

            store = SQLiteWindowStore(args.store)
    if args.reference is not None:
        from .drift.component import load_reference_npz

        ref = load_reference_npz(args.reference)
        reference, names = np.asarray(ref["reference"], dtype=float), ref.get("feature_names")
    report = Report(samples, store=store, reference=reference, feature_names=names, model=args.model,
                    window=args.window)
    doc = render_html(report, quiet=args.quiet)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(doc)
    if store is not None:
        store.close()
    print(f"wrote {args.out} ({len(doc) / 1024:.0f} KiB, {len(samples)} samples)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="guarded-serving report")
    sub = ap.add_subparsers()
    add_subparser(sub)
    args = ap.parse_args(["report", *(argv or [])])
    return run(args)
