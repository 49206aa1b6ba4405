//! Errors of the protocol core. Each says what went wrong, typed so that a front end can word
//! what to do next (the `chatroom` binary's `advice.rs`: advice names its flags and commands, so
//! it lives there); anything that came from the relay is neutralised before it is shown.

use chatroom_crypto::{ErrorCode, KdfError};
use thiserror::Error;

use crate::display::neutralize;

/// An address, proxy URL or invite that does not parse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{input:?} is not usable: {why}")]
pub struct AddressError {
    /// The input, neutralised and shortened.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A local file (known relays, room state, config, password file) could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file's content does not parse.
    #[error("{path}, line {line}: {why}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A state file that cannot be used as it is: cut short or too large.
    #[error("{path}: {why}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A secret file other users may read.
    #[error("{path} has mode {mode:03o}, so other users may read it")]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// Why a session could not be established or ended.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The relay.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The SOCKS5 proxy failed or refused.
    #[error("proxy {proxy} could not connect to {addr}: {detail}")]
    Proxy {
        /// The proxy URL.
        proxy: String,
        /// The relay.
        addr: String,
        /// What the SOCKS client reported.
        detail: String,
    },
    /// A step took too long.
    #[error("timed out after {secs} s {what} {addr}")]
    Timeout {
        /// The step.
        what: &'static str,
        /// The relay.
        addr: String,
        /// The limit.
        secs: u64,
    },
    /// The relay's key is not the pinned one.
    #[error(
        "RELAY KEY MISMATCH for {addr}: the relay presented key {actual}, but {pin_source} says {expected}. \
         Someone may be intercepting the connection"
    )]
    RelayKeyMismatch {
        /// The relay.
        addr: String,
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint presented.
        actual: String,
        /// Where the pin came from ("the invite", "known_relays").
        pin_source: String,
    },
    /// The relay refused the join or closed the session. Shown as what the code means; the
    /// relay's own text only for codes without a meaning of ours.
    #[error("{}", refusal_text(*code, detail))]
    Refused {
        /// The relay's reason.
        code: ErrorCode,
        /// The relay's detail text (unneutralised; Display neutralises it).
        detail: String,
    },
    /// The relay broke the protocol.
    #[error("the relay broke the protocol: {0}")]
    Protocol(String),
    /// The relay's bytes failed a check of the protocol (Noise, framing, item decoding); the
    /// failing check is kept as the source.
    #[error("the relay broke the protocol: {context}{source}")]
    Malformed {
        /// What was being read, as a prefix of the message ("" when the source says it all).
        context: String,
        /// The check that failed.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The connection dropped.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The connection failed with an I/O error.
    #[error("connection lost: {0}")]
    Io(#[source] std::io::Error),
    /// Key derivation failed.
    #[error("cannot derive the room key: {0}")]
    Kdf(#[from] KdfError),
    /// A local file could not be used.
    #[error(transparent)]
    File(#[from] FileError),
    /// Protocol v2: the room's sealed GroupInfo does not open with this password's key (the
    /// relay admitted the join secret, so the relay or the room's key material is wrong).
    #[error("the room's key material does not match this password")]
    GroupKeyMismatch,
    /// Protocol v2: every attempt to enter lost to another commit.
    #[error("could not enter: the room changes faster than we can join")]
    EntryFailed,
    /// Protocol v2: the owner's removal commit won; this client's group state reads nothing
    /// sent from then on.
    #[error("the room's owner removed you from the room's group; nothing sent from now on can be read by this client")]
    RemovedFromGroup,
}

impl SessionError {
    /// The relay's bytes failed `source`, a check of the protocol, while reading `context`.
    pub fn malformed(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SessionError::Malformed { context: context.into(), source: Box::new(source) }
    }

    /// Whether reconnecting later may help (as opposed to a refusal that will repeat).
    pub fn is_retryable(&self) -> bool {
        match self {
            SessionError::Connect { .. }
            | SessionError::Proxy { .. }
            | SessionError::Timeout { .. }
            | SessionError::Lost(_)
            | SessionError::Io(_)
            | SessionError::Protocol(_)
            | SessionError::Malformed { .. } => true,
            SessionError::Refused { code, .. } => matches!(
                code,
                ErrorCode::ServerFull
                    | ErrorCode::ShuttingDown
                    | ErrorCode::SlowConsumer
                    | ErrorCode::IdleTimeout
                    | ErrorCode::HandshakeTimeout
                    | ErrorCode::Internal
                    | ErrorCode::RoomFull
            ),
            _ => false,
        }
    }

    /// The relay's refusal code, if this is a refusal.
    pub fn refusal(&self) -> Option<ErrorCode> {
        match self {
            SessionError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A short, stable name for a relay error code.
pub fn code_name(code: ErrorCode) -> String {
    let name = match code {
        ErrorCode::Malformed => "Malformed",
        ErrorCode::UnsupportedVersion => "UnsupportedVersion",
        ErrorCode::UnexpectedMessage => "UnexpectedMessage",
        ErrorCode::NoSuchRoom => "NoSuchRoom",
        ErrorCode::WrongPassword => "WrongPassword",
        ErrorCode::NickTaken => "NickTaken",
        ErrorCode::Banned => "Banned",
        ErrorCode::TooManyAttempts => "TooManyAttempts",
        ErrorCode::NotOwner => "NotOwner",
        ErrorCode::NoSuchMember => "NoSuchMember",
        ErrorCode::AlreadyConnected => "AlreadyConnected",
        ErrorCode::BadSignature => "BadSignature",
        ErrorCode::RoomFull => "RoomFull",
        ErrorCode::EnvelopeTooLarge => "EnvelopeTooLarge",
        ErrorCode::RateLimited => "RateLimited",
        ErrorCode::BadEnvelope => "BadEnvelope",
        ErrorCode::NickBound => "NickBound",
        ErrorCode::OwnerProtected => "OwnerProtected",
        ErrorCode::ServerFull => "ServerFull",
        ErrorCode::ShuttingDown => "ShuttingDown",
        ErrorCode::SlowConsumer => "SlowConsumer",
        ErrorCode::IdleTimeout => "IdleTimeout",
        ErrorCode::Kicked => "Kicked",
        ErrorCode::HandshakeTimeout => "HandshakeTimeout",
        ErrorCode::Internal => "Internal",
        other => return format!("code {}", other.to_u16()),
    };
    name.to_owned()
}

/// What a refusal means, in one sentence of ours (`None`: only the relay's text says).
fn meaning(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::NoSuchRoom => "the room does not exist on this relay",
        ErrorCode::WrongPassword => "the relay refused the room password",
        ErrorCode::NickTaken => "that nickname belongs to another identity in this room",
        ErrorCode::Banned => "the room owner banned this identity",
        ErrorCode::TooManyAttempts => "too many failed attempts to join (or rooms created) from this address",
        ErrorCode::AlreadyConnected => {
            "this identity joined the room from another chatroom, which replaced this one"
        }
        ErrorCode::Kicked => "the room owner removed you from the room",
        ErrorCode::ShuttingDown => "the relay is shutting down",
        ErrorCode::ServerFull => "the relay is full",
        ErrorCode::RoomFull => "the room is full",
        ErrorCode::IdleTimeout => "the relay closed the idle connection",
        ErrorCode::SlowConsumer => "the relay closed the connection because it fell behind",
        ErrorCode::BadSignature | ErrorCode::UnsupportedVersion | ErrorCode::Malformed => {
            "the client and the relay disagree about the protocol"
        }
        _ => return None,
    })
}

/// A refusal as shown: what it means, or the relay's own (neutralised) text and code.
fn refusal_text(code: ErrorCode, detail: &str) -> String {
    match meaning(code) {
        Some(meaning) => meaning.to_owned(),
        None => format!("the relay refused: {} ({})", neutralize(detail), code_name(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_neutralise_relay_text() {
        let e = SessionError::Refused { code: ErrorCode::WrongPassword, detail: "no\n\u{1b}[2Jway".into() };
        let shown = e.to_string();
        assert!(!shown.contains('\n') && !shown.contains('\u{1b}'), "{shown}");
        assert_eq!(shown, "the relay refused the room password");
        let other = SessionError::Refused { code: ErrorCode::Internal, detail: "disk\u{1b}[2J full".into() };
        assert_eq!(other.to_string(), "the relay refused: disk^[[2J full (Internal)");
        assert!(!e.is_retryable());
        assert!(SessionError::Refused { code: ErrorCode::ShuttingDown, detail: String::new() }.is_retryable());
    }

    #[test]
    fn sources_are_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = SessionError::Connect { addr: "h:1".into(), source: io };
        assert!(std::error::Error::source(&e).is_some());
        let e = SessionError::File(FileError::Io { path: "p".into(), source: std::io::Error::other("x") });
        assert!(std::error::Error::source(&e).is_some());
        let e = SessionError::Io(std::io::Error::other("reset"));
        assert!(std::error::Error::source(&e).is_some());
        // A failed protocol check keeps the typed check, and the message reads as before.
        let e = SessionError::malformed(
            "malformed message from the relay: ",
            chatroom_net::FrameError::Truncated,
        );
        let source = std::error::Error::source(&e).expect("kept");
        assert!(source.downcast_ref::<chatroom_net::FrameError>().is_some(), "{source:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "the relay broke the protocol: malformed message from the relay: {}",
                chatroom_net::FrameError::Truncated
            )
        );
    }
}
