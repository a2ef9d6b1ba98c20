"""Rainbow's wire protocol, with no IO: the v1 packet codec and the QoS state
machines, both directions (a Python mirror of the Rust crate
``rainbow-protocol``).

- :mod:`~rainbow.protocol.packet`: bytes <-> packets (spec §2), with a typed
  :class:`DecodeError`.
- :mod:`~rainbow.protocol.outbound`: the sender of a SEND: id allocation,
  retransmission with DUP, deadlines, the REL/COM tail.
- :mod:`~rainbow.protocol.inbound`: the receiver of a SEND: the qos-2 dedup
  window.

Nothing here touches a socket, an event loop or the clock: callers pass
``now`` and write the packets they are handed.
"""

from __future__ import annotations

from .inbound import PROCESS, Disposition, Inbound, WindowFull
from .outbound import MAX_MESSAGE_ID, Answered, Expired, InFlightFull, Outbound, Retransmit
from .packet import Ack, Com, Command, DecodeError, Packet, Qos, Rec, Rel, Send, decode, encode

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
    "MAX_MESSAGE_ID",
    "Outbound",
    "InFlightFull",
    "Answered",
    "Retransmit",
    "Expired",
    "Inbound",
    "Disposition",
    "PROCESS",
    "WindowFull",
]
