"""The image and text examples served by a real `bentoml serve` on 127.0.0.1: their edge cases are flagged,
held-out inputs mostly not, and the text model's replies go through the output content check."""

from pathlib import Path

import numpy as np
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port
from services.replay import flagged_rows

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "services" / "artifacts"

pytestmark = pytest.mark.integration


def _serve(target, env):
    return BentoServer(target, free_port(), cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def digits_data():
    from services import train_digits

    d = ARTIFACTS / "digits"
    if not (d / "profile.npz").exists():
        train_digits.train(d)
    x_test = np.load(d / "reference.npz")["X_test"]
    return x_test[:120], train_digits.edge_cases(x_test[120:], n=20, seed=3)


@pytest.fixture(scope="module")
def sentiment_data():
    from services import train_sentiment

    d = ARTIFACTS / "sentiment"
    if not (d / "profile.npz").exists():
        train_sentiment.train(d)
    test = train_sentiment.load_texts(d)["test"]
    return test[:120], train_sentiment.edge_cases(test[120:], n=20, seed=3)


@pytest.fixture(scope="module")
def digits_server(digits_data, tmp_path_factory):
    env = {"GUARDED_DIGITS_DIR": str(ARTIFACTS / "digits"),
           "GUARDED_STATE_DIR": str(tmp_path_factory.mktemp("state-digits"))}
    with _serve("services.digits:DigitClassifier", env) as server:
        yield server


@pytest.fixture(scope="module")
def sentiment_server(sentiment_data, tmp_path_factory):
    env = {"GUARDED_SENTIMENT_DIR": str(ARTIFACTS / "sentiment"),
           "GUARDED_STATE_DIR": str(tmp_path_factory.mktemp("state-sentiment"))}
    with _serve("services.sentiment:SentimentAnalyzer", env) as server:
        yield server


def _post(server, api, field, inputs):
    inputs = inputs.tolist() if isinstance(inputs, np.ndarray) else list(inputs)
    return requests.post(f"{server.url}/{api}", json={field: inputs}, timeout=30)


class TestDigits:
    def test_held_out_images_mostly_not_flagged(self, digits_server, digits_data):
        """120 held-out digits in batches of 12 are answered with labels, and at most 5% of them flagged."""
        clean, _ = digits_data
        flagged = 0
        for i in range(0, len(clean), 12):
            r = _post(digits_server, "classify", "images", clean[i:i + 12])
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["label"]) == 12 and all(0 <= lbl <= 9 for lbl in body["label"])
            assert r.headers["X-Guard-Edge"].startswith(("ok", "flagged"))
            flagged += len(flagged_rows(r))
        assert flagged <= 0.05 * len(clean)

    @pytest.mark.parametrize("kind", ["blank", "negative", "shifted", "letters", "noise"])
    def test_edge_cases_flagged(self, digits_server, digits_data, kind):
        """A batch of 4 held-out digits then 20 edge-case images: most edge rows flagged and explained."""
        clean, edge = digits_data
        r = _post(digits_server, "classify", "images", np.concatenate([clean[:4], edge[kind]]))
        assert r.status_code == 200, r.text
        rows = flagged_rows(r)
        assert len(rows & set(range(4, 24))) >= 15, (kind, r.headers.get("X-Guard-Edge"))
        assert r.headers["X-Guard-Edge-Reason"].startswith("row ")

    def test_stats_count_flagged_rows(self, digits_server, digits_data):
        """The guard's stats count the rows it flagged."""
        _, edge = digits_data
        before = requests.get(f"{digits_server.url}/guard/stats", timeout=10).json()["edge_cases"]["rows_flagged"]
        r = _post(digits_server, "classify", "images", edge["blank"][:3])
        after = requests.get(f"{digits_server.url}/guard/stats", timeout=10).json()["edge_cases"]["rows_flagged"]
        assert len(flagged_rows(r)) == 3 and after - before == 3

    def test_wrong_shape_is_a_4xx(self, digits_server):
        """Images that are not 8x8 get a 4xx naming the input, never a 500."""
        r = _post(digits_server, "classify", "images", np.zeros((2, 4, 4)))
        assert 400 <= r.status_code < 500 and "images" in r.text


class TestSentiment:
    def test_held_out_texts_mostly_not_flagged(self, sentiment_server, sentiment_data):
        """120 held-out texts in batches of 12 are answered, and at most 5% of them flagged."""
        clean, _ = sentiment_data
        flagged = 0
        for i in range(0, len(clean), 12):
            r = _post(sentiment_server, "analyze", "texts", clean[i:i + 12])
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body["sentiment"]) <= {"positive", "neutral", "negative"} and len(body["reply"]) == 12
            flagged += len(flagged_rows(r))
        assert flagged <= 0.05 * len(clean)

    @pytest.mark.parametrize("kind", ["empty", "capitals", "html"])
    def test_edge_cases_flagged(self, sentiment_server, sentiment_data, kind):
        """A batch of 4 held-out texts then 20 edge-case texts: most edge rows flagged and explained."""
        clean, edge = sentiment_data
        r = _post(sentiment_server, "analyze", "texts", clean[:4] + edge[kind])
        assert r.status_code == 200, r.text
        rows = flagged_rows(r)
        assert len(rows & set(range(4, 24))) >= 15, (kind, r.headers.get("X-Guard-Edge"))
        assert r.headers["X-Guard-Edge-Reason"].startswith("row ")

    def test_content_check_flags_replies(self, sentiment_server):
        """Replies that repeat a blocked term are flagged by the output content check, and counted in health."""
        texts = ["What a stupid idea, the author is an idiot.", "A clear and useful explanation."]
        r = _post(sentiment_server, "analyze", "texts", texts)
        assert r.status_code == 200
        assert r.headers["X-Guard-Output"].startswith("flagged; rows=0;")
        assert "idiot" in r.json()["reply"][0]
        ok = _post(sentiment_server, "analyze", "texts", texts[1:])
        assert ok.status_code == 200 and "X-Guard-Output" not in ok.headers
        check = requests.get(f"{sentiment_server.url}/guard/health", timeout=10).json()["checks"]["output.content"]
        assert check["details"]["failed"] >= 1 and "blocked term" in check["details"]["last_reason"]

    def test_not_a_list_of_texts_is_a_4xx(self, sentiment_server):
        """An input that is not a list of strings gets a 4xx, never a 500."""
        r = requests.post(f"{sentiment_server.url}/analyze", json={"texts": {"a": 1}}, timeout=30)
        assert 400 <= r.status_code < 500
