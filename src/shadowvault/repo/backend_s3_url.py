"""S3 repository URLs: `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]` and `s3:HOST/BUCKET[/PREFIX]`.

The second form (restic's) means HTTPS; `s3:s3.amazonaws.com/BUCKET/...` is AWS itself, whose
endpoint and region the client library resolves (AWS_REGION, ~/.aws/config). Credentials never
appear in a URL: they come from the AWS variables and files (boto3's default chain).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from shadowvault.errors import UsageError

SCHEME = "s3:"
S3_FORMS = "s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX] or s3:s3.amazonaws.com/BUCKET[/PREFIX]"
AWS_HOSTS = ("s3.amazonaws.com",)
# Bucket names as S3 accepts them (3-63 lower-case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # as repo/storage.py tells a URL from a path


@dataclass(frozen=True)
class S3Location:
    """Where an S3 repository is: endpoint (None: AWS's own), bucket and key prefix ("" or "a/b")."""

    endpoint: str | None
    bucket: str
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def name_of(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    @property
    def url(self) -> str:
        """The canonical URL (what `describe` shows and what names the local cache)."""
        where = self.endpoint or "s3.amazonaws.com"
        tail = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"{SCHEME}{where}/{tail}"


def redacted(text: str) -> str:
    """`text` as a message may show it: the userinfo of a URL's authority (`user:pass@`) and its
    query replaced by `***`, whatever the scheme (`s3:http://...`, `s3:HOST/...`, `sftp://...`)."""
    start = text.find("://")
    if start >= 0:
        start += 3
    elif scheme := _SCHEME.match(text):  # restic's forms: s3:HOST/..., sftp:USER@HOST:/...
        start = scheme.end()
    else:
        return text
    end = next((i for i in range(start, len(text)) if text[i] in "/?#"), len(text))
    authority = text[start:end]
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    rest = text[end:]
    if "?" in rest:
        path, _, query = rest.partition("?")
        rest = path + "?***" + ("#" + query.partition("#")[2] if "#" in query else "")
    return text[:start] + authority + rest


def is_s3_url(text: str) -> bool:
    return text.lower().startswith(SCHEME)


def parse_s3_url(text: str) -> S3Location:
    """The location an `s3:` URL names; a UsageError saying the accepted forms otherwise."""
    shown = redacted(text)  # what a message may echo: never the credentials
    rest = text[len(SCHEME) :]
    if rest.startswith("//"):
        raise UsageError(f"{shown!r} is not an S3 repository URL: write {S3_FORMS}")
    if "://" in rest:
        try:
            url = urlsplit(rest)
        except ValueError as err:  # a bracket left open: "Invalid IPv6 URL"
            raise UsageError(f"{shown!r} is not an S3 repository URL ({err}): write {S3_FORMS}") from None
        if url.scheme.lower() not in ("http", "https") or not url.hostname:
            raise UsageError(f"{shown!r} is not an S3 repository URL: write {S3_FORMS}")
        if url.username or url.password or url.query or url.fragment:
            raise UsageError(
                f"{shown!r}: no credentials, query or fragment in an S3 URL "
                "(credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials)"
            )
        _check_port(url.netloc, shown)
        endpoint: str | None = f"{url.scheme.lower()}://{url.netloc}"
        path = url.path
    else:
        host, _, path = rest.partition("/")
        if "@" in host:
            raise UsageError(
                f"{shown!r}: no credentials in an S3 URL "
                "(credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials)"
            )
        if not host:
            raise UsageError(f"{shown!r} names no host: write {S3_FORMS}")
        _check_port(host, shown)
        endpoint = None if host.lower() in AWS_HOSTS else f"https://{host}"
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        raise UsageError(f"{shown!r} names no bucket: write {S3_FORMS}")
    bucket, prefix = parts[0], "/".join(parts[1:])
    if not _BUCKET.match(bucket):
        raise UsageError(
            f"{bucket!r} is not a valid S3 bucket name (3-63 lower-case letters, digits, . and -)"
        )
    if any(p in (".", "..") for p in parts[1:]):
        raise UsageError(f"{shown!r}: the prefix may not contain . or .. components")
    return S3Location(endpoint, bucket, prefix)


def _check_port(netloc: str, shown: str) -> None:
    """A UsageError for a port no server listens on (0, out of range, not a number, or a bare `:`),
    rather than eight tries to connect to it."""
    try:
        port = urlsplit(f"//{netloc}").port
    except ValueError:
        port = 0
    if port == 0 or netloc.endswith(":"):
        raise UsageError(f"{shown!r} has an invalid port")
