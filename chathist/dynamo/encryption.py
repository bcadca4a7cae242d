"""Client-side encryption in the request path: data keys, their cache, sealed event items.

- A *keyring* gives data keys and unwraps them, as steps: `KmsKeyring` sends ``GenerateDataKey``
  and ``Decrypt`` to AWS KMS as `Call`\\ s of the `KMS` service (sent by the same `Sender` or
  `AsyncSender` as every DynamoDB request, so sync and async share these rules); `LocalKeyring`
  wraps them under a raw 256-bit key given in code (development and tests), without I/O.
- `KEYS` caches data keys per process for `KEY_LIFETIME` (an hour): a writer asks KMS for one
  data key per table and session, and a reader unwraps each wrapped key once. Concurrent first
  uses of a scope wait for the one that asked (single flight), so KMS sees one request.
- `Encryption` seals the payload attributes of event items in wire form before they are sent
  (`chathist.core.envelope`: AES-256-GCM bound to table, session and sort key) and opens them
  as pages are read (`OpeningCursor`): the rest of chathist only ever sees plaintext items.
  Items without the marker attribute are plaintext and pass through: sessions written before
  encryption was turned on stay readable, and mixed sessions read whole.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from chathist.core import envelope
from chathist.core.steps import KMS, Call, Steps, sleep
from chathist.dynamo.items import EventItems
from chathist.dynamo.paging import Cursor
from chathist.errors import DecryptionError, EncryptionError, KeyAccessError

__all__ = [
    "KEYS",
    "KEY_LIFETIME",
    "MARKER",
    "DataKey",
    "Encryption",
    "KeyCache",
    "Keyring",
    "KmsKeyring",
    "LocalKeyring",
    "OpeningCursor",
]

T = TypeVar("T")

KEY_LIFETIME: Final = 3600.0
"""Seconds a data key is used (to seal) and kept (to open) after it was made or unwrapped."""
KEY_CACHE_SIZE: Final = 10_000
"""Data keys the process keeps (the least recently used go first)."""
WAIT_STEP: Final = 0.005
WAIT_LIMIT: Final = 10.0
"""Seconds a use waits for another's request of the same key before asking for one itself."""
MAX_WRAPPED_BYTES: Final = 512
"""Largest wrapped data key sealed into items (KMS's for an AES-256 key is about 184 bytes,
a local key's 60); it bounds the room an envelope takes in an item (`Encryption.overhead`)."""
MARKER: Final = "1"
"""Value of the marker attribute (``enc``) of a sealed item: the envelope format."""


@dataclass(frozen=True)
class DataKey:
    """A data key: its plaintext (never stored) and its wrapped form (stored with each item)."""

    plaintext: bytes = field(repr=False)
    wrapped: bytes
    provider: int


class Keyring(Protocol):
    """Where data keys come from."""

    provider: int

    @property
    def name(self) -> str:
        """Identifies the wrapping key (for the cache; never a secret)."""
        ...

    def generate(self, context: dict[str, str]) -> Steps[DataKey]:
        """A new data key bound to ``context``."""
        ...

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> Steps[bytes]:
        """The plaintext of a data key ``wrapped`` under ``context``."""
        ...


class KmsKeyring:
    """Data keys from AWS KMS: ``GenerateDataKey`` under ``key_id`` (an id, ARN or alias), and
    ``Decrypt`` of any wrapped key (KMS's ciphertext names its own key, so items sealed under
    another key id are read too, with the caller's ``kms:Decrypt`` permission on it)."""

    provider = envelope.PROVIDER_KMS

    def __init__(self, key_id: str | None) -> None:
        self.key_id = key_id

    @property
    def name(self) -> str:
        return f"kms:{self.key_id}"

    def generate(self, context: dict[str, str]) -> Steps[DataKey]:
        if self.key_id is None:
            raise EncryptionError("no kms_key_id to make data keys with")
        params = {"KeyId": self.key_id, "KeySpec": "AES_256", "EncryptionContext": context}
        response: dict[str, Any] = yield Call("GenerateDataKey", params, KMS)
        plaintext, wrapped = response.get("Plaintext"), response.get("CiphertextBlob")
        if not isinstance(plaintext, bytes) or len(plaintext) != envelope.KEY_BYTES or not wrapped:
            raise KeyAccessError("KMS GenerateDataKey answered without a 256-bit data key")
        return DataKey(plaintext, bytes(wrapped), self.provider)

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> Steps[bytes]:
        params = {"CiphertextBlob": wrapped, "EncryptionContext": context}
        response: dict[str, Any] = yield Call("Decrypt", params, KMS)
        plaintext = response.get("Plaintext")
        if not isinstance(plaintext, bytes) or len(plaintext) != envelope.KEY_BYTES:
            raise DecryptionError("KMS Decrypt gave no 256-bit data key for an encrypted item")
        return plaintext


class LocalKeyring:
    """Data keys wrapped under a raw 256-bit key given in code: for development and tests,
    where no KMS is at hand. Whoever holds the key reads everything sealed under it."""

    provider = envelope.PROVIDER_LOCAL

    def __init__(self, key: bytes) -> None:
        self._key = envelope.check_local_key(key)

    @property
    def name(self) -> str:
        digest = hashlib.sha256(b"chathist local key name\x00" + self._key).hexdigest()
        return f"local:{digest[:32]}"

    def generate(self, context: dict[str, str]) -> Steps[DataKey]:
        yield from ()
        plaintext = os.urandom(envelope.KEY_BYTES)
        return DataKey(plaintext, envelope.wrap_local(self._key, plaintext, context), self.provider)

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> Steps[bytes]:
        yield from ()
        return envelope.unwrap_local(self._key, wrapped, context)


@dataclass
class _Entry:
    value: Any
    made: float
    uses: int = 0


class KeyCache:
    """Data keys by scope, for `KEY_LIFETIME` seconds and at most `envelope.MAX_KEY_USES`
    uses each, the `KEY_CACHE_SIZE` most recently used; thread-safe."""

    def __init__(
        self,
        lifetime: float = KEY_LIFETIME,
        size: int = KEY_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime
        self.size = size
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._making: dict[Hashable, float] = {}

    def take(self, scope: Hashable) -> Any:
        """The live value of ``scope`` (counting one use), or None."""
        with self._lock:
            entry = self._entries.get(scope)
            if entry is None:
                return None
            if self.clock() - entry.made >= self.lifetime or entry.uses >= envelope.MAX_KEY_USES:
                del self._entries[scope]
                return None
            entry.uses += 1
            self._entries.move_to_end(scope)
            return entry.value

    def claim(self, scope: Hashable) -> bool:
        """True if the caller is to make ``scope``'s value (no one else is making it)."""
        with self._lock:
            started = self._making.get(scope)
            if started is not None and self.clock() - started < WAIT_LIMIT:
                return False
            self._making[scope] = self.clock()
            return True

    def put(self, scope: Hashable, value: Any, *, uses: int = 0) -> None:
        with self._lock:
            self._making.pop(scope, None)
            self._entries[scope] = _Entry(value, self.clock(), uses)
            self._entries.move_to_end(scope)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def release(self, scope: Hashable) -> None:
        """Give up a claim (the request failed)."""
        with self._lock:
            self._making.pop(scope, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._making.clear()

    def cached(self, scope: Hashable, make: Callable[[], Steps[T]]) -> Steps[T]:
        """The value of ``scope``: cached, or made by ``make`` (once, while concurrent uses of
        the same scope wait for it, up to `WAIT_LIMIT` seconds)."""
        waited = 0.0
        while True:
            found = self.take(scope)
            if found is not None:
                return found  # type: ignore[no-any-return]
            if self.claim(scope):
                break
            if waited >= WAIT_LIMIT:
                break
            yield from sleep(WAIT_STEP)
            waited += WAIT_STEP
        try:
            value = yield from make()
        except BaseException:
            self.release(scope)
            raise
        self.put(scope, value, uses=1)
        return value


KEYS = KeyCache()
"""The process's data keys: to seal (per wrapping key, table and session) and to open (per
wrapped key, table and session)."""


class Encryption:
    """Seals and opens the payload attributes of one table's event items.

    ``keyring`` makes the data keys of new items (None: items are written in plaintext);
    ``local_key`` opens items sealed under a local key. Items sealed by KMS are opened by any
    `Encryption` (KMS checks the caller's permission). ``partition`` names the credentials KMS
    requests are sent with (`chathist.dynamo.client.kms_scope`): cached data keys are shared
    only between users of the same credentials, so the cache never lends one caller's KMS
    permission to another.
    """

    def __init__(
        self,
        items: EventItems,
        keyring: Keyring | None = None,
        local_key: LocalKeyring | None = None,
        *,
        partition: Hashable = None,
        cache: KeyCache = KEYS,
    ) -> None:
        names = items.names
        self.table = items.table_name
        self.hash_name, self.range_name = items.hash_name, items.range_name
        self.blob_name, self.marker_name = names["blob"], names["sealed"]
        self.payload_names: Sequence[str] = (names["text"], names["blob"])
        """The attributes sealed together: whatever of them an item holds."""
        self.keyring = keyring
        self.local = (
            local_key
            if local_key is not None
            else (keyring if isinstance(keyring, LocalKeyring) else None)
        )
        self.kms = keyring if isinstance(keyring, KmsKeyring) else KmsKeyring(None)
        self.cache = cache
        self.partition = partition

    @property
    def seals(self) -> bool:
        """Whether new items are sealed."""
        return self.keyring is not None

    @property
    def overhead(self) -> int:
        """Most bytes sealing adds to an item (0 when it does not seal): the marker attribute,
        the envelope's header, wrapped key, nonce and tag, and the packed attribute names."""
        if not self.seals:
            return 0
        packing = sum(len(n.encode("utf-8")) + 7 for n in self.payload_names)
        marker = len(self.marker_name.encode("utf-8")) + len(MARKER)
        return marker + 4 + MAX_WRAPPED_BYTES + envelope.NONCE_BYTES + envelope.TAG_BYTES + packing

    # -- writing --------------------------------------------------------------------------------

    def seal(self, session: str, items: Sequence[dict[str, Any]]) -> Steps[None]:
        """Seal the payload of each of ``items`` (wire form, in place) for its sort key."""
        keyring = self.keyring
        if keyring is None:
            return  # (before looking at the items: this runs for every write)
        targets = [i for i in items if any(n in i for n in self.payload_names)]
        if not targets:
            return
        context = envelope.encryption_context(self.table, session)
        key: DataKey = yield from self.cache.cached(
            ("seal", keyring.name, self.partition, self.table, session),
            lambda: keyring.generate(context),
        )
        if len(key.wrapped) > MAX_WRAPPED_BYTES:
            raise EncryptionError(
                f"the wrapped data key is {len(key.wrapped)} bytes; chathist stores at most"
                f" {MAX_WRAPPED_BYTES} (use a symmetric KMS key)"
            )
        self.cache.put(self._open_scope(keyring, key.wrapped, session), key.plaintext)
        for item in targets:
            attributes = {n: item.pop(n) for n in self.payload_names if n in item}
            item[self.blob_name] = {
                "B": envelope.seal(
                    key.plaintext,
                    key.provider,
                    key.wrapped,
                    envelope.pack_attributes(attributes),
                    table=self.table,
                    session=session,
                    sort_key=item[self.range_name]["S"],
                )
            }
            item[self.marker_name] = {"S": MARKER}

    # -- reading --------------------------------------------------------------------------------

    def any_sealed(self, items: list[dict[str, Any]]) -> bool:
        """Whether any of ``items`` is sealed."""
        marker = self.marker_name
        for item in items:  # noqa: SIM110 (twice as fast as any() over a generator)
            if marker in item:
                return True
        return False

    def open(self, items: list[dict[str, Any]]) -> Steps[list[dict[str, Any]]]:
        """``items`` with every sealed one opened (a new list: check `any_sealed` first, as a
        reader of a page does); `DecryptionError` (naming the item) for one that does not
        authenticate, `KeyAccessError` where KMS refuses its data key."""
        opened = []
        for item in items:
            if self.marker_name not in item:
                opened.append(item)
                continue
            key = {
                n: next(iter(v.values()), None) if isinstance(v, dict) else v
                for n in (self.hash_name, self.range_name)
                if (v := item.get(n)) is not None
            }
            try:
                opened.append((yield from self._open(item)))
            except DecryptionError as exc:
                raise DecryptionError(f"table {self.table!r}: {exc}", key=key) from exc
            except KeyAccessError as exc:
                raise KeyAccessError(
                    f"table {self.table!r}, item {key}: {exc}", code=exc.code
                ) from exc
        return opened

    def _open(self, item: dict[str, Any]) -> Steps[dict[str, Any]]:
        try:
            session = item[self.hash_name]["S"]
            sort_key = item[self.range_name]["S"]
            sealed = item[self.blob_name]["B"]
            marker = item[self.marker_name]["S"]
        except (KeyError, TypeError) as exc:
            raise DecryptionError(f"encrypted item lacks attribute {exc}") from exc
        if marker != MARKER:
            raise DecryptionError(
                f"encrypted item has envelope format {marker!r}; upgrade chathist"
            )
        found = envelope.Envelope.parse(bytes(sealed))
        data_key = yield from self._data_key(found, session)
        plaintext = envelope.open_envelope(
            data_key, found, table=self.table, session=session, sort_key=sort_key
        )
        result = {
            name: value
            for name, value in item.items()
            if name not in (self.marker_name, self.blob_name)
        }
        result.update(envelope.unpack_attributes(plaintext))
        return result

    def _data_key(self, found: envelope.Envelope, session: str) -> Steps[bytes]:
        context = envelope.encryption_context(self.table, session)
        keyring: Keyring
        if found.provider == envelope.PROVIDER_LOCAL:
            if self.local is None:
                raise KeyAccessError(
                    "the item was sealed under a local key (local_key=), and this history has"
                    " none: pass the same local_key to read it"
                )
            keyring = self.local
        else:
            keyring = self.kms
        wrapped = found.wrapped
        scope = self._open_scope(keyring, wrapped, session)
        return (yield from self.cache.cached(scope, lambda: keyring.unwrap(wrapped, context)))

    def _open_scope(self, keyring: Keyring, wrapped: bytes, session: str) -> Hashable:
        """The cache scope of an unwrapped data key: a local key's own name (another local key
        must not find it), KMS keys per credentials; always per table and session."""
        owner = keyring.name if keyring.provider == envelope.PROVIDER_LOCAL else self.partition
        return ("open", keyring.provider, owner, wrapped, self.table, session)


class OpeningCursor(Cursor):
    """A `Cursor` whose pages come out with their sealed items opened. ``restore`` (a name and
    a string): the partition key a query's projection left out, put back into each item first
    (sealed items are opened with it; one value shared by the page's items, which readers only
    read)."""

    def __init__(
        self,
        operation: str,
        params: dict[str, Any],
        encryption: Encryption,
        *,
        empty: bool = False,
        restore: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(operation, params, empty=empty)
        self.encryption = encryption
        self.restore = restore

    def next_page(self) -> Steps[list[dict[str, Any]] | None]:
        page = yield from super().next_page()
        if page is None:
            return None
        if self.restore is not None:
            name, value = self.restore
            key = {"S": value}  # (one attribute value, shared: nothing changes it)
            for item in page:
                item[name] = key
        if not self.encryption.any_sealed(page):
            return page  # (no generator to run: this is every page of every read)
        return (yield from self.encryption.open(page))
