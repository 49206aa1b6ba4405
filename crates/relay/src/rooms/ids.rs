//! Connection ids unique across relay processes: a random node id drawn when the process
//! starts, and a counter within it. Rooms shared by several relays tell two connections of one
//! identity apart by it, so a per-process counter (which every process starts at 1) would not do.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use rand_core::{OsRng, RngCore};

/// One connection, unique over every relay process (a 64-bit random node, then a counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    node: u64,
    serial: u64,
}

impl ConnectionId {
    /// The id of connection `serial` of process `node`.
    pub fn new(node: u64, serial: u64) -> Self {
        Self { node, serial }
    }

    /// The process that accepted the connection.
    pub fn node(&self) -> u64 {
        self.node
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.node, self.serial)
    }
}

/// Hands out the ids of one relay process.
#[derive(Debug)]
pub(crate) struct ConnectionIds {
    node: u64,
    next: AtomicU64,
}

impl ConnectionIds {
    /// Ids under a node id drawn from the operating system's generator: two processes share
    /// one with probability 2^-64 per pair.
    pub(crate) fn random() -> Self {
        Self { node: OsRng.next_u64(), next: AtomicU64::new(1) }
    }

    pub(crate) fn next(&self) -> ConnectionId {
        ConnectionId::new(self.node, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_within_a_process_and_between_processes() {
        let (a, b) = (ConnectionIds::random(), ConnectionIds::random());
        assert_ne!(a.node, b.node, "two processes draw different nodes");
        let (first, second) = (a.next(), a.next());
        assert_ne!(first, second);
        assert_ne!(first, b.next(), "the same serial on another node is another id");
        assert_eq!(first.node(), a.node);
    }
}
