"""Plain data across the sandbox's wall: the values a program receives and returns, as tagged JSON.

Only exact built-in types cross (``type(x) is int``, never a subclass): None, bool, int, float,
complex, str, bytes, and lists, tuples, sets, frozensets and dicts of them. A float travels as its
``repr`` (exact), NaN and the infinities by name; an int as hexadecimal (no decimal digit limit);
a dict as its pairs, so keys of any plain type survive. An iterator or generator a program returns
travels as its items (at most ``MAX_NODES``) and comes back as an iterator over them.

The decoder is what the trusted checker trusts: whatever bytes the sandbox sends, it builds exact
built-in objects or raises :class:`NotPlain`, within caps on nodes and depth. This file is also
copied into the sandbox (the program's side encodes with it) and so imports nothing of the project.
"""

import json
import math

MAX_DEPTH = 64
MAX_NODES = 1_000_000
ATOMS = {type(None): "n", bool: "b", int: "i", float: "f", complex: "c", str: "s", bytes: "y"}
CONTAINERS = {list: "l", tuple: "t", set: "S", frozenset: "F"}


class NotPlain(ValueError):
    """A value that is not plain data, or bytes that do not decode to plain data."""


def _float(value: float) -> str:
    return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))


def encode(value, depth: int = 0, budget: list | None = None):
    """The tagged tree of a plain value; :class:`NotPlain` names the first thing that is not."""
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise NotPlain(f"more than {MAX_NODES} values or deeper than {MAX_DEPTH}")
    kind = type(value)
    if kind in ATOMS:
        tag = ATOMS[kind]
        if value is None:
            return [tag]
        if kind is int:
            return [tag, hex(value)]
        if kind is float:
            return [tag, _float(value)]
        if kind is complex:
            return [tag, _float(value.real), _float(value.imag)]
        if kind is bytes:
            return [tag, value.hex()]
        return [tag, value]
    if kind in CONTAINERS:
        return [CONTAINERS[kind], [encode(item, depth + 1, budget) for item in value]]
    if kind is dict:
        return ["d", [[encode(k, depth + 1, budget), encode(v, depth + 1, budget)] for k, v in value.items()]]
    if hasattr(value, "__next__") and hasattr(value, "__iter__"):  # an iterator or generator: its items
        items = []
        for item in value:
            items.append(encode(item, depth + 1, budget))
        return ["it", items]
    raise NotPlain(f"a value of type {kind.__name__} is not plain data")


def dumps(value) -> bytes:
    return json.dumps(encode(value), separators=(",", ":")).encode()


def _number(text) -> float:
    if not isinstance(text, str):
        raise NotPlain("a float is sent as text")
    return float(text)  # 'nan', 'inf', '-inf' and every repr


def decode(tree, depth: int = 0, budget: list | None = None):
    """The exact built-in value of a tagged tree from :func:`encode`; :class:`NotPlain` otherwise."""
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise NotPlain(f"more than {MAX_NODES} values or deeper than {MAX_DEPTH}")
    if type(tree) is not list or not tree or type(tree[0]) is not str:
        raise NotPlain("a value is a list that starts with its tag")
    tag, rest = tree[0], tree[1:]
    try:
        if tag == "n" and not rest:
            return None
        if tag == "b" and len(rest) == 1 and type(rest[0]) is bool:
            return rest[0]
        if tag == "i" and len(rest) == 1 and type(rest[0]) is str:
            return int(rest[0], 16)
        if tag == "f" and len(rest) == 1:
            return _number(rest[0])
        if tag == "c" and len(rest) == 2:
            return complex(_number(rest[0]), _number(rest[1]))
        if tag == "s" and len(rest) == 1 and type(rest[0]) is str:
            return rest[0]
        if tag == "y" and len(rest) == 1 and type(rest[0]) is str:
            return bytes.fromhex(rest[0])
        if tag in ("l", "t", "S", "F", "it") and len(rest) == 1 and type(rest[0]) is list:
            items = [decode(item, depth + 1, budget) for item in rest[0]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset, "it": iter}[tag](items)
        if tag == "d" and len(rest) == 1 and type(rest[0]) is list:
            pairs = rest[0]
            if not all(type(pair) is list and len(pair) == 2 for pair in pairs):
                raise NotPlain("a dict is a list of [key, value] pairs")
            return {decode(k, depth + 1, budget): decode(v, depth + 1, budget) for k, v in pairs}
    except (TypeError, ValueError, OverflowError) as error:  # unhashable keys, bad hex or numbers
        raise NotPlain(f"a value tagged {tag!r} does not decode: {error}") from None
    raise NotPlain(f"unknown or malformed tag {tag!r}")


def loads(data: bytes):
    try:
        tree = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise NotPlain(f"not JSON: {str(error)[:100]}") from None
    return decode(tree)
