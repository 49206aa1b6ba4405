//! The load generator's errors, typed, with the cause kept as `source()`.

use chatroom_crypto::{DecodeError, KdfError};
use chatroom_session::error::SessionError;
use thiserror::Error;

/// Why a run, or one target of it, failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The workload's parameters do not fit together, or do not fit this target.
    #[error("{0}")]
    Workload(String),
    /// A socket, file or `/proc` read or write failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The chatroom protocol core failed: connect, handshake, join, send or receive.
    #[error("{what}: {source}")]
    Session {
        /// What was being done.
        what: String,
        /// The cause.
        source: SessionError,
    },
    /// Deriving a room's keys failed.
    #[error("key derivation failed: {0}")]
    Kdf(#[from] KdfError),
    /// A name, nickname or envelope the workload builds is not valid.
    #[error("{what}: {source}")]
    Encode {
        /// What was being built.
        what: String,
        /// The cause.
        source: DecodeError,
    },
    /// A task of the run panicked or was cancelled.
    #[error("{what} task failed: {source}")]
    Task {
        /// Which task.
        what: &'static str,
        /// The cause.
        source: tokio::task::JoinError,
    },
    /// The server broke the expected exchange, or did not answer in time.
    #[error("{0}")]
    Server(String),
    /// A bookkeeping invariant of the load generator itself does not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// One member's part of the run failed.
    #[error("member {member}: {source}")]
    Member {
        /// The member's index.
        member: usize,
        /// The cause.
        source: Box<BenchError>,
    },
}

impl BenchError {
    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }

    /// A protocol-core failure while doing `what`.
    pub fn session(what: impl Into<String>) -> impl FnOnce(SessionError) -> BenchError {
        let what = what.into();
        move |source| BenchError::Session { what, source }
    }

    /// A task of kind `what` that failed.
    pub fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> BenchError {
        move |source| BenchError::Task { what, source }
    }

    /// This error, as member `member`'s.
    pub fn member(member: usize) -> impl FnOnce(BenchError) -> BenchError {
        move |e| BenchError::Member { member, source: Box::new(e) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn causes_are_kept_as_sources() -> Result<(), Box<dyn std::error::Error>> {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = BenchError::member(3)(BenchError::io("cannot connect to 127.0.0.1:1")(io));
        assert_eq!(e.to_string(), "member 3: cannot connect to 127.0.0.1:1: refused");
        let inner = e.source().ok_or("a member error keeps its cause")?;
        assert!(inner.source().is_some(), "and the I/O error under it");
        Ok(())
    }
}
