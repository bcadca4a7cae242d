"""PynamoDB models of the event layout, one class per table binding.

PynamoDB keeps ``Meta`` and the connection on the model class, so a class must never be shared
between two tables, endpoints, regions or credentials. `event_model` builds one class per
`Binding` and caches it; no class's ``Meta`` is ever changed afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from botocore.config import Config
from botocore.exceptions import BotoCoreError, NoCredentialsError, NoRegionError
from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url
from pynamodb.attributes import BinaryAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from chathist.errors import ConfigurationError

if TYPE_CHECKING:
    import boto3

__all__ = [
    "ENDPOINT_ENV",
    "INTERNAL_NAMES",
    "LOCAL_CREDENTIALS_HINT",
    "Binding",
    "EventModel",
    "botocore_failure",
    "dynamodb_client",
    "event_model",
]

ENDPOINT_ENV: Final = "CHATHIST_ENDPOINT_URL"
"""Environment variable giving the endpoint URL wherever none is passed (`chathist local`
prints an ``export`` of it): below an explicit ``endpoint_url``, above AWS's defaults."""
LOCAL_DEFAULT_REGION = "us-east-1"
MAX_RETRY_ATTEMPTS = 8
"""botocore retries (with exponential backoff) for throttling, 5xx and dropped connections."""
LOCAL_CREDENTIALS_HINT: Final = (
    "for DynamoDB Local any keys do: export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local"
)
NO_REGION: Final = (
    "no AWS region: pass region_name=, use a boto3_session with a region, or set AWS_DEFAULT_REGION"
)


def _checked_endpoint_url(url: object, origin: str = "") -> str:
    """``url`` if botocore can use it as an endpoint, else `ConfigurationError` with a hint
    (``origin`` says where it came from); botocore itself raises a bare ValueError later."""
    if not isinstance(url, str):
        raise ConfigurationError(f"endpoint_url must be a str, got {type(url).__name__}")
    scheme, separator, _ = url.partition("://")
    if scheme.lower() in ("http", "https") and (
        is_valid_endpoint_url(url) or is_valid_ipv6_endpoint_url(url)
    ):
        return url
    if not separator:
        hint = f"it has no scheme; did you mean http://{url}?"
    else:
        hint = "it needs http:// or https:// and a host, e.g. http://127.0.0.1:8000"
    raise ConfigurationError(f"invalid endpoint URL {url!r}{origin}: {hint}")


@dataclass(frozen=True)
class Binding:
    """Where a table lives and how to reach it: everything a model class is specific to.

    Resolved once, here: without ``endpoint_url``, ``$CHATHIST_ENDPOINT_URL`` (`ENDPOINT_ENV`)
    if set; ``region`` is ``region_name``, else the boto3 session's, the environment's, or
    ``us-east-1`` with an endpoint. Equality and hashing use these resolved values only.
    """

    table_name: str
    endpoint_url: str | None = None
    region_name: str | None = None
    boto3_session: boto3.Session | None = None
    region: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        endpoint, origin = self.endpoint_url, ""
        if not endpoint:
            endpoint, origin = os.environ.get(ENDPOINT_ENV) or None, f" (from ${ENDPOINT_ENV})"
        if endpoint is not None:
            endpoint = _checked_endpoint_url(endpoint, origin)
        object.__setattr__(self, "endpoint_url", endpoint)
        region = (
            self.region_name
            or (self.boto3_session.region_name if self.boto3_session is not None else None)
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or (LOCAL_DEFAULT_REGION if endpoint else None)
        )
        object.__setattr__(self, "region", region)

    def __hash__(self) -> int:
        return hash((self.table_name, self.endpoint_url, self.region, id(self.boto3_session)))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Binding)
            and (self.table_name, self.endpoint_url, self.region)
            == (other.table_name, other.endpoint_url, other.region)
            and self.boto3_session is other.boto3_session
        )


class EventModel(Model):
    """Attributes of one event item. Concrete classes come from `event_model`."""

    session = UnicodeAttribute(hash_key=True)
    seq = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute(attr_name="event")
    version = NumberAttribute(attr_name="v")
    writer = UnicodeAttribute(attr_name="w", null=True)
    codec = UnicodeAttribute(attr_name="codec", null=True)
    text = UnicodeAttribute(null=True)
    blob = BinaryAttribute(attr_name="blob", null=True, legacy_encoding=False)
    parts = NumberAttribute(attr_name="parts", null=True)
    message_seq = NumberAttribute(attr_name="msg", null=True)
    covers = NumberAttribute(attr_name="count", null=True)
    stage = UnicodeAttribute(attr_name="stage", null=True)
    staged_at = NumberAttribute(attr_name="at", null=True)
    expires_at = NumberAttribute(null=True)


def _retry_config() -> Config:
    return Config(
        retries={"total_max_attempts": MAX_RETRY_ATTEMPTS, "mode": "standard"},
        parameter_validation=False,
        max_pool_connections=64,
    )


INTERNAL_NAMES = frozenset(
    attribute.attr_name
    for name, attribute in EventModel.get_attributes().items()
    if name not in ("session", "seq", "text", "expires_at")
)
"""Attribute names chathist uses itself; the configurable names must be none of these."""


def event_model(
    binding: Binding,
    primary_key_name: str = "SessionId",
    sort_key_name: str = "SK",
    payload_name: str = "History",
    ttl_key_name: str = "expireAt",
) -> type[EventModel]:
    """The model class of the event items of ``binding``'s table, built once and cached: the
    same arguments, however they are passed, give the same class (and botocore client)."""
    return _event_model(binding, primary_key_name, sort_key_name, payload_name, ttl_key_name)


@lru_cache(maxsize=256)
def _event_model(
    binding: Binding,
    primary_key_name: str,
    sort_key_name: str,
    payload_name: str,
    ttl_key_name: str,
) -> type[EventModel]:
    meta: dict[str, Any] = {
        "table_name": binding.table_name,
        "host": binding.endpoint_url,
        "region": binding.region,
        "max_retry_attempts": MAX_RETRY_ATTEMPTS - 1,
        "max_pool_connections": 64,
    }
    attributes: dict[str, Any] = {
        "Meta": type("Meta", (), meta),
        "_connection": None,
        "session": UnicodeAttribute(hash_key=True, attr_name=primary_key_name),
        "seq": UnicodeAttribute(range_key=True, attr_name=sort_key_name),
        "text": UnicodeAttribute(null=True, attr_name=payload_name),
        "expires_at": NumberAttribute(null=True, attr_name=ttl_key_name),
    }
    model: type[EventModel] = type(f"EventModel_{binding.table_name}", (EventModel,), attributes)
    if binding.boto3_session is not None:
        # Use the caller's boto3 session (and its refreshable credentials) for every request.
        connection = model._get_connection().connection
        with _client_errors():
            connection._client = binding.boto3_session.client(  # type: ignore[assignment]
                "dynamodb",
                endpoint_url=binding.endpoint_url,
                region_name=binding.region,
                config=_retry_config(),
            )
    return model


@contextmanager
def _client_errors() -> Iterator[None]:
    """Turn botocore's errors of building a client (no or a bad region, a missing profile, a
    bad endpoint: bare ValueErrors among them) into `ConfigurationError`."""
    try:
        yield
    except NoRegionError as exc:
        raise ConfigurationError(NO_REGION) from exc
    except (BotoCoreError, ValueError) as exc:
        raise ConfigurationError(f"cannot create a DynamoDB client: {exc}") from exc


def dynamodb_client(model: type[Model]) -> Any:
    """The botocore client of ``model``'s cached connection."""
    with _client_errors():
        return model._get_connection().connection.client


def botocore_failure(exc: BaseException, endpoint_url: str | None) -> str:
    """``exc`` as text for a `StorageError`, with a hint when credentials are missing for an
    endpoint (DynamoDB Local checks none, but botocore will not send unsigned requests)."""
    text = str(exc)
    if endpoint_url and isinstance(exc, NoCredentialsError):
        text += f" ({LOCAL_CREDENTIALS_HINT})"
    return text
