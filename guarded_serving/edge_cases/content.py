"""The output content check: the chatbot that says something outrageous, caught as it answers.

After the model returns (``after_call``), every text answer (a string, a list of
strings, or a dict holding one under ``text``/``answer``/``reply``/...) goes through
a check, built in or yours: ``check(text) -> reason or None``. A failed answer is an
edge case of the output, handled by the same policies as edge-case inputs:

``flag``
    Serve it, flag the call (its span is always exported, with the reason), and say
    so in the ``X-Guard-Output`` response header.
``reject``
    Answer HTTP 422 instead, naming the reason; the text never reaches the caller.
``fallback``
    Replace each failed answer with ``fallback(text)`` (e.g. a canned reply).

The built-in check (:func:`default_content_check`) refuses empty answers, blocked
terms (insults, threats, self-harm prompts; extend with ``blocked_terms``), shouting,
degenerate repetition, leaked secrets (private keys, API-key-like tokens) and script
injection. It is a floor, not a moderation model: plug a real classifier in as ``check``.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..component import Component
from ..errors import ConfigError, RejectedInputError
from ..health import DEGRADED, OK, CheckResult
from ..keys import OUTCOME
from ..outputs import extract_output, text_outputs

__all__ = ["BLOCKED_TERMS", "ContentCheck", "default_content_check"]

OUTPUT_HEADER = "X-Guard-Output"
POLICIES = ("flag", "reject", "fallback")
BLOCKED_TERMS = ("idiot", "stupid", "moron", "shut up", "i hate you", "kill yourself", "kill you",
                 "go die", "worthless", "loser", "dumbass", "retard")
_SECRET = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\b(?:sk|pk|ghp|xox[abp])[-_][A-Za-z0-9]{16,}\b|"
                     r"\bAKIA[0-9A-Z]{16}\b")
_SCRIPT = re.compile(r"<\s*script\b|javascript:", re.IGNORECASE)
_WORD = re.compile(r"\w+", re.UNICODE)


def default_content_check(text: str, *, blocked_terms: Sequence[str] = BLOCKED_TERMS) -> str | None:
    """Why ``text`` must not go out as an answer, or None when it may."""
    if not text.strip():
        return "the answer is empty"
    low = text.lower()
    for term in blocked_terms:
        if re.search(r"\b" + re.escape(term) + r"\b", low):
            return f"the answer contains the blocked term {term!r}"
    if _SECRET.search(text):
        return "the answer contains what looks like a secret (a private key or an access token)"
    if _SCRIPT.search(text):
        return "the answer contains script markup"
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 20 and sum(c.isupper() for c in letters) / len(letters) > 0.8:
        return "the answer is shouting (over 80% capital letters)"
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) >= 8:
        top = max(words.count(w) for w in set(words))
        if top / len(words) > 0.5:
            return f"the answer repeats one word {top} times in {len(words)}"
    if re.search(r"(.)\1{19,}", text):
        return "the answer repeats one character 20 or more times in a row"
    return None


class ContentCheck(Component):
    """Check every text answer; flag, reject or replace the ones that fail.

    Parameters
    ----------
    check : callable or True, default=True
        ``check(text) -> reason or None``; True uses :func:`default_content_check`.
    policy : {"flag", "reject", "fallback"}, default="flag"
    fallback : callable, optional
        ``fallback(text) -> replacement`` (required by ``policy="fallback"``).
    blocked_terms : sequence of str, optional
        Extra terms for the built-in check.
    degraded_rate : float, default=0.05
        Share of failed answers (since start) above which ``output.content`` is degraded.
    """

    name = "output_check"
    span_scope = "anomalous"
    provides = (OUTCOME,)  # it may withhold an answer: outcome accounting runs after it

    def __init__(self, check: Callable[[str], str | None] | bool = True, *, policy: str = "flag",
                 fallback: Callable[[str], Any] | None = None, blocked_terms: Sequence[str] = (),
                 degraded_rate: float = 0.05) -> None:
        self.check = check
        self.policy = policy
        self.fallback = fallback
        self.blocked_terms = tuple(blocked_terms)
        self.degraded_rate = degraded_rate
        self._lock = threading.Lock()
        self.answers = self.failed = self.rejected = self.replaced = 0
        self.last_reason: str | None = None

    def bind(self, context: Any = None) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"output_policy={self.policy!r} is invalid: expected one of {POLICIES}")
        if self.policy == "fallback" and not callable(self.fallback):
            raise ConfigError(f"output_fallback={self.fallback!r} is invalid: output_policy='fallback' needs a "
                              "callable fallback(text) -> replacement")
        if self.check is True:
            terms = BLOCKED_TERMS + self.blocked_terms
            self._check: Callable[[str], str | None] = lambda t: default_content_check(t, blocked_terms=terms)
        elif callable(self.check):
            self._check = self.check
        else:
            raise ConfigError(f"output_check={self.check!r} is invalid: expected True or a callable "
                              "check(text) -> reason or None")

    def after_call(self, call: Any) -> None:
        if call.error is not None:
            return
        texts = text_outputs(call.result)
        if texts is None:
            return
        failed = [(i, r) for i, r in ((i, self._check(t)) for i, t in enumerate(texts)) if r]
        with self._lock:
            self.answers += len(texts)
            self.failed += len(failed)
        if not failed:
            return
        i0, reason = failed[0]
        self.last_reason = reason
        text = f"{len(failed)} of {len(texts)} answers failed the content check: answer {i0}: {reason}"
        call.flag(**{"guard.output.flagged": True, "guard.output.rows": [i for i, _ in failed][:100],
                     "guard.output.reason": text[:1000], "guard.output.policy": self.policy})
        call.set_header(OUTPUT_HEADER, f"flagged; rows={','.join(str(i) for i, _ in failed[:50])}; "
                                       f"policy={self.policy}")
        if self.policy == "reject":
            with self._lock:
                self.rejected += 1
            raise RejectedInputError(f"answer withheld: {text}", details={"rows": [i for i, _ in failed],
                                                                          "reasons": [r for _, r in failed]})
        if self.policy == "fallback":
            with self._lock:
                self.replaced += len(failed)
            call.result = _replace(call.result, {i: self.fallback(texts[i]) for i, _ in failed})  # type: ignore[misc]

    def checks(self) -> Iterable[CheckResult]:
        with self._lock:
            n, bad = self.answers, self.failed
        rate = bad / n if n else 0.0
        details = {"answers": n, "failed": bad, "rate": rate, "policy": self.policy, "last_reason": self.last_reason}
        if n and rate > self.degraded_rate:
            return [CheckResult("output.content", DEGRADED, f"{bad} of {n} answers failed the content check "
                                f"({rate:.1%}); last: {self.last_reason}", details, affects_readiness=False)]
        return [CheckResult("output.content", OK, f"{bad} of {n} answers failed the content check ({self.policy})",
                            details, affects_readiness=False)]

    def stats(self) -> Mapping[str, Any]:
        with self._lock:
            return {"answers": self.answers, "failed": self.failed, "rejected": self.rejected,
                    "replaced": self.replaced}


def _replace(result: Any, new: dict[int, Any]) -> Any:
    """``result`` with the text answers at the given positions replaced."""
    if isinstance(result, str):
        return new.get(0, result)
    if isinstance(result, dict):
        out = extract_output(result)
        key = next(k for k, v in result.items() if v is out)
        return {**result, key: _replace(out, new)}
    return [new.get(i, t) for i, t in enumerate(result)]
