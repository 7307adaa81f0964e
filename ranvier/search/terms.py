"""A search term as typed by a user, parsed once and rendered for SQLite FTS5 and PostgreSQL text search.

The syntax is the small web-search one clients expect (and Synapse accepts): words, which match any word
starting with them (``mart`` finds "martians"); ``"quoted phrases"``, whose words must follow each other;
``-word`` or ``-"phrase"``, which must not occur; and ``or`` between two items, either of which may occur.
Everything else is AND. Punctuation separates words, as both engines' tokenizers do, so nothing a user types
reaches the engines' own query syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Unicode letters and digits (``\w`` without the underscore), as FTS5's unicode61 and PostgreSQL split.
_WORD = re.compile(r"[^\W_]+")
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(-?)([^\s"]+)')
MAX_ITEMS = 32  # more than anyone types; bounds the size of the SQL query text


@dataclass(frozen=True, slots=True)
class Term:
    """One word (prefix-matched) or a phrase (its words in sequence; the last one prefix-matched too)."""

    words: tuple[str, ...]

    def fts5(self) -> str:
        # FTS5 marks the last token of a string followed by '*' as a prefix.
        return '"' + " ".join(self.words) + '"*'

    def tsquery(self) -> str:
        parts = [f"{w}:*" if i == len(self.words) - 1 else w for i, w in enumerate(self.words)]
        return parts[0] if len(parts) == 1 else "(" + " <-> ".join(parts) + ")"


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """All of ``required`` (each an OR of terms) and none of ``excluded``."""

    required: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...]

    @property
    def empty(self) -> bool:
        return not self.required

    def words(self) -> list[str]:
        """The words searched for (not the excluded ones), in order, once each."""
        seen = dict.fromkeys(w for group in self.required for term in group for w in term.words)
        return list(seen)

    def fts5(self) -> str:
        """An FTS5 MATCH expression; only double-quoted strings, so no user text is read as syntax."""
        groups = [" OR ".join(t.fts5() for t in g) for g in self.required]
        text = " AND ".join(
            f"({g})" if len(group) > 1 else g for g, group in zip(groups, self.required, strict=True)
        )
        for term in self.excluded:
            text = f"({text}) NOT {term.fts5()}"
        return text

    def tsquery(self) -> str:
        """A ``to_tsquery`` text: words of letters and digits only, so again no user text is syntax."""
        groups = [" | ".join(t.tsquery() for t in g) for g in self.required]
        parts = [f"({g})" if len(group) > 1 else g for g, group in zip(groups, self.required, strict=True)]
        parts += [f"!{t.tsquery()}" for t in self.excluded]
        return " & ".join(parts)


def _term(text: str) -> Term | None:
    words = tuple(w.lower() for w in _WORD.findall(text))
    return Term(words) if words else None


def parse_search_term(text: str) -> SearchQuery:
    """Parse what the user typed; a query with nothing to look for has ``empty`` set."""
    required: list[list[Term]] = []
    excluded: list[Term] = []
    join_next = False
    for match in _TOKEN.finditer(text):
        negated = bool(match[1] or match[3])
        raw = match[2] if match[2] is not None else match[4]
        if match[2] is None and raw.lower() == "or" and not negated:
            join_next = bool(required)
            continue
        # An unquoted token with punctuation inside ("e-mail", "foo.bar") is a phrase of its words.
        term = _term(raw)
        if term is None:
            continue
        if negated:
            excluded.append(term)
        elif join_next:
            required[-1].append(term)
        else:
            required.append([term])
        join_next = False
        if len(required) + len(excluded) >= MAX_ITEMS:
            break
    return SearchQuery(tuple(tuple(g) for g in required), tuple(excluded))


def highlights(query: SearchQuery, texts: list[str]) -> list[str]:
    """The words to highlight in ``texts``: those searched for, and each word of the texts that one of
    them matched (a word starting with a searched word, as the search matched it), in order, once each."""
    searched = query.words()
    out = dict.fromkeys(searched)
    for text in texts:
        for word in _WORD.findall(text):
            lower = word.lower()
            if any(lower.startswith(s) for s in searched):
                out.setdefault(word)
    return list(out)
