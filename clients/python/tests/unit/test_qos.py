"""The QoS state machines, with time passed in (mirrors the Rust crate's tests)."""

from __future__ import annotations

import pytest

from rainbow.protocol import (
    MAX_MESSAGE_ID,
    PROCESS,
    Ack,
    Answered,
    Com,
    Disposition,
    Expired,
    Inbound,
    InFlightFull,
    Outbound,
    Qos,
    Rec,
    Rel,
    Retransmit,
    Send,
    WindowFull,
)

T0 = 1000.0


def test_qos0_is_not_tracked() -> None:
    out: Outbound[str] = Outbound()
    packet = out.send(T0, 7, Qos.AT_MOST_ONCE, b"", T0 + 10, "a")
    assert packet.id == 0
    assert out.in_flight == 0
    assert out.next_deadline() is None


def test_qos1_retransmits_with_dup_until_acked() -> None:
    out: Outbound[str] = Outbound()
    packet = out.send(T0, 7, Qos.AT_LEAST_ONCE, b"x", T0 + 10, "a")
    assert packet.id == 1 and not packet.dup
    assert out.next_deadline() == T0 + 3
    assert out.on_timeout(T0 + 2) == []
    fired = out.on_timeout(T0 + 3)
    assert fired == [Retransmit(Send(message_type=7, qos=Qos.AT_LEAST_ONCE, id=1, dup=True, payload=b"x"))]
    assert out.next_deadline() == T0 + 6
    assert out.on_ack(1, b"reply") == Answered("a", b"reply")
    assert out.in_flight == 0
    assert out.on_ack(1, b"") is None, "a second ACK resolves nothing"


def test_retransmission_interval_is_configurable() -> None:
    out: Outbound[str] = Outbound(retransmit_interval=0.5)
    out.send(T0, 1, Qos.AT_LEAST_ONCE, b"", T0 + 10, "a")
    assert out.next_deadline() == T0 + 0.5
    assert len(out.on_timeout(T0 + 0.5)) == 1


def test_unanswered_sends_expire_at_their_deadline() -> None:
    out: Outbound[int] = Outbound()
    out.send(T0, 1, Qos.EXACTLY_ONCE, b"", T0 + 4, 42)
    first = out.on_timeout(T0 + 3)
    assert isinstance(first[0], Retransmit)
    assert out.on_timeout(T0 + 4) == [Expired(42)]
    assert out.in_flight == 0


def test_qos2_runs_rec_rel_com() -> None:
    out: Outbound[str] = Outbound()
    msg_id = out.send(T0, 1, Qos.EXACTLY_ONCE, b"", T0 + 10, "q").id
    assert out.on_ack(msg_id, b"") is None, "an ACK does not answer a qos-2 SEND"
    answered, rel = out.on_rec(T0, msg_id, b"r")
    assert answered == Answered("q", b"r")
    assert rel == Rel(msg_id)
    again, rel = out.on_rec(T0, msg_id, b"")
    assert again is None and rel == Rel(msg_id), "a repeated REC gets REL again but resolves nothing"
    assert out.on_timeout(T0 + 3) == [Retransmit(Rel(msg_id))], "REL is retransmitted until COM"
    out.on_com(msg_id)
    assert out.in_flight == 0


def test_rec_for_unknown_or_qos1_id_still_gets_rel() -> None:
    out: Outbound[str] = Outbound()
    assert out.on_rec(T0, 9, b"") == (None, Rel(9))
    msg_id = out.send(T0, 1, Qos.AT_LEAST_ONCE, b"", T0 + 10, "a").id
    assert out.on_rec(T0, msg_id, b"") == (None, Rel(msg_id))
    assert out.in_flight == 1


def test_a_rec_for_a_qos1_send_changes_nothing() -> None:
    out: Outbound[str] = Outbound()
    msg_id = out.send(T0, 1, Qos.AT_LEAST_ONCE, b"", T0 + 10, "a").id
    answered, _ = out.on_rec(T0 + 2, msg_id, b"")
    assert answered is None
    assert out.next_deadline() == T0 + 3, "retransmission not postponed"
    assert out.on_ack(msg_id, b"") == Answered("a", b"")


def test_in_flight_is_capped_below_the_id_space() -> None:
    assert Outbound(max_in_flight=10**9).max_in_flight == MAX_MESSAGE_ID - 1
    assert Outbound(max_in_flight=0).max_in_flight == 1


def test_rel_without_com_is_released_silently() -> None:
    out: Outbound[None] = Outbound()
    msg_id = out.send(T0, 1, Qos.EXACTLY_ONCE, b"", T0 + 10, None).id
    out.on_rec(T0, msg_id, b"")
    assert out.on_timeout(T0 + 11) == []
    assert out.in_flight == 0


def test_ids_wrap_to_one_and_skip_ids_in_flight() -> None:
    far = T0 + 1000
    out: Outbound[None] = Outbound(max_in_flight=10)
    assert out.send(T0, 1, Qos.AT_LEAST_ONCE, b"", far, None).id == 1
    for expected in range(2, MAX_MESSAGE_ID + 1):
        msg_id = out.send(T0, 1, Qos.AT_LEAST_ONCE, b"", far, None).id
        assert msg_id == expected
        assert out.on_ack(msg_id, b"") is not None
    # Id 1 is still in flight, so the wrap skips it.
    assert out.send(T0, 1, Qos.AT_LEAST_ONCE, b"", far, None).id == 2


def test_in_flight_is_bounded() -> None:
    out: Outbound[None] = Outbound(max_in_flight=2)
    for _ in range(2):
        out.send(T0, 1, Qos.AT_LEAST_ONCE, b"", T0 + 5, None)
    assert not out.has_capacity()
    with pytest.raises(InFlightFull) as caught:
        out.send(T0, 1, Qos.AT_LEAST_ONCE, b"", T0 + 5, "rejected")  # type: ignore[arg-type]
    assert caught.value.tag == "rejected", "the tag is handed back"
    out.send(T0, 1, Qos.AT_MOST_ONCE, b"", T0, None)  # qos 0 needs no slot
    assert len(out.drain()) == 2
    assert out.in_flight == 0


def test_drain_returns_only_unanswered_sends() -> None:
    out: Outbound[str] = Outbound()
    a = out.send(T0, 1, Qos.EXACTLY_ONCE, b"", T0 + 10, "a").id
    out.send(T0, 1, Qos.AT_LEAST_ONCE, b"", T0 + 10, "b")
    out.on_rec(T0, a, b"")  # "a" now awaits its COM only
    assert out.drain() == ["b"]


def inbound_send(qos: Qos, msg_id: int, dup: bool = False) -> Send:
    return Send(message_type=1, qos=qos, id=msg_id, dup=dup)


def test_qos0_and_qos1_are_always_processed() -> None:
    inb = Inbound()
    for _ in range(3):
        assert inb.on_send(T0, inbound_send(Qos.AT_LEAST_ONCE, 5, True)) == PROCESS
        assert inb.on_send(T0, inbound_send(Qos.AT_MOST_ONCE, 0)) == PROCESS
    assert inb.unreleased == 0
    assert inb.answer(5, Qos.AT_LEAST_ONCE, b"r") == Ack(5, b"r")
    assert inb.answer(0, Qos.AT_MOST_ONCE, b"") is None


def test_qos2_duplicate_before_rel_is_not_processed_again() -> None:
    inb = Inbound()
    assert inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 9)) == PROCESS
    # Still processing: the duplicate is swallowed.
    assert inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 9, True)) == Disposition(process=False)
    rec = inb.answer(9, Qos.EXACTLY_ONCE, b"once")
    assert rec == Rec(9, b"once")
    # Answered: the duplicate gets the same REC again.
    assert inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 9, True)) == Disposition(process=False, resend=rec)
    # Even without the dup bit.
    assert not inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 9, False)).process
    assert inb.on_rel(9) == Com(9)
    # After REL the id is free: a new message with it is processed.
    assert inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 9)) == PROCESS


def test_failed_processing_lets_the_retransmission_through() -> None:
    inb = Inbound()
    assert inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 3)) == PROCESS
    inb.failed(3, Qos.EXACTLY_ONCE)
    assert inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 3, True)) == PROCESS


def test_window_is_bounded_and_evicts_only_stale_ids() -> None:
    inb = Inbound(max_unreleased=2, max_age=60)
    inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 1))
    inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 2))
    with pytest.raises(WindowFull):
        inb.on_send(T0, inbound_send(Qos.EXACTLY_ONCE, 3))
    assert inb.on_send(T0 + 61, inbound_send(Qos.EXACTLY_ONCE, 3)) == PROCESS
    assert inb.unreleased == 1


def test_unknown_rel_is_still_completed() -> None:
    assert Inbound().on_rel(77) == Com(77)
