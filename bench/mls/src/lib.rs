//! Measurement program for docs/adr/0001-mls-implementation.md: the cost of MLS commits with
//! openmls and mls-rs at 100 and 500 members, in the shape protocol v2 needs (Ed25519 identity
//! as the signing key, ciphersuite 0x0003, members entering by external commit with an external
//! pre-shared key derived from the room password). Not part of the product: its own workspace.
#![forbid(unsafe_code)]

pub mod common;
pub mod mlsrs;
pub mod om;
