//! The path of one envelope through `LocalRooms`: numbered by the rules under the room lock,
//! queued to the storage thread in that order, and on commit retained and fanned out (on
//! the storage thread, inside its delivery batch), or rolled back; the sender's connection
//! learns the outcome through its `Acks`.

use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::{EnvelopeHeader, ErrorCode};
use tokio::sync::watch;
use tokio::time::Instant;

use super::acks::Durable;
use super::room::{HistoryLimit, Retained, Room};
use super::{LocalMember, LocalRooms};
use crate::rooms::rules::{Committed, Submitted, Ticket};
use crate::rooms::{Item, Refusal};
use crate::store::{StoreError, StoredEnvelope};

/// How long a resend of an envelope that is still being committed waits for that commit.
const RESEND_WAIT: Duration = Duration::from_secs(10);

/// What became of a published envelope, before it is durable.
pub(super) enum Submission {
    /// Queued for storage under this `seq`; resolves once the write completed.
    New(u64, Durable),
    /// An idempotent resend of an envelope already stored.
    Stored(u64),
    /// A resend of an envelope still being stored: wait for it, until the deadline.
    Pending(u64, watch::Receiver<u64>, Instant),
}

impl LocalRooms {
    /// Checks an envelope and queues it for storage, under the room lock.
    pub(super) fn submit(
        &self,
        member: &LocalMember,
        header: EnvelopeHeader,
        envelope: Bytes,
    ) -> Result<Submission, Refusal> {
        let room = &member.room;
        let (sender, counter) = (member.identity, header.counter);
        let mut st = room.lock();
        if !st.is_current(&sender, member.connection) {
            return Err(Refusal::new(ErrorCode::UnexpectedMessage, "you are no longer in this room"));
        }
        let ticket = match st.rules.publish(sender, counter, || st.stored(&sender, counter))? {
            Submitted::Stored(seq) => return Ok(Submission::Stored(seq)),
            Submitted::Pending(seq) => {
                let deadline = Instant::now() + RESEND_WAIT;
                return Ok(Submission::Pending(seq, room.committed.subscribe(), deadline));
            }
            Submitted::New(ticket) => ticket,
        };
        let live = Item::deliver(ticket.seq, false, &envelope);
        // The client's buffer is dropped here: storage and history share this copy.
        let retained = Retained::new(ticket.seq, sender.0, counter, &envelope);
        drop(envelope);
        let record =
            StoredEnvelope { seq: ticket.seq, sender: sender.0, counter, envelope: retained.item.envelope() };
        let acks = member.acks.clone();
        let place = acks.next();
        let room_ref = room.clone();
        let keep = self.limits.history;
        // What the byte budget already let go of in memory goes from disk too.
        let drop_before = st.history.front().map_or(0, |e| e.seq);
        let done = Box::new(move |result: Result<(), StoreError>| {
            committed(&room_ref, &result, &ticket, retained, &live, keep);
            acks.complete(place, result);
        });
        // Queued under the room lock, so storage commits (and delivers) in seq order.
        self.store
            .append(room.name.as_str(), record, keep.count, drop_before, done)
            .map_err(|e| Refusal::internal(&e))?;
        st.rules.queued(&ticket);
        st.inflight += 1;
        member.acks.submitted(place);
        Ok(Submission::New(ticket.seq, member.acks.durable(place)))
    }
}

/// Runs on the storage thread once an envelope's transaction completed: the rules roll a
/// failed write back; a stored envelope is retained and delivered to every other member.
fn committed(
    room: &Room,
    result: &Result<(), StoreError>,
    ticket: &Ticket,
    record: Retained,
    live: &Item,
    keep: HistoryLimit,
) {
    let mut st = room.lock();
    st.inflight = st.inflight.saturating_sub(1);
    let Committed::Deliver(seq) = st.rules.committed(ticket, result.is_ok()) else { return };
    if keep.count > 0 {
        st.retained_bytes += record.envelope_len();
        st.history.push_back(record);
        st.trim(keep);
    }
    let sender = ticket.sender;
    crate::metrics::delivered(st.members.len() - usize::from(st.members.contains_key(&sender)), live.len());
    st.broadcast(live, Some(&sender));
    drop(st);
    room.committed.send_replace(seq);
}

/// The answer to a submission, once the envelope is durable.
pub(super) async fn answer(submitted: Result<Submission, Refusal>) -> Result<u64, Refusal> {
    match submitted? {
        Submission::New(seq, durable) => match durable.await {
            Ok(()) => Ok(seq),
            Err(e) => Err(Refusal::internal(&e)),
        },
        Submission::Stored(seq) => Ok(seq),
        Submission::Pending(seq, mut committed, deadline) => {
            // The first copy is still being committed: answer once it is.
            match tokio::time::timeout_at(deadline, committed.wait_for(|c| *c >= seq)).await {
                Ok(Ok(_)) => Ok(seq),
                _ => Err(Refusal::new(ErrorCode::Internal, "the first copy is not stored yet; try again")),
            }
        }
    }
}
