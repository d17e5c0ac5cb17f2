"""Access control: one API key, sent as ``Authorization: Bearer KEY`` (or by a browser as HTTP Basic, any user name
and the key as password: the page asks for it that way), compared in constant time.

The key comes from the environment (``METRICAD_API_KEY``) or a file (``--api-key-file``), never from a command-line
value that ``ps`` would show. Without a key the service listens on loopback only, unless told ``--insecure``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
from pathlib import Path

ENV_KEY = "METRICAD_API_KEY"


def read_api_key(key_file=None) -> str | None:
    """The key from ``key_file`` (its first line) or ``$METRICAD_API_KEY``; None when neither is set."""
    if key_file is not None:
        path = Path(key_file)
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"--api-key-file {path}: cannot be read ({exc.strerror})") from None
        if not key:
            raise ValueError(f"--api-key-file {path}: is empty")
        return key
    return os.environ.get(ENV_KEY) or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve to any interface


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    if api_key is None and not is_loopback(host) and not insecure:
        raise ValueError(f"refusing to serve on {host} without an API key: set {ENV_KEY} or pass --api-key-file "
                         "FILE (clients send 'Authorization: Bearer KEY'), or pass --insecure to serve openly")


def _digest(text: str) -> bytes:
    # Equal-length digests: compare_digest then takes the same time whatever the guess's length.
    return hashlib.sha256(text.encode()).digest()


def _credentials(header: str | None) -> tuple[str | None, str]:
    """``(user, key)`` an ``Authorization`` header carries: Bearer (no user) or Basic."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() == "bearer":
        return None, given.strip()
    if scheme.lower() == "basic":
        try:
            user, _, key = base64.b64decode(given.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, ""
        return user, key
    return None, ""


def authorized(header: str | None, api_key: str | None) -> bool:
    """Whether an ``Authorization`` header carries the key (always, when no key is configured)."""
    if api_key is None:
        return True
    return hmac.compare_digest(_digest(_credentials(header)[1]), _digest(api_key))


def user_name(header: str | None) -> str | None:
    """The user name a browser sent with the key (HTTP Basic), to record who made a change."""
    return _credentials(header)[0] or None
