//! The path of one envelope through `LocalRooms`: numbered by the rules under the room lock,
//! queued to the storage thread in that order (and to the room's `inflight`), and once its
//! commit group completed retained and fanned out, or rolled back, by a task on the runtime;
//! the sender's connection learns the outcome through its `Acks`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::{EnvelopeHeader, ErrorCode};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

use super::acks::{Acks, Durable};
use super::room::{HistoryLimit, Retained, Room};
use super::{LocalMember, LocalRooms};
use crate::rooms::rules::{Committed, Submitted, Ticket};
use crate::rooms::{Item, Refusal};
use crate::store::{AppendSink, StoreError, StoredEnvelope};

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
        let place = member.acks.next();
        let keep = self.limits.history;
        // What the byte budget already let go of in memory goes from disk too.
        let drop_before = st.history.front().map_or(0, |e| e.seq);
        // Queued under the room lock, so storage commits (and delivers) in seq order, and
        // completes appends in the order of `inflight`.
        self.store
            .append(room.clone(), record, keep.count, drop_before)
            .map_err(|e| Refusal::internal(&e))?;
        if room.runtime.get().is_none() {
            if let Ok(runtime) = Handle::try_current() {
                let _ = room.runtime.set(runtime);
            }
        }
        st.rules.queued(&ticket);
        let acks = member.acks.clone();
        st.inflight.push_back(InFlight { ticket, retained, live, acks, place, keep });
        member.acks.submitted(place);
        Ok(Submission::New(ticket.seq, member.acks.durable(place)))
    }
}

/// An envelope queued for storage, until its write completed.
pub(super) struct InFlight {
    ticket: Ticket,
    retained: Retained,
    live: Item,
    acks: Arc<Acks>,
    place: u64,
    keep: HistoryLimit,
}

/// The storage thread reports a room's appends here; their deliveries run on the runtime.
impl AppendSink for Room {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn appended(&self, result: Result<(), StoreError>) {
        self.outcomes().results.push(result);
    }

    /// Starts a task that delivers what the group stored, unless one is running: the storage
    /// thread goes on to the next commit while the runtime's workers fan out, each room on
    /// one worker at a time (so in order), rooms on several.
    fn group_done(self: Arc<Self>) {
        {
            let mut outcomes = self.outcomes();
            if outcomes.scheduled || outcomes.results.is_empty() {
                return;
            }
            outcomes.scheduled = true;
        }
        match self.runtime.get().cloned() {
            Some(runtime) => drop(runtime.spawn(async move { self.deliver_completed() })),
            // Appends are submitted on the runtime; without one, deliver here.
            None => self.deliver_completed(),
        }
    }
}

impl Room {
    /// Completes the reported appends in order, a batch at a time, until none are left.
    fn deliver_completed(&self) {
        loop {
            let results = {
                let mut outcomes = self.outcomes();
                if outcomes.results.is_empty() {
                    outcomes.scheduled = false;
                    return;
                }
                std::mem::take(&mut outcomes.results)
            };
            // A batch's deliveries reach each member's writer together, as one write.
            crate::outbox::batched(|| self.complete(results));
        }
    }

    /// The rules roll a failed write back; a stored envelope is retained and delivered to
    /// every other member; then the sender's connection learns the outcome.
    fn complete(&self, results: Vec<Result<(), StoreError>>) {
        let mut st = self.lock();
        let mut stored = None;
        let mut deliveries = Vec::new();
        for result in results {
            let Some(e) = st.inflight.pop_front() else { break };
            if let Committed::Deliver(seq) = st.rules.committed(&e.ticket, result.is_ok()) {
                if e.keep.count > 0 {
                    st.retained_bytes += e.retained.envelope_len();
                    st.history.push_back(e.retained);
                    st.trim(e.keep);
                }
                let sender = e.ticket.sender;
                let others = st.members.len() - usize::from(st.members.contains_key(&sender));
                crate::metrics::delivered(others, e.live.len());
                deliveries.push((e.live, sender));
                stored = Some(seq);
            }
            e.acks.complete(e.place, result);
        }
        st.deliver(&deliveries);
        drop(st);
        if let Some(seq) = stored {
            self.committed.send_replace(seq);
        }
    }
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
