"""SigV4 signatures of the direct requests, exactly as botocore's ``S3SigV4Auth`` makes them.

Why not botocore's signer itself: it works on an ``AWSRequest`` whose headers are an
``email.message`` object, and that bookkeeping was the largest part of a direct request's
CPU on the trio thread (a third of a small PUT's, with the HTTP exchange the rest). The
algorithm is small and fixed (AWS's Signature Version 4, S3 flavour): the canonical
request (method, the URL path as sent, no query, the signed headers lower-cased, sorted,
values trimmed, repeated names joined with ","; botocore's own list of headers it never
signs), the string to sign, and the key derived from the secret for the day, region and
service (kept: the same four HMACs for every request of a day). tests/s3/test_sign.py
checks the result against botocore's for the same request and time.

What :func:`signed` adds to the headers: ``X-Amz-Date``, ``X-Amz-Security-Token`` (with
temporary credentials), ``X-Amz-Content-SHA256`` (:func:`payload_hash`: the body's SHA-256,
or ``UNSIGNED-PAYLOAD`` over https for a body that carries Content-MD5, as botocore does
for a streamed one) and ``Authorization``. Pure computation; the key cache is a small
dict guarded by the GIL (a lost race computes the same key twice).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from typing import Any, Final

from botocore.auth import SIGNED_HEADERS_BLACKLIST

from .s3_wire import host_header

UNSIGNED: Final = "UNSIGNED-PAYLOAD"
_SKIPPED: Final = frozenset(SIGNED_HEADERS_BLACKLIST)  # botocore's: never signed
_KEYS_KEPT: Final = 8  # derived signing keys kept (day, region, service, secret)
_keys: dict[tuple[str, str, str, str], bytes] = {}


def payload_hash(scheme: str, headers: dict[str, str], data: bytes) -> str:
    """What ``X-Amz-Content-SHA256`` says of ``data`` (computed once for all tries)."""
    if scheme == "https" and any(name.lower() == "content-md5" for name in headers):
        return UNSIGNED
    return hashlib.sha256(data).hexdigest()


def signed(method: str, scheme: str, netloc: str, path: str, headers: dict[str, str],
           payload: str, credentials: Any, region: str, service: str,
           now: datetime.datetime | None = None) -> dict[str, str]:
    """``headers`` with the SigV4 headers added (see the module docstring). ``path``: the
    URL path exactly as sent (already quoted); ``payload``: :func:`payload_hash`'s;
    ``credentials``: botocore's frozen credentials (``access_key``, ``secret_key``,
    ``token``)."""
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    out = {name: value for name, value in headers.items()
           if name.lower() not in ("authorization", "x-amz-date", "x-amz-security-token",
                                   "x-amz-content-sha256")}
    out["X-Amz-Date"] = stamp
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    out["X-Amz-Content-SHA256"] = payload
    values: dict[str, list[str]] = {}
    for name, value in out.items():
        low = name.lower()
        if low not in _SKIPPED:
            values.setdefault(low, []).append(" ".join(value.split()))
    if "host" not in values:
        values["host"] = [host_header(scheme, netloc)]
    names = sorted(values)
    canonical = "\n".join([method.upper(), path, "",
                           "".join(f"{n}:{','.join(values[n])}\n" for n in names),
                           ";".join(names), payload])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(_key(credentials.secret_key, day, region, service),
                         to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out


def _key(secret: str, day: str, region: str, service: str) -> bytes:
    found = _keys.get((day, region, service, secret))
    if found is None:
        key = f"AWS4{secret}".encode()
        for part in (day, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        if len(_keys) >= _KEYS_KEPT:
            _keys.clear()
        found = _keys[(day, region, service, secret)] = key
    return found


__all__ = ["signed", "payload_hash", "UNSIGNED"]
