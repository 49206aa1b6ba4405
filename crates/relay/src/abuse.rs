//! The abuse limits relays serving the same rooms must share: failed-join lockouts per address
//! and per room, room creations per address, and send rates per identity, address and room.
//!
//! The connection layer asks `AbuseLimits`; `LocalLimits` keeps the counts in this process
//! (`limits.rs`). A cluster replaces it with one that shares them (`Relay::with_limits`), so
//! that spreading guesses or floods over several relays gains nothing. Per-connection limits
//! (handshake rate, connections per address, the connection cap) stay per process: they
//! protect the process itself.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use chatroom_crypto::{PublicIdentity, RoomName};

use crate::config::Config;
use crate::limits::{address_key, FailureTracker, SendRate, Verdict};

/// What the failed-join accounting says about an address or a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// No restriction.
    Open,
    /// Delay the attempt by `failure_delay`.
    Slow,
    /// Refuse it (a locked room still admits identities bound in it).
    Locked,
}

impl From<Verdict> for Lockout {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Allow => Lockout::Open,
            Verdict::Slow => Lockout::Slow,
            Verdict::Locked => Lockout::Locked,
        }
    }
}

/// Which send rate an envelope exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendScope {
    Member,
    Address,
    Room,
}

impl SendScope {
    /// The word the refusal names.
    pub fn as_str(&self) -> &'static str {
        match self {
            SendScope::Member => "member",
            SendScope::Address => "address",
            SendScope::Room => "room",
        }
    }
}

/// The shared abuse limits. Every method is a cheap lookup, called before the work it
/// protects; addresses are passed as they are (implementations group IPv6 per /64).
pub trait AbuseLimits: Send + Sync + fmt::Debug + 'static {
    /// Brings the failed-join state of the address and the room up to date just before
    /// `join_lockouts` reads it: limits shared by several relays read the others' counts here.
    /// The default (counts kept in this process) has nothing to read.
    fn refresh_lockouts<'a>(
        &'a self,
        ip: IpAddr,
        room: &'a RoomName,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let _ = (ip, room);
        Box::pin(std::future::ready(()))
    }

    /// The failed-join state of the address and of the room.
    fn join_lockouts(&self, ip: IpAddr, room: &RoomName) -> (Lockout, Lockout);

    /// A join the client could have avoided was refused: counts against the address, and a
    /// wrong password (`room` given) against the room too.
    fn join_failed(&self, ip: IpAddr, wrong_password_in: Option<&RoomName>);

    /// Whether the address may create one more room now; counts the creation if so.
    fn take_creation(&self, ip: IpAddr) -> bool;

    /// Takes one envelope from the identity's, the address's and the room's rates, in that
    /// order; names the first that had none left.
    fn take_send(&self, identity: &PublicIdentity, ip: IpAddr, room: &RoomName) -> Option<SendScope>;
}

/// The abuse limits of one relay process.
#[derive(Debug)]
pub struct LocalLimits {
    ip_failures: FailureTracker<IpAddr>,
    room_failures: FailureTracker<String>,
    /// Rooms created per address within the failure window.
    room_creations: FailureTracker<IpAddr>,
    /// Envelopes per identity (over all its connections), per address and per room.
    send_rate: SendRate<PublicIdentity>,
    send_rate_ip: SendRate<IpAddr>,
    send_rate_room: SendRate<RoomName>,
}

impl LocalLimits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Self {
        let window: Duration = config.failure_window;
        Self {
            ip_failures: FailureTracker::new(config.ip_failures_slow, config.ip_failures_lockout, window),
            room_failures: FailureTracker::new(
                config.room_failures_slow,
                config.room_failures_lockout,
                window,
            ),
            room_creations: FailureTracker::new(
                config.room_creations_per_ip,
                config.room_creations_per_ip,
                window,
            ),
            send_rate: SendRate::new(config.rate_burst, config.rate_per_sec),
            send_rate_ip: SendRate::new(config.ip_rate_burst, config.ip_rate_per_sec),
            send_rate_room: SendRate::new(config.room_rate_burst, config.room_rate_per_sec),
        }
    }
}

impl AbuseLimits for LocalLimits {
    fn join_lockouts(&self, ip: IpAddr, room: &RoomName) -> (Lockout, Lockout) {
        let ip = self.ip_failures.check(&address_key(ip)).into();
        let room = self.room_failures.check(&room.as_str().to_owned()).into();
        (ip, room)
    }

    fn join_failed(&self, ip: IpAddr, wrong_password_in: Option<&RoomName>) {
        self.ip_failures.record_failure(&address_key(ip));
        if let Some(room) = wrong_password_in {
            self.room_failures.record_failure(&room.as_str().to_owned());
        }
    }

    fn take_creation(&self, ip: IpAddr) -> bool {
        let ip = address_key(ip);
        if self.room_creations.check(&ip) == Verdict::Locked {
            return false;
        }
        self.room_creations.record_failure(&ip);
        true
    }

    fn take_send(&self, identity: &PublicIdentity, ip: IpAddr, room: &RoomName) -> Option<SendScope> {
        if !self.send_rate.try_take(identity) {
            Some(SendScope::Member)
        } else if !self.send_rate_ip.try_take(&address_key(ip)) {
            Some(SendScope::Address)
        } else if !self.send_rate_room.try_take(room) {
            Some(SendScope::Room)
        } else {
            None
        }
    }
}
