"""A folder's database file names as data: how Litestream writes them into a replica,
how to read them back, and how to keep them out of reach of its config expansion.

Litestream replicates ``dir:`` member ``NAME`` to ``<replica URL>/NAME``. In S3 the key
holds the name as is. A ``file://`` replica's folder holds it *escaped* as Go escapes a
URL path (``a b.db`` is the folder ``a%20b.db``, ``$HOME.db`` stays ``$HOME.db``), and
Litestream reads a ``file://`` URL's path back without unescaping it: the escaping of a
member's URL must be Go's, byte for byte. A generated config file is expanded (``$VAR``,
``${VAR}``) before it is parsed, with no escape for ``$``: a ``$`` in a name is written
as ``${ASGI_LITESTREAM_DOLLAR}``, a variable whose value is ``$`` in the child's
environment (the expansion is one pass, so the ``$`` it yields is not expanded again).
"""

from __future__ import annotations

import posixpath
import string
from urllib.parse import urlsplit, urlunsplit

from .urls import join_url

DOLLAR_VAR = "ASGI_LITESTREAM_DOLLAR"
_DOLLAR_REF = "${" + DOLLAR_VAR + "}"

# Go's net/url, encodePath mode: bytes kept as they are; every other byte is %XX.
_KEPT = frozenset((string.ascii_letters + string.digits + "-_.~$&+,/:;=@").encode())
# ...and the bytes Go accepts unescaped in a path it was given (validEncoded).
_VALID = _KEPT | frozenset(b"!'()*[]%")


def go_escape(text: str) -> str:
    """``text`` (UTF-8) escaped as Go's ``url.URL`` escapes a path."""
    return "".join(chr(b) if b in _KEPT else f"%{b:02X}"
                   for b in text.encode("utf-8", "surrogateescape"))


def go_unescape(text: str) -> bytes | None:
    """The bytes a Go URL path stands for; None when an escape is malformed."""
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    index = 0
    while index < len(raw):
        if raw[index] == ord("%"):
            pair = raw[index + 1:index + 3]
            if len(pair) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in pair):
                return None
            out.append(int(pair, 16))
            index += 3
        else:
            out.append(raw[index])
            index += 1
    return bytes(out)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a database of a folder here (None: it can)."""
    if name in ("", ".", ".."):
        return "not a file name"
    if "/" in name or "\x00" in name:
        return "holds '/' or a NUL byte"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # Litestream 0.5.17 panics on such a file in a folder (a metrics label must be
        # UTF-8), and a YAML config cannot name it.
        return "not valid UTF-8"
    return None


def member_root(replica_url: str) -> str:
    """The folder of a ``file://`` replica that holds its members' folders, as
    Litestream names it (the URL's decoded path, escaped again)."""
    raw = urlsplit(replica_url).path
    decoded = go_unescape(raw)
    if decoded is None:
        return posixpath.normpath(raw)
    return posixpath.normpath(go_escape(decoded.decode("utf-8", "surrogateescape")))


def member_name(entry: str) -> tuple[str | None, str | None]:
    """(database file name, None) for a member folder of a ``file://`` replica, or
    (None, why not) for a folder that is not one Litestream wrote."""
    decoded = go_unescape(entry)
    if decoded is None or go_escape(decoded.decode("utf-8", "surrogateescape")) != entry:
        return None, "not a name as Litestream escapes it"
    try:
        name = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    problem = name_problem(name)
    return (None, problem) if problem else (name, None)


def member_url(replica_url: str, name: str) -> str:
    """The replica URL of the member ``name`` of a folder replicated to ``replica_url``,
    as Litestream builds it."""
    parts = urlsplit(replica_url)
    if parts.scheme != "file":
        return join_url(replica_url, name)  # S3 and the rest unescape the path: any escape
    decoded = go_unescape(parts.path)
    base = parts.path if decoded is None else decoded.decode("utf-8", "surrogateescape")
    joined = posixpath.normpath(base.rstrip("/") + "/" + name)
    return urlunsplit(parts._replace(path=go_escape(joined)))


def escape_dollars(text: str) -> str:
    """``text`` written so that Litestream's expansion of its config gives it back."""
    return text.replace("$", _DOLLAR_REF)


def escape_dollars_in_path(url: str) -> str:
    """``url`` with the ``$`` of its path (a file name's) escaped; its other parts
    may hold ``${VAR}`` references, which must stay."""
    parts = urlsplit(url)
    if "$" not in parts.path:
        return url
    return urlunsplit(parts._replace(path=escape_dollars(parts.path)))
