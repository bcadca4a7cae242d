"""AWS KMS for the encryption tests: moto's server mode on 127.0.0.1 (reached through
``AWS_ENDPOINT_URL_KMS``, which botocore honours), or a real key.

Set ``CHATHIST_TEST_KMS_KEY_ID`` (and ``CHATHIST_TEST_KMS_OTHER_KEY_ID``, a second key) to run the
encryption tests against real AWS KMS with the ambient credentials and region instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3

from benchmarks.encryption import local_kms

KEY_ENV = "CHATHIST_TEST_KMS_KEY_ID"
OTHER_KEY_ENV = "CHATHIST_TEST_KMS_OTHER_KEY_ID"
ENDPOINT_ENV = "AWS_ENDPOINT_URL_KMS"


@dataclass(frozen=True)
class Kms:
    """The keys the tests encrypt with, and where they live."""

    key_id: str
    other_key_id: str
    region: str | None
    local: bool
    """True when KMS is moto's server (a missing permission can then be provoked)."""


@contextlib.contextmanager
def kms_keys(region: str | None) -> Iterator[Kms]:
    """A real key (``$CHATHIST_TEST_KMS_KEY_ID``), or two keys on a local moto server with
    ``AWS_ENDPOINT_URL_KMS`` pointing at it for the duration."""
    real = os.environ.get(KEY_ENV)
    if real:
        yield Kms(real, os.environ.get(OTHER_KEY_ENV) or real, region, local=False)
        return
    before = os.environ.get(ENDPOINT_ENV)
    with local_kms() as url:
        os.environ[ENDPOINT_ENV] = url
        try:
            client: Any = boto3.client("kms", region_name=region or "us-east-1", endpoint_url=url)
            first = client.create_key(Description="chathist test")["KeyMetadata"]["Arn"]
            second = client.create_key(Description="chathist test 2")["KeyMetadata"]["Arn"]
            yield Kms(first, second, region or "us-east-1", local=True)
        finally:
            if before is None:
                os.environ.pop(ENDPOINT_ENV, None)
            else:
                os.environ[ENDPOINT_ENV] = before
