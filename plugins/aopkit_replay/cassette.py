"""The cassette file: recorded requests and what the model answered, as reviewable JSON.

Format (version 1; see docs/providers/replay.md)::

    {"aopkit_cassette": 1,
     "models": {"<provider>:<model>": {"capabilities": {...}}},
     "interactions": [{"fingerprint": "...", "request": {...},
                       "responses": [{"response": {...}} | {"chunks": [...]}
                                     | {"error": {...}, "chunks": [...]?}, ...]}]}
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from aopkit import AopkitError, DecodeError, files, jsontext
from aopkit.codec import Codec
from aopkit.models import (
    Capabilities,
    ChatResponse,
    ModelError,
    ModelRejected,
    ModelUnavailable,
)
from aopkit.secret import Secret, redact

from .diff import differences

if TYPE_CHECKING:
    from aopkit import Kernel

Mode = Literal["record", "replay", "auto"]
MODES: tuple[Mode, ...] = ("record", "replay", "auto")
VERSION = 1
SHOWN_DIFFERENCES = 8
# Error types a cassette records, the most specific first: a plugin's own subclass of one of
# them is recorded (and replayed) as that kernel type.
ERRORS: dict[str, type[ModelError]] = {
    cls.__name__: cls for cls in (ModelUnavailable, ModelRejected, ModelError)
}


class CassetteError(AopkitError):
    """A cassette could not be read or written, or does not hold what a replay needs."""


class CassetteMiss(CassetteError):
    """A request the cassette has no (more) recorded answer for. ``differences`` lists how it
    differs from the closest recorded request (empty when it was recorded, just fewer times)."""

    def __init__(self, message: str, differences: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.differences = list(differences)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise CassetteError(f"mode must be one of {', '.join(map(repr, MODES))}, not {mode!r}")


def fingerprint(request: Mapping[str, Any]) -> str:
    """The hash of a canonical request: key order and JSON spacing do not matter."""
    text = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@attrs.frozen
class Take:
    """One recorded outcome of a request: its JSON, the responses (one, or a stream's chunks)
    and the error the model raised, if it did (after the chunks, for a cut stream)."""

    data: dict[str, Any]
    chunks: list[ChatResponse]
    error: dict[str, Any] | None

    @classmethod
    def of(
        cls,
        chunks: Sequence[ChatResponse],
        *,
        stream: bool,
        error: ModelError | None,
        codec: Codec,
        secrets: Sequence[Secret | str],
    ) -> Take:
        """What a call produced, as it is written: a stream's chunks (also those before a cut),
        else the response; and the error, its message redacted of ``secrets``."""
        data: dict[str, Any] = {}
        if stream and (chunks or error is None):
            data["chunks"] = [_steady(codec.dump(c)) for c in chunks]
        elif chunks:
            data["response"] = _steady(codec.dump(chunks[-1]))
        if error is not None:
            kind = next(c for c in ERRORS.values() if isinstance(error, c))
            data["error"] = {
                "type": kind.__name__,
                "message": redact(error.message, *secrets),
                "status": error.status,
            }
            if isinstance(error, ModelUnavailable):
                data["error"]["retry_after"] = error.retry_after
        return cls(data, list(chunks), data.get("error"))

    def raise_error(self, model: str) -> None:
        """Raise the recorded error anew (a fresh exception each time it is replayed)."""
        if self.error is not None:
            e = self.error
            cls = ERRORS[e["type"]]
            status = e.get("status")
            if cls is ModelUnavailable:
                raise ModelUnavailable(
                    model, e["message"], status=status, retry_after=e.get("retry_after")
                )
            raise cls(model, e["message"], status=status)


def _steady(response: dict[str, Any]) -> dict[str, Any]:
    """A dumped response without what differs between two recordings of the same answer: the
    seconds the call took (a replayed answer takes none)."""
    usage = response.get("usage")
    if isinstance(usage, dict):
        response["usage"] = {k: v for k, v in usage.items() if k != "seconds"}
    return response


@attrs.define
class Entry:
    request: dict[str, Any]
    takes: list[Take] = attrs.field(factory=list)


def read_cassette_file(path: Path, mode: Mode) -> dict[str, Any] | None:
    """The JSON object of the cassette at ``path`` (None: no file, which ``auto`` allows), or
    a :class:`CassetteError` saying why it is not a cassette."""
    try:
        with files.locked(path, shared=True, by_directory=True):
            raw = path.read_bytes()
    except FileNotFoundError:
        if mode == "auto":
            return None
        raise CassetteError(
            f"no cassette at {path}: record one first with mode='record' (or 'auto')"
        ) from None
    except OSError as exc:
        raise CassetteError(f"cannot read cassette {path}: {exc.strerror}") from exc
    try:
        data = jsontext.loads(raw, check_depth=False)
    except DecodeError as exc:
        raise CassetteError(f"cassette {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("aopkit_cassette") != VERSION:
        raise CassetteError(
            f"cassette {path}: not an aopkit cassette of version {VERSION} "
            '(expected a JSON object with "aopkit_cassette": 1)'
        )
    return data


class Cassette:
    """One cassette file, shared by every replay model of a kernel that opens it in one mode.

    ``record`` starts empty (the file is replaced on the first write); ``replay`` and ``auto``
    read the file. Each request's takes are played in order; what a record or auto model records
    is appended and the whole file rewritten atomically, scrubbed of the secrets ``redact``
    knows (the kernel's).
    """

    def __init__(
        self, path: Path, mode: Mode, codec: Codec, redact: Callable[[str], str] = str
    ) -> None:
        self.path, self.mode, self.codec, self.redact = path, mode, codec, redact
        self.models: dict[str, Capabilities] = {}
        self.entries: dict[str, Entry] = {}
        self.played: dict[str, int] = {}
        if mode != "record":
            self._load()

    def __repr__(self) -> str:
        return f"<Cassette {self.path} {self.mode}>"

    # -- reading ----------------------------------------------------------------------------
    def _load(self) -> None:
        data = read_cassette_file(self.path, self.mode)
        if data is None:
            return
        try:
            self._read(data)
        except DecodeError as exc:
            raise CassetteError(f"cassette {self.path}: {exc}") from None

    def _read(self, data: dict[str, Any]) -> None:
        models = data.get("models", {})
        if not isinstance(models, dict):
            raise DecodeError("models", "expected an object")
        for name, info in models.items():
            caps = info.get("capabilities") if isinstance(info, dict) else None
            if not isinstance(caps, dict):
                raise DecodeError(f"models.{name}", "expected an object with 'capabilities'")
            try:
                self.models[name] = self.codec.load(caps, Capabilities)
            except DecodeError as exc:
                raise exc.under(f"models.{name}.capabilities") from None
        interactions = data.get("interactions", [])
        if not isinstance(interactions, list):
            raise DecodeError("interactions", "expected an array")
        for i, item in enumerate(interactions):
            where = f"interactions[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
                raise DecodeError(where, "expected an object with a 'request' object")
            responses = item.get("responses", [])
            if not isinstance(responses, list):
                raise DecodeError(f"{where}.responses", "expected an array")
            entry = self.entries.setdefault(fingerprint(item["request"]), Entry(item["request"]))
            for j, response in enumerate(responses):
                try:
                    entry.takes.append(self._decode(response))
                except DecodeError as exc:
                    raise exc.under(f"{where}.responses[{j}]") from None

    def _decode(self, data: Any) -> Take:
        if not isinstance(data, dict) or not {"response", "chunks", "error"} & data.keys():
            raise DecodeError("", "expected an object with 'response', 'chunks' or 'error'")
        chunks = data.get("chunks", [data["response"]] if "response" in data else [])
        if not isinstance(chunks, list):
            raise DecodeError("chunks", "expected an array")
        field = "chunks" if "chunks" in data else "response"
        decoded = []
        for i, chunk in enumerate(chunks):
            try:
                decoded.append(self.codec.load(chunk, ChatResponse))
            except DecodeError as exc:
                raise exc.under(f"chunks[{i}]" if field == "chunks" else field) from None
        error = data.get("error")
        if error is not None and (
            not isinstance(error, dict)
            or error.get("type") not in ERRORS
            or not isinstance(error.get("message"), str)
        ):
            raise DecodeError(
                "error", f"expected {{'type': one of {sorted(ERRORS)}, 'message': '...'}}"
            )
        return Take(data, decoded, error)

    def capabilities(self, model: str) -> Capabilities:
        """The capabilities recorded for ``model``."""
        if model not in self.models:
            have = ", ".join(sorted(self.models)) or "none"
            raise CassetteError(
                f"cassette {self.path} has no recording of {model} (it has: {have})"
            )
        return self.models[model]

    # -- playing ----------------------------------------------------------------------------
    def recorded(self, key: str) -> int:
        """How many takes of the request ``key`` are recorded."""
        entry = self.entries.get(key)
        return 0 if entry is None else len(entry.takes)

    def play(self, key: str) -> Take | None:
        """The next unplayed take of the request ``key``, or None."""
        entry = self.entries.get(key)
        position = self.played.get(key, 0)
        if entry is None or position >= len(entry.takes):
            return None
        self.played[key] = position + 1
        return entry.takes[position]

    def miss(self, model: str, key: str, request: dict[str, Any]) -> CassetteMiss:
        """The error for a request that :meth:`play` had no take for."""
        where = f"cassette {self.path}"
        entry = self.entries.get(key)
        if entry is not None:
            return CassetteMiss(
                f"{model}: this request was recorded {len(entry.takes)} time(s) in {where}, "
                f"and call {self.played.get(key, 0) + 1} of it has no recording; record again "
                "with mode='record', or use mode='auto' to add the missing calls"
            )
        if not self.entries:
            return CassetteMiss(f"{model}: {where} holds no recorded request; record it first")
        request = json.loads(json.dumps(request))  # tuples as lists, as they were recorded
        closest = min(
            (list(differences(e.request, request)) for e in self.entries.values()),
            key=lambda found: sum(d.size for d in found),
        )
        found = [str(d) for d in closest]
        shown = "\n  ".join(found[:SHOWN_DIFFERENCES])
        more = len(found) - SHOWN_DIFFERENCES
        if more > 0:
            shown += f"\n  ... and {more} more"
        return CassetteMiss(
            f"{model}: {where} has no recording of this request; the closest recorded "
            f"request differs in:\n  {shown}\nRecord it with mode='record' or mode='auto'.",
            found,
        )

    # -- recording --------------------------------------------------------------------------
    def record(self, key: str, request: dict[str, Any], take: Take) -> None:
        """Append ``take`` to the request ``key`` and rewrite the file. If the write fails,
        the take is dropped again (so a retried call is not recorded twice) and the file on
        disk is the previous one."""
        entry = self.entries.get(key)
        new = entry is None
        if entry is None:
            entry = self.entries[key] = Entry(json.loads(json.dumps(request)))
        entry.takes.append(take)
        try:
            self._write()
        except (OSError, TypeError, ValueError) as exc:  # disk full, or a value JSON cannot hold
            entry.takes.pop()
            if new:
                del self.entries[key]
            raise CassetteError(f"could not write cassette {self.path}: {exc}") from exc
        self.played[key] = len(entry.takes)

    def _write(self) -> None:
        """Write to a temporary file beside the cassette, then rename it over the cassette: a
        crash midway leaves the old file whole. Synchronous on purpose, so that concurrent
        calls cannot finish their writes in the wrong order. (Two processes recording into
        one cassette still each write their own recordings: the last one wins.)"""
        data = {
            "aopkit_cassette": VERSION,
            "models": {
                name: {"capabilities": {**attrs.asdict(caps), "media": sorted(caps.media)}}
                for name, caps in self.models.items()
            },
            "interactions": [
                {
                    "fingerprint": key,
                    "request": entry.request,
                    "responses": [take.data for take in entry.takes],
                }
                for key, entry in self.entries.items()
            ],
        }
        # strict JSON (no NaN, no lone surrogate), so that what is recorded also loads
        text = self.redact(
            json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with files.locked(self.path, by_directory=True):  # and a killed writer's temp removed
            files.replace_atomically(self.path, (text + "\n").encode("utf-8"))


_open: weakref.WeakKeyDictionary[Kernel, dict[tuple[Path, Mode], Cassette]] = (
    weakref.WeakKeyDictionary()
)


def open_cassette(kernel: Kernel, path: str | os.PathLike[str], mode: Mode) -> Cassette:
    """The kernel's cassette for ``path`` in ``mode``, opened on first use: several agents'
    models then share one recording and one replay position per request."""
    check_mode(mode)
    opened = _open.setdefault(kernel, {})
    key = (Path(path).resolve(), mode)
    if key not in opened:
        opened[key] = Cassette(key[0], mode, kernel.codec, kernel.secrets.redact)
    return opened[key]


def share_cassette(kernel: Kernel, cassette: Cassette) -> None:
    """Make ``cassette`` the one ``kernel``'s replay models open for its path and mode: the
    kernels of one run then share one recording instead of overwriting each other's."""
    _open.setdefault(kernel, {})[(cassette.path, cassette.mode)] = cassette
