"""One TLS context per process for every HTTP client the project makes.

httpx builds a fresh ``ssl.SSLContext`` for each client it creates, reading the whole CA bundle each time (20 ms
of CPU): once per Upbit client, webhook delivery and replay handle in every run worker, and once per poll in a
loop of ``httpx.get`` calls. An ``SSLContext`` is safe to share between clients and threads.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default context (certifi's bundle, or SSL_CERT_FILE/SSL_CERT_DIR when set), built once."""
    return httpx.create_ssl_context()
