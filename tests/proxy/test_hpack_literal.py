"""hpack_literal.LiteralEncoder: what hpack's own decoder reads back, for every kind of
field, and the size update a peer's SETTINGS_HEADER_TABLE_SIZE asks for."""

from __future__ import annotations

import pytest
from hpack import Decoder

from haproxyd.proxy.hpack_literal import LiteralEncoder

FIELDS = [
    (b":status", b"200"),  # whole field in the static table: one byte
    (b":status", b"418"),  # name in the static table (index < 15)
    (b"content-type", b"text/plain"),  # name in the static table (index >= 15)
    (b"www-authenticate", b"x" * 300),  # a value past the 7-bit length prefix
    (b"x-request-id", b"abc-0001"),  # neither
    (b"x" * 200, b""),  # a long new name, an empty value
    (b"set-cookie", bytes(range(256))),  # any octet
]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f[0][:20].decode())
def test_each_field_decodes_as_sent(field):
    assert Decoder().decode(LiteralEncoder().encode([field]), raw=True) == [field]


def test_a_block_uses_no_dynamic_table_so_any_decoder_state_reads_it():
    encoder, decoder = LiteralEncoder(), Decoder()
    for _ in range(3):  # the same decoder, block after block
        assert decoder.decode(encoder.encode(FIELDS), raw=True) == FIELDS
    assert len(decoder.header_table.dynamic_entries) == 0
    assert encoder.encode([(b":status", b"200")]) == b"\x88"


def test_a_table_size_change_is_acknowledged_once_with_a_size_update():
    encoder = LiteralEncoder()
    encoder.header_table_size = 0  # what h2 does on the peer's SETTINGS_HEADER_TABLE_SIZE
    first = encoder.encode([(b":status", b"200")])
    assert first == b"\x20\x88"  # size update to 0, then the field
    assert encoder.encode([(b":status", b"200")]) == b"\x88"
    decoder = Decoder()
    decoder.max_allowed_table_size = 0
    assert decoder.decode(first, raw=True) == [(b":status", b"200")]
