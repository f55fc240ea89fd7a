"""The image and text examples in process (no server): training, their edge cases, their guards."""

import numpy as np
import pytest

from guarded_serving import Guard


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    from services import train_digits

    return train_digits.train(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def sentiment_dir(tmp_path_factory):
    from services import train_sentiment

    return train_sentiment.train(tmp_path_factory.mktemp("sentiment"))


class TestDigitsEdgeCases:
    def test_each_kind_is_what_it_says(self):
        """Blank images are zero, negatives invert 0-16, shifted digits keep their shape, letters are ink or not."""
        from services import train_digits

        _, x_test, _, _ = train_digits.load_split()
        e = train_digits.edge_cases(x_test, n=10, seed=1)
        assert all(v.shape == (10, 8, 8) for v in e.values())
        assert not e["blank"].any()
        assert set(np.unique(e["letters"])) <= {0.0, 16.0}
        assert e["noise"].min() >= 0 and e["noise"].max() <= 16
        base = x_test[np.random.default_rng(1).permutation(len(x_test))[:10]]
        np.testing.assert_array_equal(e["negative"], 16 - base)
        assert (e["shifted"].sum(axis=(1, 2)) < base.sum(axis=(1, 2))).all()  # part of the digit left the frame

    def test_shift_moves_towards_a_corner(self):
        """A single lit pixel moves by 3 rows and 3 columns."""
        from services.train_digits import shift

        img = np.zeros((1, 8, 8))
        img[0, 4, 4] = 16
        out = shift(img, np.random.default_rng(0))
        (r,), (c,) = np.nonzero(out[0])
        assert abs(r - 4) == 3 and abs(c - 4) == 3


class TestDigitsGuard:
    def test_profile_keeps_the_array_view(self, digits_dir):
        """The training writes a profile read through the array view, and a model that classifies (n, 8, 8)."""
        from guarded_serving.edge_cases import load_profile
        from services import train_digits

        prof = load_profile(digits_dir / "profile.npz")
        assert prof.view.kind == "array" and "mean_c0" in prof.feature_names
        model = train_digits.load_model(digits_dir)
        x_test = np.load(digits_dir / "reference.npz")["X_test"]
        assert model.predict(x_test[:5]).shape == (5,)

    def test_guard_flags_edge_images_not_clean_ones(self, digits_dir):
        """A guard on the profile flags blank, negative, letter and noise images; held-out digits rarely."""
        from services import train_digits

        x_test = np.load(digits_dir / "reference.npz")["X_test"]
        guard = Guard(name="digits-test", profile=str(digits_dir / "profile.npz"))
        model = train_digits.load_model(digits_dir)

        @guard
        def classify(images):
            return model.predict(images)

        classify(x_test[:100])
        clean = guard.stats()["edge_cases"]["rows_flagged"]
        assert clean <= 5
        edge = train_digits.edge_cases(x_test[100:], n=10)
        for kind in ("blank", "negative", "letters", "noise"):
            before = guard.stats()["edge_cases"]["rows_flagged"]
            classify(edge[kind])
            assert guard.stats()["edge_cases"]["rows_flagged"] - before >= 8, kind


class TestSentiment:
    def test_corpus_ships_with_python(self):
        """The texts come from the standard library: over a thousand, none empty, none code."""
        from services.train_sentiment import corpus

        texts = corpus()
        assert len(texts) > 1000 and all(t.strip() and ">>>" not in t for t in texts)

    def test_markup_share(self):
        """The markup descriptor is the share of characters inside tags or entities."""
        from services.train_sentiment import markup

        got = markup(["plain prose, a < b.", "<p>hi</p>", "", "a &amp; b"])
        assert got.shape == (4, 1)
        assert got[0, 0] == 0 and got[1, 0] == pytest.approx(7 / 9) and got[2, 0] == 0 and got[3, 0] > 0

    def test_model_replies_first(self):
        """The model's answer is a reply quoting the words that drove the score, then sentiment and score."""
        from services.train_sentiment import LexiconSentiment

        out = LexiconSentiment().predict(["What a wonderful, great day.", "The function returns None."])
        assert list(out) == ["reply", "sentiment", "compound"]
        assert out["sentiment"] == ["positive", "neutral"] and "wonderful" in out["reply"][0]

    def test_guard_flags_edge_texts_and_blocked_replies(self, sentiment_dir):
        """A guard on the profile flags empty, capitals and HTML texts, and a reply with a blocked term."""
        from services import train_sentiment

        test = train_sentiment.load_texts(sentiment_dir)["test"]
        guard = Guard(name="sentiment-test", profile=str(sentiment_dir / "profile.npz"), output_check=True)
        model = train_sentiment.LexiconSentiment()

        @guard
        def analyze(texts):
            return model.predict(texts)

        analyze(test[:100])
        assert guard.stats()["edge_cases"]["rows_flagged"] <= 5
        edge = train_sentiment.edge_cases(test[100:], n=10)
        for kind in ("empty", "capitals", "html"):
            before = guard.stats()["edge_cases"]["rows_flagged"]
            analyze(edge[kind])
            assert guard.stats()["edge_cases"]["rows_flagged"] - before >= 8, kind
        analyze(["You idiot, what a stupid text."])
        assert guard.stats()["output_check"]["failed"] == 1


def test_services_import_without_artifacts(tmp_path):
    """A fresh checkout (no trained artifacts) can still import both example services."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "GUARDED_DIGITS_DIR": str(tmp_path), "GUARDED_SENTIMENT_DIR": str(tmp_path),
           "GUARDED_STATE_DIR": str(tmp_path), "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", "import services.digits, services.sentiment"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
