//! The chatroom client library: the protocol core (`session`) that the line mode, the terminal
//! UI and the load generator share, and the pieces around it (trust, state, config, invites,
//! display safety, command parsing). Nothing here writes to the terminal; front ends get
//! `session::Event`s through `session::Callbacks`.
#![forbid(unsafe_code)]

pub mod commands;
pub mod config;
pub mod display;
pub mod error;
pub mod invite;
pub mod passphrase;
pub mod session;
pub mod state;
pub mod transport;
pub mod trust;

pub use chatroom_crypto as crypto;
