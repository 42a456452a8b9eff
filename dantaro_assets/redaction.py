"""Every URL or message printed anywhere passes through here first, so no password reaches a log, a console or an answer."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_SECRET_QUERY = re.compile(r"(?i)\b(\w*(?:password|passwd|pwd))=[^&#\s]*")  # password=, and libpq's sslpassword=
_QUERY_VALUE = re.compile(r"=[^&#]*")
_TOKEN = re.compile(r"(?=.*[0-9]|(?=.*[a-z])(?=.*[A-Z]))[A-Za-z0-9_.~-]{16,}")  # random, unlike a word like my-webhook-path


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


def redact_webhook_url(url: str) -> str:
    """A webhook URL safe to print: :func:`redact_url`, every query value, and every path segment that looks
    like a token (16+ characters with a digit or mixed case) become ``***``.

    Chat webhooks carry their credential in the path (``https://hooks.slack.com/services/T0/B0/<token>``,
    ``https://discord.com/api/webhooks/<id>/<token>``), so a redacted password alone would leak them.
    """
    parts = urlsplit(redact_url(url))
    path = "/".join("***" if _TOKEN.fullmatch(segment) else segment for segment in parts.path.split("/"))
    return urlunsplit(parts._replace(path=path, query=_QUERY_VALUE.sub("=***", parts.query)))
