//! The binary's error: what went wrong, and what to do next, printed once by `main`. Causes
//! are kept as `source()` (a typed `RelayError`, `io::Error`, ...), not flattened to strings;
//! each message already names its cause, so `main` prints the message alone.

use std::net::SocketAddr;

use chatroom_crypto::KeyFileError;
use chatroom_relay::RelayError;

/// Why `chatroom-relay` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MainError {
    /// A flag, file or subcommand the operator gave cannot work; the message says what to use.
    #[error("{0}")]
    Usage(String),
    /// The relay could not open or run.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The relay key could not be read or created.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source}; choose another --listen address or stop what uses it")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot serve metrics on {addr}: {source}; choose another --metrics address")]
    Metrics { addr: SocketAddr, source: std::io::Error },
    #[error("cannot read the {what} address: {source}")]
    LocalAddr { what: &'static str, source: std::io::Error },
    /// The NATS cluster cannot serve rooms (unreachable, too old, configured otherwise).
    #[error(transparent)]
    Cluster(#[from] chatroom_relay::rooms::jetstream::setup::SetupError),
    #[error("the onion service set-up failed: {0}")]
    OnionTask(#[source] tokio::task::JoinError),
}

impl From<String> for MainError {
    fn from(message: String) -> Self {
        MainError::Usage(message)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn the_cause_is_kept_as_the_source_and_named_once_in_the_message() {
        let cause = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = MainError::Listen { addr: "127.0.0.1:7000".parse().unwrap(), source: cause };
        assert_eq!(
            e.to_string(),
            "cannot listen on 127.0.0.1:7000: address in use; choose another --listen address or stop what uses it"
        );
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), "address in use");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }
}
