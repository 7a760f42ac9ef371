"""Characters that must be seen, not obeyed: controls, bidi overrides, zero-width marks.

An answer containing a right-to-left override or a zero-width space *looks* different from
what it is; an ESC or a bare carriage return rewrites the terminal line it is printed on.
:func:`visible` shows each as a ``⟨U+202E⟩`` marker. It lives in the host layer because the
terminal (``Session.echo``) and every reporter (:mod:`gatekeeper.reports.escaping`) use it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SHOW", "visible"]

# Bidirectional embeddings, overrides, isolates and marks; zero-width and invisible
# formatting characters; the byte-order mark. Shown as markers, never passed through.
_INVISIBLE = (
    "\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f"
    "\ufeff\ufff9\ufffa\ufffb"
)
# C0 controls except tab and newline, DEL, C1 controls, lone surrogates, the noncharacters
# XML 1.0 refuses (U+FFFE, U+FFFF).
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff"
SHOW = re.compile(f"[{_INVISIBLE}{_CONTROL}]")


def _marker(match: re.Match[str]) -> str:
    return f"⟨U+{ord(match.group()):04X}⟩"


def visible(text: Any) -> str:
    """``text`` with control, bidi and zero-width characters shown as ``⟨U+XXXX⟩`` markers.

    ``\\r`` is a control character too: a bare carriage return can overwrite a terminal
    line, so it is shown rather than obeyed. Tab and newline pass through.
    """
    return SHOW.sub(_marker, "" if text is None else str(text))


