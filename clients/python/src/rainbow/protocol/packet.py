"""The v1 packet codec: one packet per WebSocket binary message (spec §2).

This module turns bytes into packets and back. It knows nothing about
connections, ids in flight or time; the QoS rules live in
:mod:`rainbow.protocol.outbound` and :mod:`rainbow.protocol.inbound`.

Layout, big-endian::

    byte 0   cmd << 4 | dup << 3 | qos << 1      (bit 0 reserved)
    SEND     u16 message_type, u16 message_id (qos > 0 only), payload
    ACK/REC  u16 message_id, payload (the reply, may be empty)
    REL/COM  u16 message_id

Decoding is strict where the spec is precise (unknown command, qos 3,
truncated bodies, message id 0, bytes after a REL/COM id) and lenient where the
original server was (the reserved bit and the dup/qos bits of packets other
than SEND are ignored), exactly like the Rust crate ``rainbow-protocol``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Union

from ..errors import ProtocolError

__all__ = [
    "Qos",
    "Command",
    "Send",
    "Ack",
    "Rec",
    "Rel",
    "Com",
    "Packet",
    "DecodeError",
    "encode",
    "decode",
]

_U16 = struct.Struct(">H")


class Qos(IntEnum):
    """Quality of service of a SEND (MQTT-style)."""

    #: Fire and forget: nothing comes back.
    AT_MOST_ONCE = 0
    #: SEND -> ACK(reply); the sender retransmits until acknowledged.
    AT_LEAST_ONCE = 1
    #: SEND -> REC(reply) -> REL -> COM; the receiver processes the message once.
    EXACTLY_ONCE = 2


class Command(IntEnum):
    """The command nibble of byte 0."""

    SEND = 1
    ACK = 2
    REC = 3
    REL = 4
    COM = 5


def _check_u16(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be an integer in 0..65535, got {value!r}")


def _check_id(value: int) -> None:
    if not isinstance(value, int) or not 1 <= value <= 0xFFFF:
        raise ValueError(f"message id must be an integer in 1..65535, got {value!r}")


@dataclass(frozen=True)
class Send:
    """A typed message with its payload.

    ``id`` is the per-connection, per-direction message id; it is ``0`` (and
    not encoded) when ``qos`` is 0.
    """

    message_type: int
    qos: Qos = Qos.AT_MOST_ONCE
    id: int = 0
    dup: bool = False
    payload: bytes = b""

    def __post_init__(self) -> None:
        _check_u16("message_type", self.message_type)
        object.__setattr__(self, "qos", Qos(self.qos))
        if self.qos == Qos.AT_MOST_ONCE:
            if self.id != 0:
                raise ValueError("a qos-0 SEND carries no message id (use id=0)")
        else:
            _check_id(self.id)
        object.__setattr__(self, "payload", bytes(self.payload))

    @property
    def command(self) -> Command:
        return Command.SEND


@dataclass(frozen=True)
class _Reply:
    id: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        _check_id(self.id)
        object.__setattr__(self, "payload", bytes(self.payload))


@dataclass(frozen=True)
class Ack(_Reply):
    """The answer to a qos-1 SEND, carrying the reply payload."""

    @property
    def command(self) -> Command:
        return Command.ACK


@dataclass(frozen=True)
class Rec(_Reply):
    """The answer to a qos-2 SEND, carrying the reply payload."""

    @property
    def command(self) -> Command:
        return Command.REC


@dataclass(frozen=True)
class _IdOnly:
    id: int

    def __post_init__(self) -> None:
        _check_id(self.id)


@dataclass(frozen=True)
class Rel(_IdOnly):
    """qos-2 release of a message id (sender -> receiver, after REC)."""

    @property
    def command(self) -> Command:
        return Command.REL


@dataclass(frozen=True)
class Com(_IdOnly):
    """qos-2 completion of a message id (receiver -> sender, after REL)."""

    @property
    def command(self) -> Command:
        return Command.COM


#: One v1 packet.
Packet = Union[Send, Ack, Rec, Rel, Com]


class DecodeError(ProtocolError):
    """Bytes that are not a v1 packet. ``kind`` is a short stable label.

    Kinds (the same as the Rust crate's ``DecodeError::kind``): ``empty``,
    ``unknown_command``, ``invalid_qos``, ``truncated``, ``zero_message_id``,
    ``trailing_bytes``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _header(command: Command, dup: bool, qos: int) -> int:
    return (int(command) << 4) | (int(dup) << 3) | (int(qos) << 1)


def encode(packet: Packet) -> bytes:
    """The wire form of ``packet``.

    ACK, REC, REL and COM are written with qos and dup bits 0, as the original
    server did.
    """
    if isinstance(packet, Send):
        head = bytes((_header(Command.SEND, packet.dup, packet.qos),)) + _U16.pack(packet.message_type)
        if packet.qos != Qos.AT_MOST_ONCE:
            head += _U16.pack(packet.id)
        return head + packet.payload
    if isinstance(packet, (Ack, Rec)):
        return bytes((_header(packet.command, False, 0),)) + _U16.pack(packet.id) + packet.payload
    if isinstance(packet, (Rel, Com)):
        return bytes((_header(packet.command, False, 0),)) + _U16.pack(packet.id)
    raise TypeError(f"not a Rainbow packet: {packet!r}")


def decode(data: bytes) -> Packet:
    """Parses one packet, or raises :class:`DecodeError` saying what is wrong."""
    data = bytes(data)
    if not data:
        raise DecodeError("empty", "empty packet")
    first = data[0]
    nibble = first >> 4
    try:
        command = Command(nibble)
    except ValueError:
        raise DecodeError("unknown_command", f"unknown command {nibble}") from None
    qos_bits = (first >> 1) & 0b11
    if qos_bits == 3:
        raise DecodeError("invalid_qos", "invalid qos level 3")
    qos = Qos(qos_bits)
    dup = bool(first & 0b1000)
    got = len(data)

    def need(needed: int) -> None:
        if got < needed:
            raise DecodeError(
                "truncated", f"{command.name} packet truncated: needs {needed} bytes, got {got}"
            )

    def nonzero(at: int) -> int:
        (value,) = _U16.unpack_from(data, at)
        if value == 0:
            raise DecodeError("zero_message_id", f"{command.name} packet uses message id 0")
        return int(value)

    if command == Command.SEND:
        fixed = 3 if qos == Qos.AT_MOST_ONCE else 5
        need(fixed)
        (message_type,) = _U16.unpack_from(data, 1)
        msg_id = 0 if qos == Qos.AT_MOST_ONCE else nonzero(3)
        return Send(message_type=message_type, qos=qos, id=msg_id, dup=dup, payload=data[fixed:])
    if command in (Command.ACK, Command.REC):
        need(3)
        msg_id = nonzero(1)
        cls = Ack if command == Command.ACK else Rec
        return cls(id=msg_id, payload=data[3:])
    # REL / COM
    need(3)
    if got > 3:
        raise DecodeError(
            "trailing_bytes", f"{command.name} packet has {got - 3} unexpected trailing bytes"
        )
    msg_id = nonzero(1)
    return Rel(msg_id) if command == Command.REL else Com(msg_id)
