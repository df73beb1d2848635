"""A stateless HPACK encoder for the server's response heads (RFC 7541).

`h2`'s own encoder (the `hpack` library) searches its header table and adds most fields
to the dynamic table, Huffman-coding every string, in Python: about a sixth of the
CPU of an HTTP/2 request through the proxy. Responses mostly carry fields the table
would not help with (each one's `x-request-id`, `date`, a length), so this encoder
uses only the static table: a field found there whole is one index byte, a field whose
name is there is that index and the value as a literal "without indexing", any other is
a literal name and value. Nothing is inserted, so the decoder's dynamic table stays
empty and no state can go out of step; strings are not Huffman-coded (a few bytes more
per response, no Python loop over every byte).

It answers the peer's SETTINGS_HEADER_TABLE_SIZE as RFC 7541 §4.2 asks: a change of
the size the encoder may use is acknowledged with a dynamic table size update at the
start of the next block (size 0: we use none).
"""

from __future__ import annotations

from collections.abc import Iterable

from hpack.table import HeaderTable

# The static table (RFC 7541 Appendix A), 1-based: whole fields, and names (first index).
_STATIC_FIELDS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FIELDS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 §5.1: `value` on a `prefix_bits` prefix, `first` the byte's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """RFC 7541 §5.2, not Huffman-coded."""
    size = len(data)
    return (bytes((size,)) if size < 127 else _integer(size, 7, 0)) + data


class LiteralEncoder:
    """Stands in for `hpack.Encoder` on a server connection (`conn.encoder`): `h2` calls
    `encode(headers)` and sets `header_table_size` when the peer's setting changes."""

    def __init__(self) -> None:
        self._size_update = False

    @property
    def header_table_size(self) -> int:
        return 0

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # We use no dynamic table whatever the peer allows; say so once after a change.
        self._size_update = True

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        parts = []
        if self._size_update:
            self._size_update = False
            parts.append(b"\x20")  # dynamic table size update: 0
        fields = _STATIC_FIELDS
        names = _STATIC_NAMES
        for name, value in headers:
            index = fields.get((name, value))
            if index is not None:
                parts.append(bytes((0x80 | index,)))  # indexed field (all indexes < 127)
                continue
            index = names.get(name)
            if index is not None:
                # Literal without indexing, indexed name (4-bit prefix).
                head = bytes((index,)) if index < 15 else _integer(index, 4, 0)
                parts += (head, _string(value))
            else:
                parts += (b"\x00", _string(name), _string(value))
        return b"".join(parts)
