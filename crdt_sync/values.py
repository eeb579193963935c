"""Field values: exact round-trips through the CRDT, limits, and the JSON form of bytes.

pycrdt turns ints into floats and bytes into bytearray, and panics on ints beyond 64 bits, so
every scalar is stored CBOR-encoded inside the CRDT: what goes in comes back with its type.
"""

from __future__ import annotations

import base64
import math
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


def check_value(value: object, depth: int = 0) -> None:
    """Raise :class:`ValueRejected` unless ``value`` round-trips exactly."""
    if depth > MAX_DEPTH:
        raise ValueRejected(f"value nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, bytes)):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueRejected("str is not valid Unicode (lone surrogate)") from None
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise ValueRejected(f"integer {value} does not fit in 64 bits ({INT_MIN}..{INT_MAX})")
        return
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueRejected("NaN cannot be stored: it is not equal to itself")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            check_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueRejected(f"dict keys must be str, not {type(key).__name__}")
            check_value(item, depth + 1)
        return
    raise ValueRejected(f"unsupported value type {type(value).__name__}")


def encode_value(value: object) -> bytes:
    """Check and CBOR-encode one value, refusing what is too large."""
    check_value(value)
    data = cbor2.dumps(value)
    if len(data) > MAX_VALUE_BYTES:
        raise ValueRejected(f"value is {len(data)} bytes encoded; the limit is {MAX_VALUE_BYTES}")
    return data


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
    """The JSON form of a value: bytes become ``{"$bytes": "<base64>"}``."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
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
        raise ValueRejected(f"{kind} is not valid Unicode") from None
