"""An output content check written outside the package: blocked words in what a model says.

A text model that repeats its users (a chatbot, a summariser, the sentiment
example's replies) may say something outrageous. ``BlockedWords`` reads the
model's text outputs after each call (O(characters)) and, when one contains a
blocked word, flags the call (its span is always exported, naming the rows and
words), sets ``X-Guard-Content`` on the response, counts it in stats and
health, and with ``policy="fallback"`` replaces the offending texts with a
neutral one. Inputs containing blocked words are counted (and named on the
span) too, but the verdict is about the output: a model may quote a bad word
without saying it.

It uses only the public extension points, like :mod:`services.rules`::

    guard = Guard(name="sentiment", profile="artifacts/sentiment/profile.npz",
                  components=[BlockedWords(["idiot", "moron"], fields=("reply",))])
"""

from __future__ import annotations

import re
import threading
from typing import Any, Iterable, Mapping, Sequence

from guarded_serving import Call, CheckResult, Component, ConfigError, GuardContext

__all__ = ["BlockedWords", "DEFAULT_BLOCKED", "HEADER"]

HEADER = "X-Guard-Content"
#: A small default list (a real deployment brings its own).
DEFAULT_BLOCKED = ("idiot", "idiots", "moron", "morons", "stupid", "bastard", "bastards", "damn", "crap")


class BlockedWords(Component):
    """Flag calls whose text output contains a blocked word (whole words, any case).

    Parameters
    ----------
    words : iterable of str, default=DEFAULT_BLOCKED
    fields : sequence of str, default=("reply",)
        Keys of the model's dict result holding a text or a list of texts; a
        result that is itself a string or a list of strings is checked whole.
    policy : {"flag", "fallback"}, default="flag"
        ``fallback`` replaces each offending text with ``fallback_text``.
    fallback_text : str, default="[withheld by the content check]"
    degraded_rate : float, default=0.05
        Share of checked texts with a blocked word above which ``content.blocked_words``
        is degraded.
    """

    name = "content"
    span_scope = "anomalous"

    def __init__(self, words: Iterable[str] = DEFAULT_BLOCKED, *, fields: Sequence[str] = ("reply",),
                 policy: str = "flag", fallback_text: str = "[withheld by the content check]",
                 degraded_rate: float = 0.05) -> None:
        self.words = tuple(words)
        self.fields = tuple(fields)
        self.policy = policy
        self.fallback_text = fallback_text
        self.degraded_rate = degraded_rate
        self._lock = threading.Lock()
        self.texts_checked = self.texts_blocked = self.inputs_blocked = self.calls_flagged = 0
        self.hits: dict[str, int] = {}

    def bind(self, context: GuardContext) -> None:
        words = [w.strip().lower() for w in self.words if isinstance(w, str) and w.strip()]
        if not words:
            raise ConfigError("BlockedWords needs at least one word")
        if self.policy not in ("flag", "fallback"):
            raise ConfigError(f"policy={self.policy!r} is invalid: expected 'flag' or 'fallback'")
        self.pattern_ = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(set(words), key=len,
                                                                                  reverse=True)) + r")\b",
                                   re.IGNORECASE)

    def _found(self, texts: Sequence[Any]) -> dict[int, list[str]]:
        found = {}
        for i, t in enumerate(texts):
            if isinstance(t, str):
                hits = self.pattern_.findall(t)
                if hits:
                    found[i] = sorted({h.lower() for h in hits})
        return found

    # -- request path ---------------------------------------------------------------
    def before_call(self, call: Call) -> None:
        value = call.kwargs.get(call.input_name) if call.input_name in call.kwargs else None
        if value is None:
            value = next((a for a in call.args if isinstance(a, (str, list))), None)
        texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        found = self._found(texts)
        if found:
            with self._lock:
                self.inputs_blocked += len(found)
            call.attributes["content.input_rows"] = sorted(found)[:100]

    def after_call(self, call: Call) -> None:
        if call.outcome != "ok" or call.result is None:
            return
        result = call.result
        targets: list[tuple[str | None, list[Any]]] = []
        if isinstance(result, Mapping):
            for f in self.fields:
                v = result.get(f)
                if isinstance(v, str):
                    targets.append((f, [v]))
                elif isinstance(v, list):
                    targets.append((f, v))
        elif isinstance(result, str):
            targets.append((None, [result]))
        elif isinstance(result, list):
            targets.append((None, result))
        rows: set[int] = set()
        words: set[str] = set()
        n = 0
        replaced: dict[str | None, list[Any]] = {}
        for field, texts in targets:
            n += len(texts)
            found = self._found(texts)
            if not found:
                continue
            rows.update(found)
            for ws in found.values():
                words.update(ws)
            if self.policy == "fallback":
                replaced[field] = [self.fallback_text if i in found else t for i, t in enumerate(texts)]
        with self._lock:
            self.texts_checked += n
            if rows:
                self.texts_blocked += len(rows)
                self.calls_flagged += 1
                for w in words:
                    self.hits[w] = self.hits.get(w, 0) + 1
        if not rows:
            call.set_header(HEADER, "ok")
            return
        ordered = sorted(rows)
        call.flag(**{"content.flagged": True, "content.rows": ordered[:100], "content.words": sorted(words),
                     "content.policy": self.policy})
        call.set_header(HEADER, f"flagged; rows={','.join(map(str, ordered[:50]))}; "
                                f"words={','.join(sorted(words))}; policy={self.policy}")
        if replaced:
            if isinstance(result, Mapping):
                call.result = {**result, **{f: v for f, v in replaced.items() if f is not None}}
            else:
                new = replaced[None]
                call.result = new[0] if isinstance(result, str) else new

    # -- read side ------------------------------------------------------------------
    def checks(self) -> Iterable[CheckResult]:
        with self._lock:
            n, bad, hits = self.texts_checked, self.texts_blocked, dict(self.hits)
        rate = bad / n if n else 0.0
        details = {"texts_checked": n, "texts_blocked": bad, "rate": rate, "words": hits}
        status = "degraded" if n and rate > self.degraded_rate else "ok"
        reason = f"{bad} of {n} model outputs contained a blocked word" + (
            f" ({rate:.1%}): " + ", ".join(f"{w} {c}" for w, c in sorted(hits.items())) if bad else "")
        return [CheckResult("content.blocked_words", status, reason, details, affects_readiness=False)]

    def stats(self) -> Mapping[str, Any]:
        with self._lock:
            return {"texts_checked": self.texts_checked, "texts_blocked": self.texts_blocked,
                    "inputs_blocked": self.inputs_blocked, "calls_flagged": self.calls_flagged,
                    "words": dict(self.hits), "policy": self.policy}
