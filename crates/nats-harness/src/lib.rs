//! Real nats-server processes for tests: one node ([`NatsServer::single`]) or a 3-node JetStream
//! cluster ([`NatsCluster::start`]), each node on its own 127.0.0.x address with its own store
//! directory and `sync_interval: always` (the configuration docs/CLUSTER.md documents). Start-up
//! returns once the server itself reports ready (monitoring `/healthz`, and for a cluster an
//! elected JetStream meta leader that every node knows); every process is killed on drop.
//!
//! The binary is found through [`ENV`] (set by scripts/test), else where
//! `scripts/install-nats-server` puts it; when it is missing, start-up fails with that command.

mod binary;
mod http;
mod server;
mod tls;

pub use binary::{server_binary, server_binary_from, ENV, INSTALL_COMMAND, VERSION};
pub use server::{NatsCluster, NatsServer};
pub use tls::TestPki;

/// What went wrong starting or checking a nats-server; the text says what to do.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
