//! Messages on their way to the relay, without I/O: sealed envelopes wait here until the relay
//! answers each with an `Ack` or a `SendError`, matched by the counter both name. After a
//! reconnect the same envelope bytes are sent again, in order, so the relay's idempotent check
//! turns a resend of something already stored into a plain `Ack` and nothing is delivered
//! twice.

use std::collections::VecDeque;

/// A sealed envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The id given to the front end.
    pub id: u64,
    /// The envelope's counter.
    pub counter: u64,
    /// The envelope bytes, resent unchanged.
    pub envelope: Vec<u8>,
}

/// Pending envelopes: the first `in_flight` were sent on the current connection.
#[derive(Debug, Default)]
pub struct Outbox {
    entries: VecDeque<Outgoing>,
    in_flight: usize,
}

/// How an answer to a `Send` matched.
#[derive(Debug, PartialEq, Eq)]
pub enum AckMatch {
    /// It answered this envelope, which was in flight.
    Matched(Outgoing),
    /// Nothing in flight has that counter.
    Unexpected,
}

impl Outbox {
    /// Queues an envelope.
    pub fn push(&mut self, o: Outgoing) {
        self.entries.push_back(o);
    }

    /// Envelopes not yet acknowledged (in flight or waiting).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Envelopes sent on this connection and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The next envelope to send on this connection.
    pub fn next_unsent(&self) -> Option<&Outgoing> {
        self.entries.get(self.in_flight)
    }

    /// Records that `next_unsent` was sent.
    pub fn mark_sent(&mut self) {
        self.in_flight = (self.in_flight + 1).min(self.entries.len());
    }

    /// An `Ack` or a `SendError` for `counter`: the envelope in flight with that counter is
    /// done (a failed one is dropped, not resent). The relay answers in the order of the
    /// sends, so this is nearly always the oldest; matching by counter keeps one lost or
    /// unexpected answer from shifting every later one.
    pub fn answer(&mut self, counter: u64) -> AckMatch {
        let Some(at) = self.entries.iter().take(self.in_flight).position(|o| o.counter == counter) else {
            return AckMatch::Unexpected;
        };
        self.in_flight -= 1;
        self.entries.remove(at).map_or(AckMatch::Unexpected, AckMatch::Matched)
    }

    /// The connection dropped: everything unacknowledged will be sent again.
    pub fn disconnected(&mut self) {
        self.in_flight = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn o(id: u64) -> Outgoing {
        Outgoing { id, counter: 100 + id, envelope: vec![id as u8; 3] }
    }

    #[test]
    fn answers_match_by_counter_and_resend_keeps_order() {
        let mut b = Outbox::default();
        for i in 0..5 {
            b.push(o(i));
        }
        for _ in 0..4 {
            b.mark_sent();
        }
        assert_eq!(b.answer(100), AckMatch::Matched(o(0)));
        assert_eq!(b.answer(100), AckMatch::Unexpected, "no double match");
        assert_eq!(b.answer(102), AckMatch::Matched(o(2)), "a later answer does not shift onto the oldest");
        assert_eq!(b.answer(101), AckMatch::Matched(o(1)));
        assert_eq!(b.answer(104), AckMatch::Unexpected, "not sent yet");
        assert_eq!(b.in_flight(), 1);
        b.disconnected();
        assert_eq!(b.next_unsent(), Some(&o(3)), "resend starts with the oldest, same bytes");
        b.mark_sent();
        assert_eq!(b.answer(103), AckMatch::Matched(o(3)));
        assert_eq!(b.answer(103), AckMatch::Unexpected, "nothing in flight");
        assert_eq!(b.len(), 1);
    }

    proptest! {
        /// Answers in any order, with unknown counters mixed in, each match the envelope with
        /// their counter exactly once; what was sent and not answered is what is resent.
        #[test]
        fn any_order_of_answers_matches_each_envelope_once(
            order in proptest::sample::subsequence((0..8u64).collect::<Vec<_>>(), 0..=8)
                .prop_shuffle(),
            strangers in proptest::collection::vec(200u64..300, 0..4),
        ) {
            let mut b = Outbox::default();
            for i in 0..10 {
                b.push(o(i));
            }
            for _ in 0..8 {
                b.mark_sent();
            }
            for (i, id) in order.iter().enumerate() {
                prop_assert_eq!(b.answer(100 + id), AckMatch::Matched(o(*id)));
                if let Some(stranger) = strangers.get(i) {
                    prop_assert_eq!(b.answer(*stranger), AckMatch::Unexpected);
                }
            }
            prop_assert_eq!(b.in_flight(), 8 - order.len());
            b.disconnected();
            let mut resent = Vec::new();
            while let Some(next) = b.next_unsent() {
                resent.push(next.id);
                b.mark_sent();
            }
            let expected: Vec<u64> = (0..10).filter(|i| !order.contains(i)).collect();
            prop_assert_eq!(resent, expected);
        }
    }
}
