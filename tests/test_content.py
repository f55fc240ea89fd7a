"""The blocked-words output content check of the text example (services/content.py), on a guard in process."""

import pytest

from guarded_serving import ConfigError, Guard
from services.content import BlockedWords


def _guarded(component, reply):
    guard = Guard(name="content-test", components=[component])

    @guard
    def model(texts):
        return {"label": ["x"] * len(texts), "reply": [reply(t) for t in texts]}

    return guard, model


class TestBlockedWords:
    def test_clean_replies_pass_untouched(self):
        """Replies without a blocked word are returned as they are and counted as checked."""
        comp = BlockedWords(["idiot"])
        guard, model = _guarded(comp, lambda t: f"you said {t}")
        assert model(["hello", "fine"])["reply"] == ["you said hello", "you said fine"]
        assert comp.stats()["texts_checked"] == 2 and comp.stats()["texts_blocked"] == 0
        assert [c.status for c in comp.checks()] == ["ok"]

    def test_flag_names_rows_and_words(self):
        """A reply with a blocked word (any case, whole words only) is flagged, the reply kept."""
        comp = BlockedWords(["idiot"])
        guard, model = _guarded(comp, lambda t: f"you said {t}")
        out = model(["IDIOT!", "idiotic but fine", "ok"])
        assert out["reply"][0] == "you said IDIOT!"
        assert comp.stats()["texts_blocked"] == 1 and comp.stats()["words"] == {"idiot": 1}
        check = list(comp.checks())[0]
        assert check.name == "content.blocked_words" and check.status == "degraded"

    def test_fallback_withholds_offending_replies(self):
        """With policy='fallback' only the offending replies are replaced."""
        comp = BlockedWords(["moron"], policy="fallback", fallback_text="[withheld]")
        guard, model = _guarded(comp, lambda t: f"you said {t}")
        assert model(["a moron", "kind words"])["reply"] == ["[withheld]", "you said kind words"]

    def test_inputs_with_blocked_words_are_counted(self):
        """Inputs holding a blocked word are counted even when the reply does not repeat it."""
        comp = BlockedWords(["idiot"])
        guard, model = _guarded(comp, lambda t: "thanks")
        model(["you idiot", "hi"])
        assert comp.stats()["inputs_blocked"] == 1 and comp.stats()["texts_blocked"] == 0

    @pytest.mark.parametrize("kwargs", [{"words": []}, {"words": ["x"], "policy": "reject"}])
    def test_bad_configuration_is_refused_when_built(self, kwargs):
        """An empty word list or an unknown policy is a ConfigError when the guard is built."""
        with pytest.raises(ConfigError):
            Guard(name="content-bad", components=[BlockedWords(**kwargs)])
