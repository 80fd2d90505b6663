"""HTTP Digest authentication (RFC 7616, MD5, qop=auth) as urllib's handler speaks it.

ObsPy's ``Client(user=, password=)`` sends dataselect requests to ``queryauth`` through
``urllib.request.HTTPDigestAuthHandler``: the first request has no credentials, the 401
carries a ``WWW-Authenticate: Digest`` challenge, the handler answers it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading

REALM = "FDSN"
_FIELD = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class DigestAuth:
    """Issues nonces and checks ``Authorization: Digest`` headers."""

    def __init__(self) -> None:
        self._nonces: set[str] = set()
        self._lock = threading.Lock()

    def challenge(self) -> str:
        """A ``WWW-Authenticate`` header value with a fresh nonce."""
        nonce = secrets.token_hex(16)
        with self._lock:
            self._nonces.add(nonce)
        return (
            f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm=MD5, '
            f'opaque="{secrets.token_hex(8)}"'
        )

    def verify(self, header: str | None, method: str, uri: str, user: str, password: str) -> bool:
        """Whether ``header`` proves knowledge of ``user``'s ``password`` for this request."""
        if not header or not header.lower().startswith("digest "):
            return False
        fields = {m[0].lower(): m[1] or m[2] for m in _FIELD.findall(header[7:])}
        with self._lock:
            known = fields.get("nonce") in self._nonces
        if not known or fields.get("username") != user or fields.get("realm") != REALM:
            return False
        if fields.get("uri") != uri or fields.get("algorithm", "MD5").upper() != "MD5":
            return False
        ha1 = _md5(f"{user}:{REALM}:{password}")
        ha2 = _md5(f"{method}:{uri}")
        if fields.get("qop") == "auth":
            expected = _md5(
                f"{ha1}:{fields['nonce']}:{fields.get('nc', '')}:{fields.get('cnonce', '')}"
                f":auth:{ha2}"
            )
        else:
            expected = _md5(f"{ha1}:{fields['nonce']}:{ha2}")
        return secrets.compare_digest(expected, fields.get("response", ""))
