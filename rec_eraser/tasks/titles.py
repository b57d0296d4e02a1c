"""Readable item titles for prompts.

MovieLens-100K's titles (RecBole's ``movie_title`` token_seq column) are the title words
without the year (the year is a separate column), with articles moved to the end as
library catalogues do: "Usual Suspects, The", "Blue Angel, The (Blaue Engel, Der)".
:func:`readable_title` moves such a trailing article back to the front of the title and of
each parenthesised part ("The Usual Suspects", "The Blue Angel (Der Blaue Engel)") and
collapses whitespace; other titles (LastFM artists, Steam games) pass through unchanged.
Years are not added: two items with the same title are kept apart in LLaRA's candidate sets.
"""

from __future__ import annotations

import re

from rec_eraser.data import Dataset

#: Articles that catalogues move to the end of a title ("Boot, Das"; "Postino, Il").
ARTICLES = ("The", "A", "An", "Il", "La", "Le", "Les", "L'", "Der", "Das", "Die", "El")

_TRAILING = re.compile(r"(?P<rest>.+), (?P<article>" + "|".join(re.escape(a) for a in ARTICLES) + r")")
_GROUP = re.compile(r"\(([^()]*)\)")
_MAIN = re.compile(r"(?P<main>[^()]*?)(?P<tail> ?\(.*)?")


def _front(part: str) -> str:
    m = _TRAILING.fullmatch(part)
    if m is None:
        return part
    article = m["article"]
    return article + m["rest"] if article.endswith("'") else f"{article} {m['rest']}"


def readable_title(raw: str) -> str:
    """``raw`` with whitespace collapsed and catalogue-style trailing articles moved to the front."""
    text = _GROUP.sub(lambda g: f"({_front(g[1].strip())})", " ".join(raw.split()))
    m = _MAIN.fullmatch(text)
    return text if m is None else _front(m["main"]) + (m["tail"] or "")


def item_titles(dataset: Dataset, items: list[str] | None = None) -> dict[str, str]:
    """Item id -> readable title for ``items`` (default: every interacted item); the id where there is no title."""
    return {item: readable_title(dataset.title(item)) for item in (dataset.items if items is None else items)}
