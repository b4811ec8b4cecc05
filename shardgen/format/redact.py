"""What may reach a terminal, a log or a file we write: URLs without their passwords, names without control
characters.

`redact` is the one place a URL's credentials are hidden (`https://user:secret@host` → `https://user:****@host`),
`printable_name` the one place a name read from data (an image's file name, a tar member, a sample key) is made
safe to print: an ESC sequence in a file name would clear the screen or fake a summary line. `error_line`
(`errors.py`) passes every command's last line through both; messages built elsewhere call them where they name
a URL or a name; `redact_fields` cleans a configuration before it is written to `params.json` or a checkpoint.
"""

from __future__ import annotations

import re
import unicodedata

# scheme://user:password@host: the password may hold raw '/' or '@' (AWS secret keys hold '/'), so it runs to the
# first '@' whose host is followed by the end of the URL; the user name never holds '/', so a path's '@' is no match
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s:@]*):\S*?@(?P<host>[^/?#\s@]*)(?=[/?#\s]|$)")
# scheme://token@host: a lone token (no ':') in the URL's authority
_TOKEN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s:]+)@(?P<host>[^/?#\s@]*)")

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def redact(text: object) -> str:
    """`text` (a URL, a path, or a message holding URLs) with the credentials of every URL hidden, as pip does:
    `https://user:secret@host/x` → `https://user:****@host/x`; a lone token (`https://token@host`) → `****@host`."""
    text = str(text)
    if "@" not in text:
        return text
    text = _PASSWORD.sub(lambda m: f"{m['head']}:****@{m['host']}", text)
    return _TOKEN.sub(lambda m: f"{m['scheme']}****@{m['host']}", text)


def has_secret(text: object) -> bool:
    """Whether `text` holds a URL with credentials (which `redact` would hide)."""
    return redact(text) != str(text)


def redact_fields(value: object) -> object:
    """A copy of `value` (nested dicts, lists, tuples) with every string passed through `redact`: a configuration
    as it may be written to `params.json` or a checkpoint."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_fields(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_fields(v) for v in value)
    return value


def _unsafe(ch: str) -> bool:
    """Control characters (C0, DEL, C1), line and paragraph separators, and the bidirectional overrides that can
    reorder what a terminal shows."""
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI


def printable_name(name: object, *, keep_lines: bool = False) -> str:
    """`name` safe to print on one line: control characters written as escapes (`\\x1b`, `\\n`, `\\u202e`), the
    rest kept as it is (accents, CJK and emoji stay readable). `keep_lines`: newlines and tabs kept (a message of
    several lines, which `errors.error_line` joins)."""
    text = str(name)
    if text.isprintable():  # the common case: nothing to escape (also true of plain spaces)
        return text
    return "".join(ch if keep_lines and ch in "\n\t" else ch.encode("unicode_escape").decode("ascii") if _unsafe(ch)
                   else ch for ch in text)
