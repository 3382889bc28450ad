"""Secrets (API keys, tokens, passwords) that never show up in reprs, logs, events, traces or
exception texts.

A :class:`Secret` hides its value; a kernel's :class:`Secrets` knows every secret value its
models and its program use, and scrubs them from text that crosses the kernel's edges (what a
server answers, what a sink writes). A secret named by where it lives
(:meth:`Secret.from_env`, :meth:`Secret.from_file`) travels to other processes (Ray actors) as
that name and is read there: its value never goes through pickles, actor arguments or logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import socket
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from .errors import AopkitError

MASK = "***"
MIN_LENGTH = 4  # shorter values would mask common words; they are not secrets worth the name

# Headers whose values are credentials, by name; and words that mark a credential header or a
# credential parameter of a URL query string (``x-my-token``, ``?key=``, ``?sig=``).
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie"}
)
CREDENTIAL_WORDS = re.compile(
    r"auth|key|token|secret|passw|pwd|cookie|session|signature|^sig$|credential", re.IGNORECASE
)


class SecretMissing(AopkitError):
    """A secret named by its environment variable or file could not be read here."""


class SecretNotPortable(AopkitError):
    """A secret given by value was about to be pickled (for a Ray actor, say)."""


class Secret:
    """A string that prints as ``'***'``; :meth:`reveal` is the only way to read it.

    ``Secret("sk-...")`` holds a value; ``Secret.from_env("OPENAI_API_KEY")`` and
    ``Secret.from_file("/run/secrets/openai")`` hold where the value lives and read it on first
    use, in the process that uses it.
    """

    __slots__ = ("_env", "_file", "_value")
    _env: str | None
    _file: str | None
    _value: str | None

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            self._env, self._file, self._value = value._env, value._file, value._value
        else:
            self._env, self._file, self._value = None, None, value

    @classmethod
    def from_env(cls, name: str) -> Secret:
        """The value of environment variable ``name``, read where the secret is first used."""
        secret = cls("")
        secret._env, secret._value = name, None
        return secret

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Secret:
        """The contents of file ``path`` (surrounding whitespace dropped), read on first use."""
        secret = cls("")
        secret._file, secret._value = os.fspath(path), None
        return secret

    @property
    def source(self) -> str | None:
        """Where the value is read from (``env:NAME`` or ``file:PATH``); None for a value."""
        if self._env is not None:
            return f"env:{self._env}"
        return f"file:{self._file}" if self._file is not None else None

    def reveal(self) -> str:
        if self._value is None:
            self._value = self._read()
        return self._value

    def known(self) -> str | None:
        """The value if it was given or already read, without reading it now."""
        return self._value

    def _read(self) -> str:
        host = socket.gethostname()
        if self._env is not None:
            value = os.environ.get(self._env)
            if not value:
                raise SecretMissing(f"environment variable {self._env} is not set on {host}")
            return value
        assert self._file is not None
        try:
            with open(self._file, encoding="utf-8") as file:
                value = file.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SecretMissing(
                f"secret file {self._file} cannot be read on {host}: {reason}"
            ) from None
        if not value:
            raise SecretMissing(f"secret file {self._file} on {host} is empty")
        return value

    def __repr__(self) -> str:
        source = self.source
        return f"Secret({source!r})" if source else f"Secret('{MASK}')"

    __str__ = __repr__

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Secret):
            return False
        if self.source or other.source:
            return self.source == other.source
        return other._value == self._value

    def __hash__(self) -> int:
        return hash(self.source or self._value)

    def __bool__(self) -> bool:
        return self.source is not None or bool(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: Any) -> Secret:
        return self

    def __reduce__(self) -> Any:
        """A named secret pickles as its name and is read again where it is unpickled; a value
        refuses, so that it never travels in actor arguments or object stores."""
        if self._env is not None:
            return (Secret.from_env, (self._env,))
        if self._file is not None:
            return (Secret.from_file, (self._file,))
        raise SecretNotPortable(
            "a secret given by value cannot leave this process; name where it lives instead "
            "(api_key_env='OPENAI_API_KEY', Secret.from_env(...) or Secret.from_file(...)) "
            "so that each process reads it itself"
        )


class Secrets:
    """The secret values one kernel knows; :meth:`redact` replaces each of them (also as it
    looks JSON-escaped or URL-encoded) by ``***``, longest first."""

    def __init__(self) -> None:
        self._secrets: list[Secret] = []
        self._unread: list[Secret] = []  # named secrets whose value is not known yet
        self._forms: list[str] = []  # every spelling to mask, longest first
        self._byte_forms: list[bytes] = []
        self._seen: set[str] = set()

    def add(self, *values: Secret | str | None) -> None:
        """Remember values to scrub (a named secret counts once it has been read)."""
        for value in values:
            if isinstance(value, Secret):
                if value not in self._secrets:
                    self._secrets.append(value)
                    if value.known() is None:
                        self._unread.append(value)
                value = value.known()
            if value and len(value) >= MIN_LENGTH and value not in self._seen:
                self._seen.add(value)
                forms = {*self._forms, *_spellings(value)}
                self._forms = sorted(forms, key=len, reverse=True)
                self._byte_forms = [form.encode() for form in self._forms]

    def add_headers(self, headers: Mapping[str, str | Secret]) -> None:
        """Remember the credentials among ``headers`` (see :func:`names_a_credential`)."""
        for name, value in headers.items():
            if isinstance(value, Secret) or names_a_credential(name):
                self.add(value)
                text = value.known() if isinstance(value, Secret) else value
                scheme, _, token = (text or "").partition(" ")
                if token and scheme.isalpha():  # "Bearer xyz", "Basic dXNlcjpwdw=="
                    self.add(token.strip(), *_basic_parts(scheme, token))
                if "cookie" in name.lower():  # "theme=dark; session=xyz": each value
                    self.add(*(c.partition("=")[2].strip() for c in (text or "").split(";")))

    def add_url(self, url: str) -> None:
        """Remember credentials inside ``url``: its password (also as the Basic credentials
        it turns into) and the values of credential query parameters (``?key=``). A URL that
        cannot be parsed holds none that could be found (it is refused where it is used)."""
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:
            return
        if password:
            basic = f"{parts.username or ''}:{password}"
            self.add(password, basic, base64.b64encode(basic.encode()).decode())
        for pair in parts.query.split("&"):
            name, _, value = pair.partition("=")
            if CREDENTIAL_WORDS.search(unquote_plus(name)):  # as written, and as decoded
                self.add(value, unquote(value), unquote_plus(value))

    def redact(self, text: str) -> str:
        self._refresh()
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        """:meth:`redact` for raw bytes off the wire (a stream's lines)."""
        self._refresh()
        for form in self._byte_forms:
            if form in data:
                data = data.replace(form, MASK.encode())
        return data

    def _refresh(self) -> None:
        """Named secrets read since they were added now have values to scrub. It runs for every
        stream line, so it looks only at the secrets still unread: usually none."""
        if not self._unread:
            return
        for secret in [s for s in self._unread if s.known() is not None]:
            self._unread.remove(secret)
            self.add(secret.known())

    def __contains__(self, value: object) -> bool:
        if isinstance(value, Secret):
            return value in self._secrets
        return value in self._seen

    def __bool__(self) -> bool:
        return bool(self._forms) or bool(self._secrets)


def names_a_credential(name: str) -> bool:
    """Does a header, query parameter or tool argument of this name carry a credential
    (``Authorization``, ``x-api-key``, ``?key=``, ``api_key``...)?"""
    return name.lower() in CREDENTIAL_HEADERS or bool(CREDENTIAL_WORDS.search(name))


def _spellings(value: str) -> Iterable[str]:
    yield value
    yield json.dumps(value)[1:-1]
    yield json.dumps(value, ensure_ascii=False)[1:-1]
    yield quote(value, safe="")
    yield quote_plus(value)


def _basic_parts(scheme: str, token: str) -> list[str]:
    """The user and password inside ``Basic`` credentials (servers echo them decoded)."""
    if scheme.lower() != "basic":
        return []
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return []
    return [decoded, decoded.partition(":")[2]]


def redact(text: str, *secrets: Secret | str | None) -> str:
    """``text`` with every occurrence of the given secrets replaced by ``***``."""
    known = Secrets()
    known.add(*secrets)
    return known.redact(text)
