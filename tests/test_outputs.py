"""Output views and the output content check (the chatbot that says something outrageous)."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving import ConfigError, Guard, RejectedInputError
from guarded_serving.edge_cases.content import ContentCheck, default_content_check
from guarded_serving.outputs import extract_output, guess_output_kind, output_columns
from guarded_serving.testing import in_memory_tracer_provider


class TestOutputViews:
    @pytest.mark.parametrize("out,kind", [
        ([0.2, 0.9], "probabilities"), ([[0.2, 0.8], [0.5, 0.5]], "probabilities"), ([0, 2, 1], "classes"),
        ([3.5, -2.0], "values"), ("hi", "text"), (["a", "b"], "text"), ([["i1", "i2"], ["i3"]], "ranking"),
    ])
    def test_kinds_follow_the_answers(self, out, kind):
        """Probabilities, classes, values, texts and ranked lists are told apart."""
        assert guess_output_kind(out) == kind

    def test_probability_columns(self):
        """Confidence, margin, normalised entropy and class of class probabilities."""
        names, m = output_columns([[0.5, 0.5], [0.9, 0.1]], "probabilities")
        assert names == ["confidence", "margin", "entropy", "class"]
        np.testing.assert_allclose(m, [[0.5, 0.0, 1.0, 0.0], [0.9, 0.8, 0.4689955936, 0.0]], rtol=1e-6)

    def test_text_and_ranking_columns(self):
        """Length, emptiness and repetition of text answers; length and distinct share of rankings."""
        _, t = output_columns(["", "no no no no"], "text")
        assert t[0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0] and t[1, 3] == pytest.approx(0.75)
        _, r = output_columns([["a", "b", "a"]], "ranking")
        assert r.tolist() == [[3.0, pytest.approx(2 / 3)]]

    def test_dict_results(self):
        """Answers are found under the usual keys of a dict result."""
        assert extract_output({"label": [1], "probability": [0.3]}) == [0.3]
        assert extract_output({"reply": "hello"}) == "hello" and extract_output({"x": 1}) is None


class TestContentCheck:
    @pytest.mark.parametrize("text,fragment", [
        ("", "empty"), ("You are an IDIOT.", "blocked term 'idiot'"),
        ("here: -----BEGIN RSA PRIVATE KEY----- abc", "secret"), ("<script>alert(1)</script>", "script"),
        ("THIS IS A VERY LOUD ANSWER TO YOUR QUESTION", "shouting"), ("ok " * 10, "repeats one word"),
        ("Sure" + "!" * 25, "repeats one character"),
    ])
    def test_built_in_check_names_the_reason(self, text, fragment):
        """Each built-in rule refuses its kind of answer with a reason that names it."""
        assert fragment in default_content_check(text)

    def test_ordinary_answers_pass(self):
        """Ordinary replies pass the built-in check."""
        for t in ("The capital of France is Paris.", "I can help with that: first, open the settings page.",
                  "Stupidity is not a word I would use here, but skilled is."):
            assert default_content_check(t) is None, t

    def _chatbot(self, **kw):
        provider, exporter = in_memory_tracer_provider()
        g = Guard(name="bot", operational=False, output_check=True, trace_sample_ratio=0.0,
                  tracer_provider=provider, **kw)
        return g, g.wrap(lambda prompts: [p if p != "insult me" else "You idiot." for p in prompts]), exporter

    def test_flag_serves_and_exports_the_reason(self):
        """Under flag the answer goes out, the call is flagged and its span names the reason."""
        g, bot, exporter = self._chatbot()
        assert bot(["hello there", "insult me"]) == ["hello there", "You idiot."]
        span = exporter.get_finished_spans()[-1]
        assert span.attributes["guard.output.rows"] == (1,) and "idiot" in span.attributes["guard.output.reason"]
        assert g.stats()["output_check"]["failed"] == 1 and g.stats()["flagged"] == 1

    def test_reject_withholds_the_answer(self):
        """Under reject the caller gets a rejection (HTTP 422 in BentoML), counted as rejected."""
        g, bot, _ = self._chatbot(output_policy="reject")
        with pytest.raises(RejectedInputError, match="answer withheld.*idiot"):
            bot(["insult me"])
        s = g.stats()
        assert s["rejected"] == 1 and s["errors"] == 0 and s["output_check"]["rejected"] == 1

    def test_fallback_replaces_only_the_failed_answers(self):
        """Under fallback each failed answer is replaced; the others are kept."""
        g, bot, _ = self._chatbot(output_policy="fallback", output_fallback=lambda t: "Let's keep it friendly.")
        assert bot(["hi", "insult me"]) == ["hi", "Let's keep it friendly."]

    def test_user_check_and_health(self):
        """A user check plugs in; health degrades when many answers fail."""
        g = Guard(name="bot", operational=False, output_check=lambda t: "mentions a competitor" if "acme" in t
                  else None)
        bot = g.wrap(lambda p: {"reply": p})
        for p in ("acme is better",) * 3 + ("ok",):
            bot(p)
        assert g.health()["checks"]["output.content"]["status"] == "degraded"
        assert "competitor" in g.health()["checks"]["output.content"]["reason"]

    def test_bad_settings_name_the_field(self):
        """A fallback policy without a fallback is refused, naming the setting."""
        with pytest.raises(ConfigError, match="output_fallback=None"):
            Guard(name="m", output_check=True, output_policy="fallback")
        assert ContentCheck().stats()["answers"] == 0
