"""The sender's half of QoS: what happens to a SEND we originate.

:class:`Outbound` allocates message ids (1..65534, wrapping, skipping ids
still in flight), remembers every qos 1/2 SEND until it is answered,
retransmits it with ``dup = 1`` every ``retransmit_interval`` until its
deadline, and drives the qos-2 tail (REC -> REL -> COM, retransmitting REL until
COM arrives).

It does no IO and reads no clock: callers pass ``now`` (seconds, any monotonic
origin) and write out the packets it returns. Each SEND carries a
caller-chosen tag (a future, a callback...) which comes back when the SEND is
answered or given up on. This mirrors ``rainbow_protocol::outbound``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Generic, List, Optional, Tuple, TypeVar, Union

from ..errors import RainbowError
from .packet import Packet, Qos, Rel, Send

__all__ = ["MAX_MESSAGE_ID", "InFlightFull", "Answered", "Retransmit", "Expired", "Outbound"]

T = TypeVar("T")

#: The highest message id; ids wrap from here back to 1 (spec §2).
MAX_MESSAGE_ID = 65534


class InFlightFull(RainbowError):
    """:meth:`Outbound.send` found ``max_in_flight`` SENDs already awaiting
    answers. The rejected send's tag is handed back in ``tag``."""

    def __init__(self, in_flight: int, tag: Any = None) -> None:
        super().__init__(f"{in_flight} messages already await an acknowledgement")
        self.in_flight = in_flight
        self.tag = tag


@dataclass(frozen=True)
class Answered(Generic[T]):
    """What an answer from the peer resolved: the SEND's tag and the reply."""

    tag: T
    payload: bytes


@dataclass(frozen=True)
class Retransmit:
    """Write this packet again (a SEND with ``dup = 1``, or a REL)."""

    packet: Packet


@dataclass(frozen=True)
class Expired(Generic[T]):
    """The SEND reached its deadline unanswered; its id is free again."""

    tag: T


@dataclass
class _AwaitingReply(Generic[T]):
    send: Send
    tag: T
    deadline: float


@dataclass
class _AwaitingCom:
    until: float


@dataclass
class _Entry(Generic[T]):
    stage: Union[_AwaitingReply[T], _AwaitingCom]
    next_retransmit: float


class Outbound(Generic[T]):
    """Sender-side QoS state for one connection and direction."""

    def __init__(
        self,
        retransmit_interval: float = 3.0,
        max_in_flight: int = 256,
        release_lifetime: float = 10.0,
    ) -> None:
        if retransmit_interval <= 0:
            raise ValueError("retransmit_interval must be positive")
        self.retransmit_interval = float(retransmit_interval)
        # Capped below the number of ids so allocation always finds a free one.
        self.max_in_flight = min(max(1, int(max_in_flight)), MAX_MESSAGE_ID - 1)
        self.release_lifetime = float(release_lifetime)
        self._last_id = 0
        self._in_flight: Dict[int, _Entry[T]] = {}

    @property
    def in_flight(self) -> int:
        """How many ids are in use (awaiting a reply or a COM)."""
        return len(self._in_flight)

    def has_capacity(self) -> bool:
        """Whether another qos > 0 SEND would be accepted now."""
        return len(self._in_flight) < self.max_in_flight

    def send(
        self,
        now: float,
        message_type: int,
        qos: Qos,
        payload: bytes,
        deadline: float,
        tag: T,
    ) -> Send:
        """Starts a SEND and returns the packet to write.

        qos 0 drops ``tag`` (nothing will answer). qos 1/2 allocate an id and
        remember the SEND until it is answered or ``deadline`` passes. Raises
        :class:`InFlightFull` (carrying ``tag`` back) when ``max_in_flight``
        SENDs await answers.
        """
        qos = Qos(qos)
        if qos == Qos.AT_MOST_ONCE:
            return Send(message_type=message_type, qos=qos, id=0, dup=False, payload=payload)
        if not self.has_capacity():
            raise InFlightFull(len(self._in_flight), tag)
        msg_id = self._allocate_id()
        send = Send(message_type=message_type, qos=qos, id=msg_id, dup=False, payload=payload)
        self._in_flight[msg_id] = _Entry(
            stage=_AwaitingReply(send=send, tag=tag, deadline=deadline),
            next_retransmit=now + self.retransmit_interval,
        )
        return send

    def _allocate_id(self) -> int:
        # Terminates: __init__ caps max_in_flight below the 65534 ids and
        # send() checks capacity first, so at least one id is free.
        while True:
            self._last_id = 1 if self._last_id >= MAX_MESSAGE_ID else self._last_id + 1
            if self._last_id not in self._in_flight:
                return self._last_id

    def on_ack(self, msg_id: int, payload: bytes) -> Optional[Answered[T]]:
        """An ACK arrived. Returns the answered SEND's tag, or ``None`` for an
        id we are not waiting on (a late or duplicate ACK, which is harmless)."""
        entry = self._in_flight.get(msg_id)
        if entry is None or not isinstance(entry.stage, _AwaitingReply):
            return None
        if entry.stage.send.qos != Qos.AT_LEAST_ONCE:
            return None
        del self._in_flight[msg_id]
        return Answered(tag=entry.stage.tag, payload=bytes(payload))

    def on_rec(self, now: float, msg_id: int, payload: bytes) -> Tuple[Optional[Answered[T]], Rel]:
        """A REC arrived. Always returns the REL to write (the peer may be
        repeating a REC whose REL was lost), and the answered tag the first time."""
        rel = Rel(msg_id)
        entry = self._in_flight.get(msg_id)
        if entry is None:
            return None, rel
        answered: Optional[Answered[T]] = None
        stage = entry.stage
        if isinstance(stage, _AwaitingReply):
            if stage.send.qos != Qos.EXACTLY_ONCE:
                # The peer's mistake: leave the entry and its retransmission alone.
                return None, rel
            entry.stage = _AwaitingCom(until=now + self.release_lifetime)
            answered = Answered(tag=stage.tag, payload=bytes(payload))
        entry.next_retransmit = now + self.retransmit_interval
        return answered, rel

    def on_com(self, msg_id: int) -> None:
        """A COM arrived: the qos-2 exchange is over and its id is free."""
        entry = self._in_flight.get(msg_id)
        if entry is not None and isinstance(entry.stage, _AwaitingCom):
            del self._in_flight[msg_id]

    def next_deadline(self) -> Optional[float]:
        """The earliest time at which :meth:`on_timeout` has work, if any."""
        best: Optional[float] = None
        for entry in self._in_flight.values():
            stage = entry.stage
            end = stage.deadline if isinstance(stage, _AwaitingReply) else stage.until
            due = min(entry.next_retransmit, end)
            if best is None or due < best:
                best = due
        return best

    def on_timeout(self, now: float) -> List[Union[Retransmit, Expired[T]]]:
        """Runs every timer due at ``now``: retransmissions, then expiries."""
        actions: List[Union[Retransmit, Expired[T]]] = []
        finished: List[int] = []
        for msg_id, entry in self._in_flight.items():
            stage = entry.stage
            end = stage.deadline if isinstance(stage, _AwaitingReply) else stage.until
            if end <= now:
                finished.append(msg_id)
            elif entry.next_retransmit <= now:
                entry.next_retransmit = now + self.retransmit_interval
                if isinstance(stage, _AwaitingReply):
                    s = stage.send
                    dup = Send(message_type=s.message_type, qos=s.qos, id=s.id, dup=True, payload=s.payload)
                    actions.append(Retransmit(dup))
                else:
                    actions.append(Retransmit(Rel(msg_id)))
        for msg_id in finished:
            entry = self._in_flight.pop(msg_id)
            if isinstance(entry.stage, _AwaitingReply):
                actions.append(Expired(entry.stage.tag))
        return actions

    def drain(self) -> List[T]:
        """Gives up on everything (the connection is gone) and returns the tags
        of SENDs that were never answered."""
        tags = [e.stage.tag for e in self._in_flight.values() if isinstance(e.stage, _AwaitingReply)]
        self._in_flight.clear()
        return tags
