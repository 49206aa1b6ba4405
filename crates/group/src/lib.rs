//! The sans-IO MLS layer of chatroom protocol v2 (docs/PROTOCOL.md, part II): a member's room
//! group over AWS's mls-rs, the GroupInfo sealed for the relay, entry by external commit with
//! the password's pre-shared key, and the room log's ordering rule. No sockets, no tokio: the
//! caller feeds log entries in sequence order and sends what this crate returns.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
#[cfg(test)]
mod deletion_tests;
mod error;
mod group_info;
mod ids;
mod room;
mod rules;
mod settings;
mod state;
mod storage;
#[cfg(test)]
mod test_vectors;
mod wire;

pub use error::GroupError;
pub use group_info::{
    open as open_group_info, seal as seal_group_info, seal_with_nonce as seal_group_info_with_nonce,
    OpenedGroupInfo, MAX_SEALED_GROUP_INFO, SEALED_GROUP_INFO_VERSION, SEALED_HEADER_LEN,
};
pub use ids::{RoomRef, CIPHER_SUITE};
pub use room::{CommitSummary, Event, Kind, LogEntry, Room, MAX_MLS_LEN};
pub use settings::{RoomSettings, ROOM_EXTENSION};
pub use wire::{content_kind, message_epoch};
