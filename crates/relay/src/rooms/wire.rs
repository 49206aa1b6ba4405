//! The one encoder between rooms and connections: what a backend hands the connection layer
//! (typed outcomes, `Item`s built here) and how it becomes wire items.
//!
//! A backend never writes protocol bytes itself. It builds `Item`s with the constructors here
//! (a `Deliver` is encoded once and shared by every recipient and every replay), pushes them
//! to members through their `Link`, and answers a join with an `Admission`, which the
//! connection layer turns into `Joined`, `Members`, the history replay and `HistoryEnd`.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chatroom_crypto::{
    encode_deliver, ErrorCode, Member, Nick, PresenceEvent, PublicIdentity, RelayMessage,
    MAX_MEMBERS_PER_ITEM,
};

use crate::outbox::{self, encode, Outbox};

/// Bytes before the envelope in a `Deliver` item: item header, `seq`, `history` flag.
const DELIVER_PREFIX: usize = chatroom_crypto::ITEM_HEADER_LEN + 9;

/// One encoded relay item, ready to queue for any number of members (cloning shares it).
#[derive(Clone, PartialEq, Eq)]
pub struct Item(pub(crate) Bytes);

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Item({} bytes)", self.0.len())
    }
}

impl Item {
    /// A `Deliver` of `envelope` under `seq`; `history` marks a replayed one.
    pub fn deliver(seq: u64, history: bool, envelope: &[u8]) -> Self {
        let mut item = Vec::with_capacity(envelope.len() + DELIVER_PREFIX);
        encode_deliver(seq, history, envelope, &mut item);
        Self(Bytes::from(item))
    }

    /// A `Presence` notice.
    pub fn presence(event: PresenceEvent, nick: &Nick, identity: PublicIdentity) -> Self {
        Self(encode(&RelayMessage::Presence { event, nick: nick.clone(), identity }))
    }

    /// A `GroupInfoStored` notice (protocol version 2).
    pub fn group_info_stored(after_seq: u64) -> Self {
        Self(encode(&RelayMessage::GroupInfoStored { after_seq }))
    }

    /// Its encoded length.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (never, for an item built here).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The length of a `Deliver` item's envelope.
    pub fn envelope_len(&self) -> usize {
        self.0.len().saturating_sub(DELIVER_PREFIX)
    }

    /// The envelope of a `Deliver` item, sharing its buffer.
    pub fn envelope(&self) -> Bytes {
        self.0.slice(DELIVER_PREFIX.min(self.0.len())..)
    }
}

/// A member's connection as a backend sees it: where its items go. Pushing never waits; a
/// member whose queue is full is closed as a slow consumer instead of slowing anyone else.
#[derive(Debug, Clone)]
pub struct Link(Arc<Outbox>);

impl Link {
    pub(crate) fn new(outbox: Arc<Outbox>) -> Self {
        Self(outbox)
    }

    /// Queues `item`; returns whether it was queued (false: the member is gone or was just
    /// closed as a slow consumer). Inside `deliver_batch` the writer is woken once at the end.
    pub fn push(&self, item: &Item) -> bool {
        self.0.push_batched(item.0.clone())
    }

    /// Queues `items` in order under one lock of the member's queue; returns whether all
    /// were queued (false: the member is gone or was just closed as a slow consumer).
    pub fn push_all<'a>(&self, items: impl IntoIterator<Item = &'a Item>) -> bool {
        self.0.push_all_batched(items.into_iter().map(|item| item.0.clone()))
    }

    /// Closes the member's connection with a goodbye (kick, ban, replaced, room deleted).
    pub fn close(&self, code: ErrorCode, detail: &str) -> bool {
        self.0.close(code, detail)
    }

    /// Bytes waiting to be written to the member (for the metrics).
    pub fn queued_bytes(&self) -> usize {
        self.0.queued_bytes()
    }
}

/// Runs `f` holding back the writers' wake-ups for items pushed meanwhile: a group of
/// deliveries goes to each member in as few Noise messages as fit. Nested calls join.
pub fn deliver_batch<R>(f: impl FnOnce() -> R) -> R {
    outbox::batched(f)
}

/// What a history replay hands the writer.
#[derive(Debug)]
pub enum Pulled {
    /// These `Deliver` items, and more to come.
    More(Vec<Item>),
    /// The last ones.
    Done(Vec<Item>),
    /// The history moved on past what was still to send: the member fell behind.
    Lost,
}

/// A joiner's history replay, pulled by its writer as the socket drains, so a joiner costs
/// no copy of the history and no queue space for it.
pub trait History: Send + Sync + fmt::Debug {
    /// The next `Deliver` items (`history` set), about `budget` bytes of them (at least one).
    fn pull(&mut self, budget: usize) -> Pulled;
}

/// A history with nothing in it.
#[derive(Debug, Default)]
pub struct NoHistory;

impl History for NoHistory {
    fn pull(&mut self, _budget: usize) -> Pulled {
        Pulled::Done(Vec::new())
    }
}

/// What `Joined` tells a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinedInfo {
    /// This join created the room.
    pub created: bool,
    pub owner: PublicIdentity,
    /// The highest stored `seq`, and the oldest retained (0: none).
    pub latest_seq: u64,
    pub oldest_seq: u64,
    /// For a version 2 join: the stored GroupInfo's `after_seq` (0: none), sent as
    /// `GroupInfoStored` right after `Joined`.
    pub group_info_seq: Option<u64>,
}

/// A successful join: the member's handle and what to send it, in this order: `Joined`, the
/// member list, the history replay, `HistoryEnd { latest_seq }`. Items the backend pushed to
/// the member's `Link` since it registered the member go out after all of these, so the
/// history it replays must end where its live deliveries to the member begin: no gap, no
/// duplicate.
#[derive(Debug)]
pub struct Admission<M> {
    pub member: M,
    pub joined: JoinedInfo,
    pub members: Vec<Member>,
    pub history: Box<dyn History>,
}

/// Splits a member list into `Members` items.
pub(crate) fn member_items(list: Vec<Member>) -> Vec<Bytes> {
    if list.is_empty() {
        return vec![encode(&RelayMessage::Members { more: false, members: Vec::new() })];
    }
    let parts = list.len().div_ceil(MAX_MEMBERS_PER_ITEM);
    let mut rest = list.into_iter();
    (1..=parts)
        .map(|part| {
            let members = rest.by_ref().take(MAX_MEMBERS_PER_ITEM).collect();
            encode(&RelayMessage::Members { more: part < parts, members })
        })
        .collect()
}

/// Starts a joined member's outbox: `Joined` (and for version 2 `GroupInfoStored`) and
/// `Members` first, then the replay ending
/// with `HistoryEnd`, then whatever was pushed since the member registered.
pub(crate) fn start<M>(outbox: &Outbox, admission: Admission<M>) -> M {
    let Admission { member, joined, members, history } = admission;
    let mut first = vec![encode(&RelayMessage::Joined {
        created: joined.created,
        owner: joined.owner,
        latest_seq: joined.latest_seq,
        oldest_seq: joined.oldest_seq,
    })];
    if let Some(after_seq) = joined.group_info_seq {
        first.push(encode(&RelayMessage::GroupInfoStored { after_seq }));
    }
    first.extend(member_items(members));
    let replay =
        Replayed { history, end: Some(encode(&RelayMessage::HistoryEnd { latest_seq: joined.latest_seq })) };
    // A closed outbox (replaced, kicked meanwhile) has nothing to send: the member leaves.
    let _ = outbox.start(first, Box::new(replay));
    member
}

/// A backend's history, as the outbox pulls it: its items, then `HistoryEnd`.
#[derive(Debug)]
struct Replayed {
    history: Box<dyn History>,
    end: Option<Bytes>,
}

impl outbox::Replay for Replayed {
    fn pull(&mut self, budget: usize) -> outbox::Pulled {
        let bytes = |items: Vec<Item>| -> Vec<Bytes> { items.into_iter().map(|i| i.0).collect() };
        match self.history.pull(budget) {
            Pulled::More(items) => outbox::Pulled::More(bytes(items)),
            Pulled::Done(items) => {
                let mut items = bytes(items);
                items.extend(self.end.take());
                outbox::Pulled::Done(items)
            }
            Pulled::Lost => outbox::Pulled::Lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_member_lists_are_split_into_items_of_at_most_1000() {
        let list: Vec<Member> = (0..2500)
            .map(|i| Member { nick: Nick::new(&format!("n{i}")).unwrap(), identity: PublicIdentity([0; 32]) })
            .collect();
        let items = member_items(list);
        let decoded: Vec<RelayMessage> =
            items.iter().map(|i| RelayMessage::decode_all(i).unwrap().remove(0)).collect();
        let shape: Vec<(bool, usize)> = decoded
            .iter()
            .map(|m| match m {
                RelayMessage::Members { more, members } => (*more, members.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(shape, [(true, 1000), (true, 1000), (false, 500)]);
        assert!(items.iter().all(|i| i.len() <= chatroom_crypto::MAX_PLAINTEXT_LEN));
        assert_eq!(member_items(Vec::new()).len(), 1, "an empty list is one item");
    }

    #[test]
    fn a_deliver_items_envelope_shares_its_buffer() {
        let envelope = vec![7; 300];
        let item = Item::deliver(7, true, &envelope);
        assert_eq!(item.envelope(), envelope);
        assert_eq!(item.envelope_len(), 300);
        let decoded = RelayMessage::decode_all(&item.0).unwrap();
        assert!(matches!(&decoded[..], [RelayMessage::Deliver { seq: 7, history: true, .. }]));
    }
}
