"""Prepare the text example (a lexicon sentiment model) and save its artifacts.

    python -m services.train_sentiment [--out DIR]

Nothing is downloaded. The model is VADER (``vaderSentiment``, whose lexicon of
7,500 rated words ships inside the package); the texts are English prose from
Python's own documentation (``pydoc_data.topics``, in the standard library),
cut into texts of one to three sentences: the traffic this example service is
profiled on. Writes to DIR (default ``services/artifacts/sentiment``):

- ``texts.json``   ``{"train": [...], "test": [...]}`` (70/30 split of the texts)
- ``profile.npz``  the edge-case profile of the training texts (text view, see
  :func:`text_view`), with VADER's compound score of each as the reference predictions

:func:`edge_cases` makes the texts the example's guard must flag: empty texts,
texts in capitals only, and texts pasted with their HTML markup.
"""

from __future__ import annotations

import argparse
import json
import re
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parent / "artifacts" / "sentiment"


def corpus() -> list[str]:
    """English prose from the stdlib's ``pydoc_data.topics``: texts of 1-3 sentences (deterministic)."""
    from pydoc_data.topics import topics

    texts: list[str] = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            lines = [ln.strip() for ln in para.split("\n")]
            if not lines or re.fullmatch(r"[*=\-~^]+", lines[-1] or "x"):
                continue  # a heading's underline
            text = " ".join(lines).strip()
            if len(text) < 40 or ">>>" in text or "::=" in text or not text[0].isupper() or text[-1] not in ".:":
                continue  # code, grammar, fragments
            if sum(c.isalpha() or c == " " for c in text) / len(text) < 0.85:
                continue
            sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)
            i = 0
            while i < len(sentences):
                k = 1 + zlib.crc32(sentences[i].encode()) % 3
                texts.append(" ".join(sentences[i:i + k]))
                i += k
    return texts


def load_split(seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, test) texts, a 70/30 random split of :func:`corpus`."""
    texts = corpus()
    idx = np.random.default_rng(seed).permutation(len(texts))
    cut = int(0.7 * len(texts))
    return [texts[i] for i in idx[:cut]], [texts[i] for i in idx[cut:]]


class LexiconSentiment:
    """VADER's lexicon sentiment with a short reply per text.

    ``predict(texts)`` gives, per text, a reply that quotes the words that drove
    the score, e.g. ``"Sounds positive (great, wonderful)."`` (a model whose
    output repeats its input, as chatbots do, and so may say whatever its users
    said), the sentiment (``positive`` if VADER's compound score is >= 0.05,
    ``negative`` if <= -0.05, else ``neutral``) and the compound score. The reply
    comes first: it is the answer the guard's output content check reads.
    """

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()
        self.lexicon = self.analyzer.lexicon

    def predict(self, texts: Sequence[str]) -> dict[str, list[Any]]:
        labels, scores, replies = [], [], []
        for text in texts:
            c = float(self.analyzer.polarity_scores(text)["compound"])
            label = "positive" if c >= 0.05 else "negative" if c <= -0.05 else "neutral"
            words = [w for w in re.findall(r"[a-z']+", text.lower()) if w in self.lexicon]
            words = sorted(dict.fromkeys(words), key=lambda w: -abs(self.lexicon[w]))[:3]
            labels.append(label)
            scores.append(round(c, 4))
            replies.append(f"Sounds {label}" + (f" ({', '.join(words)})." if words else "."))
        return {"reply": replies, "sentiment": labels, "compound": scores}


_MARKUP = re.compile(r"</?[A-Za-z!][^<>]{0,400}>|&(?:[a-zA-Z]{2,8}|#\d{1,6});")


def markup(texts: Sequence[str]) -> np.ndarray:
    """Share of each text's characters inside HTML/XML tags or entities, shape (n, 1).

    A user descriptor added to the text view (``embed=``): the built-in descriptors
    (non-letter share, out-of-vocabulary share) barely move when a sentence of
    this prose, already full of quotes and symbols, is pasted inside a few tags.
    """
    return np.array([[sum(map(len, _MARKUP.findall(t))) / len(t) if t else 0.0] for t in texts])


def text_view(train_texts: Sequence[str], seed: int = 0) -> Any:
    """The example's text view: the built-in descriptors plus :func:`markup`, its vocabulary
    fitted on a random half of the training texts.

    The half matters: a vocabulary learnt from every profiled text gives every one of
    them an out-of-vocabulary share of 0, so any new word in a held-out text lies
    outside the training range and clean texts get flagged (8% instead of 1% here).
    """
    from guarded_serving.views import make_view

    idx = np.random.default_rng(seed).permutation(len(train_texts))[:len(train_texts) // 2]
    return make_view("text", embed="services.train_sentiment:markup").fit([train_texts[i] for i in idx])


def train(out: Path = DEFAULT_DIR, seed: int = 0) -> Path:
    train_texts, test_texts = load_split(seed)
    model = LexiconSentiment()
    pred_train = np.array(model.predict(train_texts)["compound"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "texts.json").write_text(json.dumps({"train": train_texts, "test": test_texts}))
    from guarded_serving.edge_cases import build_profile

    prof = build_profile(train_texts, view=text_view(train_texts, seed), predictions=pred_train,
                         calibration_fraction=0.3, seed=seed,
                         source="pydoc_data.topics prose, 1-3 sentences per text (train split)")
    prof.save(out / "profile.npz")
    labels = model.predict(test_texts)["sentiment"]
    shares = {k: labels.count(k) / len(labels) for k in ("positive", "neutral", "negative")}
    print(f"prepared sentiment model (VADER): {len(train_texts)} training texts, test labels "
          + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + f"; artifacts in {out}")
    return out


def load_texts(artifact_dir: Path = DEFAULT_DIR) -> dict[str, list[str]]:
    path = Path(artifact_dir) / "texts.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m services.train` first")
    return json.loads(path.read_text())


# -- edge cases -----------------------------------------------------------------------------

_HTML = [
    '<div class="review-body"><p>{}</p></div>',
    '<html><body><span style="font-weight:bold;color:#333">{}</span><br/></body></html>',
    '<p class="MsoNormal"><span lang="EN-US" style="font-size:11pt;font-family:Calibri">{}</span></p>',
    '<td><a href="https://example.com/item?id=1234&amp;ref=abc">{}</a></td>',
    '<![CDATA[{}]]><meta charset="utf-8"><div>',
]


def edge_cases(test_texts: Sequence[str], n: int = 40, seed: int = 0) -> dict[str, list[str]]:
    """The example's edge cases, ``n`` texts each (from held-out texts where they derive from one)."""
    rng = np.random.default_rng(seed)
    base = [test_texts[i] for i in rng.permutation(len(test_texts))[:n]]
    empties = ["", " ", "\n", "\t ", "  \n  "]
    return {
        "empty": [empties[i % len(empties)] for i in range(n)],
        "capitals": [t.upper() for t in base],
        "html": [_HTML[i % len(_HTML)].format(t) for i, t in enumerate(base)],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    train(args.out, args.seed)


if __name__ == "__main__":
    main()
