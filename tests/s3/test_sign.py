"""backends/s3_sign.py: the direct requests' SigV4 headers equal botocore's S3SigV4Auth's for
the same request at the same time (no server: the signer alone; the requests' tests show a
server accepts them)."""

from __future__ import annotations

import datetime

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from mcpfs.backends.s3_sign import payload_hash, signed

NOW = datetime.datetime(2026, 12, 7, 2, 45, 9, tzinfo=datetime.timezone.utc)

CASES = [
    ("PUT", "http://127.0.0.1:8333", "/bucket/a%20b%2Bc/%C3%A9.bin",
     {"User-Agent": "mcpfs", "Content-Type": "text/plain", "Content-Length": "4",
      "Content-MD5": "CY9rzUYh03PK3k6DJie09g==", "If-None-Match": "*",
      "x-amz-meta-ipfs-cid": "bafyx", "x-amz-meta-note": "  two   spaces  "}),
    ("HEAD", "https://s3.eu-west-3.amazonaws.com", "/b/k", {"User-Agent": "mcpfs",
                                                           "x-amz-request-payer": "requester"}),
    ("GET", "https://b.s3.amazonaws.com:443", "/~x/%3Fq%23f", {"Range": "bytes=0-65535",
                                                             "If-Match": '"etag"'}),
    ("PUT", "http://[::1]:9000", "/b/k", {"x-amz-meta-A": "1", "x-amz-meta-a": "2",
                                          "Content-Length": "0"}),
    ("PUT", "http://localhost:80", "/b/k", {"Content-Length": "0"}),
    ("PUT", "https://localhost:8443", "/b/k", {"Content-Length": "4", "Content-MD5": "x"}),
]


@pytest.mark.parametrize("method,endpoint,path,headers", CASES)
@pytest.mark.parametrize("token", [None, "session-token"])
def test_the_signature_is_botocores(monkeypatch, method, endpoint, path, headers, token):
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)
    scheme, netloc = endpoint.split("://")
    data = b"data" if headers.get("Content-Length") == "4" else b""
    request = AWSRequest(method=method, url=endpoint + path, data=data, headers=headers)
    request.context["has_streaming_input"] = True  # (a body with Content-MD5, as sent)
    auth = botocore.auth.S3SigV4Auth(creds.get_frozen_credentials(), "s3", "eu-west-3")
    auth.add_auth(request)
    theirs = dict(request.headers.items())
    mine = signed(method, scheme, netloc.lower(), path, headers,
                  payload_hash(scheme, headers, data), creds.get_frozen_credentials(),
                  "eu-west-3", "s3", now=NOW)
    assert mine == theirs
