"""Escaping for each consumer of text that came from a model, a case or a plugin.

Outputs and case text are hostile input as far as a report's reader is concerned: a model
can answer ``<img src=x onerror=...>``, ``[click](javascript:...)``, ``</details>`` or a
``|`` that breaks a pull-request comment; a control character makes ``junit.xml``
ill-formed; a right-to-left override or a zero-width space makes an answer *look*
different from what it is. Every reporter (and the terminal) passes such text through one
of the functions here, so each format has exactly one escaping rule.

``visible`` is the base of all of them: invisible and direction-changing characters are
shown as ``⟨U+202E⟩`` markers, so what a reviewer reads is what the model wrote.
"""

from __future__ import annotations

import re
from typing import Any

from gatekeeper.host.visible import SHOW as _SHOW
from gatekeeper.host.visible import visible

__all__ = ["md_code", "md_inline", "md_link_target", "terminal", "visible", "xml_text"]

def terminal(text: Any) -> str:
    """Text for a terminal line: escape sequences and bidi characters cannot act (ESC is a control)."""
    return visible(text)


def xml_text(text: Any) -> str:
    """Text (or an attribute value) that keeps ``junit.xml`` well-formed.

    ElementTree escapes ``<``, ``&`` and quotes but writes characters XML 1.0 forbids (most
    C0 controls) verbatim, so a parser then rejects the whole file; they become markers.
    """
    return visible(text)


# Markdown's punctuation that can open or close a construct mid-line (emphasis, links,
# images, code spans, strikethrough, table cells) is backslash-escaped (``_`` only at a word
# edge: inside a word it is no emphasis, and ``rouge_l`` stays readable); ``<``, ``>`` and
# ``&`` become entities, so no tag (``<img>``, ``</details>``) and no autolink survives.
# Without ``[``/``]`` unescaped no link or image can form, whatever scheme follows.
_MD_PUNCT = re.compile(r"([\\`*\[\]!|~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_inline(text: Any, *, limit: int | None = None) -> str:
    """Text that renders as itself in one Markdown line (a table cell, a list item).

    Newlines become spaces (a cell or item is one line). ``limit`` cuts the text before it
    is escaped, so an escape is never cut in half.
    """
    raw = visible(text).replace("\n", " ").replace("\t", " ")
    if limit is not None and len(raw) > limit:
        raw = raw[: limit - 1] + "…"
    raw = "".join(_MD_ENTITIES.get(ch, ch) for ch in raw)
    return _MD_PUNCT.sub(r"\\\1", raw)


def md_code(text: Any) -> str:
    """An inline code span holding ``text`` verbatim (a model spec, a run id).

    The fence is one backtick longer than the longest run inside, as CommonMark allows; a
    ``|`` is still escaped because GitHub splits table cells before parsing code spans.
    """
    raw = visible(text).replace("\n", " ")
    longest = max((len(m) for m in re.findall(r"`+", raw)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if raw.startswith("`") or raw.endswith("`") or not raw.strip() else ""
    return f"{fence}{pad}{raw.replace('|', chr(92) + '|')}{pad}{fence}"


_SAFE_SCHEMES = ("https://", "http://")


def md_link_target(url: str, fallback: str) -> str:
    """A link target for a report URL: http(s) or a relative path; anything else is ``fallback``.

    ``javascript:``, ``data:`` and other schemes are refused; parentheses, spaces and ``<>``
    are percent-encoded so the target cannot end the link early.
    """
    url = url.strip()
    scheme = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url)
    if not url or _SHOW.search(url) or (scheme and not url.lower().startswith(_SAFE_SCHEMES)):
        return fallback
    return "".join({"(": "%28", ")": "%29", " ": "%20", "<": "%3C", ">": "%3E"}.get(ch, ch) for ch in url)
