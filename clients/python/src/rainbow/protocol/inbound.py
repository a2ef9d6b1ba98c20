"""The receiver's half of QoS: what happens to a SEND the peer originates.

qos 0 and 1 need no memory here: a qos-1 SEND is processed every time it
arrives (at least once) and answered with an ACK. qos 2 is where state lives:
:class:`Inbound` remembers each qos-2 id from its SEND until the REL, and a
SEND with a remembered id is not processed again (exactly once, spec §2). Once
the reply is known it is remembered too, so a duplicate that arrives after our
REC (the REC was lost) gets the same REC again instead of silence.

The window is bounded. When it is full, ids older than ``max_age`` (their REL
never came) are dropped first; if it is still full the SEND is refused with
:class:`WindowFull` and the caller closes the connection. This mirrors
``rainbow_protocol::inbound``; time is passed in as seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Union

from ..errors import RainbowError
from .packet import Ack, Com, Qos, Rec, Send

__all__ = ["WindowFull", "Disposition", "PROCESS", "Inbound"]


class WindowFull(RainbowError):
    """The qos-2 window is full of ids whose REL has not come."""

    def __init__(self, unreleased: int) -> None:
        super().__init__(f"{unreleased} qos-2 messages await their REL")
        self.unreleased = unreleased


@dataclass(frozen=True)
class Disposition:
    """What to do with an incoming SEND.

    ``process`` is true for a new message: process it, then call
    :meth:`Inbound.answer` (or :meth:`Inbound.failed`). Otherwise it is a qos-2
    duplicate inside the window: do not process it, and write ``resend`` (the
    same REC again) if the reply is already known.
    """

    process: bool
    resend: Optional[Rec] = None


#: The disposition of a new message.
PROCESS = Disposition(process=True)


@dataclass
class _Pending:
    since: float
    reply: Optional[bytes] = None


class Inbound:
    """Receiver-side QoS state for one connection and direction."""

    def __init__(self, max_unreleased: int = 128, max_age: float = 300.0) -> None:
        if max_unreleased < 1:
            raise ValueError("max_unreleased must be at least 1")
        self.max_unreleased = max_unreleased
        self.max_age = float(max_age)
        self._unreleased: Dict[int, _Pending] = {}

    @property
    def unreleased(self) -> int:
        """How many qos-2 ids await their REL."""
        return len(self._unreleased)

    def on_send(self, now: float, send: Send) -> Disposition:
        """Classifies an incoming SEND.

        Any qos-2 SEND whose id is in the window is a duplicate, whatever its
        dup bit says. Raises :class:`WindowFull` when the window is full.
        """
        if send.qos != Qos.EXACTLY_ONCE:
            return PROCESS
        pending = self._unreleased.get(send.id)
        if pending is not None:
            rec = Rec(send.id, pending.reply) if pending.reply is not None else None
            return Disposition(process=False, resend=rec)
        if len(self._unreleased) >= self.max_unreleased:
            self._unreleased = {
                k: p for k, p in self._unreleased.items() if now - p.since < self.max_age
            }
            if len(self._unreleased) >= self.max_unreleased:
                raise WindowFull(len(self._unreleased))
        self._unreleased[send.id] = _Pending(since=now)
        return PROCESS

    def answer(self, send_id: int, qos: Qos, reply: bytes) -> Optional[Union[Ack, Rec]]:
        """Processing produced ``reply``: returns the ACK (qos 1) or REC
        (qos 2) to write, or ``None`` for qos 0."""
        qos = Qos(qos)
        if qos == Qos.AT_MOST_ONCE:
            return None
        if qos == Qos.AT_LEAST_ONCE:
            return Ack(send_id, reply)
        pending = self._unreleased.get(send_id)
        if pending is not None:
            pending.reply = bytes(reply)
        return Rec(send_id, reply)

    def failed(self, send_id: int, qos: Qos) -> None:
        """Processing failed: forget a qos-2 id so the sender's retransmission
        is processed (spec §4)."""
        if qos == Qos.EXACTLY_ONCE:
            self._unreleased.pop(send_id, None)

    def on_rel(self, msg_id: int) -> Com:
        """A REL arrived: forget the id and return the COM to write. Unknown
        ids are answered too (our earlier COM may have been lost)."""
        self._unreleased.pop(msg_id, None)
        return Com(msg_id)
