"""The test session's S3 protocol server: moto's, on 127.0.0.1 (a random port), started once per
session by the `moto_s3` fixture (registered in tests/conftest.py for every test directory)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from storage.config import S3Config

__all__ = ["MotoS3", "moto_s3"]


@dataclass(frozen=True)
class MotoS3:
    """The session's S3 server: its endpoint and the fake credentials it takes."""

    endpoint_url: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"  # moto's fake credentials
    region: str = "us-east-1"

    def config(
        self, bucket: str, *, prefix: str = "gwm/", kms_key_id: str | None = None, endpoint: str | None = None
    ) -> S3Config:
        return S3Config(
            bucket=bucket,
            region=self.region,
            prefix=prefix,
            endpoint_url=endpoint or self.endpoint_url,
            kms_key_id=kms_key_id,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )

    async def create_bucket(self) -> str:
        import aioboto3  # type: ignore[import-untyped]

        name = f"gwm-test-{uuid.uuid4().hex[:12]}"
        session = aioboto3.Session(
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key, region_name=self.region
        )
        async with session.client("s3", endpoint_url=self.endpoint_url) as s3:
            await s3.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """moto's S3 server on 127.0.0.1 (a random port), started once per test session."""
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoS3(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()
