//! Errors of the client library. Each names what went wrong and what to do next; anything
//! that came from the relay is neutralised before it is shown.

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
    #[error("{path}, line {line}: {why}; fix or remove that line")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A state file that cannot be used as it is: cut short or too large.
    #[error(
        "{path}: {why}. Move it aside (`mv {path} {path}.damaged`) to start afresh in this room; its \
         member pins and counters are then forgotten, so compare fingerprints (/whois) again"
    )]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A secret file other users may read.
    #[error("{path} has mode {mode:03o}, so other users may read it; run `chmod 600 {path}`")]
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
    #[error("cannot connect to {addr}: {source}; check the address and that the relay is running")]
    Connect {
        /// The relay.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The SOCKS5 proxy failed or refused.
    #[error(
        "proxy {proxy} could not connect to {addr}: {detail}; check that the proxy is running and can reach the relay"
    )]
    Proxy {
        /// The proxy URL.
        proxy: String,
        /// The relay.
        addr: String,
        /// What the SOCKS client reported.
        detail: String,
    },
    /// A step took too long.
    #[error("timed out after {secs} s {what} {addr}; check the address and your network")]
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
         Someone may be intercepting the connection. If the relay's operator confirms that its key changed, \
         run `chatroom relays forget {addr}` and connect again (with a new invite if you used one)."
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
    /// The relay refused the join or closed the session.
    #[error("the relay closed the session: {} ({}); {}", neutralize(detail), code_name(*code), advice(*code))]
    Refused {
        /// The relay's reason.
        code: ErrorCode,
        /// The relay's detail text (unneutralised; Display neutralises it).
        detail: String,
    },
    /// The relay broke the protocol.
    #[error("the relay broke the protocol: {0}; try again later or report it to the relay's operator")]
    Protocol(String),
    /// The connection dropped.
    #[error("connection lost: {0}")]
    Lost(String),
    /// Key derivation failed.
    #[error("cannot derive the room key: {0}")]
    Kdf(#[from] KdfError),
    /// A local file could not be used.
    #[error(transparent)]
    File(#[from] FileError),
}

impl SessionError {
    /// Whether reconnecting later may help (as opposed to a refusal that will repeat).
    pub fn is_retryable(&self) -> bool {
        match self {
            SessionError::Connect { .. }
            | SessionError::Proxy { .. }
            | SessionError::Timeout { .. }
            | SessionError::Lost(_)
            | SessionError::Protocol(_) => true,
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

/// What a user should do after a refusal.
pub fn advice(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NoSuchRoom => "check the room name, or add --create to create the room",
        ErrorCode::WrongPassword => "check the room password with the other members and try again",
        ErrorCode::NickTaken => {
            "that nickname belongs to another identity in this room; choose another with --nick"
        }
        ErrorCode::NickBound => {
            "this identity already has another nickname in this room; join with that one via --nick, \
             or use another --data-dir for another identity"
        }
        ErrorCode::Banned => "the room owner banned this identity; ask the owner to /unban you",
        ErrorCode::TooManyAttempts => "too many failed attempts; wait a few minutes before trying again",
        ErrorCode::AlreadyConnected => {
            "another chatroom with the same identity joined this room and replaced this one"
        }
        ErrorCode::Kicked => "the room owner removed you; you may rejoin",
        ErrorCode::BadSignature | ErrorCode::UnsupportedVersion | ErrorCode::Malformed => {
            "the client and relay disagree about the protocol; update both"
        }
        _ => "try again later",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_neutralise_relay_text_and_give_advice() {
        let e = SessionError::Refused { code: ErrorCode::WrongPassword, detail: "no\n\u{1b}[2Jway".into() };
        let shown = e.to_string();
        assert!(!shown.contains('\n') && !shown.contains('\u{1b}'), "{shown}");
        assert!(shown.contains("WrongPassword") && shown.contains("check the room password"), "{shown}");
        assert!(!e.is_retryable());
        assert!(SessionError::Refused { code: ErrorCode::ShuttingDown, detail: String::new() }.is_retryable());
    }
}
