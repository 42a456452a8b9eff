"""Every URL or message printed anywhere passes through here first, so no password reaches a log, a console or an answer."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_SECRET_QUERY = re.compile(r"(?i)\b(\w*(?:password|passwd|pwd))=[^&#\s]*")  # password=, and libpq's sslpassword=


def redact_url(url: str) -> str:
    """``url`` safe to print: its password (user info, or a ``password=``/``sslpassword=`` query value) becomes ``***``.

    Malformed values are handled too, since a settings error echoes them: everything from the first
    ``:`` of the user info to the last ``@`` is hidden, so a password holding ``@`` or ``/`` never shows.
    """
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    userinfo, at, rest = url[start:].rpartition("@")
    user, _, password = userinfo.partition(":")
    if at and password:
        url = f"{url[:start]}{user}:***@{rest}"
    return _SECRET_QUERY.sub(r"\1=***", url)


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url` (for driver and log messages)."""
    return _URL_IN_TEXT.sub(lambda found: redact_url(found.group()), text)
