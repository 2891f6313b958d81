"""The S3 client the backend uses: boto3 with the default credential chain (or the variables given
for the repository, repo/s3_credentials.py), a bounded number of connections, our own retries
(exponential backoff, full jitter) and a count of every request.

Retries are ours rather than botocore's because a response body can fail half-read (a connection
dropped mid-download), which botocore does not retry, and because one loop is easier to reason
about: every attempt is one counted request, and an operation is retried whole.
"""

from __future__ import annotations

import collections
import http.client
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.exceptions
import botocore.session
import urllib3.exceptions
from botocore.config import Config
from urllib3.util.ssl_match_hostname import CertificateError

from shadowvault.errors import NotFoundError, RepositoryError, ShadowvaultError, UsageError
from shadowvault.repo.backend_s3_url import S3Location
from shadowvault.repo.s3_credentials import S3Credentials, missing_message
from shadowvault.slots import Slots

log = logging.getLogger(__name__)
# urllib3 logs a certificate made for another host name (the certificate as a dict) before it
# raises; the error line of tls_failure() below says it once.
logging.getLogger("urllib3.connection").setLevel(logging.ERROR)

T = TypeVar("T")

MAX_CONNECTIONS = 8  # concurrent requests per backend (a semaphore, and botocore's pool size)
ATTEMPTS = 8  # tries of one operation before its error is the user's
BACKOFF_BASE = 0.25  # seconds; attempt n waits uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**n))
BACKOFF_CAP = 8.0
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
DEFAULT_REGION = "us-east-1"  # S3-compatible servers ignore it; AWS redirects a wrong one

TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "OperationAborted",
}
NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}

# Failures of the connection itself, including a body cut off halfway.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectionClosedError, timeouts
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    urllib3.exceptions.HTTPError,  # ProtocolError, IncompleteRead, ...
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


def error_code(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def http_status(err: botocore.exceptions.ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


# TLS handshakes that fail the same way every time: retrying them only makes the user wait.
_TLS_FAILURES = {
    "WRONG_VERSION_NUMBER": "the server does not speak HTTPS there (for plain HTTP write s3:http://...)",
    "CERTIFICATE_VERIFY_FAILED": "its TLS certificate is not trusted (for a private CA, set AWS_CA_BUNDLE)",
}
_SSL_REASON = re.compile(r"\[SSL: (\w+)\] ([^(]*)")  # "[SSL: CODE] words (_ssl.c:1006)"


def tls_failure(err: BaseException) -> str | None:
    """Why a TLS handshake can never succeed (an https: URL for a plain HTTP server, a certificate
    nobody vouches for or made for another name), with OpenSSL's words; None for any other error."""
    if not isinstance(err, botocore.exceptions.SSLError):
        return None
    cause = err.kwargs.get("error")
    named = cause.args[0] if isinstance(cause, Exception) and cause.args else None
    if isinstance(named, CertificateError):  # urllib3's own check of the host name
        return f"its TLS certificate is for another host name: {named}"
    found = _SSL_REASON.search(str(err))
    if found is None or found.group(1) not in _TLS_FAILURES:
        return None
    return f"{_TLS_FAILURES[found.group(1)]}: {found.group(2).strip()}"


def is_transient(err: BaseException) -> bool:
    if isinstance(err, botocore.exceptions.ClientError):
        return http_status(err) >= 500 or error_code(err) in TRANSIENT_CODES
    return isinstance(err, _CONNECTION_ERRORS) and tls_failure(err) is None


def _session(credentials: S3Credentials | None) -> boto3.session.Session:
    """A session on the default chain, with the given variables in front of the process's own."""
    if credentials is None:
        return boto3.session.Session()
    given = credentials.variables
    core = botocore.session.get_session()
    for name, variable in (
        ("AWS_SHARED_CREDENTIALS_FILE", "credentials_file"),
        ("AWS_CONFIG_FILE", "config_file"),
        ("AWS_PROFILE", "profile"),
        ("AWS_DEFAULT_REGION", "region"),
        ("AWS_REGION", "region"),
    ):
        if given.get(name):
            core.set_config_variable(variable, given[name])
    if given.get("AWS_ACCESS_KEY_ID"):
        core.set_credentials(
            given["AWS_ACCESS_KEY_ID"], given["AWS_SECRET_ACCESS_KEY"], given.get("AWS_SESSION_TOKEN")
        )
    return boto3.session.Session(botocore_session=core)


class S3Client:
    """One boto3 client (thread-safe) for one location, with retries, a connection bound and
    request counts (`requests`: operation name -> HTTP requests sent, retries included).
    `credentials`: variables given for this repository (else the process's environment)."""

    def __init__(
        self,
        location: S3Location,
        *,
        attempts: int = ATTEMPTS,
        backoff_base: float = BACKOFF_BASE,
        credentials: S3Credentials | None = None,
    ):
        self.location = location
        self.credentials = credentials
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.requests: collections.Counter[str] = collections.Counter()
        self.retries = 0
        self._count_lock = threading.Lock()
        self._slots = Slots(MAX_CONNECTIONS)  # Ctrl-C cannot wedge it (slots.py)
        self._holding = threading.local()  # an operation that calls another keeps its one slot
        config = Config(
            max_pool_connections=MAX_CONNECTIONS,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": 1, "mode": "standard"},  # ours: see `call`
            s3={"addressing_style": "path" if location.endpoint else "auto"},
        )
        try:
            session = _session(credentials)
            self.client: Any = session.client(
                "s3",
                endpoint_url=location.endpoint,
                region_name=session.region_name or DEFAULT_REGION,
                config=config,
            )
        except botocore.exceptions.BotoCoreError as err:  # a profile that is not there, say
            raise RepositoryError(f"cannot reach {location.url}: {err}") from err
        except ValueError as err:  # botocore's check of the endpoint: a host label over 63 characters
            raise UsageError(f"{location.url}: {err}") from err
        self.client.meta.events.register("before-send.s3", self._count)

    def _count(self, event_name: str = "", **_: object) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._count_lock:
            self.requests[operation] += 1

    @property
    def request_total(self) -> int:
        with self._count_lock:
            return sum(self.requests.values())

    def call(self, what: str, operation: Callable[[], T]) -> T:
        """Run `operation` (one or more requests, a body read included) with retries on 5xx,
        throttling and lost connections; other errors are turned into RepositoryError at once."""
        for attempt in range(self.attempts):
            try:
                if getattr(self._holding, "slot", False):
                    return operation()
                with self._slots:
                    self._holding.slot = True
                    try:
                        return operation()
                    finally:
                        self._holding.slot = False
            except botocore.exceptions.NoCredentialsError as err:
                raise RepositoryError(missing_message(self.location.url, self.credentials)) from err
            except ShadowvaultError:
                raise
            except Exception as err:
                if not is_transient(err):
                    raise translate(err, what, self.location) from err
                if attempt + 1 == self.attempts:
                    raise RepositoryError(
                        f"cannot {what} at {self.location.url} "
                        f"after {self.attempts} attempts: {describe(err)}"
                    ) from err
                delay = random.uniform(0, min(BACKOFF_CAP, self.backoff_base * 2**attempt))
                log.info("S3: %s failed (%s), retrying in %.2f s", what, describe(err), delay)
                with self._count_lock:
                    self.retries += 1
                time.sleep(delay)
        raise AssertionError("unreachable")


def describe(err: BaseException) -> str:
    if isinstance(err, botocore.exceptions.ClientError):
        message = err.response.get("Error", {}).get("Message", "")
        return f"{error_code(err) or http_status(err)} {message}".strip()
    return str(err) or type(err).__name__


def missing_bucket(location: S3Location) -> str:
    return f"bucket {location.bucket} does not exist at {location.endpoint or 's3.amazonaws.com'}"


def translate(err: BaseException, what: str, location: S3Location) -> Exception:
    """The one line a user sees for a failed S3 request."""
    if isinstance(err, botocore.exceptions.ClientError):
        code = error_code(err)
        if code in NOT_FOUND_CODES:
            return NotFoundError(f"cannot {what}: it does not exist in repository {location.url}")
        if code == "NoSuchBucket":
            return RepositoryError(missing_bucket(location))
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return RepositoryError(f"S3 refused access to {location.url} ({code}): check the credentials")
        return RepositoryError(f"cannot {what} at {location.url}: {describe(err)}")
    if why := tls_failure(err):
        return RepositoryError(f"cannot reach {location.url}: {why}")
    if isinstance(err, botocore.exceptions.BotoCoreError):
        return RepositoryError(f"cannot {what} at {location.url}: {err}")
    return RepositoryError(f"cannot {what} at {location.url}: {describe(err)}")
