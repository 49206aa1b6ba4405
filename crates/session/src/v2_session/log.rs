//! The v2 room's rules between the relay and `V2Room`, without I/O: entry (fetch the sealed
//! GroupInfo, send the external commit, retry when another commit wins), the log in `seq`
//! order (own envelopes placed by their `Ack`), resending messages that missed their epoch,
//! the GroupInfo after each epoch change, and the owner's removals. Fed relay items by the
//! driver, it returns what to send and what to report.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use chatroom_crypto::{
    join_verifier_v2, ClientMessage, Content, ContentKind, ErrorCode, GroupInfoPart, Identity, Nick,
    PublicIdentity, RoomName, RoomSecretsV2, MAX_GROUP_INFO_CHUNK,
};
use chatroom_group::GroupError;
use rand_core::RngCore;

use super::held::{Delivery, Held};
use super::{RotateError, V2Limits, V2Safety};
use crate::error::SessionError;
use crate::session::{ChatMessage, Event, GroupEvent, Rejected, Whois};
use crate::trust::MAX_PINS;
use crate::v2::{V2Error, V2Event, V2Room};
use crate::v2_history::{SharedMessage, MAX_HISTORY_SHARE};

/// Something the driver must do.
#[derive(Debug)]
pub(super) enum Action {
    Emit(Event),
    Relay(ClientMessage),
    /// An envelope for the outbox; `id` 0 for the driver's own commits.
    Envelope {
        id: u64,
        counter: u64,
        envelope: Vec<u8>,
    },
}

/// Where this client stands in the room's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A member: the log is processed by `V2Room`.
    Member,
    /// No GroupInfo asked for yet: waiting for one stored after `min_seq` (`None`: any).
    Waiting { min_seq: Option<u64> },
    /// `GetGroupInfo` sent.
    Fetching,
    /// The entry commit is sent; the log decides.
    Entering,
}

/// The v2 room of one session.
pub(super) struct Core {
    identity: Identity,
    name: RoomName,
    nick: Nick,
    relay_key: [u8; 32],
    secrets: RoomSecretsV2,
    limits: V2Limits,
    state_path: Option<PathBuf>,
    room: Option<V2Room>,
    phase: Phase,
    attempts: u32,
    /// Log entries after the stored GroupInfo, kept while not a member: (seq, history, envelope).
    buffer: Vec<(u64, bool, Vec<u8>)>,
    buffered_bytes: usize,
    /// The GroupInfo being assembled from the relay's parts.
    parts: Option<GroupInfoPart>,
    /// Own envelopes the relay acknowledged, placed in the log by their `seq`.
    own: BTreeMap<u64, Vec<u8>>,
    /// Deliveries that arrived while an own envelope was unanswered.
    held: Held,
    /// Own messages not yet seen in the log: (counter, id, content), to resend on a new epoch.
    unconfirmed: VecDeque<(u64, u64, Content)>,
    /// Messages the user sent before this client was a member.
    waiting: VecDeque<(u64, ContentKind, String)>,
    /// The `after_seq` of the stored GroupInfo, as the relay last said.
    stored_info_seq: Option<u64>,
    /// The `seq` of the commit that started the current epoch.
    epoch_seq: u64,
    /// Identities the owner removed at the relay and not yet from the group.
    removing: Vec<PublicIdentity>,
    /// An own commit is in flight (one at a time: a second would replace the first).
    committing: bool,
    /// The own commit in flight is a healing update (a refused one waits a full interval).
    updating: bool,
    /// Random part of the time trigger, 0 to 10 % of it, so members do not update together.
    heal_jitter: f64,
    /// The owner's password rotation until its `rotate` message is read back in its epoch.
    rotation: Option<PendingRotation>,
    /// The password's outputs changed (a rotation): the connection's join secret must follow.
    secrets_changed: bool,
    dirty: bool,
    pub(super) out: Vec<Action>,
}

/// The owner's `rotate` message in flight (docs/PROTOCOL.md section 26), until read back in its epoch.
#[derive(Debug, Clone, Copy)]
struct PendingRotation {
    /// The counter of its latest copy.
    counter: u64,
}

fn counter_of(envelope: &[u8]) -> Option<u64> {
    envelope.get(33..41).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

fn sender_of(envelope: &[u8]) -> Option<[u8; 32]> {
    envelope.get(1..33).and_then(|b| b.try_into().ok())
}

/// A room's history-sharing setting in words.
fn share_words(n: u16) -> String {
    match n {
        0 => "no earlier messages".to_owned(),
        1 => "its last message".to_owned(),
        n => format!("its last {n} messages"),
    }
}

/// The time in Unix seconds (the healing clock, kept in the state file).
pub(super) fn now_secs() -> u64 {
    now_micros() / 1_000_000
}

pub(super) fn now_micros() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl Core {
    pub(super) fn new(
        identity: &Identity,
        name: RoomName,
        nick: Nick,
        relay_key: [u8; 32],
        secrets: RoomSecretsV2,
        limits: V2Limits,
        state_path: Option<PathBuf>,
    ) -> (Self, Option<String>) {
        let identity = Identity::from_seed(&identity.seed());
        let mut warning = None;
        let room = state_path.as_ref().filter(|p| p.exists()).and_then(|path| {
            let me = Identity::from_seed(&identity.seed());
            match V2Room::load(me, name.clone(), &relay_key, secrets.clone(), path) {
                Ok(room) if room.is_member() => Some(room),
                Ok(_) => None,
                Err(e) => {
                    warning =
                        Some(format!("the saved room state cannot be read ({e}); entering the room anew"));
                    None
                }
            }
        });
        // A saved state holds the current password generation's outputs (after a rotation,
        // not the password's the user gave).
        let secrets = room.as_ref().map_or(secrets, |r| r.secrets().clone());
        let phase = if room.is_some() { Phase::Member } else { Phase::Waiting { min_seq: None } };
        let core = Self {
            held: Held::new(limits.max_held),
            identity,
            name,
            nick,
            relay_key,
            secrets,
            limits,
            state_path,
            room,
            phase,
            attempts: 0,
            buffer: Vec::new(),
            buffered_bytes: 0,
            parts: None,
            own: BTreeMap::new(),
            unconfirmed: VecDeque::new(),
            waiting: VecDeque::new(),
            stored_info_seq: None,
            epoch_seq: 0,
            removing: Vec::new(),
            committing: false,
            updating: false,
            heal_jitter: f64::from(rand_core::OsRng.next_u32()) / f64::from(u32::MAX) / 10.0,
            rotation: None,
            secrets_changed: false,
            dirty: false,
            out: Vec::new(),
        };
        (core, warning)
    }

    fn me(&self) -> PublicIdentity {
        self.identity.public()
    }

    /// A delivered message as the client shows it, under its MLS-authenticated sender.
    fn chat_message(&self, seq: u64, history: bool, sender: PublicIdentity, content: Content) -> ChatMessage {
        ChatMessage {
            seq,
            history,
            sender,
            from_me: sender == self.me(),
            nick: content.nick,
            kind: content.kind,
            body: content.body,
            timestamp_ms: content.timestamp_ms,
        }
    }

    fn copy_identity(&self) -> Identity {
        Identity::from_seed(&self.identity.seed())
    }

    fn emit(&mut self, event: Event) {
        self.out.push(Action::Emit(event));
    }

    /// Messages the user sent that wait for this client's entry (not yet in the outbox).
    pub(super) fn unsent(&self) -> usize {
        self.waiting.len()
    }

    pub(super) fn is_member(&self) -> bool {
        self.phase == Phase::Member
    }

    /// What the next join asks history after: the cursor of a member, else everything
    /// retained (entries before the stored GroupInfo are dropped as they arrive).
    pub(super) fn history_after(&self) -> u64 {
        match (&self.room, self.phase) {
            (Some(room), Phase::Member | Phase::Entering) => room.cursor(),
            _ => 0,
        }
    }

    /// What `/whois` shows: the key `nick`'s messages were pinned to (MLS authenticated), and
    /// a pinned look-alike. The relay's list is the driver's (`listed`).
    pub(super) fn whois(&self, nick: Nick) -> Whois {
        let room = self.room.as_ref();
        Whois {
            pinned: room.and_then(|r| r.pinned(&nick)),
            listed: None,
            look_alike: room.and_then(|r| r.look_alike(&nick)),
            nick,
        }
    }

    /// What the relay claims about `nick` and `identity` (presence, member list), compared
    /// with the pins, which it never changes: a mismatch is reported as in v1.
    pub(super) fn check_claim(&mut self, nick: &Nick, identity: &PublicIdentity) {
        if let Some(pinned) = self.room.as_ref().and_then(|r| r.claim_mismatch(nick, identity)) {
            self.emit(Event::KeyChanged { nick: nick.clone(), pinned, seen: *identity });
        }
    }

    pub(super) fn safety(&self) -> Option<V2Safety> {
        let room = self.room.as_ref().filter(|_| self.is_member())?;
        let (room_code, epoch, epoch_code) = room.safety().ok()?;
        Some(V2Safety { room_code, epoch, epoch_code })
    }

    /// Joined (first time or again): `created` rooms get their group; a member that fell
    /// behind the retained history enters again; anyone not a member fetches the GroupInfo.
    pub(super) fn on_joined(&mut self, created: bool, oldest_seq: u64) -> Result<(), SessionError> {
        self.parts = None;
        self.held.clear();
        self.stored_info_seq = None;
        if let (Some(room), Phase::Member) = (&self.room, self.phase) {
            let last = room.cursor();
            if last > 0 && oldest_seq > last.saturating_add(1) {
                self.emit(Event::Group(GroupEvent::FellBehind { last, oldest: oldest_seq }));
                self.room = None;
                if let Some(path) = &self.state_path {
                    let _ = std::fs::remove_file(path);
                }
                self.phase = Phase::Waiting { min_seq: None };
            }
        }
        if created && self.room.is_none() {
            return self.create();
        }
        match self.phase {
            Phase::Member | Phase::Entering => {}
            Phase::Waiting { .. } | Phase::Fetching => {
                // A connection lost mid-entry starts it over: the buffer came from it.
                self.room = None;
                self.buffer.clear();
                self.buffered_bytes = 0;
                self.fetch();
            }
        }
        Ok(())
    }

    fn create(&mut self) -> Result<(), SessionError> {
        let (mut room, sealed) = V2Room::create_with_history_share(
            self.copy_identity(),
            self.name.clone(),
            &self.relay_key,
            self.secrets.clone(),
            self.limits.create_history_share.min(MAX_HISTORY_SHARE as u16),
        )
        .map_err(|e| SessionError::Protocol(format!("cannot create the room's group: {e}")))?;
        room.raise_counter(now_micros());
        room.mark_committed(now_secs());
        self.room = Some(room);
        self.become_member(0);
        self.put_group_info(0, &sealed);
        Ok(())
    }

    fn fetch(&mut self) {
        self.phase = Phase::Fetching;
        self.out.push(Action::Relay(ClientMessage::GetGroupInfo));
    }

    fn become_member(&mut self, seq: u64) {
        self.phase = Phase::Member;
        self.attempts = 0;
        self.epoch_seq = seq;
        self.buffer.clear();
        self.buffered_bytes = 0;
        self.dirty = true;
        let epoch = self.room.as_ref().and_then(|r| r.safety().ok()).map_or(0, |s| s.1);
        let history_share = self.room.as_ref().map_or(0, V2Room::history_share);
        self.emit(Event::Group(GroupEvent::Entered { epoch, history_share }));
        self.note_ignored_history_share(history_share);
        while let Some((id, kind, body)) = self.waiting.pop_front() {
            self.seal(id, kind, body);
        }
    }

    /// A history-sharing setting asked for a room that already existed did nothing: say so,
    /// once, since only the room's creator sets it.
    fn note_ignored_history_share(&mut self, room_setting: u16) {
        let asked = std::mem::take(&mut self.limits.create_history_share);
        if asked != 0 && asked != room_setting {
            self.emit(Event::Warning(format!(
                "the room already existed, so your history-sharing setting ({asked}) was not applied: \
                 only its creator sets it, and this room shows newcomers {}",
                share_words(room_setting)
            )));
        }
    }

    fn put_group_info(&mut self, after_seq: u64, sealed: &[u8]) {
        let chunks: Vec<&[u8]> = sealed.chunks(MAX_GROUP_INFO_CHUNK).collect();
        let Ok(parts) = u8::try_from(chunks.len()) else {
            self.emit(Event::Warning(format!(
                "the room's GroupInfo is {} bytes, more than the relay's items carry; not published",
                sealed.len()
            )));
            return;
        };
        for (part, chunk) in chunks.into_iter().enumerate() {
            let part = part as u8;
            let p = GroupInfoPart { after_seq, part, parts, chunk: chunk.to_vec() };
            self.out.push(Action::Relay(ClientMessage::PutGroupInfo(p)));
        }
        self.stored_info_seq = Some(after_seq);
    }

    /// Publishes the current epoch's GroupInfo if the stored one is older (a member's
    /// fallback when the committer did not).
    pub(super) fn refresh_group_info(&mut self) {
        let stale = self.stored_info_seq.is_some_and(|s| s < self.epoch_seq);
        if !(self.is_member() && stale) {
            return;
        }
        let sealed = self.room.as_ref().map(|r| r.sealed_group_info());
        if let Some(Ok(sealed)) = sealed {
            self.put_group_info(self.epoch_seq, &sealed);
        }
    }

    /// Whether the stored GroupInfo is older than the current epoch.
    pub(super) fn group_info_stale(&self) -> bool {
        self.is_member() && self.stored_info_seq.is_some_and(|s| s < self.epoch_seq)
    }

    pub(super) fn on_group_info_stored(&mut self, after_seq: u64) {
        self.stored_info_seq = Some(after_seq);
        if let Phase::Waiting { min_seq } = self.phase {
            if min_seq.is_none_or(|m| after_seq >= m) {
                self.fetch();
            }
        }
    }

    pub(super) fn on_error(&mut self, code: ErrorCode, detail: String) {
        match code {
            ErrorCode::NoGroupInfo if self.phase == Phase::Fetching => {
                self.phase = Phase::Waiting { min_seq: None };
            }
            // Someone published a newer one first: nothing to do.
            ErrorCode::StaleGroupInfo => {}
            ErrorCode::GroupInfoTooLarge => self.emit(Event::Warning(
                "the relay refused the room's GroupInfo as too large; newcomers may be unable to enter"
                    .into(),
            )),
            _ => self.emit(Event::CommandFailed { code, detail }),
        }
    }

    /// One `GroupInfo` part; a complete upload starts the entry.
    pub(super) fn on_group_info(&mut self, part: GroupInfoPart) -> Result<(), SessionError> {
        if self.phase != Phase::Fetching {
            return Ok(());
        }
        let assembled = match self.parts.take() {
            None if part.part == 0 => part,
            Some(mut so_far)
                if part.part == so_far.part.wrapping_add(1)
                    && part.parts == so_far.parts
                    && part.after_seq == so_far.after_seq
                    && so_far.chunk.len() + part.chunk.len() <= self.limits.max_group_info =>
            {
                so_far.part = part.part;
                so_far.chunk.extend_from_slice(&part.chunk);
                so_far
            }
            _ => {
                return Err(SessionError::Protocol(
                    "the relay sent the GroupInfo's parts out of order".into(),
                ))
            }
        };
        if assembled.part.saturating_add(1) < assembled.parts {
            self.parts = Some(assembled);
            return Ok(());
        }
        self.enter(assembled.after_seq, &assembled.chunk)
    }

    fn enter(&mut self, after_seq: u64, sealed: &[u8]) -> Result<(), SessionError> {
        let entered = V2Room::enter_after_counter(
            self.copy_identity(),
            self.name.clone(),
            &self.relay_key,
            self.secrets.clone(),
            (after_seq, sealed),
            now_micros(),
        );
        let (room, envelope) = match entered {
            Ok(entered) => entered,
            Err(V2Error::Group(GroupError::GroupInfoKey)) => return Err(SessionError::GroupKeyMismatch),
            Err(e) => {
                self.emit(Event::Warning(format!("the room's stored GroupInfo cannot be used: {e}")));
                return self.lost_entry(after_seq.saturating_add(1));
            }
        };
        let counter = counter_of(&envelope).unwrap_or(0);
        self.out.push(Action::Envelope { id: 0, counter, envelope });
        self.room = Some(room);
        self.phase = Phase::Entering;
        // Entries already received after the GroupInfo decide the entry too.
        for (seq, history, envelope) in std::mem::take(&mut self.buffer) {
            self.buffered_bytes = 0;
            self.process(seq, history, envelope)?;
        }
        Ok(())
    }

    fn lost_entry(&mut self, next_min: u64) -> Result<(), SessionError> {
        self.attempts += 1;
        self.room = None;
        if self.attempts >= self.limits.entry_attempts {
            return Err(SessionError::EntryFailed);
        }
        self.emit(Event::Group(GroupEvent::EntryRetry { attempt: self.attempts + 1 }));
        self.buffer.retain(|(s, _, _)| *s >= next_min);
        self.buffered_bytes = self.buffer.iter().map(|(_, _, e)| e.len()).sum();
        self.phase = Phase::Waiting { min_seq: Some(next_min) };
        if self.stored_info_seq.is_some_and(|s| s >= next_min) {
            self.fetch();
        }
        Ok(())
    }

    /// The relay refused one of our own commits (an entry or a removal): it never enters the
    /// log, so an entry starts over and the next removal may be tried.
    pub(super) fn on_own_refused(&mut self, counter: u64) -> Result<(), SessionError> {
        if self.rotation.is_some_and(|r| r.counter == counter) {
            // The members must get the new password's outputs: the rotation is sent again.
            self.reseal_rotation();
            return Ok(());
        }
        match self.phase {
            Phase::Entering => {
                self.attempts += 1;
                self.room = None;
                if self.attempts >= self.limits.entry_attempts {
                    return Err(SessionError::EntryFailed);
                }
                self.fetch();
            }
            Phase::Member => {
                self.committing = false;
                if std::mem::take(&mut self.updating) {
                    // Tried again after a full interval, not at once (the refusal may repeat).
                    if let Some(room) = self.room.as_mut() {
                        room.mark_committed(now_secs());
                    }
                }
                self.next_removal();
            }
            Phase::Waiting { .. } | Phase::Fetching => {}
        }
        Ok(())
    }

    /// The relay stored one of our envelopes as `seq`: it takes its place in the log.
    pub(super) fn on_ack(&mut self, seq: u64, envelope: Vec<u8>) {
        self.own.insert(seq, envelope);
    }

    /// The `rotate` message is in the log at `seq`, in its epoch: every member holds the new
    /// outputs from there on. Now the new join verifier, then the GroupInfo sealed under the
    /// new key, stored after the message (so a member's fallback publication of the epoch's
    /// old-key GroupInfo is refused as stale).
    fn announce_rotation(&mut self, seq: u64) {
        let verifier = join_verifier_v2(&self.secrets.join_secret);
        self.out.push(Action::Relay(ClientMessage::SetVerifier { verifier: verifier.0 }));
        let Some(room) = self.room.as_ref() else { return };
        let generation = room.psk_generation();
        match room.sealed_group_info() {
            Ok(sealed) => self.put_group_info(seq, &sealed),
            Err(e) => self.emit(Event::Warning(format!(
                "cannot seal the room's GroupInfo under the new password: {e}"
            ))),
        }
        let me = self.me();
        self.emit(Event::Group(GroupEvent::PasswordRotated { generation, by: me, own: true }));
    }

    /// The owner's password rotation (docs/PROTOCOL.md section 26): the `rotate` message now; the new
    /// verifier and GroupInfo once it is read back from the log in its epoch (sealed again on
    /// the next epoch if it missed its own). Returns the new generation.
    pub(super) fn rotate(&mut self, new: RoomSecretsV2) -> Result<u32, RotateError> {
        if !self.is_member() {
            return Err(RotateError::Refused("this client is not a member of the room's group yet".into()));
        }
        if self.rotation.is_some() {
            return Err(RotateError::Refused("a password rotation is still in progress".into()));
        }
        let me = self.me();
        let Some(room) = self.room.as_mut() else {
            return Err(RotateError::Refused("this client is not a member of the room's group yet".into()));
        };
        if room.owner() != Some(me) {
            return Err(RotateError::NotOwner);
        }
        let now = now_micros();
        room.raise_counter(now);
        let envelope = room.rotate(new, now / 1000).map_err(|e| RotateError::Refused(e.to_string()))?;
        let generation = room.psk_generation();
        self.secrets = room.secrets().clone();
        self.secrets_changed = true;
        self.dirty = true;
        let counter = counter_of(&envelope).unwrap_or(0);
        self.rotation = Some(PendingRotation { counter });
        self.out.push(Action::Envelope { id: 0, counter, envelope });
        Ok(generation)
    }

    /// The current generation's `rotate` message again (its last copy missed its epoch or
    /// was refused by the relay).
    fn reseal_rotation(&mut self) {
        let (Some(rotation), Some(room)) = (self.rotation.as_mut(), self.room.as_mut()) else { return };
        let now = now_micros();
        room.raise_counter(now);
        match room.rotation_message(now / 1000) {
            Ok(envelope) => {
                let counter = counter_of(&envelope).unwrap_or(0);
                rotation.counter = counter;
                self.out.push(Action::Envelope { id: 0, counter, envelope });
            }
            Err(e) => {
                self.rotation = None;
                self.out.push(Action::Emit(Event::Warning(format!(
                    "cannot send the password rotation to the members again ({e}); members who have not \
                     received it cannot enter anew without the new password"
                ))));
            }
        }
    }

    /// The password's outputs if they changed since the last call (a rotation).
    pub(super) fn take_changed_secrets(&mut self) -> Option<RoomSecretsV2> {
        std::mem::take(&mut self.secrets_changed).then(|| self.secrets.clone())
    }

    /// The current password generation's outputs.
    pub(super) fn secrets(&self) -> &RoomSecretsV2 {
        &self.secrets
    }

    /// Own envelopes up to `before` (exclusive) are processed now, as nothing earlier can
    /// still arrive; `u64::MAX` after a barrier.
    pub(super) fn settle_own(&mut self, before: u64) -> Result<(), SessionError> {
        while let Some(entry) = self.own.first_entry() {
            if *entry.key() >= before {
                break;
            }
            let (seq, envelope) = entry.remove_entry();
            self.process(seq, false, envelope)?;
        }
        Ok(())
    }

    /// A `Deliver` as it arrives: a live one is held while one of our envelopes is
    /// `unanswered`, as the envelope's place may still be before it; read now otherwise.
    /// History needs no holding: an envelope sent on this connection is either new, after all
    /// of it, or a resend of one stored before, which the history itself brings.
    pub(super) fn on_arrival(
        &mut self,
        (seq, history, envelope): Delivery,
        unanswered: bool,
    ) -> Result<(), SessionError> {
        if unanswered && !history {
            return self.held.hold((seq, history, envelope));
        }
        self.release(None)?;
        self.on_deliver(seq, history, envelope)
    }

    /// An answer to one of our envelopes: an `Ack` of `acked` (after `on_ack`), or a refusal.
    /// Every delivery below an `Ack` has arrived, so those held are read; once nothing is
    /// `unanswered`, all are.
    pub(super) fn on_answer(&mut self, acked: Option<u64>, unanswered: bool) -> Result<(), SessionError> {
        if acked.is_some() {
            self.release(acked)?;
        }
        if unanswered {
            return Ok(());
        }
        self.release(None)
    }

    /// Reads the held deliveries below `below` (all if `None`), each after the own envelopes
    /// placed before it.
    fn release(&mut self, below: Option<u64>) -> Result<(), SessionError> {
        let deliveries = match below {
            Some(seq) => self.held.take_below(seq),
            None => self.held.take_all(),
        };
        for (seq, history, envelope) in deliveries {
            self.on_deliver(seq, history, envelope)?;
        }
        Ok(())
    }

    /// Whether deliveries wait for an answer to one of our envelopes.
    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    pub(super) fn on_deliver(
        &mut self,
        seq: u64,
        history: bool,
        envelope: Vec<u8>,
    ) -> Result<(), SessionError> {
        self.settle_own(seq)?;
        self.process(seq, history, envelope)
    }

    fn process(&mut self, seq: u64, history: bool, envelope: Vec<u8>) -> Result<(), SessionError> {
        if self.phase != Phase::Member {
            self.buffer_while_entering(seq, history, &envelope)?;
        }
        let Some(room) = self.room.as_mut() else { return Ok(()) };
        let own_counter =
            (sender_of(&envelope) == Some(self.identity.public().0)).then(|| counter_of(&envelope)).flatten();
        let event = room.on_deliver(seq, &envelope);
        self.dirty = true;
        match event {
            Ok(
                event @ (V2Event::Message { .. } | V2Event::NickMismatch { .. } | V2Event::Unpinned { .. }),
            ) => {
                self.on_chat(history, event);
            }
            Ok(V2Event::Commit(summary)) => self.on_commit(seq, summary),
            Ok(V2Event::Entered) => self.on_entered(seq),
            Ok(V2Event::EntryLost) => return self.lost_entry(seq),
            Ok(V2Event::Removed) => {
                self.save();
                return Err(SessionError::RemovedFromGroup);
            }
            Ok(V2Event::Resend)
                if own_counter.is_some() && own_counter == self.rotation.map(|r| r.counter) =>
            {
                self.reseal_rotation();
                return Ok(());
            }
            Ok(V2Event::Resend) => {
                if let Some(at) = own_counter.and_then(|c| self.unconfirmed.iter().position(|u| u.0 == c)) {
                    if let Some((_, id, content)) = self.unconfirmed.remove(at) {
                        self.seal(id, content.kind, content.body);
                    }
                }
                return Ok(());
            }
            Ok(V2Event::Rotated { generation, by }) => {
                if let Some(room) = self.room.as_ref() {
                    self.secrets = room.secrets().clone();
                    self.secrets_changed = true;
                }
                self.emit(Event::Group(GroupEvent::PasswordRotated { generation, by, own: false }));
            }
            Ok(V2Event::SharedHistory { by, messages }) => self.shared_history(by, messages),
            Ok(V2Event::Skipped | V2Event::HistoryShared { .. }) => {}
            Err(e) if self.phase == Phase::Member => {
                self.emit(Event::Group(GroupEvent::Refused { seq, reason: e.to_string() }));
            }
            Err(_) => {}
        }
        if let Some(c) = own_counter {
            self.unconfirmed.retain(|u| u.0 != c);
            // Read back in its epoch: every member has it.
            if self.rotation.is_some_and(|r| r.counter == c) {
                self.rotation = None;
                self.announce_rotation(seq);
            }
        }
        Ok(())
    }

    /// Before this client is a member, the log after the stored GroupInfo (all of it while
    /// its entry is in flight) is kept to read again once it is in, within the entry buffer.
    fn buffer_while_entering(
        &mut self,
        seq: u64,
        history: bool,
        envelope: &[u8],
    ) -> Result<(), SessionError> {
        let after_stored = self.stored_info_seq.is_none_or(|s| seq > s);
        if after_stored || self.phase == Phase::Entering {
            self.buffered_bytes += envelope.len();
            if self.buffered_bytes > self.limits.max_entry_buffer {
                return Err(SessionError::EntryFailed);
            }
            self.buffer.push((seq, history, envelope.to_vec()));
        }
        Ok(())
    }

    /// A chat message, shown as v1 shows it: a look-alike nickname flagged first, a nickname
    /// under another key than its pin (or past a full pin store) rejected as such.
    fn on_chat(&mut self, history: bool, event: V2Event) {
        match event {
            V2Event::Message { sender, content, seq } => {
                if let Some(like) = self.room.as_ref().and_then(|r| r.look_alike(&content.nick)) {
                    self.emit(Event::LookAlike { nick: content.nick.clone(), sender, like });
                }
                let message = self.chat_message(seq, history, sender, content);
                self.emit(Event::Message(message));
            }
            V2Event::NickMismatch { sender, content, seq, pinned } => {
                let message = self.chat_message(seq, history, sender, content);
                self.emit(Event::Rejected(Rejected::NickMismatch { message, pinned }));
            }
            V2Event::Unpinned { sender, content, seq } => {
                let message = self.chat_message(seq, history, sender, content);
                self.emit(Event::Rejected(Rejected::Unpinned { message, max: MAX_PINS }));
            }
            _ => {}
        }
    }

    /// This client's entry won at `seq`: it is a member, and publishes the epoch's GroupInfo.
    fn on_entered(&mut self, seq: u64) {
        if let Some(room) = self.room.as_mut() {
            room.mark_committed(now_secs());
        }
        self.become_member(seq);
        if let Some(Ok(sealed)) = self.room.as_ref().map(|r| r.sealed_group_info()) {
            self.put_group_info(seq, &sealed);
        }
    }

    fn on_commit(&mut self, seq: u64, s: chatroom_group::CommitSummary) {
        self.epoch_seq = seq;
        if s.own || s.own_commit_lost {
            self.committing = false;
            self.updating = false;
        }
        if s.own {
            if let Some(room) = self.room.as_mut() {
                room.mark_committed(now_secs());
            }
            if let Some(Ok(sealed)) = self.room.as_ref().map(|r| r.sealed_group_info()) {
                self.put_group_info(seq, &sealed);
            }
        }
        self.removing.retain(|who| !s.removed.contains(who));
        self.emit(Event::Group(GroupEvent::Commit {
            epoch: s.epoch,
            committer: s.committer,
            entry: s.entry,
            removed: s.removed,
            own: s.own,
        }));
        self.next_removal();
        self.reseal_unconfirmed();
        // A lost update is built again on the new epoch if still due: the winning commit
        // refreshed only its committer's leaf, and this member's old one still opens the next.
        self.maybe_heal(now_secs());
    }

    /// Own messages not yet read back from the log were sealed on the epoch this commit ended:
    /// the log holds them after the commit, where no member can read them (they come back as
    /// `Resend` and are dropped then). Sealed again at once on the new epoch, ahead of any
    /// update this member sends next, so that update does not supersede them a second time.
    fn reseal_unconfirmed(&mut self) {
        let doomed: Vec<_> = self.unconfirmed.drain(..).collect();
        for (_, id, content) in doomed {
            self.seal(id, content.kind, content.body);
        }
        self.reseal_rotation();
    }

    /// The healing thresholds: the client's, lowered to the room's (never raised above them).
    fn heal_limits(&self) -> (u32, u64) {
        let (mut messages, mut seconds) = (self.limits.heal_messages, self.limits.heal_after.as_secs());
        if let Some((m, s)) = self.room.as_ref().and_then(V2Room::heal_settings) {
            messages = messages.min(m);
            seconds = seconds.min(u64::from(s));
        }
        let jitter = (seconds as f64 * self.heal_jitter) as u64;
        (messages, seconds.saturating_add(jitter))
    }

    /// Sends an update commit (healing, docs/PROTOCOL.md section 27) if one is due at `now` (Unix
    /// seconds) and no other own commit is in flight; removals go first.
    pub(super) fn maybe_heal(&mut self, now: u64) {
        if self.committing || !self.is_member() || !self.removing.is_empty() {
            return;
        }
        let (messages, seconds) = self.heal_limits();
        let Some(room) = self.room.as_mut() else { return };
        if !room.heal_due(now, messages, seconds) {
            return;
        }
        room.raise_counter(now_micros());
        match room.update() {
            Ok(envelope) => {
                self.committing = true;
                self.updating = true;
                let counter = counter_of(&envelope).unwrap_or(0);
                self.out.push(Action::Envelope { id: 0, counter, envelope });
            }
            Err(e) => {
                room.mark_committed(now);
                self.emit(Event::Warning(format!(
                    "could not build the update that renews this member's keys ({e}); trying again \
                     after the next interval"
                )));
            }
        }
    }

    /// The owner kicked or banned `who` at the relay: remove it from the group too.
    pub(super) fn on_moderated(&mut self, who: PublicIdentity) {
        let owner = self.room.as_ref().and_then(V2Room::owner);
        if owner != Some(self.me()) || who == self.me() || self.removing.contains(&who) {
            return;
        }
        self.removing.push(who);
        self.next_removal();
    }

    fn next_removal(&mut self) {
        if self.committing || !self.is_member() {
            return;
        }
        let Some(room) = self.room.as_mut() else { return };
        let members = room.members();
        self.removing.retain(|who| members.contains(who));
        let Some(who) = self.removing.first().copied() else { return };
        room.raise_counter(now_micros());
        match room.remove(&who) {
            Ok(envelope) => {
                self.committing = true;
                let counter = counter_of(&envelope).unwrap_or(0);
                self.out.push(Action::Envelope { id: 0, counter, envelope });
            }
            Err(e) => {
                self.removing.retain(|w| *w != who);
                self.emit(Event::Warning(format!(
                    "could not remove {} from the group: {e}",
                    who.short_fingerprint()
                )));
            }
        }
    }

    /// A message from the user: sealed now if a member, else once the entry won.
    pub(super) fn send(&mut self, id: u64, kind: ContentKind, body: String) {
        if self.is_member() {
            self.seal(id, kind, body);
        } else {
            self.waiting.push_back((id, kind, body));
        }
    }

    /// Whether this member should share history with the current epoch's newcomer (once its
    /// random wait is over): the room core's rule, while a member.
    pub(super) fn share_wanted(&self) -> bool {
        self.phase == Phase::Member && self.room.as_ref().is_some_and(V2Room::share_wanted)
    }

    /// Seals this member's history share for the current epoch's newcomer, once; its
    /// envelopes are never sealed again in a later epoch.
    pub(super) fn share_history(&mut self) {
        let Some(room) = self.room.as_mut() else { return };
        let now = now_micros();
        room.raise_counter(now);
        match room.share_history(now / 1000) {
            Ok(envelopes) => {
                for envelope in envelopes {
                    let counter = counter_of(&envelope).unwrap_or(0);
                    self.out.push(Action::Envelope { id: 0, counter, envelope });
                }
                self.dirty = true;
            }
            Err(e) => {
                self.emit(Event::Warning(format!("cannot share the room's history with the newcomer: {e}")))
            }
        }
    }

    /// Shows history shared with this newcomer as `by`'s claim.
    fn shared_history(&mut self, by: PublicIdentity, messages: Vec<SharedMessage>) {
        let me = self.me();
        let by_nick = messages.iter().rev().find(|m| m.sender == by).map(|m| m.content.nick.clone());
        let messages = messages
            .into_iter()
            .map(|m| ChatMessage {
                seq: m.seq,
                history: true,
                sender: m.sender,
                from_me: m.sender == me,
                nick: m.content.nick,
                kind: m.content.kind,
                body: m.content.body,
                timestamp_ms: m.content.timestamp_ms,
            })
            .collect();
        self.emit(Event::Group(GroupEvent::SharedHistory { by, by_nick, messages }));
    }

    fn seal(&mut self, id: u64, kind: ContentKind, body: String) {
        let Some(room) = self.room.as_mut() else { return };
        let now = now_micros();
        room.raise_counter(now);
        let content = Content { timestamp_ms: now / 1000, kind, nick: self.nick.clone(), body };
        match room.send(&content) {
            Ok(envelope) => {
                let counter = counter_of(&envelope).unwrap_or(0);
                self.unconfirmed.push_back((counter, id, content));
                self.out.push(Action::Envelope { id, counter, envelope });
                self.maybe_heal(now / 1_000_000);
            }
            Err(e) => {
                self.emit(Event::SendFailed { id, code: ErrorCode::EnvelopeTooLarge, detail: e.to_string() })
            }
        }
    }

    /// Writes the state if it changed and this client is a member (or was removed).
    pub(super) fn save(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let (Some(path), Some(room)) = (&self.state_path, self.room.as_mut()) else { return None };
        if self.phase != Phase::Member {
            return None;
        }
        room.save(path).err().map(|e| format!("cannot save the room state: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use chatroom_crypto::split_master_v2;

    use super::*;

    const RELAY: [u8; 32] = [9; 32];

    fn core(seed: u8) -> Core {
        let identity = Identity::from_seed(&[seed; 32]);
        let (room, nick) = (RoomName::new("general").unwrap(), Nick::new(&format!("m{seed}")).unwrap());
        Core::new(&identity, room, nick, RELAY, split_master_v2(&[7; 32]), V2Limits::default(), None).0
    }

    fn take(core: &mut Core) -> Vec<Action> {
        std::mem::take(&mut core.out)
    }

    /// The one envelope among `actions`.
    fn envelope(actions: &[Action]) -> Vec<u8> {
        let found: Vec<&Vec<u8>> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Envelope { envelope, .. } => Some(envelope),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "{actions:?}");
        found[0].clone()
    }

    /// The GroupInfo put among `actions`, as the relay would serve it.
    fn put(actions: &[Action]) -> GroupInfoPart {
        let parts: Vec<&GroupInfoPart> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Relay(ClientMessage::PutGroupInfo(p)) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(parts.len(), 1, "{actions:?}");
        parts[0].clone()
    }

    fn asks_group_info(actions: &[Action]) -> bool {
        actions.iter().any(|a| matches!(a, Action::Relay(ClientMessage::GetGroupInfo)))
    }

    fn group_events(actions: &[Action]) -> Vec<GroupEvent> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit(Event::Group(g)) => Some(g.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_lost_entry_waits_for_the_winners_group_info_then_enters_and_all_agree() {
        let mut alice = core(1);
        alice.on_joined(true, 0).unwrap();
        let info0 = put(&take(&mut alice));
        assert_eq!(info0.after_seq, 0);

        // Bob and carol both enter from the GroupInfo of epoch 0.
        let (mut bob, mut carol) = (core(2), core(3));
        let mut entries = Vec::new();
        for newcomer in [&mut bob, &mut carol] {
            newcomer.on_joined(false, 0).unwrap();
            assert!(asks_group_info(&take(newcomer)));
            newcomer.on_group_info_stored(0);
            newcomer.on_group_info(info0.clone()).unwrap();
            entries.push(envelope(&take(newcomer)));
        }
        let (entry_b, entry_c) = (entries[0].clone(), entries[1].clone());

        // The relay orders bob's first: he is in and publishes the GroupInfo after seq 1.
        bob.on_ack(1, entry_b.clone());
        bob.settle_own(u64::MAX).unwrap();
        let actions = take(&mut bob);
        assert_eq!(group_events(&actions), vec![GroupEvent::Entered { epoch: 1, history_share: 0 }]);
        let info1 = put(&actions);
        assert_eq!(info1.after_seq, 1);

        // Carol's lost: she waits for a GroupInfo stored after seq 1 before asking again.
        carol.on_deliver(1, false, entry_b.clone()).unwrap();
        let actions = take(&mut carol);
        assert_eq!(group_events(&actions), vec![GroupEvent::EntryRetry { attempt: 2 }]);
        assert!(!asks_group_info(&actions), "the stored GroupInfo is still epoch 0's");
        carol.on_ack(2, entry_c.clone());
        carol.settle_own(u64::MAX).unwrap();
        carol.on_group_info_stored(1);
        assert!(asks_group_info(&take(&mut carol)));
        carol.on_group_info(info1).unwrap();
        let entry_c2 = envelope(&take(&mut carol));
        carol.on_ack(3, entry_c2.clone());
        carol.settle_own(u64::MAX).unwrap();
        assert_eq!(group_events(&take(&mut carol)), vec![GroupEvent::Entered { epoch: 2, history_share: 0 }]);

        // The members process the same log: carol's first entry is skipped, her second merged.
        for member in [&mut alice, &mut bob] {
            for (seq, entry) in [(1, &entry_b), (2, &entry_c), (3, &entry_c2)] {
                member.on_deliver(seq, false, entry.clone()).unwrap();
            }
            let commits: Vec<u64> = group_events(&take(member))
                .into_iter()
                .filter_map(|g| match g {
                    GroupEvent::Commit { epoch, entry: true, .. } => Some(epoch),
                    _ => None,
                })
                .collect();
            assert!(commits.ends_with(&[2]), "{commits:?}");
        }
        let codes = [alice.safety(), bob.safety(), carol.safety()];
        assert!(codes[0].is_some() && codes.iter().all(|c| *c == codes[0]), "{codes:?}");
        assert_eq!(codes[0].as_ref().map(|c| c.epoch), Some(2));
    }

    #[test]
    fn a_delivery_that_overtakes_the_ack_of_an_entry_waits_and_the_entry_wins() {
        let mut alice = core(1);
        alice.on_joined(true, 0).unwrap();
        let info0 = put(&take(&mut alice));
        let (mut bob, mut carol) = (core(2), core(3));
        let mut entries = Vec::new();
        for newcomer in [&mut bob, &mut carol] {
            newcomer.on_joined(false, 0).unwrap();
            newcomer.on_group_info_stored(0);
            newcomer.on_group_info(info0.clone()).unwrap();
            entries.push(envelope(&take(newcomer)));
        }
        // The relay stored bob's entry as seq 1 and carol's as 2 in one commit group, and
        // delivers carol's to bob before it answers him.
        bob.on_arrival((2, false, entries[1].clone()), true).unwrap();
        assert!(bob.holding());
        assert_eq!(group_events(&take(&mut bob)), vec![], "nothing decided before the answer");
        bob.on_ack(1, entries[0].clone());
        bob.on_answer(Some(1), false).unwrap();
        assert!(!bob.holding());
        assert_eq!(group_events(&take(&mut bob)), vec![GroupEvent::Entered { epoch: 1, history_share: 0 }]);
        alice.on_deliver(1, false, entries[0].clone()).unwrap();
        alice.on_deliver(2, false, entries[1].clone()).unwrap();
        assert_eq!(alice.safety(), bob.safety(), "one group state, at epoch 1");
    }

    #[test]
    fn an_ack_releases_the_deliveries_below_it_and_the_last_answer_the_rest() {
        let (mut alice, mut bob) = alice_and_bob(100, 100);
        bob.send(1, ContentKind::Text, "b1".into());
        bob.send(2, ContentKind::Text, "b2".into());
        let bobs = envelopes(&take(&mut bob));
        alice.send(1, ContentKind::Text, "a1".into());
        alice.send(2, ContentKind::Text, "a2".into());
        let alices = envelopes(&take(&mut alice));
        // The log: a1 (2), b1 (3), a2 (4); bob's two are in flight at once.
        bob.on_arrival((2, false, alices[0].clone()), true).unwrap();
        assert!(bob.holding(), "a live delivery waits");
        assert_eq!(texts(&take(&mut bob)), Vec::<String>::new());
        bob.on_ack(3, bobs[0].clone());
        bob.on_answer(Some(3), true).unwrap();
        assert_eq!(texts(&take(&mut bob)), ["a1"], "everything below an Ack has arrived");
        bob.on_arrival((4, false, alices[1].clone()), true).unwrap();
        assert!(bob.holding(), "b2's place is still unknown");
        // The relay refuses b2: nothing is unanswered any more.
        bob.on_answer(None, false).unwrap();
        assert_eq!(texts(&take(&mut bob)), ["a2"]);
        assert!(!bob.holding());
    }

    #[test]
    fn a_relay_that_delivers_past_the_budget_without_answering_loses_the_connection() {
        let (_, mut bob) = alice_and_bob(100, 100);
        bob.limits.max_held = 100;
        bob.held = Held::new(100);
        bob.on_arrival((2, false, vec![0; 60]), true).unwrap();
        let past = bob.on_arrival((3, false, vec![0; 60]), true);
        assert!(matches!(past, Err(SessionError::Lost(_))), "{past:?}");
        assert!(!bob.holding(), "what was held is read again on the next connection");
        assert_eq!(bob.history_after(), 1, "the cursor did not move");
        // Replayed history is read at once, in flight or not: it is never over the budget.
        bob.on_arrival((2, true, vec![0; 160]), true).unwrap();
        assert!(!bob.holding());
        assert_eq!(bob.history_after(), 2);
    }

    #[test]
    fn a_member_publishes_the_group_info_the_committer_left_stale() {
        let mut alice = core(1);
        alice.on_joined(true, 0).unwrap();
        let info0 = put(&take(&mut alice));
        let mut bob = core(2);
        bob.on_joined(false, 0).unwrap();
        bob.on_group_info(info0).unwrap();
        let entry = envelope(&take(&mut bob));
        alice.on_group_info_stored(0);
        alice.on_deliver(1, false, entry).unwrap();
        take(&mut alice);
        // Bob, the committer, went away before publishing: the stored one is epoch 0's.
        assert!(alice.group_info_stale());
        alice.refresh_group_info();
        let info1 = put(&take(&mut alice));
        assert_eq!(info1.after_seq, 1);
        assert!(!alice.group_info_stale());
        // A newcomer enters from alice's copy.
        let mut carol = core(3);
        carol.on_joined(false, 0).unwrap();
        carol.on_group_info(info1).unwrap();
        let entry = envelope(&take(&mut carol));
        carol.on_ack(2, entry.clone());
        carol.settle_own(u64::MAX).unwrap();
        assert_eq!(group_events(&take(&mut carol)), vec![GroupEvent::Entered { epoch: 2, history_share: 0 }]);
        alice.on_deliver(2, false, entry).unwrap();
        assert_eq!(alice.safety(), carol.safety());
    }

    fn envelopes(actions: &[Action]) -> Vec<Vec<u8>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Envelope { envelope, .. } => Some(envelope.clone()),
                _ => None,
            })
            .collect()
    }

    fn warnings(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit(Event::Warning(w)) => Some(w.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_rooms_history_setting_is_told_on_entry_and_a_setting_asked_too_late_is_said_once() {
        let mut alice = core(1);
        alice.limits.create_history_share = 20;
        alice.on_joined(true, 0).unwrap();
        let actions = take(&mut alice);
        assert_eq!(group_events(&actions), vec![GroupEvent::Entered { epoch: 0, history_share: 20 }]);
        assert_eq!(warnings(&actions), Vec::<String>::new(), "the creator's setting was applied");
        let info0 = put(&actions);

        // Bob asks for another setting: the room keeps alice's, and bob is told so once.
        let mut bob = core(2);
        bob.limits.create_history_share = 5;
        bob.on_joined(false, 0).unwrap();
        bob.on_group_info(info0).unwrap();
        let entry = envelope(&take(&mut bob));
        bob.on_ack(1, entry);
        bob.settle_own(u64::MAX).unwrap();
        let actions = take(&mut bob);
        assert_eq!(group_events(&actions), vec![GroupEvent::Entered { epoch: 1, history_share: 20 }]);
        let said = warnings(&actions);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("(5) was not applied") && said[0].contains("its last 20 messages"),
            "{said:?}"
        );
        assert_eq!(bob.limits.create_history_share, 0, "said once, not at every entry");
    }

    /// Alice's room at epoch 1, after bob's entry (seq 1), each with its `heal_messages`.
    fn alice_and_bob(alice_heals_after: u32, bob_heals_after: u32) -> (Core, Core) {
        let mut alice = core(1);
        alice.limits.heal_messages = alice_heals_after;
        alice.on_joined(true, 0).unwrap();
        let info0 = put(&take(&mut alice));
        let mut bob = core(2);
        bob.limits.heal_messages = bob_heals_after;
        bob.on_joined(false, 0).unwrap();
        bob.on_group_info(info0).unwrap();
        let entry = envelope(&take(&mut bob));
        alice.on_deliver(1, false, entry.clone()).unwrap();
        bob.on_ack(1, entry);
        bob.settle_own(u64::MAX).unwrap();
        take(&mut alice);
        take(&mut bob);
        (alice, bob)
    }

    #[test]
    fn a_message_pins_its_nickname_and_relay_claims_are_compared_never_pinned() {
        let (mut alice, mut bob) = alice_and_bob(100, 100);
        let (m2, carol) = (Nick::new("m2").unwrap(), Nick::new("carol").unwrap());
        let stranger = PublicIdentity([5; 32]);

        // A presence claim before any message pins nothing and warns of nothing.
        alice.check_claim(&m2, &stranger);
        assert!(take(&mut alice).is_empty());
        assert_eq!(alice.whois(m2.clone()).pinned, None);

        bob.send(1, ContentKind::Text, "hi".into());
        let hi = envelope(&take(&mut bob));
        alice.on_deliver(2, false, hi).unwrap();
        assert_eq!(texts(&take(&mut alice)), vec!["hi".to_owned()]);
        assert_eq!(alice.whois(m2.clone()).pinned, Some(bob.me()));

        // The relay lists bob's nickname with another key: v1's warning; the pin holds.
        alice.check_claim(&m2, &stranger);
        let actions = take(&mut alice);
        assert!(
            matches!(&actions[..], [Action::Emit(Event::KeyChanged { pinned, seen, .. })]
                if *pinned == bob.me() && *seen == stranger),
            "{actions:?}"
        );
        alice.check_claim(&carol, &stranger);
        assert!(take(&mut alice).is_empty());
        assert_eq!(alice.whois(m2.clone()).pinned, Some(bob.me()));
        assert_eq!(alice.whois(carol).pinned, None, "a claim pins nothing");
        assert_eq!(alice.whois(Nick::new("M2").unwrap()).pinned, Some(bob.me()));
    }

    #[test]
    fn an_update_follows_the_message_limit_and_one_that_lost_is_built_again_on_the_new_epoch() {
        let (mut alice, mut bob) = alice_and_bob(2, 1);

        alice.send(1, ContentKind::Text, "one".into());
        let one = envelopes(&take(&mut alice));
        assert_eq!(one.len(), 1, "below the limit: the message only");
        alice.send(2, ContentKind::Text, "two".into());
        let sent = envelopes(&take(&mut alice));
        assert_eq!(sent.len(), 2, "the message, then the update");
        let lost = sent[1].clone();
        // Bob's own update (his limit is 1) is sequenced first and wins epoch 1.
        bob.send(1, ContentKind::Text, "hi".into());
        let bobs = envelopes(&take(&mut bob));
        assert_eq!(bobs.len(), 2);
        alice.on_ack(2, one[0].clone());
        alice.on_ack(3, sent[0].clone());
        alice.on_deliver(4, false, bobs[0].clone()).unwrap();
        alice.on_deliver(5, false, bobs[1].clone()).unwrap();
        let retry = envelopes(&take(&mut alice));
        assert_eq!(retry.len(), 1, "alice builds her update again on epoch 2; her messages were read");
        alice.on_ack(6, lost.clone());
        alice.on_ack(7, retry[0].clone());
        alice.settle_own(u64::MAX).unwrap();
        let actions = take(&mut alice);
        assert!(envelopes(&actions).is_empty(), "healed: no further update");
        assert!(group_events(&actions).contains(&GroupEvent::Commit {
            epoch: 3,
            committer: alice.me(),
            entry: false,
            removed: vec![],
            own: true
        }));
        bob.on_deliver(2, false, one[0].clone()).unwrap();
        bob.on_deliver(3, false, sent[0].clone()).unwrap();
        bob.on_ack(4, bobs[0].clone());
        bob.on_ack(5, bobs[1].clone());
        for (seq, e) in [(6, lost), (7, retry[0].clone())] {
            bob.on_deliver(seq, false, e).unwrap();
        }
        assert_eq!(bob.safety().map(|s| s.epoch), Some(3));
        assert_eq!(alice.safety(), bob.safety());
    }

    /// The texts of the messages among `actions`.
    fn texts(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit(Event::Message(m)) => Some(m.body.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_message_sealed_on_an_epoch_that_ends_before_it_is_read_back_is_sealed_again_at_once() {
        let (mut alice, mut bob) = alice_and_bob(V2Limits::default().heal_messages, 1);

        // Alice's message is sealed on epoch 1, but bob's message and update reach the log first.
        alice.send(1, ContentKind::Text, "late".into());
        let late = envelope(&take(&mut alice));
        bob.send(1, ContentKind::Text, "hi".into());
        let bobs = envelopes(&take(&mut bob));
        assert_eq!(bobs.len(), 2, "bob's message and his update");
        alice.on_deliver(2, false, bobs[0].clone()).unwrap();
        alice.on_deliver(3, false, bobs[1].clone()).unwrap();
        let again = envelope(&take(&mut alice));
        assert_ne!(again, late, "sealed again on epoch 2 as soon as the commit is read");
        // Its first copy comes back unreadable and is not sent a third time.
        alice.on_ack(4, late.clone());
        alice.on_ack(5, again.clone());
        alice.settle_own(u64::MAX).unwrap();
        assert!(envelopes(&take(&mut alice)).is_empty());

        bob.on_ack(2, bobs[0].clone());
        bob.on_ack(3, bobs[1].clone());
        bob.on_deliver(4, false, late).unwrap();
        bob.on_deliver(5, false, again).unwrap();
        assert_eq!(texts(&take(&mut bob)), ["late"], "bob reads it once");
        assert_eq!(alice.safety(), bob.safety());
    }

    #[test]
    fn a_rotation_sends_its_message_then_once_read_back_the_verifier_and_the_new_group_info() {
        let (mut alice, mut bob) = alice_and_bob(V2Limits::default().heal_messages, 1);
        let new = split_master_v2(&[8; 32]);
        assert!(matches!(bob.rotate(new.clone()), Err(RotateError::NotOwner)));
        assert_eq!(alice.rotate(new.clone()).unwrap(), 1);
        let first = take(&mut alice);
        assert!(matches!(&first[..], [Action::Envelope { id: 0, .. }]), "the message only: {first:?}");
        let message = envelope(&first);
        assert!(alice.take_changed_secrets().is_some_and(|s| s == new));

        // Bob's message and update reach the log first: the rotation missed epoch 1 and is
        // sealed again on epoch 2; the verifier and the GroupInfo wait for the copy members read.
        bob.send(1, ContentKind::Text, "hi".into());
        let bobs = envelopes(&take(&mut bob));
        alice.on_deliver(2, false, bobs[0].clone()).unwrap();
        alice.on_deliver(3, false, bobs[1].clone()).unwrap();
        let again = envelope(&take(&mut alice));
        alice.on_ack(4, message.clone());
        alice.on_ack(5, again.clone());
        alice.settle_own(u64::MAX).unwrap();
        let announced = take(&mut alice);
        match &announced[..] {
            [Action::Relay(ClientMessage::SetVerifier { verifier }), Action::Relay(ClientMessage::PutGroupInfo(p)), Action::Emit(Event::Group(GroupEvent::PasswordRotated { generation: 1, own: true, .. }))] =>
            {
                assert_eq!(*verifier, join_verifier_v2(&new.join_secret).0);
                assert_eq!(p.after_seq, 5, "stored after the rotation message members read");
                let opened = chatroom_group::open_group_info(
                    &new.group_info_key,
                    &chatroom_group::RoomRef {
                        room: RoomName::new("general").unwrap(),
                        relay_key: RELAY,
                        psk_generation: 1,
                    },
                    &p.chunk,
                )
                .unwrap();
                assert_eq!(opened.psk_generation, 1);
            }
            other => panic!("{other:?}"),
        }

        bob.on_ack(2, bobs[0].clone());
        bob.on_ack(3, bobs[1].clone());
        bob.on_deliver(4, false, message).unwrap();
        bob.on_deliver(5, false, again).unwrap();
        let events = group_events(&take(&mut bob));
        assert!(
            matches!(
                &events[..],
                [GroupEvent::Commit { .. }, GroupEvent::PasswordRotated { generation: 1, own: false, .. }]
            ),
            "{events:?}"
        );
        assert!(bob.take_changed_secrets().is_some_and(|s| s == new));
        assert!(*bob.secrets() == new);
    }

    #[test]
    fn an_entry_the_relay_refuses_starts_over() {
        let mut alice = core(1);
        alice.on_joined(true, 0).unwrap();
        let info0 = put(&take(&mut alice));
        let mut bob = core(2);
        bob.on_joined(false, 0).unwrap();
        bob.on_group_info(info0).unwrap();
        take(&mut bob);
        bob.on_own_refused(0).unwrap();
        assert!(asks_group_info(&take(&mut bob)), "asks for the GroupInfo again");
    }

    #[test]
    fn entries_fail_after_the_attempt_limit() {
        let mut alice = core(1);
        alice.on_joined(true, 0).unwrap();
        let info0 = put(&take(&mut alice));
        let mut bob = core(2);
        bob.limits.entry_attempts = 2;
        bob.on_joined(false, 0).unwrap();
        for attempt in 0..2u64 {
            // Another newcomer's commit wins each time.
            let mut other = core(10 + attempt as u8);
            other.on_joined(false, 0).unwrap();
            other.on_group_info(info0.clone()).unwrap();
            let winner = envelope(&take(&mut other));
            bob.on_group_info(GroupInfoPart { after_seq: 2 * attempt, ..info0.clone() }).unwrap();
            take(&mut bob);
            let result = bob.on_deliver(2 * attempt + 1, false, winner);
            if attempt == 0 {
                assert!(result.is_ok());
                // A newer GroupInfo is stored: bob asks for it and tries again.
                bob.on_group_info_stored(2);
                assert!(asks_group_info(&take(&mut bob)));
            } else {
                assert!(matches!(result, Err(SessionError::EntryFailed)), "{result:?}");
            }
        }
    }
}
