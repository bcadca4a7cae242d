"""Where a table lives and as whom to reach it, resolved once, when a history is made.

A `Binding` holds only explicit values: the endpoint and region are settled at construction
(argument, then environment, then AWS's configuration), so changing the environment later
changes nothing about an existing binding, and bindings hash and compare on what they hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, NoRegionError
from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

from chathist.errors import ConfigurationError

if TYPE_CHECKING:
    import boto3

__all__ = ["ENDPOINT_ENV", "LOCAL_DEFAULT_REGION", "Binding", "check_endpoint_url"]

ENDPOINT_ENV: Final = "CHATHIST_ENDPOINT_URL"
"""Environment variable naming the DynamoDB endpoint when none is given (as `chathist local`
tells you to export); an explicit ``endpoint_url`` wins over it, and it over AWS's defaults."""
LOCAL_DEFAULT_REGION: Final = "us-east-1"
"""The region used with an endpoint when nothing else names one (DynamoDB Local ignores it)."""


def check_endpoint_url(url: object, origin: str = "") -> str:
    """``url`` if botocore can use it as an endpoint (http or https, a host), else
    `ConfigurationError` with a hint (``origin`` says where it came from); botocore itself
    would raise a bare ValueError later."""
    if not isinstance(url, str):
        raise ConfigurationError(f"endpoint_url must be a str, got {type(url).__name__}")
    return _checked_endpoint_url(url, origin)


@lru_cache(maxsize=64)
def _checked_endpoint_url(url: str, origin: str) -> str:
    """`check_endpoint_url` of a str, once per URL (every history checks its endpoint: a
    `RunnableWithMessageHistory` makes one per turn); a refused URL is not cached."""
    scheme, separator, _ = url.partition("://")
    try:
        _ = urlsplit(url).port  # a port out of range or not a number, a broken IPv6 host
    except ValueError as exc:
        raise ConfigurationError(f"invalid endpoint URL {url!r}{origin}: {exc}") from exc
    if scheme.lower() in ("http", "https") and (
        is_valid_endpoint_url(url) or is_valid_ipv6_endpoint_url(url)
    ):
        return url
    if not separator:
        hint = f"it has no scheme; did you mean http://{url}?"
    else:
        hint = "it needs http:// or https:// and a host, e.g. http://127.0.0.1:8000"
    raise ConfigurationError(f"invalid endpoint URL {url!r}{origin}: {hint}")


def _configured_region(boto3_session: boto3.Session | None, profile: str | None) -> str | None:
    if boto3_session is not None and boto3_session.region_name:
        return str(boto3_session.region_name)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    from chathist.dynamo.client import botocore_session

    try:
        configured = botocore_session(profile).get_config_variable("region")
    except BotoCoreError as exc:  # a missing profile, an unreadable config file
        raise ConfigurationError(f"cannot read the AWS configuration: {exc}") from exc
    return str(configured) if configured else None


@dataclass(frozen=True)
class Binding:
    """A table on an endpoint, in a region, with a boto3 session (or the default credentials).

    Make one with `Binding.resolve`; ``boto3_session`` compares by identity.
    """

    table_name: str
    endpoint_url: str | None
    region_name: str
    boto3_session: boto3.Session | None = None
    profile: str | None = None
    """The AWS profile (``AWS_PROFILE``) of the default credentials, when no boto3 session is
    given."""

    @classmethod
    def resolve(
        cls,
        table_name: str,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        boto3_session: boto3.Session | None = None,
    ) -> Binding:
        """Settle endpoint and region: the argument, else ``$CHATHIST_ENDPOINT_URL`` (endpoint)
        or the boto3 session's / environment's / AWS config's region, else `LOCAL_DEFAULT_REGION`
        when there is an endpoint."""
        if not isinstance(table_name, str) or not table_name:
            raise ConfigurationError("table_name must be a non-empty str")
        if region_name is not None and not isinstance(region_name, str):
            raise ConfigurationError(f"region_name must be a str, got {type(region_name).__name__}")
        if boto3_session is not None and not hasattr(boto3_session, "client"):
            raise ConfigurationError(
                f"boto3_session must be a boto3.Session, got {type(boto3_session).__name__}"
            )
        endpoint, origin = endpoint_url, ""
        if not endpoint:
            endpoint, origin = os.environ.get(ENDPOINT_ENV) or None, f" (from ${ENDPOINT_ENV})"
        if endpoint is not None:
            check_endpoint_url(endpoint, origin)
        profile = None
        if boto3_session is None:
            profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE")
        region = region_name or _configured_region(boto3_session, profile)
        if region is None and endpoint is not None:
            region = LOCAL_DEFAULT_REGION
        if region is None:
            raise ConfigurationError(
                "no AWS region: pass region_name=, use a boto3_session with a region, or set"
                " AWS_DEFAULT_REGION"
            ) from NoRegionError()
        return cls(table_name, endpoint, region, boto3_session, profile)

    @cached_property
    def connection(self) -> Binding:
        """This binding without its table: what a client depends on (endpoint, region and
        credentials), so the tables behind one endpoint share a client. Made once per binding
        (the async sender looks its client up per request)."""
        return self.with_table("") if self.table_name else self

    def with_table(self, table_name: str) -> Binding:
        """The same connection, another table."""
        return Binding(
            table_name, self.endpoint_url, self.region_name, self.boto3_session, self.profile
        )

    @property
    def where(self) -> str:
        """The endpoint or region, for messages."""
        return self.endpoint_url or f"AWS region {self.region_name}"
