"""The v1 codec: the documented layout, malformed input, round trips."""

from __future__ import annotations

import random

import pytest

from rainbow.protocol import Ack, Com, DecodeError, Qos, Rec, Rel, Send, decode, encode


def send(qos: Qos, msg_id: int, dup: bool, payload: bytes) -> Send:
    return Send(message_type=0x0102, qos=qos, id=msg_id, dup=dup, payload=payload)


def test_encodes_the_documented_layout() -> None:
    assert encode(send(Qos.AT_MOST_ONCE, 0, False, b"hi")) == b"\x10\x01\x02hi"
    assert encode(send(Qos.AT_LEAST_ONCE, 7, False, b"")) == b"\x12\x01\x02\x00\x07"
    assert encode(send(Qos.EXACTLY_ONCE, 0xABCD, True, b"x")) == b"\x1c\x01\x02\xab\xcdx"
    assert encode(Ack(1, b"{}")) == b"\x20\x00\x01{}"
    assert encode(Rec(2)) == b"\x30\x00\x02"
    assert encode(Rel(3)) == b"\x40\x00\x03"
    assert encode(Com(65534)) == b"\x50\xff\xfe"


@pytest.mark.parametrize(
    ("wire", "kind"),
    [
        (b"", "empty"),
        (b"\x00\x00\x01", "unknown_command"),
        (b"\x60\x00\x01", "unknown_command"),
        (b"\xf0\x00\x01", "unknown_command"),
        (b"\x16\x00\x01\x00\x01", "invalid_qos"),
        (b"\x10\x00", "truncated"),
        (b"\x12\x00\x01\x00", "truncated"),
        (b"\x20\x00", "truncated"),
        (b"\x40", "truncated"),
        (b"\x14\x00\x01\x00\x00", "zero_message_id"),
        (b"\x20\x00\x00", "zero_message_id"),
        (b"\x50\x00\x00", "zero_message_id"),
        (b"\x40\x00\x01\x00", "trailing_bytes"),
        (b"\x50\x00\x01xy", "trailing_bytes"),
    ],
)
def test_rejects_malformed_packets_with_a_typed_error(wire: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(wire)
    assert caught.value.kind == kind
    assert str(caught.value)


def test_decode_error_is_a_rainbow_protocol_error() -> None:
    import rainbow

    with pytest.raises(rainbow.ProtocolError):
        decode(b"\x00")


def test_ignores_bits_the_original_ignored() -> None:
    # Reserved bit 0 set on a SEND, and dup/qos bits on an ACK.
    assert decode(b"\x11\x00\x05abc") == Send(message_type=5, payload=b"abc")
    assert decode(b"\x2d\x00\x09") == Ack(9, b"")


def test_decodes_each_command() -> None:
    assert decode(b"\x1c\x01\x02\xab\xcdx") == send(Qos.EXACTLY_ONCE, 0xABCD, True, b"x")
    assert decode(b"\x30\x00\x02ok") == Rec(2, b"ok")
    assert decode(b"\x40\x00\x03") == Rel(3)
    assert decode(b"\x50\xff\xfe") == Com(65534)
    assert decode(bytearray(b"\x10\x00\x00")) == Send(message_type=0)


def test_ack_and_rec_are_distinct() -> None:
    assert Ack(1, b"") != Rec(1, b"")


def random_packet(rng: random.Random):  # type: ignore[no-untyped-def]
    payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
    msg_id = rng.randrange(1, 0x10000)
    choice = rng.randrange(5)
    if choice == 0:
        qos = Qos(rng.randrange(3))
        return Send(
            message_type=rng.randrange(0x10000),
            qos=qos,
            id=0 if qos == Qos.AT_MOST_ONCE else msg_id,
            dup=bool(rng.getrandbits(1)),
            payload=payload,
        )
    if choice == 1:
        return Ack(msg_id, payload)
    if choice == 2:
        return Rec(msg_id, payload)
    return Rel(msg_id) if choice == 3 else Com(msg_id)


def test_decode_inverts_encode() -> None:
    rng = random.Random(1984)
    for _ in range(3000):
        packet = random_packet(rng)
        assert decode(encode(packet)) == packet


def test_decode_never_fails_other_than_with_decode_error() -> None:
    rng = random.Random(2014)
    for _ in range(5000):
        wire = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 12)))
        try:
            packet = decode(wire)
        except DecodeError:
            continue
        # Whatever decodes re-encodes to a packet that decodes the same.
        assert decode(encode(packet)) == packet


@pytest.mark.parametrize(
    "build",
    [
        lambda: Send(message_type=70000),
        lambda: Send(message_type=-1),
        lambda: Send(message_type=1, qos=Qos.AT_LEAST_ONCE, id=0),
        lambda: Send(message_type=1, qos=Qos.AT_MOST_ONCE, id=5),
        lambda: Send(message_type=1, qos=3),  # type: ignore[arg-type]
        lambda: Ack(0),
        lambda: Rel(65536),
    ],
)
def test_refuses_to_build_unencodable_packets(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        build()


def test_encode_refuses_non_packets() -> None:
    with pytest.raises(TypeError):
        encode("SEND")  # type: ignore[arg-type]
