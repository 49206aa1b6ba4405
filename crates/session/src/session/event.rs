//! What the protocol core tells a front end. Front ends implement `Callbacks`; the core never
//! prints anything itself. Text in events is exactly as received: front ends must pass it
//! through `display::neutralize` before showing it.

use std::time::Duration;

use chatroom_crypto::{ContentKind, ErrorCode, KdfParams, Nick, PresenceEvent, PublicIdentity};

use crate::error::SessionError;

/// Receives events from a session. Called from the session's task: return quickly.
pub trait Callbacks: Send + Sync + 'static {
    /// One event.
    fn event(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync + 'static> Callbacks for F {
    fn event(&self, event: Event) {
        self(event)
    }
}

/// Connection state, for a status line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnState {
    /// Opening the TCP connection (through the proxy, if any).
    Connecting {
        /// 0 for the first attempt, then 1, 2, ... while reconnecting.
        attempt: u32,
        /// The relay address tried (`HOST:PORT`), one of the session's.
        addr: String,
    },
    /// Noise handshake and join in progress.
    Joining,
    /// Joined; replaying history.
    CatchingUp,
    /// History replayed; live.
    Live,
    /// Disconnected; the next attempt starts after `delay`.
    Reconnecting {
        /// Time until the next attempt.
        delay: Duration,
        /// Why the connection was lost: what happened, without advice, as the session retries
        /// on its own (may hold relay text: neutralise it).
        reason: String,
    },
}

/// Progress of the room key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfProgress {
    /// Started with these parameters.
    Started(KdfParams),
    /// Still running (sent about ten times a second).
    Running(Duration),
    /// Finished after this long.
    Done(Duration),
}

/// A verified chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The relay's sequence number.
    pub seq: u64,
    /// Replayed from history.
    pub history: bool,
    /// The sender's identity (the signature verified against it).
    pub sender: PublicIdentity,
    /// The sender's nickname, checked against the room's pins.
    pub nick: Nick,
    /// Sent by this identity (seen in history).
    pub from_me: bool,
    /// Text or `/me` action.
    pub kind: ContentKind,
    /// The text, unneutralised.
    pub body: String,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// Content that must not be shown as a member's message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// The envelope failed decryption or signature verification (or is malformed).
    Unverified {
        /// Its sequence number.
        seq: u64,
    },
    /// The sender's counter did not increase: a replay or reordering by the relay.
    Replayed {
        /// Its sequence number.
        seq: u64,
        /// The signer.
        sender: PublicIdentity,
        /// Its counter.
        counter: u64,
        /// The highest counter accepted from that sender before.
        highest: u64,
    },
    /// A correctly signed message under a nickname that is not pinned, while the room's pin
    /// store is full: it cannot be pinned, so it is not shown as that member's.
    Unpinned {
        /// The message as signed.
        message: ChatMessage,
        /// The pin store's limit.
        max: usize,
    },
    /// A correctly signed message whose claimed nickname is pinned to another identity.
    NickMismatch {
        /// The message as signed (the `nick` is the false claim).
        message: ChatMessage,
        /// The identity pinned for that nickname.
        pinned: PublicIdentity,
    },
}

/// One member of the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Nickname.
    pub nick: Nick,
    /// Identity key.
    pub identity: PublicIdentity,
    /// This member is the room owner.
    pub owner: bool,
    /// This member is us.
    pub me: bool,
}

/// What is known of one nickname (`/whois`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whois {
    /// The nickname asked about.
    pub nick: Nick,
    /// The identity key its verified messages were pinned to.
    pub pinned: Option<PublicIdentity>,
    /// The identity key the relay's member list gives it (a claim).
    pub listed: Option<PublicIdentity>,
    /// A pinned nickname that looks like it.
    pub look_alike: Option<String>,
}

/// Why a session ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The front end closed it; `unacknowledged` messages never got an Ack.
    Closed {
        /// Messages that may not have been delivered.
        unacknowledged: usize,
    },
    /// A refusal or error that reconnecting will not fix.
    Failed(SessionError),
}

/// Everything a session reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The connection state changed.
    State(ConnState),
    /// A relay was seen for the first time and its key recorded in the known-relays file.
    RelayFirstUse {
        /// `HOST:PORT`.
        addr: String,
        /// Its fingerprint (64 hex digits).
        fingerprint: String,
    },
    /// Room key derivation progress.
    KeyDerivation(KdfProgress),
    /// Joined (first time or after a reconnect).
    Joined {
        /// This join created the room.
        created: bool,
        /// The owner's identity.
        owner: PublicIdentity,
        /// We are the owner.
        owner_is_me: bool,
        /// The room safety code.
        safety_code: String,
        /// The relay's fingerprint.
        relay_fingerprint: String,
        /// This is a reconnect.
        rejoin: bool,
        /// The relay address this connection reached (`HOST:PORT`), one of the session's.
        addr: String,
    },
    /// Messages between the last seen and the oldest retained were dropped by the relay's
    /// retention before this client could fetch them.
    HistoryGap {
        /// First missed sequence number.
        from: u64,
        /// Last missed sequence number.
        to: u64,
    },
    /// The relay's latest sequence number is below the last one this client processed: it
    /// lost messages (a restored backup or a reset). Reported once per join; the cursor is
    /// reset to the relay's and new messages are shown as usual.
    SequenceWentBack {
        /// The last sequence number this client had processed.
        last_seen: u64,
        /// The relay's latest sequence number.
        relay_latest: u64,
    },
    /// History replay is complete.
    HistoryEnd,
    /// A verified message.
    Message(ChatMessage),
    /// A message seen in an earlier session, fetched again as recent context on start
    /// (`Limits::context_on_start`): verified and its nickname pinned to its signer, but not
    /// counted as new.
    Context(ChatMessage),
    /// Content refused for display as a member's message.
    Rejected(Rejected),
    /// The member list (after joining and after `/who`).
    Members(Vec<MemberInfo>),
    /// A member joined, left, was kicked, banned or unbanned.
    Presence {
        /// What happened.
        event: PresenceEvent,
        /// To whom.
        nick: Nick,
        /// Their identity.
        identity: PublicIdentity,
    },
    /// A verified message from a nickname that looks like another pinned one (sent just
    /// before that `Message`).
    LookAlike {
        /// The nickname of the message.
        nick: Nick,
        /// Its signer.
        sender: PublicIdentity,
        /// The pinned nickname it looks like.
        like: String,
    },
    /// The answer to `SessionHandle::whois`.
    Whois(Whois),
    /// The relay announced a nickname with an identity key other than the one pinned for it.
    KeyChanged {
        /// The nickname.
        nick: Nick,
        /// The pinned identity.
        pinned: PublicIdentity,
        /// The identity now seen.
        seen: PublicIdentity,
    },
    /// A message was stored by the relay.
    Sent {
        /// The id `SessionHandle::send` returned.
        id: u64,
        /// Its sequence number.
        seq: u64,
    },
    /// A message was refused by the relay and will not be delivered.
    SendFailed {
        /// The id `SessionHandle::send` returned.
        id: u64,
        /// Why.
        code: ErrorCode,
        /// The relay's detail text.
        detail: String,
    },
    /// The relay refused a command (kick, ban, ...).
    CommandFailed {
        /// Why.
        code: ErrorCode,
        /// The relay's detail text.
        detail: String,
    },
    /// Something odd but not fatal (e.g. a state file could not be written).
    Warning(String),
    /// Protocol v2: what the room's MLS group did (MLS-authenticated, unlike presence).
    Group(GroupEvent),
}

/// What the room's MLS group did (protocol v2), in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// This client entered the group: it reads what is sent from now on.
    Entered {
        /// The epoch it entered at.
        epoch: u64,
        /// The room's `history_share` setting, fixed when it was created: how many of the
        /// last messages an online member shows each newcomer (0: none).
        history_share: u16,
    },
    /// This client's entry lost to another commit of the same epoch; it tries again.
    EntryRetry {
        /// The attempt about to start (2 to 5).
        attempt: u32,
    },
    /// A commit won its epoch.
    Commit {
        /// The new epoch.
        epoch: u64,
        /// Who committed (for an entry: the newcomer), as MLS authenticated it.
        committer: PublicIdentity,
        /// It was an entry by external commit (a new member, or one re-entering).
        entry: bool,
        /// Identities it removed from the group.
        removed: Vec<PublicIdentity>,
        /// It was this client's own commit.
        own: bool,
    },
    /// An entry of the log failed verification or the room's rules and was skipped (a
    /// forged, late or refused commit, or an entry with the wrong password's key).
    Refused {
        /// Its sequence number.
        seq: u64,
        /// Why, in words.
        reason: String,
    },
    /// This member fell behind the relay's retained history; it enters the group again and
    /// cannot read what was sent meanwhile.
    FellBehind {
        /// The last sequence number it processed.
        last: u64,
        /// The oldest the relay retains.
        oldest: u64,
    },
    /// The owner rotated the room's password: entering now needs the new one. Members inside
    /// hold its outputs and need nothing.
    PasswordRotated {
        /// The new password generation (1 after the first rotation).
        generation: u32,
        /// The owner, as MLS authenticated it.
        by: PublicIdentity,
        /// It was this client's own rotation.
        own: bool,
    },
    /// History a member shared with this client as a newcomer (docs/PROTOCOL.md section 28): messages
    /// sent before it entered, oldest first, each shown once. Their senders, nicknames and
    /// text are `by`'s claim, not signed by their senders: show them as shared by `by`.
    SharedHistory {
        /// The member who shared them, as MLS authenticated it.
        by: PublicIdentity,
        /// `by`'s nickname, if it is among the shared messages' senders.
        by_nick: Option<Nick>,
        /// The messages as `by` claims them (`history` is true).
        messages: Vec<ChatMessage>,
    },
}
