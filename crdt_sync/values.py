"""Field values: exact round-trips through the CRDT, limits, and the JSON form of bytes.

pycrdt turns ints into floats and bytes into bytearray, and panics on ints beyond 64 bits, so
every scalar is stored CBOR-encoded inside the CRDT: what goes in comes back with its type.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

import cbor2

from .cbor_exact import loads_exact
from .errors import ValueRejected

#: Largest encoded size of one field value or list element (bytes).
MAX_VALUE_BYTES = 64 * 1024
#: Largest text inserted by one call.
MAX_TEXT_INSERT = 64 * 1024
#: Nesting depth of lists and dicts inside one value.
MAX_DEPTH = 32
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

Value = None | bool | int | float | str | bytes | list[Any] | dict[str, Any]


def check_value(value: object, what: str = "", depth: int = 0, *, finite: bool = True) -> None:
    """Raise :class:`ValueRejected` unless ``value`` round-trips exactly and is finite; the
    message starts with ``what`` when given (e.g. ``field 'pressure'``).

    ``finite=False`` lets infinities through (never NaN): for registers already stored or
    received, which an older crdt-sync could write; new writes are always checked finite.
    """
    if depth > MAX_DEPTH:
        raise ValueRejected(f"{_at(what)}value nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, bytes)):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueRejected(f"{_at(what)}str is not valid Unicode (lone surrogate)") from None
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise ValueRejected(f"{_at(what)}integer {value} does not fit in 64 bits "
                                f"({INT_MIN}..{INT_MAX})")
        return
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueRejected(f"{_at(what)}NaN cannot be stored: it is not equal to itself")
        if finite and math.isinf(value):
            raise ValueRejected(f"{_at(what)}{'-' if value < 0 else ''}Infinity cannot be "
                                "stored: only finite numbers can (JSON has no infinity; 1e400 "
                                "overflows a float)")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            check_value(item, what, depth + 1, finite=finite)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueRejected(f"{_at(what)}dict keys must be str, not {type(key).__name__}")
            if not _is_utf8(key):
                raise ValueRejected(f"{_at(what)}dict key {key!r} is not valid Unicode "
                                    "(lone surrogate)")
            check_value(item, what, depth + 1, finite=finite)
        return
    raise ValueRejected(f"{_at(what)}unsupported value type {type(value).__name__}")


def _at(what: str) -> str:
    return f"{what}: " if what else ""


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_value(value: object, what: str = "") -> bytes:
    """Check and CBOR-encode one value, refusing what is too large (see :func:`check_value`)."""
    check_value(value, what)
    data = cbor2.dumps(value)
    if len(data) > MAX_VALUE_BYTES:
        raise ValueRejected(f"{_at(what)}value is {len(data)} bytes encoded; the limit is "
                            f"{MAX_VALUE_BYTES}")
    return data


def encode_field(name: str, value: object) -> bytes:
    """:func:`encode_value` for field ``name``: a refusal names the field (built only then)."""
    try:
        return encode_value(value)
    except ValueRejected as exc:
        raise ValueRejected(f"field {name!r}: {exc}") from None


def decode_value(data: bytes | bytearray) -> Any:
    """The value encoded in ``data`` (one CBOR item: trailing bytes raise ValueError)."""
    return _untuple(loads_exact(bytes(data)))


def _untuple(value: Any) -> Any:
    if isinstance(value, list):
        return [_untuple(v) for v in value]
    if isinstance(value, dict):
        return {k: _untuple(v) for k, v in value.items()}
    return value


def to_json(value: Any) -> Any:
    """The JSON form of a value: bytes become ``{"$bytes": "<base64>"}``, and a float JSON
    cannot hold (an infinity stored by an older crdt-sync or received) becomes
    ``{"$float": "Infinity"}`` (or ``"-Infinity"``, ``"NaN"``)."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any) -> Any:
    """Inverse of :func:`to_json`."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"} and isinstance(value["$bytes"], str):
            return base64.b64decode(value["$bytes"], validate=True)
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


MAX_NAME = 256


def check_name(kind: str, name: object, limit: int = MAX_NAME) -> None:
    """Collections, entity ids and space names: non-empty valid Unicode, bounded length."""
    if not isinstance(name, str) or not name or len(name) > limit:
        raise ValueRejected(f"{kind} must be a non-empty str of at most {limit} characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueRejected(f"{kind} {name!r} is not valid Unicode (a lone surrogate: on a "
                            "command line, a byte that is not UTF-8)") from None


#: Longest field name, in characters.
MAX_FIELD_NAME = 256


def check_field_name(name: object) -> None:
    """A field name: non-empty valid Unicode of at most :data:`MAX_FIELD_NAME` characters,
    without ``\\x00`` or ``\\x01`` (the register key's separator and the tombstone's mark)."""
    if not isinstance(name, str) or not name or len(name) > MAX_FIELD_NAME:
        raise ValueRejected(f"field names are non-empty str of at most {MAX_FIELD_NAME} chars")
    if "\x00" in name or "\x01" in name:
        raise ValueRejected(f"field name {name!r} may not contain the characters \\x00 or \\x01")
    if not _is_utf8(name):
        raise ValueRejected(f"field name {name!r} is not valid Unicode (a lone surrogate: on a "
                            "command line, a byte that is not UTF-8)")


def loads_json(text: str) -> Any:
    """Parse ``text`` as JSON with this module's limits, or raise.

    Raises :class:`ValueRejected` when arrays and objects nest deeper than
    :data:`MAX_DEPTH` (checked on the text, before parsing builds anything) or a number
    overflows to infinity (``1e400``); ``ValueError`` when ``text`` is not JSON (``NaN`` and
    ``Infinity`` are not JSON either).
    """
    if _nesting(text) > MAX_DEPTH + 1:
        raise ValueRejected(f"value nested deeper than {MAX_DEPTH} levels")

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constant)


def _nesting(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings in ``text``."""
    depth = deepest = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


#: The longest string (in characters) the value index holds, and the most bytes a small
#: dict or list may take encoded; bytes values, longer strings and larger containers are
#: left out (``Space.find`` refuses them: :func:`indexable`).
INDEX_MAX_STR = 256


def indexable(value: object) -> bool:
    """Whether the value index holds ``value``: numbers, booleans, null, strings of at most
    :data:`INDEX_MAX_STR` characters, and dicts or lists of those that take at most
    :data:`INDEX_MAX_STR` bytes in canonical CBOR. Never bytes."""
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        return len(value) <= INDEX_MAX_STR
    if isinstance(value, (dict, list)):
        return _small_plain(value, [0])
    return False


def _small_plain(value: object, budget: list[int]) -> bool:
    """No bytes anywhere, and a rough size (characters plus 9 bytes an item) within
    :data:`INDEX_MAX_STR`: a cheap bound, no encoding."""
    budget[0] += 9
    if budget[0] > INDEX_MAX_STR:
        return False
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        budget[0] += len(value)
        return budget[0] <= INDEX_MAX_STR
    if isinstance(value, dict):
        return all(_small_plain(k, budget) and _small_plain(v, budget) for k, v in value.items())
    if isinstance(value, list):
        return all(_small_plain(v, budget) for v in value)
    return False
