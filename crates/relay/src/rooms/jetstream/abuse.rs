//! The abuse limits of a relay node on the cluster: failed-join lockouts shared by every node
//! through the lockouts bucket, so that spreading guesses over N nodes gains nothing.
//!
//! Before each join's lockout check the node reads the shared counts of the address and the
//! room (`refresh_lockouts`); each counted failure is added to them in the background, and to
//! this node's own counts at once. A verdict is the stricter of the shared and the local one,
//! so a node cut off from NATS still limits what reaches it. Room creations and send rates
//! stay per node (each node's budget, documented in docs/CLUSTER.md).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use chatroom_crypto::{PublicIdentity, RoomName};
use tokio::sync::Semaphore;
use tracing::warn;

use super::lockouts::Lockouts;
use super::setup::SetupError;
use super::state::room_token;
use crate::abuse::{AbuseLimits, LocalLimits, Lockout, SendScope};
use crate::config::Config;
use crate::limits::address_key;

/// Shared counts kept between a refresh and the check that follows it; when full, all are
/// dropped (every check reads its counts again first, so nothing is lost but a concurrent
/// check's, which then falls back to this node's own counts).
const MAX_SEEN: usize = 65_536;
/// Failure writes in flight at once; beyond it a failure counts on this node only.
const MAX_WRITES: usize = 1024;

/// Thresholds of one kind of lockout.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    slow: u64,
    lockout: u64,
}

impl Thresholds {
    fn verdict(&self, count: u64) -> Lockout {
        if count >= self.lockout {
            Lockout::Locked
        } else if count >= self.slow {
            Lockout::Slow
        } else {
            Lockout::Open
        }
    }
}

/// The abuse limits of a node, with join lockouts shared through the cluster.
#[derive(Debug)]
pub struct SharedLimits {
    local: LocalLimits,
    lockouts: Lockouts,
    window: Duration,
    ip: Thresholds,
    room: Thresholds,
    seen: Arc<Mutex<HashMap<String, u64>>>,
    writes: Arc<Semaphore>,
}

fn ip_key(ip: IpAddr) -> String {
    let bytes = match address_key(ip) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    format!("ip.{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn room_key(room: &RoomName) -> String {
    format!("room.{}", room_token(room.as_str()))
}

impl SharedLimits {
    /// The limits `config` sets, failed joins counted in the cluster's lockouts bucket.
    pub async fn open(js: &jetstream::Context, config: &Config) -> Result<Self, SetupError> {
        Ok(Self {
            local: LocalLimits::new(config),
            lockouts: Lockouts::open(js).await?,
            window: config.failure_window,
            ip: Thresholds {
                slow: config.ip_failures_slow.into(),
                lockout: config.ip_failures_lockout.into(),
            },
            room: Thresholds {
                slow: config.room_failures_slow.into(),
                lockout: config.room_failures_lockout.into(),
            },
            seen: Arc::default(),
            writes: Arc::new(Semaphore::new(MAX_WRITES)),
        })
    }

    fn seen(&self, key: &str) -> Option<u64> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied()
    }

    fn remember(seen: &Mutex<HashMap<String, u64>>, key: String, count: u64) {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_SEEN && !seen.contains_key(&key) {
            seen.clear();
        }
        seen.insert(key, count);
    }

    /// Adds a failure to the shared count of `key`, in the background.
    fn count(&self, key: String) {
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            warn!("too many failed joins being counted in the cluster; this one counts on this node only");
            return;
        };
        let (lockouts, seen, window) = (self.lockouts.clone(), self.seen.clone(), self.window);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match lockouts.record_failure(&key, window).await {
                    Ok(count) => Self::remember(&seen, key, count),
                    Err(e) => warn!(error = %e, "a failed join could not be counted in the cluster"),
                }
                drop(permit);
            });
        }
    }
}

/// The stricter of two verdicts.
fn stricter(a: Lockout, b: Lockout) -> Lockout {
    let rank = |l: Lockout| match l {
        Lockout::Open => 0,
        Lockout::Slow => 1,
        Lockout::Locked => 2,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

impl AbuseLimits for SharedLimits {
    fn refresh_lockouts<'a>(
        &'a self,
        ip: IpAddr,
        room: &'a RoomName,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let (ip_key, room_key) = (ip_key(ip), room_key(room));
            let (ip_count, room_count) =
                tokio::join!(self.lockouts.failures(&ip_key), self.lockouts.failures(&room_key));
            for (key, count) in [(ip_key, ip_count), (room_key, room_count)] {
                match count {
                    Ok(count) => Self::remember(&self.seen, key, count),
                    Err(e) => {
                        warn!(error = %e, "the shared failed-join counts could not be read; this node's own apply")
                    }
                }
            }
        })
    }

    fn join_lockouts(&self, ip: IpAddr, room: &RoomName) -> (Lockout, Lockout) {
        let (local_ip, local_room) = self.local.join_lockouts(ip, room);
        let shared_ip = self.seen(&ip_key(ip)).map_or(Lockout::Open, |c| self.ip.verdict(c));
        let shared_room = self.seen(&room_key(room)).map_or(Lockout::Open, |c| self.room.verdict(c));
        (stricter(local_ip, shared_ip), stricter(local_room, shared_room))
    }

    fn join_failed(&self, ip: IpAddr, wrong_password_in: Option<&RoomName>) {
        self.local.join_failed(ip, wrong_password_in);
        self.count(ip_key(ip));
        if let Some(room) = wrong_password_in {
            self.count(room_key(room));
        }
    }

    fn take_creation(&self, ip: IpAddr) -> bool {
        self.local.take_creation(ip)
    }

    fn take_send(&self, identity: &PublicIdentity, ip: IpAddr, room: &RoomName) -> Option<SendScope> {
        self.local.take_send(identity, ip, room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_group_ipv6_per_64() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b), "one /64, one count");
        assert_eq!(ip_key("10.0.0.1".parse().unwrap()), "ip.0a000001");
        let key = room_key(&RoomName::new("a.b").unwrap());
        assert!(key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.'), "{key}");
    }

    #[test]
    fn the_stricter_verdict_wins_and_thresholds_are_inclusive() {
        let t = Thresholds { slow: 3, lockout: 10 };
        assert_eq!(
            [2, 3, 9, 10].map(|c| t.verdict(c)),
            [Lockout::Open, Lockout::Slow, Lockout::Slow, Lockout::Locked]
        );
        assert_eq!(stricter(Lockout::Slow, Lockout::Locked), Lockout::Locked);
        assert_eq!(stricter(Lockout::Slow, Lockout::Open), Lockout::Slow);
    }
}
