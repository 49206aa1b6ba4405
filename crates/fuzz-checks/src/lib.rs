//! The checks behind every fuzz target, as plain functions of the raw input bytes.
//!
//! `fuzz/fuzz_targets/<name>.rs` calls `<name>::check(data)` and nothing else, and
//! `tests/corpus.rs` replays the committed seeds and every saved crash through the same
//! functions, so a crash found by the fuzzer stays a failing test until it is fixed. A check
//! panics (through `assert!`) exactly when an invariant of the protocol code is broken; any
//! input the code rightly refuses just returns.
//!
//! Input formats are read with [`Input`], which never fails: missing bytes read as zero, so
//! every byte string is a valid input. [`Writer`] builds inputs for the seed generator
//! (`examples/gen_seeds.rs`).
#![forbid(unsafe_code)]

pub mod client_session;
pub mod envelope_open;
pub mod frame_decode;
pub mod group_content_kind;
pub mod group_fixture;
pub mod group_info_open;
pub mod group_process;
pub mod handshake_initiator;
pub mod handshake_responder;
pub mod history_share_decode;
pub mod message_decode;
pub mod relay_session;

use rand_core::{CryptoRng, RngCore};

/// A target's check: panics if and only if the input breaks an invariant.
pub type Check = fn(&[u8]);

/// Every target: its name (also the directory of its seeds and regressions) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame_decode", frame_decode::check),
    ("message_decode", message_decode::check),
    ("envelope_open", envelope_open::check),
    ("handshake_responder", handshake_responder::check),
    ("handshake_initiator", handshake_initiator::check),
    ("client_session", client_session::check),
    ("relay_session", relay_session::check),
    ("group_content_kind", group_content_kind::check),
    ("group_info_open", group_info_open::check),
    ("group_process", group_process::check),
    ("history_share_decode", history_share_decode::check),
];

/// A cursor over fuzz input that never fails: reads past the end yield zeros or empty slices.
#[derive(Debug)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps raw fuzz input.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }

    /// One byte, or 0.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// A big-endian `u16`, zero-extended if the input ends.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    /// A big-endian `u64`, zero-extended if the input ends.
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    /// `N` bytes, zero-filled past the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let got = self.take(N);
        out[..got.len()].copy_from_slice(got);
        out
    }

    /// A `u8`-length-prefixed byte string.
    pub fn bytes8(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.take(n)
    }

    /// A `u16`-length-prefixed byte string.
    pub fn bytes16(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.take(n)
    }

    /// How many bytes are left.
    pub fn rest_len(&self) -> usize {
        self.rest.len()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Byte edits `(position, xor mask)`: a count byte (at most 16), then `u16` position and
    /// mask pairs.
    pub fn edits(&mut self) -> Vec<(u16, u8)> {
        let n = usize::from(self.u8() % 17);
        (0..n).map(|_| (self.u16(), self.u8())).collect()
    }

    /// A chunking of a byte stream: a count byte (at most 32), then chunk sizes; a size of 0
    /// means "exactly what the decoder asks for" (`FrameDecoder::wanted`).
    pub fn cuts(&mut self) -> Vec<usize> {
        let n = usize::from(self.u8() % 33);
        (0..n).map(|_| usize::from(self.u8())).collect()
    }
}

/// Builds inputs in the formats [`Input`] reads.
#[derive(Debug, Default)]
pub struct Writer {
    /// The input built so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// An empty input.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }
    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }
    /// Appends a `u8`-length-prefixed byte string (at most 255 bytes).
    pub fn bytes8(&mut self, bytes: &[u8]) -> &mut Self {
        let n = bytes.len().min(255);
        self.u8(n as u8).raw(&bytes[..n])
    }
    /// Appends a `u16`-length-prefixed byte string (at most 65535 bytes).
    pub fn bytes16(&mut self, bytes: &[u8]) -> &mut Self {
        let n = bytes.len().min(usize::from(u16::MAX));
        self.u16(n as u16).raw(&bytes[..n])
    }
    /// Appends edits in the format [`Input::edits`] reads.
    pub fn edits(&mut self, edits: &[(u16, u8)]) -> &mut Self {
        self.u8(edits.len().min(16) as u8);
        for &(pos, mask) in edits.iter().take(16) {
            self.u16(pos).u8(mask);
        }
        self
    }
    /// Appends a chunking in the format [`Input::cuts`] reads.
    pub fn cuts(&mut self, cuts: &[u8]) -> &mut Self {
        self.u8(cuts.len().min(32) as u8);
        for &c in cuts.iter().take(32) {
            self.u8(c);
        }
        self
    }
}

/// Applies `(position, xor mask)` edits, positions taken modulo the length; then, if
/// `resize` is non-zero, truncates (odd) or extends with zeros (even) by `resize / 2` bytes.
pub fn mutate(bytes: &[u8], edits: &[(u16, u8)], resize: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if !out.is_empty() {
        let len = out.len();
        for &(pos, mask) in edits {
            out[usize::from(pos) % len] ^= mask;
        }
    }
    let by = usize::from(resize / 2);
    if resize % 2 == 1 {
        out.truncate(out.len().saturating_sub(by.max(1)));
    } else {
        out.resize(out.len() + by, 0);
    }
    out
}

/// Splits `stream` into chunks as `cuts` says (cycled; 0 means `wanted`, which the caller
/// passes as a closure over its decoder). With no cuts the stream is one chunk.
pub fn next_chunk(stream: &[u8], cuts: &[usize], index: usize, wanted: usize) -> usize {
    let cut = match cuts {
        [] => stream.len(),
        _ => match cuts[index % cuts.len()] {
            0 => wanted.max(1),
            n => n,
        },
    };
    cut.min(stream.len())
}

/// A deterministic byte source for the nonces of envelopes the targets seal, so that seeds
/// and replays are reproducible. Fuzz harness only: it is not random.
#[derive(Debug)]
pub struct FixedRng {
    state: [u8; 32],
    counter: u64,
}

impl FixedRng {
    /// A source that yields bytes determined by `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        Self { state: seed, counter: 0 }
    }
}

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            let i = (self.counter % 32) as usize;
            *b = self.state[i] ^ (self.counter / 32) as u8;
            self.counter = self.counter.wrapping_add(1);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

// The nonce only has to be reproducible here; the targets never rely on its secrecy.
impl CryptoRng for FixedRng {}

/// A nickname from arbitrary bytes, or `fallback` if they are not a valid one.
pub fn nick_or(bytes: &[u8], fallback: &str) -> chatroom_crypto::Nick {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| chatroom_crypto::Nick::new(s).ok())
        .or_else(|| chatroom_crypto::Nick::new(fallback).ok())
        .unwrap_or_else(|| panic!("fallback nickname {fallback:?} must be valid"))
}

/// A room name from arbitrary bytes, or `fallback` if they are not a valid one.
pub fn room_or(bytes: &[u8], fallback: &str) -> chatroom_crypto::RoomName {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| chatroom_crypto::RoomName::new(s).ok())
        .or_else(|| chatroom_crypto::RoomName::new(fallback).ok())
        .unwrap_or_else(|| panic!("fallback room name {fallback:?} must be valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_reads_zeros_past_the_end() {
        let mut input = Input::new(&[1, 2, 3]);
        assert_eq!(input.u16(), 0x0102);
        assert_eq!(input.u64(), 0x0300_0000_0000_0000);
        assert_eq!(input.u8(), 0);
        assert!(input.bytes16().is_empty());
        assert_eq!(input.edits(), Vec::new());
    }

    #[test]
    fn writer_builds_what_input_reads() {
        let mut w = Writer::new();
        w.u8(9)
            .u64(7)
            .bytes8(b"abc")
            .bytes16(&[5; 300])
            .edits(&[(3, 1), (70, 0xff)])
            .cuts(&[0, 4])
            .raw(b"end");
        let mut input = Input::new(&w.out);
        assert_eq!(input.u8(), 9);
        assert_eq!(input.u64(), 7);
        assert_eq!(input.bytes8(), b"abc");
        assert_eq!(input.bytes16(), &[5; 300][..]);
        assert_eq!(input.edits(), vec![(3, 1), (70, 0xff)]);
        assert_eq!(input.cuts(), vec![0, 4]);
        assert_eq!(input.rest(), b"end");
    }

    #[test]
    fn mutate_edits_truncates_and_extends() {
        assert_eq!(mutate(&[0, 0, 0], &[(4, 1)], 0), vec![0, 1, 0]);
        assert_eq!(mutate(&[0, 0, 0], &[(0, 1), (0, 1)], 0), vec![0, 0, 0], "edits can cancel out");
        assert_eq!(mutate(&[1, 2, 3], &[], 1), vec![1, 2], "odd resize truncates at least one byte");
        assert_eq!(mutate(&[1, 2, 3], &[], 5), vec![1]);
        assert_eq!(mutate(&[1], &[], 4), vec![1, 0, 0]);
        assert_eq!(mutate(&[], &[(1, 1)], 1), Vec::<u8>::new());
    }

    #[test]
    fn chunks_follow_the_cuts_and_never_stall() {
        assert_eq!(next_chunk(&[0; 10], &[], 0, 2), 10, "no cuts: one chunk");
        assert_eq!(next_chunk(&[0; 10], &[3, 0], 0, 2), 3);
        assert_eq!(next_chunk(&[0; 10], &[3, 0], 1, 2), 2, "0 reads what the decoder wants");
        assert_eq!(next_chunk(&[0; 10], &[0], 0, 0), 1, "a chunk is never empty");
        assert_eq!(next_chunk(&[0; 2], &[200], 0, 0), 2);
    }

    #[test]
    fn fixed_rng_is_reproducible() {
        let (mut a, mut b) = (FixedRng::new([3; 32]), FixedRng::new([3; 32]));
        let (mut x, mut y) = ([0u8; 40], [0u8; 40]);
        a.fill_bytes(&mut x);
        b.fill_bytes(&mut y);
        assert_eq!(x, y);
        assert_ne!(x[..32], x[8..], "the stream is not one repeated byte");
    }
}
