"""Fixtures of the kernel-free /s3 tests; the server itself (``s3_server``, ``raw``,
``bucket``, ``many_keys``) comes from tests/s3_server.py through tests/conftest.py."""

from __future__ import annotations

import boto3
import pytest

from mcpfs.backends.s3 import S3Backend, S3Config
from tests.s3_server import ACCESS_KEY, MANY, SECRET_KEY, raw_client  # noqa: F401 - re-exported


def make_backend(server: dict, secret: str | None = None, copy_markers=None,
                 **config) -> S3Backend:
    session = boto3.session.Session(aws_access_key_id=server["access_key"],
                                    aws_secret_access_key=secret or server["secret_key"],
                                    region_name="us-east-1")
    cfg = S3Config.from_section({"endpoint_url": server["endpoint"],
                                 "addressing_style": "path", **config})
    return S3Backend(cfg, session=session, copy_markers=copy_markers)


@pytest.fixture
def backend(s3_server):
    return make_backend(s3_server)
