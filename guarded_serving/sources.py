"""Label source tags: where a true outcome came from (``"model"``: it exists because the model
acted, e.g. a click on a recommended item; ``"exploration"``: from the random-exposure slice;
anything else, e.g. ``"organic"``). One rule, shared by the feedback API (performance) and the
feedback-loop check, which may not import each other."""

from __future__ import annotations

import re

__all__ = ["SOURCE_PATTERN", "source_problem"]

#: What a label's source tag may be: 1-32 letters, digits, ``_ . : -``, starting with a letter or digit.
SOURCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}")


def source_problem(source: object) -> str | None:
    """Why ``source`` is not a usable tag, or None when it is (None itself is fine: untagged)."""
    if source is None:
        return None
    if not isinstance(source, str):
        return f"source {source!r:.40} is a {type(source).__name__}: expected a short string tag such as 'model'"
    if not SOURCE_PATTERN.fullmatch(source):
        return (f"source {source!r:.40} is invalid: expected 1-32 letters, digits, '_', '.', ':' or '-' (starting "
                "with a letter or digit), e.g. 'model', 'organic' or 'exploration'")
    return None
