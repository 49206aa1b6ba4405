//! Whom the client trusts: relays pinned by key like SSH hosts (`known_relays`), and member
//! identities pinned per room by nickname (`pins`).

mod known_relays;
mod pins;

pub use known_relays::{check_relay, KnownRelays, RelayCheck, RelayPin, MAX_KNOWN_RELAYS_LEN};
pub use pins::{skeleton, PinCheck, PinStore, MAX_PINS};
