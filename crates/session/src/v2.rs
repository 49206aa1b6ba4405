//! Protocol version 2's room core, sans-IO: a member's MLS room (`chatroom_group::Room`) fed
//! the room's log in `seq` order, with v2 envelopes signed and checked around it, the log
//! cursor, and the state file (mode 0600, written atomically with fsync). The caller moves
//! bytes to and from the relay (docs/PROTOCOL.md sections 22 to 25).

use std::collections::VecDeque;
use std::path::Path;

use chatroom_crypto::{
    sign_v2, verify_v2, Content, ContentKind, Identity, Nick, PublicIdentity, RoomName, RoomSecretsV2,
    SafetyCode, MAX_NICK_LEN, ROOM_SECRETS_V2_LEN,
};
use chatroom_group::{CommitSummary, Event, GroupError, Kind, LogEntry, Room, RoomRef, RoomSettings};
use zeroize::{Zeroize, Zeroizing};

use crate::state::write_private;
use crate::trust::{PinCheck, PinStore, MAX_PINS};
use crate::v2_history::{
    decode_share, encode_share, ShareDecodeError, SharedMessage, HISTORY_KIND, MAX_HISTORY_SHARE,
};

/// Why a v2 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum V2Error {
    /// The MLS layer refused (wrong password at entry, a forged or late message, ...).
    #[error(transparent)]
    Group(#[from] GroupError),
    /// An envelope failed its signature or structure check.
    #[error("an envelope failed verification")]
    Envelope,
    /// Content that does not encode or decode (too long, bad padding).
    #[error("malformed message content: {0}")]
    Content(#[from] chatroom_crypto::DecodeError),
    /// The state file could not be written or read.
    #[error("the room state file: {0}")]
    File(String),
    /// A password rotation refused: not from the room's owner, or malformed.
    #[error("a password rotation refused: {0}")]
    Rotation(&'static str),
    /// A history share (content kind 5) that does not decode.
    #[error(transparent)]
    Share(#[from] ShareDecodeError),
}

/// What one log entry meant to this member.
#[derive(Debug, PartialEq, Eq)]
pub enum V2Event {
    /// A message from a member, checked by MLS and by its envelope.
    Message {
        /// The sender's identity.
        sender: PublicIdentity,
        /// What was said.
        content: Content,
        /// Its relay sequence number.
        seq: u64,
    },
    /// A message whose claimed nickname is pinned to another key (v1's impersonation
    /// warning): it is shown under its real sender's key, never as the pinned member's.
    NickMismatch {
        /// The sender's identity (MLS authenticated).
        sender: PublicIdentity,
        /// What was said, with the nickname it claims.
        content: Content,
        /// Its relay sequence number.
        seq: u64,
        /// The key the nickname is pinned to.
        pinned: PublicIdentity,
    },
    /// A message under a nickname not pinned while the pin store is full (`MAX_PINS`):
    /// never shown as a member's.
    Unpinned {
        /// The sender's identity (MLS authenticated).
        sender: PublicIdentity,
        /// What was said.
        content: Content,
        /// Its relay sequence number.
        seq: u64,
    },
    /// A commit won its epoch.
    Commit(CommitSummary),
    /// This member's entry won: it reads everything from here on.
    Entered,
    /// Another commit won the epoch this member tried to enter: enter again.
    EntryLost,
    /// This member was removed.
    Removed,
    /// This member's own message missed its epoch: send the content again.
    Resend,
    /// The owner rotated the room's password: entries now need the new one, whose outputs
    /// this member now holds (the old ones are gone).
    Rotated {
        /// The new password generation.
        generation: u32,
        /// The owner's identity.
        by: PublicIdentity,
    },
    /// The history another member shared with this newcomer (docs/PROTOCOL.md section 28): one
    /// envelope's worth, oldest first, only messages sequenced before this member's entry.
    /// Authorship is `by`'s claim, not the original senders' signatures.
    SharedHistory {
        /// The member who shared them (MLS authenticated).
        by: PublicIdentity,
        /// The messages, each with its original sender and `seq` as `by` claims.
        messages: Vec<SharedMessage>,
    },
    /// A member shared history with the newcomer of this epoch: this member (not the
    /// newcomer) ignores it and sends no share of its own.
    HistoryShared {
        /// The member who shared.
        by: PublicIdentity,
    },
    /// Nothing to show (an old entry, one's own message, another epoch).
    Skipped,
}

/// The epoch an entry started, during which one member shares history with the newcomer.
#[derive(Debug, Clone, Copy)]
struct ShareWindow {
    epoch: u64,
    /// The `seq` of the entry commit.
    entry_seq: u64,
    newcomer: PublicIdentity,
    /// The first sharer in log order, its share's parts and the next part expected.
    sharer: Option<PublicIdentity>,
    parts: u8,
    next_part: u8,
    /// This member sealed a share for this entry already: the counter of its first envelope,
    /// which, read back first, makes this member the sharer.
    sealed_own: Option<u64>,
}

impl ShareWindow {
    /// The window of `newcomer`'s entry at `entry_seq`, which started `epoch`.
    fn open(epoch: u64, entry_seq: u64, newcomer: PublicIdentity) -> Self {
        Self { epoch, entry_seq, newcomer, sharer: None, parts: 0, next_part: 0, sealed_own: None }
    }
}

/// Own messages sealed and not yet read back from the log, kept to record them at their `seq`.
const MAX_UNREAD_OWN: usize = 256;

/// A member's v2 room: the MLS group, its keys, the log cursor and the sending counter.
pub struct V2Room {
    name: RoomName,
    identity: Identity,
    keys: RoomSecretsV2,
    room: Room,
    /// The highest `seq` processed.
    cursor: u64,
    counter: u64,
    /// Healing: messages sent since this member's last winning commit, and when that was
    /// (Unix seconds; 0 if unknown, which makes the next update due at once).
    sent_since_commit: u32,
    committed_at: u64,
    /// History for newcomers: the last messages read (at most the room's `history_share`,
    /// capped at `MAX_HISTORY_SHARE`), oldest first. In memory only, never in the state file.
    history: Vec<SharedMessage>,
    /// Own messages sealed and not yet read back, by counter.
    unread_own: VecDeque<(u64, Content)>,
    share: Option<ShareWindow>,
    /// Nickname pins, as v1 keeps them: made only from the MLS-authenticated sender of a
    /// message, never from what the relay claims. Kept in the state file.
    pins: PinStore,
}

/// The plaintext kept for newcomers is wiped when the room goes.
impl Drop for V2Room {
    fn drop(&mut self) {
        for m in &mut self.history {
            m.content.body.zeroize();
        }
        for (_, content) in &mut self.unread_own {
            content.body.zeroize();
        }
    }
}

impl std::fmt::Debug for V2Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V2Room")
            .field("room", &self.name)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

fn room_ref(name: &RoomName, relay_key: &[u8; 32], psk_generation: u32) -> RoomRef {
    RoomRef { room: name.clone(), relay_key: *relay_key, psk_generation }
}

/// The content kind of a password rotation (docs/PROTOCOL.md section 26): byte 8 of the application data,
/// where the v1 content encoding keeps its kind.
pub const ROTATE_KIND: u8 = 4;
/// A rotation's application data: timestamp (8), kind (1), generation (4), the new password's
/// outputs, zero padding to three 64-byte blocks.
pub const ROTATE_LEN: usize = 192;
const ROTATE_USED: usize = 8 + 1 + 4 + ROOM_SECRETS_V2_LEN;

/// `timestamp_ms: u64 | kind: u8 = 4 | psk_generation: u32 | join_secret: 32 | code_bytes: 20 |
/// room_psk: 32 | group_info_key: 32 | zeros` (192 bytes in all).
fn encode_rotation(timestamp_ms: u64, generation: u32, secrets: &RoomSecretsV2) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(ROTATE_LEN));
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.push(ROTATE_KIND);
    out.extend_from_slice(&generation.to_be_bytes());
    out.extend_from_slice(secrets.to_bytes().as_slice());
    out.resize(ROTATE_LEN, 0);
    out
}

/// The inverse of `encode_rotation`; exactly `ROTATE_LEN` bytes with zero padding.
fn decode_rotation(bytes: &[u8]) -> Result<(u32, RoomSecretsV2), V2Error> {
    if bytes.len() != ROTATE_LEN {
        return Err(V2Error::Rotation("not 192 bytes"));
    }
    let (used, padding) = bytes.split_at(ROTATE_USED);
    if padding.iter().any(|&b| b != 0) {
        return Err(V2Error::Rotation("non-zero padding"));
    }
    let generation = used.get(9..13).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
    let secrets: Option<&[u8; ROOM_SECRETS_V2_LEN]> = used.get(13..).and_then(|b| b.try_into().ok());
    match (generation, secrets) {
        (Some(generation), Some(secrets)) => Ok((generation, RoomSecretsV2::from_bytes(secrets))),
        _ => Err(V2Error::Rotation("malformed")),
    }
}

impl V2Room {
    /// Creates the room's group; returns the sealed GroupInfo to put with `after_seq` 0.
    pub fn create(
        identity: Identity,
        name: RoomName,
        relay_key: &[u8; 32],
        keys: RoomSecretsV2,
    ) -> Result<(Self, Vec<u8>), V2Error> {
        Self::create_with_history_share(identity, name, relay_key, keys, 0)
    }

    /// As `create`, with the room setting `history_share` (docs/PROTOCOL.md section 28; 0 is off).
    pub fn create_with_history_share(
        identity: Identity,
        name: RoomName,
        relay_key: &[u8; 32],
        keys: RoomSecretsV2,
        history_share: u16,
    ) -> Result<(Self, Vec<u8>), V2Error> {
        let settings = RoomSettings { history_share, ..RoomSettings::defaults(identity.public()) };
        let room = Room::create_with(&identity, room_ref(&name, relay_key, 0), &keys.room_psk, settings)?;
        let sealed = room.sealed_group_info(&keys.group_info_key)?;
        let me = Self {
            name,
            identity,
            keys,
            room,
            cursor: 0,
            counter: 0,
            sent_since_commit: 0,
            committed_at: 0,
            history: Vec::new(),
            unread_own: VecDeque::new(),
            share: None,
            pins: PinStore::default(),
        };
        Ok((me, sealed))
    }

    /// Enters from the sealed GroupInfo stored after `group_info_seq`: returns the room (not
    /// a member until its commit wins) and the entry commit's envelope to send. The log must
    /// then be fed from `group_info_seq + 1`.
    pub fn enter(
        identity: Identity,
        name: RoomName,
        relay_key: &[u8; 32],
        keys: RoomSecretsV2,
        stored: (u64, &[u8]),
    ) -> Result<(Self, Vec<u8>), V2Error> {
        Self::enter_after_counter(identity, name, relay_key, keys, stored, 0)
    }

    /// As `enter`, with every envelope's counter above `counter_floor`: an identity that enters
    /// again (removed, or its state lost) must not reuse a counter the relay still retains,
    /// which it would acknowledge and drop as a resend.
    pub fn enter_after_counter(
        identity: Identity,
        name: RoomName,
        relay_key: &[u8; 32],
        keys: RoomSecretsV2,
        (group_info_seq, sealed): (u64, &[u8]),
        counter_floor: u64,
    ) -> Result<(Self, Vec<u8>), V2Error> {
        // The generation comes from the sealed GroupInfo's header (`Room::enter`).
        let refd = room_ref(&name, relay_key, 0);
        let (room, commit) = Room::enter(&identity, refd, &keys.room_psk, &keys.group_info_key, sealed)?;
        let mut me = Self {
            name,
            identity,
            keys,
            room,
            cursor: group_info_seq,
            counter: counter_floor,
            sent_since_commit: 0,
            committed_at: 0,
            history: Vec::new(),
            unread_own: VecDeque::new(),
            share: None,
            pins: PinStore::default(),
        };
        let envelope = me.wrap(Kind::Commit, &commit)?;
        Ok((me, envelope))
    }

    fn wrap(&mut self, kind: Kind, mls: &[u8]) -> Result<Vec<u8>, V2Error> {
        self.counter += 1;
        Ok(sign_v2(&self.identity, &self.name, self.counter, kind as u8, mls)?)
    }

    /// Seals `content` for the current epoch as an envelope to send.
    pub fn send(&mut self, content: &Content) -> Result<Vec<u8>, V2Error> {
        let plaintext = content.to_padded_bytes()?;
        let mls = self.room.seal_message(&plaintext)?;
        self.sent_since_commit = self.sent_since_commit.saturating_add(1);
        let envelope = self.wrap(Kind::Application, &mls)?;
        if self.history_cap() > 0 {
            if self.unread_own.len() >= MAX_UNREAD_OWN {
                self.unread_own.pop_front();
            }
            self.unread_own.push_back((self.counter, content.clone()));
        }
        Ok(envelope)
    }

    /// The room's `history_share` setting from the group context (0 = off).
    pub fn history_share(&self) -> u16 {
        self.room.settings().map_or(0, |s| s.history_share)
    }

    /// How many messages this member keeps for newcomers: the room's setting, at most
    /// `MAX_HISTORY_SHARE`.
    fn history_cap(&self) -> usize {
        usize::from(self.history_share()).min(MAX_HISTORY_SHARE)
    }

    /// Keeps `messages` (read or shared) among the last ones for newcomers, in `seq` order.
    fn keep(&mut self, messages: impl IntoIterator<Item = SharedMessage>) {
        let cap = self.history_cap();
        if cap == 0 {
            for mut gone in self.history.drain(..) {
                gone.content.body.zeroize();
            }
            return;
        }
        self.history.extend(messages);
        if !self.history.is_sorted_by(|a, b| a.seq < b.seq) {
            self.history.sort_by_key(|m| m.seq);
            self.history.dedup_by_key(|m| m.seq);
        }
        let excess = self.history.len().saturating_sub(cap);
        for mut gone in self.history.drain(..excess) {
            gone.content.body.zeroize();
        }
    }

    /// The messages kept for newcomers, oldest first (for tests and `/history` views).
    pub fn kept_history(&self) -> &[SharedMessage] {
        &self.history
    }

    /// Whether this member may still share history with the newcomer of the current epoch:
    /// sharing is on, an entry by someone else started this epoch, nobody's share has been
    /// read yet, this member has not sealed one, and it holds messages from before the entry.
    pub fn share_wanted(&self) -> bool {
        let me = self.identity.public();
        self.share.is_some_and(|w| {
            w.epoch == self.room.epoch()
                && w.sharer.is_none()
                && w.sealed_own.is_none()
                && w.newcomer != me
                && self.history.iter().any(|m| m.seq < w.entry_seq)
        }) && self.room.is_member()
    }

    /// This member's history share for the newcomer of the current epoch (docs/PROTOCOL.md section 28):
    /// the envelopes of kind 5, or none if `share_wanted` is false. Sealed once per entry.
    pub fn share_history(&mut self, timestamp_ms: u64) -> Result<Vec<Vec<u8>>, V2Error> {
        if !self.share_wanted() {
            return Ok(Vec::new());
        }
        let Some(entry_seq) = self.share.map(|w| w.entry_seq) else { return Ok(Vec::new()) };
        let before: Vec<SharedMessage> = self.history.iter().filter(|m| m.seq < entry_seq).cloned().collect();
        let parts = encode_share(timestamp_ms, entry_seq, &before)?;
        let mut envelopes = Vec::with_capacity(parts.len());
        for part in parts {
            let mls = self.room.seal_message(&part)?;
            envelopes.push(self.wrap(Kind::Application, &mls)?);
        }
        let first = self.counter.saturating_sub(envelopes.len() as u64).saturating_add(1);
        if let Some(window) = self.share.as_mut() {
            window.sealed_own = Some(first);
        }
        Ok(envelopes)
    }

    /// A history share from `sender` in the current epoch: only the first share (by log
    /// order) after an entry counts, its parts in order, the rest are ignored. The newcomer
    /// gets the messages from before its entry; other members learn that someone shared.
    fn on_share(&mut self, sender: PublicIdentity, plaintext: &[u8]) -> Result<V2Event, V2Error> {
        let epoch = self.room.epoch();
        let me = self.identity.public();
        let Some(window) = self.share.as_mut().filter(|w| w.epoch == epoch && w.newcomer != sender) else {
            return Ok(V2Event::Skipped);
        };
        let part = decode_share(plaintext)?;
        if part.entry_seq != window.entry_seq {
            return Ok(V2Event::Skipped);
        }
        match window.sharer {
            None if part.part == 0 => {
                window.sharer = Some(sender);
                window.parts = part.parts;
                window.next_part = 1;
            }
            Some(first) if first == sender && part.part == window.next_part && part.parts == window.parts => {
                window.next_part = window.next_part.saturating_add(1);
            }
            _ => return Ok(V2Event::Skipped),
        }
        if window.newcomer != me {
            return Ok(if part.part == 0 { V2Event::HistoryShared { by: sender } } else { V2Event::Skipped });
        }
        let entry_seq = window.entry_seq;
        let messages: Vec<SharedMessage> = part.messages.into_iter().filter(|m| m.seq < entry_seq).collect();
        self.keep(messages.iter().cloned());
        Ok(V2Event::SharedHistory { by: sender, messages })
    }

    /// Whether this member should send an update commit (docs/PROTOCOL.md section 27): it has sent
    /// `messages` messages, or `seconds` passed, since its last winning commit (its creation,
    /// entry, update or removal). `now` is in Unix seconds; both limits count from 1.
    pub fn heal_due(&self, now: u64, messages: u32, seconds: u64) -> bool {
        self.sent_since_commit >= messages.max(1) || now.saturating_sub(self.committed_at) >= seconds.max(1)
    }

    /// This member's own commit won (or it created the group) at `now`, Unix seconds: its
    /// leaf is fresh, and the healing counts start over.
    pub fn mark_committed(&mut self, now: u64) {
        self.sent_since_commit = 0;
        self.committed_at = now;
    }

    /// The room's healing settings from the group context: (`heal_messages`, `heal_seconds`).
    pub fn heal_settings(&self) -> Option<(u32, u32)> {
        self.room.settings().map(|s| (s.heal_messages, s.heal_seconds))
    }

    /// Makes every later envelope's counter exceed `floor` (the driver passes the time in
    /// microseconds, as v1 does, so a counter never repeats across lost state).
    pub fn raise_counter(&mut self, floor: u64) {
        self.counter = self.counter.max(floor);
    }

    /// A commit removing every leaf of `who` (the owner's kick or ban) as an envelope,
    /// pending until the log decides.
    pub fn remove(&mut self, who: &PublicIdentity) -> Result<Vec<u8>, V2Error> {
        let mls = self.room.remove(who)?;
        self.wrap(Kind::Commit, &mls)
    }

    /// The owner's password rotation (docs/PROTOCOL.md section 26): from now on this member holds `new`
    /// (the next password generation's outputs) and seals the GroupInfo under it. Returns the
    /// envelope of kind `rotate` that carries `new` to the members, inside MLS; send it before
    /// the new join verifier and the GroupInfo `sealed_group_info` now returns.
    pub fn rotate(&mut self, new: RoomSecretsV2, timestamp_ms: u64) -> Result<Vec<u8>, V2Error> {
        if self.owner() != Some(self.identity.public()) {
            return Err(V2Error::Rotation("only the room's owner rotates its password"));
        }
        let generation =
            self.room.psk_generation().checked_add(1).ok_or(V2Error::Rotation("no generation left"))?;
        let payload = encode_rotation(timestamp_ms, generation, &new);
        let mls = self.room.seal_message(&payload)?;
        self.room.rotate_psk(&self.identity, generation, &new.room_psk)?;
        self.keys = new;
        self.wrap(Kind::Application, &mls)
    }

    /// The current generation's rotation message again, sealed in the current epoch (the
    /// first copy missed its epoch and nobody can read it). Owner only, as `rotate`.
    pub fn rotation_message(&mut self, timestamp_ms: u64) -> Result<Vec<u8>, V2Error> {
        if self.owner() != Some(self.identity.public()) {
            return Err(V2Error::Rotation("only the room's owner rotates its password"));
        }
        let payload = encode_rotation(timestamp_ms, self.room.psk_generation(), &self.keys);
        let mls = self.room.seal_message(&payload)?;
        self.wrap(Kind::Application, &mls)
    }

    /// The password generation this member holds (0 until the first rotation).
    pub fn psk_generation(&self) -> u32 {
        self.room.psk_generation()
    }

    /// The current password's outputs: the join secret the relay checks on reconnection, and
    /// what a new entry needs.
    pub fn secrets(&self) -> &RoomSecretsV2 {
        &self.keys
    }

    /// A rotation message from `sender`: applied only if `sender` is the owner named in the
    /// group context and the generation is newer than this member's; an older or equal one
    /// is a resent copy. Refused, it changes nothing.
    fn on_rotation(&mut self, sender: PublicIdentity, plaintext: &[u8]) -> Result<V2Event, V2Error> {
        if self.owner() != Some(sender) {
            return Err(V2Error::Rotation("not from the room's owner"));
        }
        let (generation, secrets) = decode_rotation(plaintext)?;
        if generation <= self.room.psk_generation() {
            return Ok(V2Event::Skipped);
        }
        self.room.rotate_psk(&self.identity, generation, &secrets.room_psk)?;
        self.keys = secrets;
        Ok(V2Event::Rotated { generation, by: sender })
    }

    /// The group's members (MLS leaves), in leaf order.
    pub fn members(&self) -> Vec<PublicIdentity> {
        self.room.members()
    }

    /// The room's owner, from the group context the members agreed on.
    pub fn owner(&self) -> Option<PublicIdentity> {
        self.room.settings().map(|s| s.owner)
    }

    /// An update commit (healing) as an envelope, pending until the log decides.
    pub fn update(&mut self) -> Result<Vec<u8>, V2Error> {
        let mls = self.room.update()?;
        self.wrap(Kind::Commit, &mls)
    }

    /// The current GroupInfo, sealed for the relay (put it with `after_seq` = the `seq` of
    /// the commit that started this epoch).
    pub fn sealed_group_info(&self) -> Result<Vec<u8>, V2Error> {
        Ok(self.room.sealed_group_info(&self.keys.group_info_key)?)
    }

    /// Processes the log entry `seq`. Entries at or below the cursor are skipped (a replay
    /// after reconnecting); a refused one moves the cursor too, since it can never be read.
    pub fn on_deliver(&mut self, seq: u64, envelope: &[u8]) -> Result<V2Event, V2Error> {
        if seq <= self.cursor {
            return Ok(V2Event::Skipped);
        }
        self.cursor = seq;
        let signed = verify_v2(&self.name, envelope).map_err(|_| V2Error::Envelope)?;
        let kind = match signed.kind {
            1 => Kind::Commit,
            2 => Kind::Application,
            _ => Kind::Proposal,
        };
        let own =
            (signed.sender == self.identity.public() && kind == Kind::Application).then_some(signed.counter);
        let event = self.room.process(LogEntry { sender: signed.sender, kind, mls: &signed.mls })?;
        Ok(match event {
            Event::Message { sender, plaintext } if plaintext.get(8) == Some(&ROTATE_KIND) => {
                self.on_rotation(sender, &plaintext)?
            }
            Event::Message { sender, plaintext } if plaintext.get(8) == Some(&HISTORY_KIND) => {
                self.on_share(sender, &plaintext)?
            }
            Event::Message { sender, plaintext } => self.on_message(sender, seq, &plaintext)?,
            Event::Commit(summary) => {
                self.share = summary.entry.then(|| ShareWindow::open(summary.epoch, seq, summary.committer));
                V2Event::Commit(summary)
            }
            Event::Entered => {
                self.share = Some(ShareWindow::open(self.room.epoch(), seq, self.identity.public()));
                V2Event::Entered
            }
            Event::EntryLost => V2Event::EntryLost,
            Event::Removed => V2Event::Removed,
            Event::Resend => {
                self.unread_own.retain(|(counter, _)| Some(*counter) != own);
                V2Event::Resend
            }
            Event::Skipped => {
                self.on_own_read_back(seq, own);
                V2Event::Skipped
            }
        })
    }

    /// A chat message (text, action, topic): its nickname checked against the pins, and kept
    /// for newcomers when it is text or an action under its pinned key.
    fn on_message(&mut self, sender: PublicIdentity, seq: u64, plaintext: &[u8]) -> Result<V2Event, V2Error> {
        let content = Content::from_padded_bytes(plaintext)?;
        Ok(match self.pins.check(&content.nick, &sender) {
            PinCheck::New | PinCheck::Same => {
                if matches!(content.kind, ContentKind::Text | ContentKind::Action) {
                    self.keep([SharedMessage { sender, seq, content: content.clone() }]);
                }
                V2Event::Message { sender, content, seq }
            }
            PinCheck::Changed { pinned } => V2Event::NickMismatch { sender, content, seq, pinned },
            PinCheck::Full => V2Event::Unpinned { sender, content, seq },
        })
    }

    /// An entry the group skipped; if it is one of this member's own application messages
    /// (counter `own`) read back in its epoch: its share makes it the sharer, and its chat
    /// message is kept at `seq`.
    fn on_own_read_back(&mut self, seq: u64, own: Option<u64>) {
        let epoch = self.room.epoch();
        let me = self.identity.public();
        if let Some(w) = self.share.as_mut().filter(|w| w.epoch == epoch && w.sharer.is_none()) {
            if own.is_some() && w.sealed_own == own {
                w.sharer = Some(me);
            }
        }
        let found = own.and_then(|c| self.unread_own.iter().position(|(counter, _)| *counter == c));
        if let Some((_, content)) = found.and_then(|i| self.unread_own.remove(i)) {
            if matches!(content.kind, ContentKind::Text | ContentKind::Action) {
                self.keep([SharedMessage { sender: me, seq, content }]);
            }
        }
    }

    /// The key `nick` is pinned to (what `/whois` shows).
    pub fn pinned(&self, nick: &Nick) -> Option<PublicIdentity> {
        self.pins.get(nick).copied()
    }

    /// A pinned nickname other than `nick` that looks like it (`AIice` and `alice`).
    pub fn look_alike(&self, nick: &Nick) -> Option<String> {
        self.pins.look_alike(nick).map(str::to_owned)
    }

    /// What the relay claims (a presence or member list entry) compared with the pins, which
    /// it never creates or changes: `Some(pinned)` when `nick` is pinned to another key.
    pub fn claim_mismatch(&self, nick: &Nick, identity: &PublicIdentity) -> Option<PublicIdentity> {
        match self.pins.compare(nick, identity) {
            Some(PinCheck::Changed { pinned }) => Some(pinned),
            _ => None,
        }
    }

    /// The highest `seq` processed (what a reconnect asks history after).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether this member's entry is confirmed (and it was not removed).
    pub fn is_member(&self) -> bool {
        self.room.is_member()
    }

    /// What `/safety` shows: the room code, the epoch and its code.
    pub fn safety(&self) -> Result<(SafetyCode, u64, SafetyCode), V2Error> {
        Ok((self.keys.room_code().clone(), self.room.epoch(), self.room.epoch_code()?))
    }

    /// Writes the state (cursor, counter, MLS state of the current epoch only) to `path`,
    /// mode 0600, atomically, synced.
    pub fn save(&mut self, path: &Path) -> Result<(), V2Error> {
        let mls = self.room.export_state()?;
        let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + mls.len()));
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.cursor.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.sent_since_commit.to_be_bytes());
        out.extend_from_slice(&self.committed_at.to_be_bytes());
        out.extend_from_slice(&self.room.psk_generation().to_be_bytes());
        out.extend_from_slice(self.keys.to_bytes().as_slice());
        encode_pins(&self.pins, &mut out);
        out.extend_from_slice(&mls);
        write_private(path, &out).map_err(|e| V2Error::File(e.to_string()))
    }

    /// Reads a state `save` wrote, for the same identity, room and relay. `keys` (from the
    /// password the user gave) are used only for a state written before rotations existed;
    /// a newer state holds the current generation's outputs, which win (after a rotation a
    /// member needs no password).
    pub fn load(
        identity: Identity,
        name: RoomName,
        relay_key: &[u8; 32],
        keys: RoomSecretsV2,
        path: &Path,
    ) -> Result<Self, V2Error> {
        let bytes = Zeroizing::new(
            std::fs::read(path).map_err(|e| V2Error::File(format!("{}: {e}", path.display())))?,
        );
        // Version 1 had no healing fields: its next update is due at once. Versions 1 and 2
        // had no rotation: generation 0, the password's outputs.
        let header_len = match bytes.first() {
            Some(&STATE_VERSION) | Some(3) => HEADER_LEN,
            Some(2) => 29,
            Some(1) => 17,
            _ => return Err(V2Error::File("an unknown version".into())),
        };
        let (header, rest) = bytes.split_at_checked(header_len).ok_or(V2Error::File("too short".into()))?;
        // Versions 1 to 3 had no pins.
        let (pins, mls) = match bytes.first() {
            Some(&STATE_VERSION) => decode_pins(rest)?,
            _ => (PinStore::default(), rest),
        };
        let u64_at = |i: usize| header.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
        let (cursor, counter) = (u64_at(1).unwrap_or(0), u64_at(9).unwrap_or(0));
        let sent_since_commit =
            header.get(17..21).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes);
        let committed_at = u64_at(21).unwrap_or(0);
        let (generation, keys) = match header.get(33..33 + ROOM_SECRETS_V2_LEN) {
            Some(saved) => {
                let generation =
                    header.get(29..33).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes);
                let saved: Option<&[u8; ROOM_SECRETS_V2_LEN]> = saved.try_into().ok();
                (generation, saved.map_or(keys, RoomSecretsV2::from_bytes))
            }
            None => (0, keys),
        };
        let room = Room::load_state(&identity, room_ref(&name, relay_key, generation), &keys.room_psk, mls)?;
        Ok(Self {
            name,
            identity,
            keys,
            room,
            cursor,
            counter,
            sent_since_commit,
            committed_at,
            history: Vec::new(),
            unread_own: VecDeque::new(),
            share: None,
            pins,
        })
    }
}

/// `count: u32 | (nick_len: u8 | nick | identity: 32) * count`, at most `MAX_PINS` pins of
/// at most `MAX_NICK_LEN` bytes each (so at most 6.6 MB).
fn encode_pins(pins: &PinStore, out: &mut Vec<u8>) {
    let count = pins.len().min(MAX_PINS);
    out.extend_from_slice(&u32::try_from(count).unwrap_or(0).to_be_bytes());
    for (nick, id) in pins.iter().take(count) {
        // A canonical nickname is at most MAX_NICK_LEN (32) bytes.
        out.push(u8::try_from(nick.len()).unwrap_or(0));
        out.extend_from_slice(nick.as_bytes());
        out.extend_from_slice(&id.0);
    }
}

/// The inverse of `encode_pins`: the pins and the bytes after them.
fn decode_pins(bytes: &[u8]) -> Result<(PinStore, &[u8]), V2Error> {
    let bad = |why: &str| V2Error::File(format!("the pins: {why}"));
    let (count, mut rest) = bytes.split_at_checked(4).ok_or_else(|| bad("cut short"))?;
    let count = count.try_into().map(u32::from_be_bytes).map_err(|_| bad("cut short"))?;
    let count = usize::try_from(count).map_err(|_| bad("too many"))?;
    if count > MAX_PINS {
        return Err(bad("too many"));
    }
    let mut pins = PinStore::default();
    for _ in 0..count {
        let (&len, after) = rest.split_first().ok_or_else(|| bad("cut short"))?;
        if usize::from(len) > MAX_NICK_LEN {
            return Err(bad("a nickname too long"));
        }
        let (nick, after) = after.split_at_checked(usize::from(len)).ok_or_else(|| bad("cut short"))?;
        let (id, after) = after.split_at_checked(32).ok_or_else(|| bad("cut short"))?;
        let nick = std::str::from_utf8(nick)
            .ok()
            .and_then(|n| Nick::new(n).ok())
            .ok_or_else(|| bad("a bad nickname"))?;
        let id: [u8; 32] = id.try_into().map_err(|_| bad("cut short"))?;
        pins.set(&nick, PublicIdentity(id));
        rest = after;
    }
    Ok((pins, rest))
}

/// `version: u8 = 4 | cursor: u64 | counter: u64 | sent_since_commit: u32 | committed_at: u64 |
/// psk_generation: u32 | join_secret: 32 | code_bytes: 20 | room_psk: 32 | group_info_key: 32 |
/// pins (see `encode_pins`) | chatroom_group state` (version 1 lacked the healing fields,
/// version 2 the generation and the password's outputs, version 3 the pins).
const STATE_VERSION: u8 = 4;
const HEADER_LEN: usize = 1 + 8 + 8 + 4 + 8 + 4 + ROOM_SECRETS_V2_LEN;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use chatroom_crypto::{split_master_v2, Nick};

    use super::*;
    use crate::v2_history::encode_share;

    const RELAY: [u8; 32] = [9; 32];

    fn general() -> RoomName {
        RoomName::new("general").unwrap()
    }

    fn text(nick: &str, body: &str) -> Content {
        Content {
            timestamp_ms: 1,
            kind: ContentKind::Text,
            nick: Nick::new(nick).unwrap(),
            body: body.into(),
        }
    }

    /// The relay's log: envelopes in `seq` order (index + 1).
    fn feed(room: &mut V2Room, log: &[Vec<u8>]) -> Vec<Result<V2Event, V2Error>> {
        let from = usize::try_from(room.cursor()).unwrap();
        log.iter().enumerate().skip(from).map(|(i, env)| room.on_deliver(i as u64 + 1, env)).collect()
    }

    #[test]
    fn members_enter_talk_agree_on_the_epoch_code_and_resume_from_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let (alice_id, bob_id) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let (mut alice, info) =
            V2Room::create(alice_id, general(), &RELAY, split_master_v2(&[7; 32])).unwrap();
        let mut log = Vec::new();
        let (mut bob, entry) =
            V2Room::enter(bob_id, general(), &RELAY, split_master_v2(&[7; 32]), (0, &info)).unwrap();
        log.push(entry);
        assert!(matches!(feed(&mut alice, &log)[..], [Ok(V2Event::Commit(_))]));
        assert!(matches!(feed(&mut bob, &log)[..], [Ok(V2Event::Entered)]));
        assert_eq!(alice.safety().unwrap(), bob.safety().unwrap(), "one group state, one epoch code");

        log.push(alice.send(&text("alice", "hello bob")).unwrap());
        let events = feed(&mut bob, &log);
        match &events[..] {
            [Ok(V2Event::Message { sender, content, seq: 2 })] => {
                assert_eq!((*sender, content.body.as_str()), (alice.identity.public(), "hello bob"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(feed(&mut alice, &log)[..], [Ok(V2Event::Skipped)]), "its own message");

        // Bob's state survives a restart: 0600, and he reads on from his cursor.
        let path = dir.path().join("rooms").join("general.v2");
        bob.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        drop(bob);
        let mut bob =
            V2Room::load(Identity::from_seed(&[2; 32]), general(), &RELAY, split_master_v2(&[7; 32]), &path)
                .unwrap();
        assert_eq!(bob.cursor(), 2);
        assert_eq!(bob.on_deliver(2, &log[1]).unwrap(), V2Event::Skipped, "already processed");
        log.push(alice.send(&text("alice", "still there?")).unwrap());
        assert!(matches!(&feed(&mut bob, &log)[..], [Ok(V2Event::Message { seq: 3, .. })]));
    }

    /// Alice's room with bob and mallory entered, and the log so far.
    fn three() -> (V2Room, V2Room, V2Room, Vec<Vec<u8>>) {
        let keys = || split_master_v2(&[7; 32]);
        let (mut alice, info) =
            V2Room::create(Identity::from_seed(&[1; 32]), general(), &RELAY, keys()).unwrap();
        let (mut bob, entry) =
            V2Room::enter(Identity::from_seed(&[2; 32]), general(), &RELAY, keys(), (0, &info)).unwrap();
        let mut log = vec![entry];
        feed(&mut alice, &log);
        feed(&mut bob, &log);
        let info = alice.sealed_group_info().unwrap();
        let (mut mallory, entry) =
            V2Room::enter(Identity::from_seed(&[3; 32]), general(), &RELAY, keys(), (1, &info)).unwrap();
        log.push(entry);
        for room in [&mut alice, &mut bob, &mut mallory] {
            assert!(feed(room, &log).iter().all(Result::is_ok));
        }
        assert!(mallory.is_member());
        (alice, bob, mallory, log)
    }

    #[test]
    fn nicknames_are_pinned_to_the_mls_sender_and_a_second_key_is_reported_under_its_own() {
        let (mut alice, mut bob, mut mallory, mut log) = three();
        let nick = Nick::new("bob").unwrap();
        assert_eq!(alice.pinned(&nick), None);

        // A relay's claim (presence, member list) is compared, never pinned.
        let mallory_id = mallory.identity.public();
        assert_eq!(alice.claim_mismatch(&nick, &mallory_id), None);
        assert_eq!(alice.pinned(&nick), None, "a claim pins nothing");

        // First sight pins bob's nickname to the key MLS authenticated.
        log.push(bob.send(&text("bob", "hi")).unwrap());
        assert!(matches!(&feed(&mut alice, &log)[..], [Ok(V2Event::Message { .. })]));
        assert_eq!(alice.pinned(&nick), Some(bob.identity.public()));
        assert_eq!(alice.claim_mismatch(&nick, &mallory_id), Some(bob.identity.public()));

        // Mallory calls herself "BOB": reported under her own key, the pin is kept.
        log.push(mallory.send(&text("BOB", "send me the password")).unwrap());
        match &feed(&mut alice, &log)[..] {
            [Ok(V2Event::NickMismatch { sender, content, pinned, .. })] => {
                assert_eq!(*sender, mallory_id, "under her real key");
                assert_eq!(*pinned, bob.identity.public());
                assert_eq!(content.body, "send me the password");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(alice.pinned(&nick), Some(bob.identity.public()));
        assert!(alice.history.iter().all(|m| m.sender != mallory_id), "not kept for newcomers");

        // A look-alike nickname is pinned to its own key and flagged.
        log.push(mallory.send(&text("B0b", "it's me")).unwrap());
        assert!(
            matches!(&feed(&mut alice, &log)[..], [Ok(V2Event::Message { sender, .. })] if *sender == mallory_id)
        );
        assert_eq!(alice.look_alike(&Nick::new("B0b").unwrap()).as_deref(), Some("bob"));
        assert_eq!(alice.look_alike(&Nick::new("carol").unwrap()), None);
    }

    #[test]
    fn pins_survive_the_state_file_and_an_older_state_loads_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut alice, mut bob, mut mallory, mut log) = three();
        log.push(bob.send(&text("bob", "hi")).unwrap());
        feed(&mut alice, &log);
        let path = dir.path().join("alice.v2");
        alice.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let load = || {
            V2Room::load(Identity::from_seed(&[1; 32]), general(), &RELAY, split_master_v2(&[7; 32]), &path)
        };
        let mut alice = load().unwrap();
        let nick = Nick::new("bob").unwrap();
        assert_eq!(alice.pinned(&nick), Some(bob.identity.public()));
        log.push(mallory.send(&text("bob", "trust me")).unwrap());
        assert!(matches!(&feed(&mut alice, &log)[..], [Ok(V2Event::NickMismatch { .. })]));

        // A version 3 file (no pins) still loads, with no pins.
        alice.save(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let (pins, rest) = decode_pins(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(pins.len(), 1);
        let pins_len = bytes.len() - HEADER_LEN - rest.len();
        bytes.drain(HEADER_LEN..HEADER_LEN + pins_len);
        bytes[0] = 3;
        std::fs::write(&path, &bytes).unwrap();
        let old = load().unwrap();
        assert_eq!(old.pinned(&nick), None);
        assert_eq!(old.cursor(), alice.cursor());
    }

    #[test]
    fn pins_in_the_state_file_are_bounded() {
        let mut out = Vec::new();
        let mut pins = PinStore::default();
        pins.set(&Nick::new("bob").unwrap(), PublicIdentity([4; 32]));
        encode_pins(&pins, &mut out);
        out.extend_from_slice(b"mls");
        let (back, rest) = decode_pins(&out).unwrap();
        assert_eq!((back, rest), (pins, &b"mls"[..]));
        for cut in 0..out.len() - 3 {
            assert!(decode_pins(&out[..cut]).is_err(), "cut at {cut}");
        }
        let too_many = u32::try_from(MAX_PINS + 1).unwrap().to_be_bytes();
        assert!(decode_pins(&too_many).is_err());
        let mut long = 1u32.to_be_bytes().to_vec();
        long.push(33);
        long.extend_from_slice(&[b'a'; 33 + 32]);
        assert!(decode_pins(&long).is_err());
    }

    #[test]
    fn healing_is_due_by_count_or_time_survives_the_state_file_and_a_copy_stops_at_the_update() {
        let dir = tempfile::tempdir().unwrap();
        let (mut alice, info) =
            V2Room::create(Identity::from_seed(&[1; 32]), general(), &RELAY, split_master_v2(&[7; 32]))
                .unwrap();
        alice.mark_committed(1_000);
        let (mut bob, entry) = V2Room::enter(
            Identity::from_seed(&[2; 32]),
            general(),
            &RELAY,
            split_master_v2(&[7; 32]),
            (0, &info),
        )
        .unwrap();
        let mut log = vec![entry];
        feed(&mut alice, &log);
        feed(&mut bob, &log);
        assert!(!alice.heal_due(1_000 + 59, 2, 60));
        assert!(alice.heal_due(1_000 + 60, 2, 60), "by time");
        log.push(alice.send(&text("alice", "one")).unwrap());
        assert!(!alice.heal_due(1_000, 2, 60));
        log.push(alice.send(&text("alice", "two")).unwrap());
        assert!(alice.heal_due(1_000, 2, 60), "by count");

        // The counts survive a restart; the copy is alice's whole state at epoch 1.
        let path = dir.path().join("alice.v2");
        alice.save(&path).unwrap();
        let load = || {
            V2Room::load(Identity::from_seed(&[1; 32]), general(), &RELAY, split_master_v2(&[7; 32]), &path)
        };
        let mut copy = load().unwrap();
        assert!(copy.heal_due(1_000, 2, 60) && !copy.heal_due(1_000, 3, 60));

        log.push(bob.send(&text("bob", "before")).unwrap());
        log.push(alice.update().unwrap());
        log.push(bob.send(&text("bob", "late")).unwrap());
        let events = feed(&mut alice, &log);
        assert!(matches!(&events[3], Ok(V2Event::Commit(c)) if c.own), "{events:?}");
        alice.mark_committed(2_000);
        assert!(!alice.heal_due(2_000, 2, 60));
        assert!(matches!(
            &feed(&mut bob, &log)[..],
            [_, _, Ok(V2Event::Skipped), Ok(V2Event::Commit(_)), Ok(V2Event::Resend)]
        ));
        log.push(bob.send(&text("bob", "after")).unwrap());
        assert!(matches!(&feed(&mut alice, &log)[..], [Ok(V2Event::Message { .. })]));

        // The copy reads what was sealed before alice's update won, also "late" (sealed in
        // the old epoch, which members discard and bob sends again), and nothing sealed after.
        let bodies: Vec<String> = feed(&mut copy, &log)
            .into_iter()
            .filter_map(|e| match e {
                Ok(V2Event::Message { content, .. }) => Some(content.body),
                _ => None,
            })
            .collect();
        assert_eq!(bodies, vec!["before".to_string(), "late".to_string()]);
    }

    #[test]
    fn a_copy_of_a_members_state_follows_other_members_commits_and_stops_only_at_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (mut alice, info) =
            V2Room::create(Identity::from_seed(&[1; 32]), general(), &RELAY, split_master_v2(&[7; 32]))
                .unwrap();
        let (mut bob, entry) = V2Room::enter(
            Identity::from_seed(&[2; 32]),
            general(),
            &RELAY,
            split_master_v2(&[7; 32]),
            (0, &info),
        )
        .unwrap();
        let mut log = vec![entry];
        feed(&mut alice, &log);
        feed(&mut bob, &log);
        let path = dir.path().join("alice.v2");
        alice.save(&path).unwrap();
        let mut copy =
            V2Room::load(Identity::from_seed(&[1; 32]), general(), &RELAY, split_master_v2(&[7; 32]), &path)
                .unwrap();
        let read = |copy: &mut V2Room, log: &[Vec<u8>]| -> Vec<String> {
            feed(copy, log)
                .into_iter()
                .filter_map(|e| match e {
                    Ok(V2Event::Message { content, .. }) => Some(content.body),
                    _ => None,
                })
                .collect()
        };

        // Bob's update heals bob, not alice: her old leaf still opens the new epoch.
        log.push(bob.update().unwrap());
        feed(&mut alice, &log);
        feed(&mut bob, &log);
        log.push(bob.send(&text("bob", "epoch two")).unwrap());
        assert_eq!(read(&mut copy, &log), vec!["epoch two".to_string()]);
        assert_eq!(copy.safety().unwrap(), alice.safety().unwrap(), "the copy follows");

        // Alice's own update is what shuts the copy out.
        log.push(alice.update().unwrap());
        feed(&mut alice, &log);
        feed(&mut bob, &log);
        log.push(bob.send(&text("bob", "epoch three")).unwrap());
        assert!(read(&mut copy, &log).is_empty());
        assert_eq!(copy.safety().unwrap().1, 2);
    }

    #[test]
    fn a_wrong_password_cannot_enter_and_forged_envelopes_are_refused() {
        let (_alice, info) =
            V2Room::create(Identity::from_seed(&[1; 32]), general(), &RELAY, split_master_v2(&[7; 32]))
                .unwrap();
        let eve = V2Room::enter(
            Identity::from_seed(&[5; 32]),
            general(),
            &RELAY,
            split_master_v2(&[8; 32]),
            (0, &info),
        );
        assert!(matches!(eve, Err(V2Error::Group(GroupError::GroupInfoKey))), "{eve:?}");

        let (mut alice, info) =
            V2Room::create(Identity::from_seed(&[1; 32]), general(), &RELAY, split_master_v2(&[7; 32]))
                .unwrap();
        let (_bob, mut entry) = V2Room::enter(
            Identity::from_seed(&[2; 32]),
            general(),
            &RELAY,
            split_master_v2(&[7; 32]),
            (0, &info),
        )
        .unwrap();
        let last = entry.len() - 1;
        entry[last] ^= 1;
        assert!(matches!(alice.on_deliver(1, &entry), Err(V2Error::Envelope)));
        assert_eq!((alice.cursor(), alice.room.members().len()), (1, 1), "refused, and passed");
    }

    /// Alice (owner) and bob, both members of epoch 1, with the log so far.
    fn alice_and_bob(password: u8) -> (V2Room, V2Room, Vec<Vec<u8>>) {
        let (mut alice, info) = V2Room::create(
            Identity::from_seed(&[1; 32]),
            general(),
            &RELAY,
            split_master_v2(&[password; 32]),
        )
        .unwrap();
        let (mut bob, entry) = V2Room::enter(
            Identity::from_seed(&[2; 32]),
            general(),
            &RELAY,
            split_master_v2(&[password; 32]),
            (0, &info),
        )
        .unwrap();
        let log = vec![entry];
        feed(&mut alice, &log);
        feed(&mut bob, &log);
        (alice, bob, log)
    }

    #[test]
    fn after_the_owners_rotation_only_the_new_password_enters_and_members_talk_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut alice, mut bob, mut log) = alice_and_bob(7);
        let new = split_master_v2(&[8; 32]);
        log.push(alice.rotate(new.clone(), 5).unwrap());
        assert_eq!(alice.psk_generation(), 1);
        assert!(*alice.secrets() == new);
        let events = feed(&mut bob, &log);
        let owner = alice.identity.public();
        assert!(
            matches!(&events[..], [Ok(V2Event::Rotated { generation: 1, by })] if *by == owner),
            "{events:?}"
        );
        assert!(*bob.secrets() == new && bob.psk_generation() == 1);
        assert_eq!(alice.safety().unwrap(), bob.safety().unwrap(), "the new room code, one epoch");
        assert_eq!(alice.safety().unwrap().0, *new.room_code());

        // The GroupInfo is now sealed under the new key and generation.
        let info = alice.sealed_group_info().unwrap();
        let after = log.len() as u64;
        let old = V2Room::enter(
            Identity::from_seed(&[3; 32]),
            general(),
            &RELAY,
            split_master_v2(&[7; 32]),
            (after, &info),
        );
        assert!(matches!(old, Err(V2Error::Group(GroupError::GroupInfoKey))), "{old:?}");
        let (mut carol, entry) =
            V2Room::enter(Identity::from_seed(&[3; 32]), general(), &RELAY, new.clone(), (after, &info))
                .unwrap();
        assert_eq!(carol.psk_generation(), 1, "from the seal's header");
        log.push(entry);
        assert!(matches!(feed(&mut carol, &log)[..], [Ok(V2Event::Entered)]));
        assert!(matches!(&feed(&mut alice, &log)[..], [_, Ok(V2Event::Commit(c))] if c.entry));
        assert!(matches!(&feed(&mut bob, &log)[..], [Ok(V2Event::Commit(c))] if c.entry));

        // Everyone talks on; bob's state keeps the new generation and outputs across a
        // restart, whatever password the restart was given.
        log.push(bob.send(&text("bob", "after the rotation")).unwrap());
        assert!(matches!(&feed(&mut carol, &log)[..], [Ok(V2Event::Message { .. })]));
        let path = dir.path().join("bob.v2");
        bob.save(&path).unwrap();
        let mut bob =
            V2Room::load(Identity::from_seed(&[2; 32]), general(), &RELAY, split_master_v2(&[7; 32]), &path)
                .unwrap();
        assert_eq!(bob.psk_generation(), 1);
        assert!(*bob.secrets() == new);
        log.push(alice.send(&text("alice", "still here")).unwrap());
        log.push(carol.send(&text("carol", "me too")).unwrap());
        let read = feed(&mut bob, &log);
        assert!(
            matches!(
                &read[..],
                [Ok(V2Event::Skipped), Ok(V2Event::Message { .. }), Ok(V2Event::Message { .. })]
            ),
            "{read:?}"
        );

        // A resent copy of the rotation changes nothing.
        log.push(alice.rotation_message(6).unwrap());
        assert!(matches!(feed(&mut bob, &log)[..], [Ok(V2Event::Skipped)]));
    }

    #[test]
    fn a_rotation_from_anyone_but_the_owner_is_refused_and_changes_nothing() {
        let (mut alice, mut bob, mut log) = alice_and_bob(7);
        let refused = bob.rotate(split_master_v2(&[9; 32]), 5);
        assert!(matches!(refused, Err(V2Error::Rotation(_))), "{refused:?}");
        assert_eq!(bob.psk_generation(), 0);

        // Bob seals a well-formed rotation by hand; alice refuses it.
        let forged = encode_rotation(5, 1, &split_master_v2(&[9; 32]));
        let mls = bob.room.seal_message(&forged).unwrap();
        log.push(bob.wrap(Kind::Application, &mls).unwrap());
        assert!(matches!(feed(&mut alice, &log)[..], [Err(V2Error::Rotation(_))]));
        assert_eq!(alice.psk_generation(), 0);
        assert!(*alice.secrets() == split_master_v2(&[7; 32]));

        // A malformed one from the owner is refused too.
        let mut short = encode_rotation(5, 1, &split_master_v2(&[9; 32]));
        short.truncate(ROTATE_LEN - 64);
        let mls = alice.room.seal_message(&short).unwrap();
        log.push(alice.wrap(Kind::Application, &mls).unwrap());
        assert!(matches!(feed(&mut bob, &log)[..], [Ok(V2Event::Skipped), Err(V2Error::Rotation(_))]));
        assert_eq!(bob.psk_generation(), 0);

        // The old password still enters.
        let info = alice.sealed_group_info().unwrap();
        let entered = V2Room::enter(
            Identity::from_seed(&[3; 32]),
            general(),
            &RELAY,
            split_master_v2(&[7; 32]),
            (log.len() as u64, &info),
        );
        assert!(entered.is_ok());
    }

    fn bodies_of(messages: &[SharedMessage]) -> Vec<(u64, PublicIdentity, &str)> {
        messages.iter().map(|m| (m.seq, m.sender, m.content.body.as_str())).collect()
    }

    /// Alice (owner, `history_share` = `share`) and bob, then alice says a1, a2, bob b1,
    /// alice a3 (seqs 2 to 5), and carol enters at seq 6 (all three fed).
    fn carol_enters(share: u16) -> (V2Room, V2Room, V2Room, Vec<Vec<u8>>) {
        let keys = || split_master_v2(&[7; 32]);
        let (mut alice, info) = V2Room::create_with_history_share(
            Identity::from_seed(&[1; 32]),
            general(),
            &RELAY,
            keys(),
            share,
        )
        .unwrap();
        let (mut bob, entry) =
            V2Room::enter(Identity::from_seed(&[2; 32]), general(), &RELAY, keys(), (0, &info)).unwrap();
        let mut log = vec![entry];
        feed(&mut alice, &log);
        feed(&mut bob, &log);
        assert_eq!(bob.history_share(), share, "from the group context");
        log.push(alice.send(&text("alice", "a1")).unwrap());
        log.push(alice.send(&text("alice", "a2")).unwrap());
        feed(&mut alice, &log);
        feed(&mut bob, &log);
        log.push(bob.send(&text("bob", "b1")).unwrap());
        log.push(alice.send(&text("alice", "a3")).unwrap());
        feed(&mut alice, &log);
        feed(&mut bob, &log);
        let info = alice.sealed_group_info().unwrap();
        let (mut carol, entry) = V2Room::enter(
            Identity::from_seed(&[3; 32]),
            general(),
            &RELAY,
            keys(),
            (log.len() as u64, &info),
        )
        .unwrap();
        log.push(entry);
        assert!(matches!(feed(&mut carol, &log)[..], [Ok(V2Event::Entered)]));
        assert!(matches!(&feed(&mut alice, &log)[..], [Ok(V2Event::Commit(c))] if c.entry));
        assert!(matches!(&feed(&mut bob, &log)[..], [Ok(V2Event::Commit(c))] if c.entry));
        (alice, bob, carol, log)
    }

    #[test]
    fn a_newcomer_gets_the_last_n_messages_from_the_first_share_and_members_ignore_it() {
        let (mut alice, mut bob, mut carol, mut log) = carol_enters(3);
        let (a, b) = (alice.identity.public(), bob.identity.public());
        assert_eq!(
            bodies_of(alice.kept_history()),
            vec![(3, a, "a2"), (4, b, "b1"), (5, a, "a3")],
            "her own messages too"
        );
        assert!(alice.share_wanted() && bob.share_wanted() && !carol.share_wanted());
        assert!(carol.share_history(1).unwrap().is_empty(), "the newcomer has nothing to share");

        let share = alice.share_history(9).unwrap();
        assert_eq!(share.len(), 1);
        assert!(!alice.share_wanted() && alice.share_history(9).unwrap().is_empty(), "once");
        log.extend(share);
        // Bob seals one too (he did not see alice's yet): it comes second and is ignored.
        let late = bob.share_history(10).unwrap();
        assert_eq!(late.len(), 1);
        log.extend(late);

        let events = feed(&mut carol, &log);
        match &events[..] {
            [Ok(V2Event::SharedHistory { by, messages }), Ok(V2Event::Skipped)] => {
                assert_eq!(*by, a);
                assert_eq!(bodies_of(messages), vec![(3, a, "a2"), (4, b, "b1"), (5, a, "a3")]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(carol.kept_history().len(), 3, "carol can share them onward");
        assert!(
            matches!(&feed(&mut bob, &log)[..], [Ok(V2Event::HistoryShared { by }), Ok(V2Event::Skipped)] if *by == a)
        );
        assert!(matches!(&feed(&mut alice, &log)[..], [Ok(V2Event::Skipped), Ok(V2Event::Skipped)]));

        // After the next commit, a share is late and ignored.
        log.push(bob.update().unwrap());
        for room in [&mut alice, &mut bob, &mut carol] {
            assert!(matches!(&feed(room, &log)[..], [Ok(V2Event::Commit(_))]));
        }
        assert!(!alice.share_wanted() && alice.share_history(11).unwrap().is_empty());
        let parts = encode_share(11, 6, alice.kept_history()).unwrap();
        let mls = alice.room.seal_message(&parts[0]).unwrap();
        log.push(alice.wrap(Kind::Application, &mls).unwrap());
        assert!(matches!(&feed(&mut carol, &log)[..], [Ok(V2Event::Skipped)]));
    }

    #[test]
    fn a_share_never_shows_messages_from_the_newcomers_entry_on_nor_for_another_entry() {
        let (_alice, mut bob, mut carol, mut log) = carol_enters(5);
        let (a, b) = (PublicIdentity([1; 32]), bob.identity.public());
        let shared = |seq: u64| SharedMessage { sender: a, seq, content: text("alice", &format!("m{seq}")) };
        // A share for another entry's seq is ignored; then bob's, claiming messages at and
        // after carol's entry (seq 6), shows only those before it.
        for (entry_seq, seqs) in [(5, vec![2]), (6, vec![2, 6, 7])] {
            let messages: Vec<_> = seqs.into_iter().map(shared).collect();
            let parts = encode_share(1, entry_seq, &messages).unwrap();
            let mls = bob.room.seal_message(&parts[0]).unwrap();
            log.push(bob.wrap(Kind::Application, &mls).unwrap());
        }
        let events = feed(&mut carol, &log);
        match &events[..] {
            [Ok(V2Event::Skipped), Ok(V2Event::SharedHistory { by, messages })] => {
                assert_eq!(*by, b);
                assert_eq!(bodies_of(messages), vec![(2, a, "m2")]);
            }
            other => panic!("{other:?}"),
        }
        // Malformed share bytes are refused.
        let mut bad = encode_share(1, 6, &[shared(3)]).unwrap().remove(0);
        bad[19] = 0;
        let mls = bob.room.seal_message(&bad).unwrap();
        log.push(bob.wrap(Kind::Application, &mls).unwrap());
        assert!(matches!(&feed(&mut carol, &log)[..], [Err(V2Error::Share(_))]));
    }

    #[test]
    fn with_sharing_off_nothing_is_kept_nor_sent() {
        let (mut alice, mut bob, _carol, _log) = carol_enters(0);
        assert!(alice.kept_history().is_empty() && alice.unread_own.is_empty());
        assert!(!alice.share_wanted() && !bob.share_wanted());
        assert!(alice.share_history(1).unwrap().is_empty() && bob.share_history(1).unwrap().is_empty());
    }

    #[test]
    fn a_long_share_splits_into_envelopes_that_fit_and_arrive_in_order() {
        let (mut alice, _bob, mut carol, mut log) = carol_enters(100);
        let long = "y".repeat(chatroom_crypto::MAX_BODY_LEN);
        for _ in 0..6 {
            log.push(alice.send(&text("alice", &long)).unwrap());
        }
        feed(&mut alice, &log);
        feed(&mut carol, &log);
        // A second entry (dave), for which alice shares 10 messages, 6 of them long.
        let info = alice.sealed_group_info().unwrap();
        let (mut dave, entry) = V2Room::enter(
            Identity::from_seed(&[4; 32]),
            general(),
            &RELAY,
            split_master_v2(&[7; 32]),
            (log.len() as u64, &info),
        )
        .unwrap();
        log.push(entry);
        feed(&mut alice, &log);
        feed(&mut dave, &log);
        let share = alice.share_history(1).unwrap();
        assert!(share.len() >= 2, "{}", share.len());
        log.extend(share);
        let got: Vec<SharedMessage> = feed(&mut dave, &log)
            .into_iter()
            .flat_map(|e| match e {
                Ok(V2Event::SharedHistory { messages, .. }) => messages,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got.len(), 10);
        assert_eq!(got, alice.kept_history().iter().filter(|m| m.seq < 13).cloned().collect::<Vec<_>>());
    }

    #[test]
    fn a_rotation_layout_is_exact() {
        let secrets = split_master_v2(&[9; 32]);
        let bytes = encode_rotation(0x0102, 7, &secrets);
        assert_eq!(bytes.len(), ROTATE_LEN);
        assert_eq!(&bytes[..13], &[0, 0, 0, 0, 0, 0, 1, 2, 4, 0, 0, 0, 7]);
        assert_eq!(&bytes[13..45], secrets.join_secret.as_bytes());
        assert_eq!(&bytes[65..97], secrets.room_psk.as_bytes());
        assert_eq!(&bytes[97..129], secrets.group_info_key.as_bytes());
        let (generation, back) = decode_rotation(&bytes).unwrap();
        assert!(generation == 7 && back == secrets);
        let mut padded = bytes.clone();
        padded[ROTATE_LEN - 1] = 1;
        assert!(decode_rotation(&padded).is_err());
    }

    /// Every documented `name = value` of docs/PROTOCOL.md whose name starts with a prefix.
    fn documented(prefixes: &[&str]) -> std::collections::BTreeMap<String, String> {
        chatroom_crypto::internal::documented_vectors(include_str!("../../../docs/PROTOCOL.md"))
            .into_iter()
            .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The `v2.rotate.` and `v2.history.` vectors of docs/PROTOCOL.md (section 17.10): the
    /// kind-4 and kind-5 application data. Other names are checked by the crypto and group
    /// crates' `vectors` tests.
    #[test]
    fn protocol_md_rotation_and_history_vectors_match_the_code() {
        use crate::v2_history::{decode_share, SharedMessage};
        let relay = chatroom_crypto::StaticKeypair::from_private(&[0x42; 32]);
        let secrets = chatroom_crypto::derive_room_secrets_v2(
            b"correct horse battery staple",
            relay.public(),
            &general(),
            chatroom_crypto::KdfParams::DEFAULT,
        )
        .unwrap();
        let rotation = encode_rotation(1_700_000_000_000, 1, &secrets);
        let (generation, decoded) = decode_rotation(&rotation).unwrap();
        assert_eq!((generation, decoded.to_bytes()), (1, secrets.to_bytes()));

        let (alice, bob) = (Identity::from_seed(&[0x11; 32]), Identity::from_seed(&[0x22; 32]));
        let said = |ts, kind, nick, body: &str| Content {
            timestamp_ms: ts,
            kind,
            nick: Nick::new(nick).unwrap(),
            body: body.into(),
        };
        let messages = [
            SharedMessage {
                sender: alice.public(),
                seq: 7,
                content: said(1_700_000_000_000, ContentKind::Text, "alice", "hello, room"),
            },
            SharedMessage {
                sender: bob.public(),
                seq: 9,
                content: said(1_700_000_000_001, ContentKind::Action, "Bob", "waves"),
            },
        ];
        let share = encode_share(1_700_000_000_003, 10, &messages).unwrap();
        assert_eq!(share.len(), 1, "two short messages fit one envelope");
        let part = decode_share(&share[0]).unwrap();
        assert_eq!((part.entry_seq, part.part, part.parts, &part.messages[..]), (10, 0, 1, &messages[..]));

        let computed = [
            ("v2.rotate.data", hex::encode(rotation.as_slice())),
            ("v2.history.data", hex::encode(share[0].as_slice())),
        ];
        let block: String = computed.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let doc = documented(&["v2.rotate.", "v2.history."]);
        for (key, value) in &computed {
            assert_eq!(doc.get(*key), Some(value), "vector {key}; computed block:\n{block}");
        }
        assert_eq!(doc.len(), computed.len(), "docs/PROTOCOL.md documents vectors not computed:\n{block}");
    }
}
