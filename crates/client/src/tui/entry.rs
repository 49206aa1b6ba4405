//! The scrollback's entries: what the UI state (`app.rs`) records and the row layout
//! (`rows.rs`) draws. All text in them is already neutralised.

use chatroom_session::crypto::PublicIdentity;

/// Whether an own message reached the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Stored by the relay (or not ours).
    Delivered,
    /// Queued or in flight.
    Pending,
    /// Refused by the relay.
    Failed,
}

/// What kind of notice: decides its style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoticeKind {
    /// Ordinary information.
    Info,
    /// Someone joined, left, was kicked or banned.
    Presence,
    /// Something failed.
    Error,
    /// A security warning: changed identity key, failed verification, replay, impersonation.
    Alert,
}

/// One entry of the scrollback. All text is already neutralised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// A member's message or action.
    Message {
        /// Sender's nickname.
        nick: String,
        /// Text.
        text: String,
        /// A `/me` action.
        action: bool,
        /// Replayed from history.
        history: bool,
        /// Sent by us.
        mine: bool,
        /// For our own messages: whether the relay stored it.
        delivery: Delivery,
        /// Names us or a highlight word.
        mention: bool,
        /// The signer's identity key, which chooses the nickname's colour (`None`: not known).
        key: Option<PublicIdentity>,
    },
    /// A line from the program itself.
    Notice {
        /// Its kind.
        kind: NoticeKind,
        /// Its text.
        text: String,
    },
    /// A horizontal rule with a label (start and end of history).
    Divider(String),
}

/// A scrollback entry: a time and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Formatted time (the sender's clock for messages).
    pub(crate) time: String,
    /// The content.
    pub(crate) body: Body,
}
