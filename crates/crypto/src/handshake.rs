//! The Noise handshake between client and relay, as a typestate over `snow`:
//! `Initiator::start` -> `InitiatorAwaitingReply` -> `InitiatorReadyToFinish` -> `Transport`,
//! and `Responder::new` -> `ResponderAwaitingFinish` -> `Transport`.
//!
//! Pattern `Noise_XX_25519_ChaChaPoly_BLAKE2s`, prologue `chatroom/1`, all payloads empty:
//! ```text
//! -> e
//! <- e, ee, s, es
//! -> s, se
//! ```
//! Every handshake message has one valid length, checked before any Diffie-Hellman work.
//!
//! Protocol version 2 (docs/PROTOCOL.md section 19) uses prologue `chatroom/2` and
//! puts the version byte `0x02` in clear as message 1's payload (33 bytes). The relay picks the
//! prologue from message 1's length, so it speaks both versions on one port, and the prologue
//! binds the choice: a peer that reads the byte differently fails at message 2.

use std::fmt;
use std::sync::Arc;

use rand_core::OsRng;
use snow::HandshakeState;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::NoiseError;
use crate::frame::FRAME_HEADER_LEN;
use crate::message::MAX_PLAINTEXT_LEN;
use crate::noise_cipher::ChaChaPolyKey;
use crate::noise_dh::KnownKeyResolver;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash, so a peer speaking anything else fails the handshake.
pub const PROLOGUE: &[u8] = b"chatroom/1";
/// Bound into a version-2 handshake.
pub const PROLOGUE_V2: &[u8] = b"chatroom/2";
/// `-> e`
pub const HANDSHAKE1_LEN: usize = 32;
/// `-> e` with the clear payload `0x02` (protocol version 2).
pub const HANDSHAKE1_V2_LEN: usize = 33;
/// `<- e, ee, s, es`: ephemeral, encrypted static with tag, empty payload tag.
pub const HANDSHAKE2_LEN: usize = 32 + 32 + 16 + 16;
/// `-> s, se`: encrypted static with tag, empty payload tag.
pub const HANDSHAKE3_LEN: usize = 32 + 16 + 16;
const TAG_LEN: usize = 16;

/// An X25519 static key pair (the relay's long-term key, or a client's per-connection key).
pub struct StaticKeypair {
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl StaticKeypair {
    /// A fresh key pair from the operating system's random number generator.
    pub fn generate() -> Self {
        let secret = StaticSecret::random_from_rng(OsRng);
        Self::from_private(&secret.to_bytes())
    }

    /// Rebuilds a key pair from its private half.
    pub fn from_private(private: &[u8; 32]) -> Self {
        let secret = StaticSecret::from(*private);
        let public = PublicKey::from(&secret).to_bytes();
        Self { private: Zeroizing::new(secret.to_bytes()), public }
    }

    /// The public key (the relay's fingerprint is its hex).
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// The private key, for saving to a key file.
    pub fn private(&self) -> &[u8; 32] {
        &self.private
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticKeypair")
    }
}

fn build(local: &StaticKeypair, initiator: bool, version: u8) -> Result<HandshakeState, NoiseError> {
    build_versioned(local, initiator, None, version)
}

fn build_versioned(
    local: &StaticKeypair,
    initiator: bool,
    fixed_ephemeral: Option<&[u8; 32]>,
    version: u8,
) -> Result<HandshakeState, NoiseError> {
    let prologue = if version == 2 { PROLOGUE_V2 } else { PROLOGUE };
    // NOISE_PARAMS is a constant that snow supports; failure here would be a build bug, but we
    // still report it as a handshake failure rather than panic.
    let params = NOISE_PARAMS.parse().map_err(|_| NoiseError::Handshake)?;
    // The key pair's public half is known: the resolver keeps snow from deriving it again.
    let resolver = KnownKeyResolver::new(resolver(), &local.private, &local.public);
    let builder = snow::Builder::with_resolver(params, Box::new(resolver))
        .local_private_key(local.private.as_ref())
        .and_then(|b| b.prologue(prologue))
        .map_err(|_| NoiseError::Handshake)?;
    let builder = match fixed_ephemeral {
        Some(e) => builder.fixed_ephemeral_key_for_testing_only(e),
        None => builder,
    };
    if initiator { builder.build_initiator() } else { builder.build_responder() }
        .map_err(|_| NoiseError::Handshake)
}

/// What `KnownKeyResolver` wraps: ring for the ephemeral keys' randomness, snow's default
/// RustCrypto resolver for BLAKE2s, which ring does not offer. X25519 and ChaCha20-Poly1305
/// come from the wrapper (`noise_dh`, `noise_cipher`: ring's AEAD, which seals a 150-byte
/// frame in about an eighth of RustCrypto's time, docs/BENCHMARKS.md).
pub(crate) fn resolver() -> snow::resolvers::BoxedCryptoResolver {
    use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
    Box::new(FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver)))
}

fn write(state: &mut HandshakeState, len: usize) -> Result<Vec<u8>, NoiseError> {
    write_payload(state, &[], len)
}

fn write_payload(state: &mut HandshakeState, payload: &[u8], len: usize) -> Result<Vec<u8>, NoiseError> {
    // snow wants room for a payload tag even where the pattern has none yet.
    let mut out = vec![0u8; len + TAG_LEN];
    let n = state.write_message(payload, &mut out).map_err(|_| NoiseError::Handshake)?;
    if n != len {
        return Err(NoiseError::Handshake);
    }
    out.truncate(n);
    Ok(out)
}

fn read(state: &mut HandshakeState, msg: &[u8], step: u8, expected: usize) -> Result<(), NoiseError> {
    if msg.len() != expected {
        return Err(NoiseError::HandshakeLength { step, len: msg.len(), expected });
    }
    let mut payload = [0u8; 0];
    match state.read_message(msg, &mut payload) {
        Ok(0) => Ok(()),
        _ => Err(NoiseError::Handshake),
    }
}

/// Whether X25519 of `private` with `public` is not all zero, i.e. `public` is not one of the
/// low-order points that would make the shared secret independent of the private key.
fn is_contributory(private: &[u8; 32], public: &[u8; 32]) -> bool {
    StaticSecret::from(*private).diffie_hellman(&PublicKey::from(*public)).was_contributory()
}

fn remote_static(state: &HandshakeState) -> Result<[u8; 32], NoiseError> {
    state.get_remote_static().and_then(|k| k.try_into().ok()).ok_or(NoiseError::Handshake)
}

fn into_transport(state: HandshakeState) -> Result<Transport, NoiseError> {
    into_versioned_transport(state, 1)
}

fn into_versioned_transport(mut state: HandshakeState, version: u8) -> Result<Transport, NoiseError> {
    if !state.is_handshake_finished() {
        return Err(NoiseError::Handshake);
    }
    let handshake_hash: [u8; 32] =
        state.get_handshake_hash().try_into().map_err(|_| NoiseError::Handshake)?;
    let remote_static = remote_static(&state)?;
    // The Noise split: the first key carries initiator -> responder, the second the reverse.
    let (first, second) = state.dangerously_get_raw_split();
    let (first, second) = (Zeroizing::new(first), Zeroizing::new(second));
    let (send, receive) = if state.is_initiator() { (first, second) } else { (second, first) };
    let keys = Arc::new(SessionKeys { send: ChaChaPolyKey::new(send), receive: ChaChaPolyKey::new(receive) });
    Ok(Transport {
        sender: TransportSender { keys: keys.clone(), nonce: 0 },
        receiver: TransportReceiver { keys, nonce: 0 },
        handshake_hash,
        remote_static,
        version,
    })
}

/// A complete handshake of protocol `version` (1 or 2) with fixed ephemeral keys, for the
/// protocol's test vectors: both states after message 3, and messages 1, 2 and 3.
fn fixed_handshake(
    version: u8,
    initiator: &StaticKeypair,
    initiator_ephemeral: &[u8; 32],
    responder: &StaticKeypair,
    responder_ephemeral: &[u8; 32],
) -> Result<(HandshakeState, HandshakeState, [Vec<u8>; 3]), NoiseError> {
    let mut i = build_versioned(initiator, true, Some(initiator_ephemeral), version)?;
    let mut r = build_versioned(responder, false, Some(responder_ephemeral), version)?;
    // -> e (version 2: with the clear payload 0x02)
    let m1 = if version == 2 {
        let m1 = write_payload(&mut i, &[2], HANDSHAKE1_V2_LEN)?;
        let mut payload = [0u8; 1];
        match r.read_message(&m1, &mut payload) {
            Ok(1) if payload == [2] => {}
            _ => return Err(NoiseError::Handshake),
        }
        m1
    } else {
        let m1 = write(&mut i, HANDSHAKE1_LEN)?;
        read(&mut r, &m1, 1, HANDSHAKE1_LEN)?;
        m1
    };
    let m2 = write(&mut r, HANDSHAKE2_LEN)?;
    read(&mut i, &m2, 2, HANDSHAKE2_LEN)?;
    let m3 = write(&mut i, HANDSHAKE3_LEN)?;
    read(&mut r, &m3, 3, HANDSHAKE3_LEN)?;
    if i.get_handshake_hash() != r.get_handshake_hash() {
        return Err(NoiseError::Handshake);
    }
    Ok((i, r, [m1, m2, m3]))
}

/// The fixed-key handshake's messages 1, 2 and 3 and its handshake hash.
pub(crate) fn vector_transcript(
    version: u8,
    initiator: &StaticKeypair,
    initiator_ephemeral: &[u8; 32],
    responder: &StaticKeypair,
    responder_ephemeral: &[u8; 32],
) -> Result<[Vec<u8>; 4], NoiseError> {
    let (i, _, [m1, m2, m3]) =
        fixed_handshake(version, initiator, initiator_ephemeral, responder, responder_ephemeral)?;
    Ok([m1, m2, m3, i.get_handshake_hash().to_vec()])
}

/// The fixed-key handshake's two ends in transport mode: (initiator, responder).
pub(crate) fn vector_transports(
    initiator: &StaticKeypair,
    initiator_ephemeral: &[u8; 32],
    responder: &StaticKeypair,
    responder_ephemeral: &[u8; 32],
) -> Result<(Transport, Transport), NoiseError> {
    let (i, r, _) = fixed_handshake(1, initiator, initiator_ephemeral, responder, responder_ephemeral)?;
    Ok((into_transport(i)?, into_transport(r)?))
}

/// The client side, before anything is sent.
#[derive(Debug)]
pub struct Initiator;

impl Initiator {
    /// Starts a handshake: returns the state and message 1 (`-> e`).
    pub fn start(local: &StaticKeypair) -> Result<(InitiatorAwaitingReply, Vec<u8>), NoiseError> {
        let mut state = build(local, true, 1)?;
        // -> e
        let msg1 = write(&mut state, HANDSHAKE1_LEN)?;
        Ok((InitiatorAwaitingReply { state, local_private: local.private.clone(), version: 1 }, msg1))
    }

    /// Starts a version-2 handshake: prologue `chatroom/2`, message 1 `-> e` with the clear
    /// payload `0x02` (33 bytes).
    pub fn start_v2(local: &StaticKeypair) -> Result<(InitiatorAwaitingReply, Vec<u8>), NoiseError> {
        let mut state = build(local, true, 2)?;
        let msg1 = write_payload(&mut state, &[2], HANDSHAKE1_V2_LEN)?;
        Ok((InitiatorAwaitingReply { state, local_private: local.private.clone(), version: 2 }, msg1))
    }
}

/// The client side, waiting for message 2.
pub struct InitiatorAwaitingReply {
    state: HandshakeState,
    // Kept to test the relay's key for contributory behaviour (snow does not).
    local_private: Zeroizing<[u8; 32]>,
    version: u8,
}

impl InitiatorAwaitingReply {
    /// Reads message 2 (`<- e, ee, s, es`), learning and authenticating the relay's key.
    pub fn read_reply(mut self, msg2: &[u8]) -> Result<InitiatorReadyToFinish, NoiseError> {
        // <- e, ee, s, es
        read(&mut self.state, msg2, 2, HANDSHAKE2_LEN)?;
        let relay_key = remote_static(&self.state)?;
        // A low-order "static key" makes `es` an all-zero secret that proves nothing; snow
        // accepts it, so refuse it here (RFC 7748 section 6.1's all-zero check).
        if !is_contributory(&self.local_private, &relay_key) {
            return Err(NoiseError::Handshake);
        }
        Ok(InitiatorReadyToFinish { state: self.state, relay_key, version: self.version })
    }
}

/// The client side after message 2: the relay's key is known and should be checked against a
/// pin before `finish`.
pub struct InitiatorReadyToFinish {
    state: HandshakeState,
    relay_key: [u8; 32],
    version: u8,
}

impl InitiatorReadyToFinish {
    /// The relay's static public key, proven by message 2.
    pub fn relay_key(&self) -> &[u8; 32] {
        &self.relay_key
    }

    /// Writes message 3 (`-> s, se`) and enters transport mode.
    pub fn finish(mut self) -> Result<(Transport, Vec<u8>), NoiseError> {
        // -> s, se
        let msg3 = write(&mut self.state, HANDSHAKE3_LEN)?;
        Ok((into_versioned_transport(self.state, self.version)?, msg3))
    }
}

/// The relay side, before message 1.
pub struct Responder {
    local: StaticKeypair,
}

impl Responder {
    /// A responder with the relay's static key.
    pub fn new(local: &StaticKeypair) -> Result<Self, NoiseError> {
        Ok(Self { local: StaticKeypair::from_private(local.private()) })
    }

    /// Reads message 1 (`-> e`, 32 bytes for version 1; 33 with the payload `0x02` for
    /// version 2) and writes message 2 (`<- e, ee, s, es`) under that version's prologue.
    pub fn read_hello(self, msg1: &[u8]) -> Result<(ResponderAwaitingFinish, Vec<u8>), NoiseError> {
        let version = if msg1.len() == HANDSHAKE1_V2_LEN { 2 } else { 1 };
        let mut state = build(&self.local, false, version)?;
        // -> e
        if version == 2 {
            let mut payload = [0u8; 1];
            match state.read_message(msg1, &mut payload) {
                Ok(1) if payload == [2] => {}
                _ => return Err(NoiseError::Handshake),
            }
        } else {
            read(&mut state, msg1, 1, HANDSHAKE1_LEN)?;
        }
        // <- e, ee, s, es
        let msg2 = write(&mut state, HANDSHAKE2_LEN)?;
        Ok((ResponderAwaitingFinish { state, version }, msg2))
    }
}

/// The relay side, waiting for message 3.
pub struct ResponderAwaitingFinish {
    state: HandshakeState,
    version: u8,
}

impl ResponderAwaitingFinish {
    /// Reads message 3 (`-> s, se`) and enters transport mode.
    pub fn read_finish(mut self, msg3: &[u8]) -> Result<Transport, NoiseError> {
        // -> s, se
        read(&mut self.state, msg3, 3, HANDSHAKE3_LEN)?;
        into_versioned_transport(self.state, self.version)
    }
}

macro_rules! opaque_debug {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    )*};
}
opaque_debug!(
    InitiatorAwaitingReply,
    InitiatorReadyToFinish,
    Responder,
    ResponderAwaitingFinish,
    Transport,
    TransportSender,
    TransportReceiver
);

/// An established Noise session. `split` it to send and receive from different tasks.
pub struct Transport {
    sender: TransportSender,
    receiver: TransportReceiver,
    handshake_hash: [u8; 32],
    remote_static: [u8; 32],
    version: u8,
}

impl Transport {
    /// The protocol version the handshake was made for (1 or 2), bound by its prologue.
    pub fn protocol_version(&self) -> u8 {
        self.version
    }

    /// The handshake hash `h`: unique to this session, and what a join signature covers.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// The peer's static public key.
    pub fn remote_static(&self) -> &[u8; 32] {
        &self.remote_static
    }

    /// Encrypts `plaintext` and appends it to `out` as one frame.
    pub fn seal_frame(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        self.sender.seal_frame(plaintext, out)
    }

    /// Decrypts one frame's payload.
    pub fn open(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        self.receiver.open(ciphertext)
    }

    /// Separates the two directions.
    pub fn split(self) -> (TransportSender, TransportReceiver) {
        (self.sender, self.receiver)
    }
}

/// The nonce after `nonce`: the last one, 2^64 - 1, is never used (Noise section 5.1). A
/// direction moves to it only once its message is sealed or opened.
fn following(nonce: u64) -> Result<u64, NoiseError> {
    nonce.checked_add(1).ok_or(NoiseError::NonceExhausted)
}

/// A session's two transport keys, one allocation shared by its two halves: each half is two
/// words in the task that holds it (every idle member's connection and writer tasks).
struct SessionKeys {
    send: ChaChaPolyKey,
    receive: ChaChaPolyKey,
}

/// The sending direction of a session.
pub struct TransportSender {
    keys: Arc<SessionKeys>,
    nonce: u64,
}

impl TransportSender {
    /// Encrypts `plaintext` (at most `MAX_PLAINTEXT_LEN` bytes) and appends
    /// `length | ciphertext` to `out`.
    pub fn seal_frame(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        self.seal_parts(&[plaintext], out)
    }

    /// Encrypts the concatenation of `parts` (together at most `MAX_PLAINTEXT_LEN` bytes) as
    /// one transport message and appends `length | ciphertext` to `out`. Each part is copied
    /// once, into `out`, and encrypted there. A refused message appends nothing and takes no
    /// nonce.
    pub fn seal_parts<P: AsRef<[u8]>>(&mut self, parts: &[P], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let len = parts.iter().fold(0usize, |sum, part| sum.saturating_add(part.as_ref().len()));
        if len > MAX_PLAINTEXT_LEN {
            return Err(NoiseError::PlaintextTooLong(len));
        }
        let next = following(self.nonce)?;
        let start = out.len();
        out.reserve(FRAME_HEADER_LEN + len + TAG_LEN);
        // len + TAG_LEN <= 65535 by the check above.
        out.extend_from_slice(&((len + TAG_LEN) as u16).to_be_bytes());
        for part in parts {
            out.extend_from_slice(part.as_ref());
        }
        let body = start + FRAME_HEADER_LEN;
        match out
            .get_mut(body..)
            .and_then(|plaintext| self.keys.send.seal_in_place(self.nonce, &[], plaintext))
        {
            Some(tag) => {
                out.extend_from_slice(tag.as_ref());
                self.nonce = next;
                Ok(())
            }
            None => {
                out.truncate(start);
                Err(NoiseError::PlaintextTooLong(len))
            }
        }
    }
}

/// The receiving direction of a session.
pub struct TransportReceiver {
    keys: Arc<SessionKeys>,
    nonce: u64,
}

impl TransportReceiver {
    /// Decrypts one frame's payload. Any failure means the stream was altered: close it.
    pub fn open(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if ciphertext.len() < TAG_LEN || ciphertext.len() > MAX_PLAINTEXT_LEN + TAG_LEN {
            return Err(NoiseError::Decrypt);
        }
        let next = following(self.nonce)?;
        let (body, tag) = ciphertext.split_at(ciphertext.len() - TAG_LEN);
        let mut plaintext = body.to_vec();
        self.keys.receive.open_in_place(self.nonce, &[], &mut plaintext, tag).ok_or(NoiseError::Decrypt)?;
        // Only a verified message advances the counter.
        self.nonce = next;
        Ok(plaintext)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::decode_frame;

    /// An in-memory initiator/responder pair after a complete handshake.
    pub(crate) fn pair() -> (Transport, Transport, StaticKeypair) {
        let relay = StaticKeypair::generate();
        let client = StaticKeypair::generate();
        let (init, m1) = Initiator::start(&client).unwrap();
        let (resp, m2) = Responder::new(&relay).unwrap().read_hello(&m1).unwrap();
        let ready = init.read_reply(&m2).unwrap();
        assert_eq!(ready.relay_key(), relay.public());
        let (ct, m3) = ready.finish().unwrap();
        let rt = resp.read_finish(&m3).unwrap();
        assert_eq!(rt.remote_static(), client.public());
        (ct, rt, relay)
    }

    #[test]
    fn handshake_lengths_and_hash_agree() {
        let relay = StaticKeypair::generate();
        let (init, m1) = Initiator::start(&StaticKeypair::generate()).unwrap();
        assert_eq!(m1.len(), HANDSHAKE1_LEN);
        let (resp, m2) = Responder::new(&relay).unwrap().read_hello(&m1).unwrap();
        assert_eq!(m2.len(), HANDSHAKE2_LEN);
        let (ct, m3) = init.read_reply(&m2).unwrap().finish().unwrap();
        assert_eq!(m3.len(), HANDSHAKE3_LEN);
        let rt = resp.read_finish(&m3).unwrap();
        assert_eq!(ct.handshake_hash(), rt.handshake_hash());
    }

    #[test]
    fn transport_round_trip_both_ways_with_split_halves() {
        let (client, relay, _) = pair();
        let (mut cs, mut cr) = client.split();
        let (mut rs, mut rr) = relay.split();
        for i in 0..3u8 {
            let mut frame = Vec::new();
            cs.seal_frame(&[i; 10], &mut frame).unwrap();
            let (payload, used) = decode_frame(&frame, usize::MAX).unwrap().unwrap();
            assert_eq!(used, frame.len());
            assert_eq!(rr.open(payload).unwrap(), vec![i; 10]);
            let mut back = Vec::new();
            rs.seal_frame(b"ok", &mut back).unwrap();
            assert_eq!(cr.open(&back[2..]).unwrap(), b"ok");
        }
    }

    /// Two sessions with the same keys: their initiators' senders seal the same bytes.
    fn twin_senders() -> (TransportSender, TransportSender, TransportReceiver) {
        let twin = || {
            let (initiator, responder) =
                (StaticKeypair::from_private(&[1; 32]), StaticKeypair::from_private(&[2; 32]));
            vector_transports(&initiator, &[3; 32], &responder, &[4; 32]).unwrap()
        };
        let ((a, relay), (b, _)) = (twin(), twin());
        (a.split().0, b.split().0, relay.split().1)
    }

    /// Parts seal to the frame of their concatenation, appended to what `out` held, and their
    /// total is held to one transport message's plaintext; a refused message takes no nonce.
    #[test]
    fn parts_seal_to_the_frame_of_their_concatenation() {
        let (mut parts_sender, mut whole_sender, mut relay) = twin_senders();
        let (mut from_parts, mut from_whole) = (vec![0xAA], vec![0xAA]);
        for _ in 0..2 {
            let parts: [&[u8]; 3] = [b"first item", b"", b"third"];
            parts_sender.seal_parts(&parts, &mut from_parts).unwrap();
            whole_sender.seal_frame(b"first itemthird", &mut from_whole).unwrap();
        }
        assert_eq!(from_parts, from_whole);
        let frame_len = 2 + 15 + TAG_LEN;
        assert_eq!(from_parts.len(), 1 + 2 * frame_len);
        assert_eq!(u16::from_be_bytes([from_parts[1], from_parts[2]]) as usize, 15 + TAG_LEN);
        assert_eq!(relay.open(&from_parts[3..1 + frame_len]).unwrap(), b"first itemthird");
        assert_eq!(relay.open(&from_parts[3 + frame_len..]).unwrap(), b"first itemthird");

        let half = vec![0u8; MAX_PLAINTEXT_LEN / 2 + 1];
        let before = from_parts.len();
        assert_eq!(
            parts_sender.seal_parts(&[&half[..], &half[..]], &mut from_parts),
            Err(NoiseError::PlaintextTooLong(2 * half.len()))
        );
        assert_eq!(from_parts.len(), before, "nothing appended for a refused message");
        let mut next = Vec::new();
        parts_sender.seal_parts(&[b"after"], &mut next).unwrap();
        assert_eq!(relay.open(&next[2..]).unwrap(), b"after", "and no nonce taken");
    }

    /// Noise never uses nonce 2^64 - 1: the message before it is the last either side takes.
    #[test]
    fn the_last_nonce_is_never_used() {
        let (client, mut relay, _) = pair();
        let (mut sender, _) = client.split();
        sender.nonce = u64::MAX - 1;
        relay.receiver.nonce = u64::MAX - 1;
        let mut frame = Vec::new();
        sender.seal_frame(b"last", &mut frame).unwrap();
        assert_eq!(relay.open(&frame[2..]).unwrap(), b"last");
        assert_eq!(sender.seal_frame(b"one more", &mut Vec::new()), Err(NoiseError::NonceExhausted));
        assert_eq!(relay.open(&frame[2..]), Err(NoiseError::NonceExhausted));
    }

    #[test]
    fn largest_plaintext_fits_one_frame_and_one_more_byte_is_refused() {
        let (mut client, mut relay, _) = pair();
        let mut frame = Vec::new();
        client.seal_frame(&vec![1; MAX_PLAINTEXT_LEN], &mut frame).unwrap();
        assert_eq!(frame.len(), 2 + 65_535);
        assert_eq!(relay.open(&frame[2..]).unwrap().len(), MAX_PLAINTEXT_LEN);
        let mut out = Vec::new();
        assert_eq!(
            client.seal_frame(&vec![1; MAX_PLAINTEXT_LEN + 1], &mut out),
            Err(NoiseError::PlaintextTooLong(MAX_PLAINTEXT_LEN + 1))
        );
    }

    #[test]
    fn tampered_replayed_or_reordered_transport_messages_fail() {
        let (mut client, mut relay, _) = pair();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        client.seal_frame(b"first", &mut a).unwrap();
        client.seal_frame(b"second", &mut b).unwrap();
        let mut flipped = a[2..].to_vec();
        flipped[0] ^= 1;
        assert_eq!(relay.open(&flipped), Err(NoiseError::Decrypt));
        assert_eq!(relay.open(&b[2..]), Err(NoiseError::Decrypt), "reordered");
        assert_eq!(relay.open(&a[2..]).unwrap(), b"first");
        assert_eq!(relay.open(&a[2..]), Err(NoiseError::Decrypt), "replayed");
        assert_eq!(relay.open(&[0; 5]), Err(NoiseError::Decrypt), "short");
    }

    #[test]
    fn wrong_lengths_are_refused_before_crypto() {
        let relay = StaticKeypair::generate();
        assert_eq!(
            Responder::new(&relay).unwrap().read_hello(&[0; 31]).err(),
            Some(NoiseError::HandshakeLength { step: 1, len: 31, expected: 32 })
        );
        let (init, _) = Initiator::start(&StaticKeypair::generate()).unwrap();
        assert!(matches!(init.read_reply(&[0; 95]), Err(NoiseError::HandshakeLength { step: 2, .. })));
    }

    #[test]
    fn version_2_is_chosen_by_message_one_and_bound_by_the_prologue() {
        let relay = StaticKeypair::generate();
        let (init, m1) = Initiator::start_v2(&StaticKeypair::generate()).unwrap();
        assert_eq!((m1.len(), m1[32]), (HANDSHAKE1_V2_LEN, 2), "the version byte is in clear");
        let (resp, m2) = Responder::new(&relay).unwrap().read_hello(&m1).unwrap();
        let (ct, m3) = init.read_reply(&m2).unwrap().finish().unwrap();
        let rt = resp.read_finish(&m3).unwrap();
        assert_eq!((ct.protocol_version(), rt.protocol_version()), (2, 2));
        assert_eq!(ct.handshake_hash(), rt.handshake_hash());
        let (_, v1, _) = pair();
        assert_eq!(v1.protocol_version(), 1, "version 1 on the same responder");

        // Another version byte is refused; a relay that answers a v2 hello as v1 (dropping
        // the byte) fails the initiator at message 2, because the prologues differ.
        let mut other = m1.clone();
        other[32] = 3;
        assert_eq!(Responder::new(&relay).unwrap().read_hello(&other).err(), Some(NoiseError::Handshake));
        let (init, m1) = Initiator::start_v2(&StaticKeypair::generate()).unwrap();
        let (_, m2_v1) = Responder::new(&relay).unwrap().read_hello(&m1[..32]).unwrap();
        assert_eq!(init.read_reply(&m2_v1).err(), Some(NoiseError::Handshake));
    }

    #[test]
    fn garbage_message_two_fails_cleanly() {
        let (init, _) = Initiator::start(&StaticKeypair::generate()).unwrap();
        assert_eq!(init.read_reply(&[7; HANDSHAKE2_LEN]).err(), Some(NoiseError::Handshake));
    }

    #[test]
    fn a_relay_with_another_key_is_seen() {
        let real = StaticKeypair::generate();
        let impostor = StaticKeypair::generate();
        let (init, m1) = Initiator::start(&StaticKeypair::generate()).unwrap();
        let (_, m2) = Responder::new(&impostor).unwrap().read_hello(&m1).unwrap();
        let ready = init.read_reply(&m2).unwrap();
        assert_ne!(ready.relay_key(), real.public());
        assert_eq!(ready.relay_key(), impostor.public());
    }

    #[test]
    fn low_order_keys_are_not_contributory() {
        let mine = StaticKeypair::generate();
        // The all-zero point and u = 1 are of low order; a real key is contributory.
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(!is_contributory(mine.private(), &[0; 32]));
        assert!(!is_contributory(mine.private(), &one));
        // u = 325606250916557431795983626356110631294008115727848805560023387167927233504,
        // a point of order 8.
        let order8 = hex_literal("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
        assert!(!is_contributory(mine.private(), &order8));
        assert!(is_contributory(mine.private(), StaticKeypair::generate().public()));
    }

    fn hex_literal(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    #[test]
    fn transport_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Transport>();
        is_send::<TransportSender>();
        is_send::<TransportReceiver>();
        is_send::<ResponderAwaitingFinish>();
    }

    /// The relay's responder, whose resolver takes the key pair's cached public half, against
    /// an initiator built by plain snow with its default resolver: both ends agree, the relay's
    /// key seen by snow is the one x25519-dalek derives from the private key, and transport
    /// messages pass both ways.
    #[test]
    fn the_known_key_resolver_interoperates_with_plain_snow() {
        let relay = StaticKeypair::generate();
        let derived = PublicKey::from(&StaticSecret::from(*relay.private())).to_bytes();
        let client = StaticKeypair::generate();
        let mut plain = snow::Builder::new(NOISE_PARAMS.parse().unwrap())
            .local_private_key(client.private())
            .unwrap()
            .prologue(PROLOGUE)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut m1 = [0u8; 64];
        let n1 = plain.write_message(&[], &mut m1).unwrap();
        let (resp, m2) = Responder::new(&relay).unwrap().read_hello(&m1[..n1]).unwrap();
        plain.read_message(&m2, &mut []).unwrap();
        assert_eq!(plain.get_remote_static(), Some(&derived[..]));
        let mut m3 = [0u8; 128];
        let n3 = plain.write_message(&[], &mut m3).unwrap();
        let mut relay_end = resp.read_finish(&m3[..n3]).unwrap();
        assert_eq!(relay_end.remote_static(), client.public());
        assert_eq!(relay_end.handshake_hash(), plain.get_handshake_hash());

        let mut plain = plain.into_transport_mode().unwrap();
        let mut frame = Vec::new();
        relay_end.seal_frame(b"to the client", &mut frame).unwrap();
        let mut text = [0u8; 128];
        let n = plain.read_message(&frame[FRAME_HEADER_LEN..], &mut text).unwrap();
        assert_eq!(&text[..n], b"to the client");
        let mut sealed = [0u8; 128];
        let n = plain.write_message(b"to the relay", &mut sealed).unwrap();
        assert_eq!(relay_end.open(&sealed[..n]).unwrap(), b"to the relay");
    }

    #[test]
    fn static_key_round_trip() {
        let k = StaticKeypair::generate();
        let again = StaticKeypair::from_private(k.private());
        assert_eq!(k.public(), again.public());
        assert_eq!(format!("{k:?}"), "StaticKeypair");
    }
}
