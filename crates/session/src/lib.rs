//! The chatroom client's protocol core: the session (`session`) that the line mode, the terminal
//! UI and the load generator share, and the pieces around it (trust, per-room state, invites,
//! display safety). No terminal, prompt or CLI dependency: front ends get
//! `session::Event`s through `session::Callbacks`, and errors come back typed, saying what
//! happened; what a user should do about one is the front end's to say.
#![forbid(unsafe_code)]

pub mod display;
pub mod error;
pub mod invite;
pub mod listed;
pub mod session;
pub mod state;
pub mod transport;
pub mod trust;
pub mod v2;
pub mod v2_history;
pub mod v2_session;

pub use chatroom_crypto as crypto;
