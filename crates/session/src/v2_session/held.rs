//! Deliveries held back while one of this client's envelopes is unanswered.
//!
//! The relay never delivers a member's own envelope to it: the client places it in the log at
//! the `seq` of its `Ack`. An `Ack` of `seq` M comes after every delivery below M on the same
//! connection, but a delivery above M may come before it: a relay completes a commit group's
//! deliveries before it answers the group's senders. Read at once, that delivery would be
//! processed before the client's own envelope at M: an entry that won judged lost, a commit
//! taken for the one that ended its epoch. So while an envelope is unanswered, live
//! deliveries wait here in arrival order (which is `seq` order), within a byte budget
//! (docs/PROTOCOL.md section 31).

use std::collections::VecDeque;

use crate::error::SessionError;

/// One delivery: its `seq`, whether it is history, and the envelope.
pub(super) type Delivery = (u64, bool, Vec<u8>);

/// The held deliveries and their size.
#[derive(Debug)]
pub(super) struct Held {
    deliveries: VecDeque<Delivery>,
    bytes: usize,
    max_bytes: usize,
}

impl Held {
    /// Holds at most `max_bytes` of envelopes.
    pub(super) fn new(max_bytes: usize) -> Self {
        Self { deliveries: VecDeque::new(), bytes: 0, max_bytes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// Holds one delivery. Past the budget the connection is given up: nothing held was
    /// processed, so the next connection reads it again after the cursor.
    pub(super) fn hold(&mut self, delivery: Delivery) -> Result<(), SessionError> {
        let bytes = self.bytes.saturating_add(delivery.2.len());
        if bytes > self.max_bytes {
            self.clear();
            return Err(SessionError::Lost(format!(
                "the relay sent more than {} KiB of messages without answering ours; reconnecting",
                self.max_bytes / 1024
            )));
        }
        self.bytes = bytes;
        self.deliveries.push_back(delivery);
        Ok(())
    }

    /// The held deliveries below `seq`, oldest first.
    pub(super) fn take_below(&mut self, seq: u64) -> Vec<Delivery> {
        let n = self.deliveries.iter().take_while(|d| d.0 < seq).count();
        let taken: Vec<Delivery> = self.deliveries.drain(..n).collect();
        self.bytes -= taken.iter().map(|d| d.2.len()).sum::<usize>();
        taken
    }

    /// Every held delivery, oldest first.
    pub(super) fn take_all(&mut self) -> Vec<Delivery> {
        self.bytes = 0;
        self.deliveries.drain(..).collect()
    }

    /// Drops what is held (a new connection reads it again after the cursor).
    pub(super) fn clear(&mut self) {
        self.deliveries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_come_out_in_order_below_a_seq_or_all_and_the_budget_counts_bytes() {
        let mut held = Held::new(10);
        for seq in [3, 5, 8] {
            held.hold((seq, false, vec![0; 3])).unwrap();
        }
        assert!(matches!(held.hold((9, false, vec![0; 2])), Err(SessionError::Lost(_))), "11 bytes > 10");
        assert!(held.is_empty(), "a connection given up holds nothing");

        for seq in [3, 5, 8] {
            held.hold((seq, false, vec![0; 3])).unwrap();
        }
        let below: Vec<u64> = held.take_below(6).into_iter().map(|d| d.0).collect();
        assert_eq!(below, [3, 5]);
        // What was taken no longer counts: 3 + 7 bytes fit again.
        held.hold((9, true, vec![0; 7])).unwrap();
        let rest: Vec<u64> = held.take_all().into_iter().map(|d| d.0).collect();
        assert_eq!(rest, [8, 9]);
        assert!(held.is_empty());
        held.hold((10, false, vec![0; 10])).unwrap();
    }
}
