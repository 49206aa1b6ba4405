//! `handshake_responder`: the relay side of the Noise handshake and of the join exchange.
//!
//! Input: `mode(u8) | rest`, mode modulo 3:
//! - `RAW`: `msg1(bytes16) | msg3(bytes16)` fed to a `Responder`. A wrong length must be
//!   refused before any work; message 3 can never be accepted (the fuzzer cannot know the
//!   responder's fresh ephemeral key).
//! - `MSG3`: `client seed(32) | edits | resize`: a real initiator runs the handshake, message 3
//!   is altered by the edits and must be refused unless unchanged.
//! - `JOIN`: `client seed(32) | JoinSpec | plaintext op | transport edits | resize | cuts`:
//!   after a real handshake the client's first transport message carries a `Join` built from
//!   the spec (then altered, or replaced by raw bytes), framed, altered, and fed in chunks to
//!   the relay side, which decrypts it and runs [`relay_join`] as the relay does. Nobody is
//!   admitted except under the identity that signed this session's handshake hash, with the
//!   room's join secret; an untouched valid join always succeeds.

use chatroom_crypto::internal::split_master;
use chatroom_crypto::{
    ClientMessage, ErrorCode, FrameDecoder, Identity, Initiator, JoinRequest, JoinSecret, JoinVerifier,
    NoiseError, Responder, RoomName, StaticKeypair, Transport, VerifiedJoin, HANDSHAKE1_LEN,
    HANDSHAKE1_V2_LEN, HANDSHAKE2_LEN, HANDSHAKE3_LEN, MAX_FRAME_LEN,
};

use crate::{mutate, next_chunk, nick_or, room_or, Input, Writer};

/// Mode byte: raw handshake messages.
pub const RAW: u8 = 0;
/// Mode byte: altered message 3 of a real handshake.
pub const MSG3: u8 = 1;
/// Mode byte: the join exchange after a real handshake.
pub const JOIN: u8 = 2;

/// The room that exists on the relay, and the seed of its keys.
pub const EXISTING_ROOM: &str = "lobby";
/// The room a join may create.
pub const NEW_ROOM: &str = "newroom";
const ROOM_SEED: [u8; 32] = [7; 32];
const RELAY_PRIVATE: [u8; 32] = [42; 32];
const IDENTITY_SEEDS: [[u8; 32]; 3] = [[11; 32], [12; 32], [13; 32]];

/// The relay's fixed static key pair.
pub fn relay_static() -> StaticKeypair {
    StaticKeypair::from_private(&RELAY_PRIVATE)
}

/// A complete real handshake between a client with `client_seed` and the fixed relay:
/// `(client transport, relay transport)`.
pub fn handshake(client_seed: &[u8; 32]) -> (Transport, Transport) {
    let relay = relay_static();
    let client = StaticKeypair::from_private(client_seed);
    let result = (|| -> Result<(Transport, Transport), NoiseError> {
        let (init, msg1) = Initiator::start(&client)?;
        let (resp, msg2) = Responder::new(&relay)?.read_hello(&msg1)?;
        let ready = init.read_reply(&msg2)?;
        assert_eq!(ready.relay_key(), relay.public(), "the initiator learned a wrong relay key");
        let (client_transport, msg3) = ready.finish()?;
        let relay_transport = resp.read_finish(&msg3)?;
        Ok((client_transport, relay_transport))
    })();
    match result {
        Ok((c, r)) => {
            assert_eq!(c.handshake_hash(), r.handshake_hash(), "handshake hashes differ");
            assert_eq!(r.remote_static(), client.public(), "the relay learned a wrong client key");
            (c, r)
        }
        Err(e) => panic!("a real handshake must complete: {e}"),
    }
}

/// The join a client builds, with every choice taken from the fuzz input.
#[derive(Debug, Clone, Default)]
pub struct JoinSpec {
    /// Which fixed identity signs (modulo 3).
    pub identity: u8,
    /// 0: the existing room, 1: a new room, otherwise `room_name`.
    pub room: u8,
    /// Room name bytes, read when `room > 1` (invalid names fall back to the existing room).
    pub room_name: Vec<u8>,
    /// Nickname bytes (invalid ones fall back to `alice`).
    pub nick: Vec<u8>,
    /// 0: the room's join secret, otherwise `secret_bytes`.
    pub secret: u8,
    /// The join secret presented when `secret != 0`.
    pub secret_bytes: [u8; 32],
    /// Ask to create the room (low bit).
    pub create: u8,
    /// History cursor.
    pub history_after: u64,
    /// 0: sign this session's handshake hash, otherwise `hh_bytes`.
    pub hh: u8,
    /// The handshake hash signed when `hh != 0`.
    pub hh_bytes: [u8; 32],
}

impl JoinSpec {
    fn read(input: &mut Input<'_>) -> Self {
        let mut s = JoinSpec { identity: input.u8(), room: input.u8(), ..Default::default() };
        if s.room > 1 {
            s.room_name = input.bytes8().to_vec();
        }
        s.nick = input.bytes8().to_vec();
        s.secret = input.u8();
        if s.secret != 0 {
            s.secret_bytes = input.array();
        }
        s.create = input.u8();
        s.history_after = input.u64();
        s.hh = input.u8();
        if s.hh != 0 {
            s.hh_bytes = input.array();
        }
        s
    }

    /// Appends the spec in the format `check` reads.
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.identity).u8(self.room);
        if self.room > 1 {
            w.bytes8(&self.room_name);
        }
        w.bytes8(&self.nick).u8(self.secret);
        if self.secret != 0 {
            w.raw(&self.secret_bytes);
        }
        w.u8(self.create).u64(self.history_after).u8(self.hh);
        if self.hh != 0 {
            w.raw(&self.hh_bytes);
        }
    }

    fn room_name(&self) -> RoomName {
        match self.room {
            0 => room_or(EXISTING_ROOM.as_bytes(), EXISTING_ROOM),
            1 => room_or(NEW_ROOM.as_bytes(), NEW_ROOM),
            _ => room_or(&self.room_name, EXISTING_ROOM),
        }
    }

    fn secret(&self) -> JoinSecret {
        if self.secret == 0 {
            room_secret()
        } else {
            JoinSecret::from_bytes(self.secret_bytes)
        }
    }
}

fn room_secret() -> JoinSecret {
    split_master(&ROOM_SEED).join_secret.clone()
}

/// What the relay does with a client's first transport plaintext.
#[derive(Debug)]
pub enum JoinOutcome {
    /// Admitted to an existing room.
    Admitted(VerifiedJoin),
    /// Created a room (with the verifier to store) and joined it.
    Created(VerifiedJoin, JoinVerifier),
    /// Refused with this Goodbye code.
    Refused(ErrorCode),
}

/// The relay's join procedure over one decrypted plaintext, against the rooms it knows:
/// exactly one `Join` item, a signature over this session's handshake hash, then the room's
/// verifier (or room creation if asked for and the room does not exist).
pub fn relay_join(
    plaintext: &[u8],
    handshake_hash: &[u8; 32],
    rooms: &[(RoomName, JoinVerifier)],
) -> JoinOutcome {
    let request = match ClientMessage::decode_all(plaintext) {
        Err(_) => return JoinOutcome::Refused(ErrorCode::Malformed),
        Ok(mut msgs) => match (msgs.pop(), msgs.is_empty()) {
            (Some(ClientMessage::Join(request)), true) => request,
            _ => return JoinOutcome::Refused(ErrorCode::UnexpectedMessage),
        },
    };
    let Ok(signed) = request.verify(handshake_hash) else {
        return JoinOutcome::Refused(ErrorCode::BadSignature);
    };
    let room = signed.request().room.clone();
    let create = signed.request().create;
    match rooms.iter().find(|(name, _)| *name == room) {
        Some((_, verifier)) => match signed.admit(verifier) {
            Ok(joined) => JoinOutcome::Admitted(joined),
            Err(_) => JoinOutcome::Refused(ErrorCode::WrongPassword),
        },
        None if create => {
            // Storage inserted the new room with this verifier; the founder passes its check.
            let verifier = signed.new_room_verifier();
            match signed.admit(&verifier) {
                Ok(joined) => JoinOutcome::Created(joined, verifier),
                Err(_) => JoinOutcome::Refused(ErrorCode::Internal),
            }
        }
        None => JoinOutcome::Refused(ErrorCode::NoSuchRoom),
    }
}

/// Runs the check on one input.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        RAW => raw(&mut input),
        MSG3 => altered_msg3(&mut input),
        _ => join(&mut input),
    }
}

fn raw(input: &mut Input<'_>) {
    let msg1 = input.bytes16();
    let msg3 = input.bytes16();
    let Ok(responder) = Responder::new(&relay_static()) else {
        panic!("a responder must build");
    };
    match responder.read_hello(msg1) {
        Ok((awaiting, msg2)) => {
            let v2 = msg1.len() == HANDSHAKE1_V2_LEN && msg1.last() == Some(&2);
            assert!(msg1.len() == HANDSHAKE1_LEN || v2, "accepted message 1 of a wrong length");
            assert_eq!(msg2.len(), HANDSHAKE2_LEN, "wrote message 2 of a wrong length");
            let finished = awaiting.read_finish(msg3);
            assert!(finished.is_err(), "accepted a message 3 written without message 2");
            if msg3.len() != HANDSHAKE3_LEN {
                assert!(
                    matches!(finished, Err(NoiseError::HandshakeLength { step: 3, .. })),
                    "message 3 of a wrong length must be refused by its length"
                );
            }
        }
        // 33 bytes are version 2's `-> e` and version byte: refused only for another byte.
        Err(e) if msg1.len() == HANDSHAKE1_V2_LEN => {
            assert!(msg1.last() != Some(&2) && e == NoiseError::Handshake, "refused a v2 message 1: {e}")
        }
        Err(e) => assert!(
            msg1.len() != HANDSHAKE1_LEN && matches!(e, NoiseError::HandshakeLength { step: 1, .. }),
            "refused a 32-byte message 1 ({e}), or a wrong length for another reason"
        ),
    }
}

fn altered_msg3(input: &mut Input<'_>) {
    let client = StaticKeypair::from_private(&input.array());
    let edits = input.edits();
    let resize = input.u8();
    let relay = relay_static();
    let steps = (|| -> Result<_, NoiseError> {
        let (init, msg1) = Initiator::start(&client)?;
        let (resp, msg2) = Responder::new(&relay)?.read_hello(&msg1)?;
        let (client_transport, msg3) = init.read_reply(&msg2)?.finish()?;
        Ok((resp, client_transport, msg3))
    })();
    let Ok((resp, client_transport, msg3)) = steps else {
        panic!("a real handshake must reach message 3");
    };
    let altered = mutate(&msg3, &edits, resize);
    match resp.read_finish(&altered) {
        Ok(relay_transport) => {
            assert_eq!(altered, msg3, "accepted an altered message 3");
            assert_eq!(relay_transport.remote_static(), client.public(), "wrong client key");
            assert_eq!(relay_transport.handshake_hash(), client_transport.handshake_hash(), "hashes differ");
        }
        Err(e) => assert_ne!(altered, msg3, "refused a genuine message 3: {e}"),
    }
}

fn join(input: &mut Input<'_>) {
    let client_seed: [u8; 32] = input.array();
    let spec = JoinSpec::read(input);
    let op = input.u8() % 3;
    let (plain_edits, plain_resize, raw_plaintext) = match op {
        1 => (input.edits(), input.u8(), &[][..]),
        2 => (Vec::new(), 0, input.bytes16()),
        _ => (Vec::new(), 0, &[][..]),
    };
    let wire_edits = input.edits();
    let wire_resize = input.u8();
    let cuts = input.cuts();

    let (mut client, mut relay) = handshake(&client_seed);
    let hh = *relay.handshake_hash();
    let signer = Identity::from_seed(&IDENTITY_SEEDS[usize::from(spec.identity % 3)]);
    let signed_hh = if spec.hh == 0 { hh } else { spec.hh_bytes };
    let room = spec.room_name();
    let nick = nick_or(&spec.nick, "alice");
    let create = spec.create & 1 == 1;
    let mut request =
        JoinRequest::new(&signer, &signed_hh, room.clone(), nick.clone(), spec.secret(), create, 0);
    // Not signed: it only shapes what the relay sends back.
    request.history_after = spec.history_after;
    let mut encoded = Vec::new();
    ClientMessage::Join(request).encode(&mut encoded);
    let plaintext = match op {
        1 => mutate(&encoded, &plain_edits, plain_resize),
        2 => raw_plaintext.to_vec(),
        _ => encoded.clone(),
    };

    // The client seals and frames; the wire may alter the stream.
    let mut stream = Vec::new();
    if client.seal_frame(&plaintext, &mut stream).is_err() {
        assert!(plaintext.len() > chatroom_crypto::MAX_PLAINTEXT_LEN, "refused to seal a valid plaintext");
        return;
    }
    let wire = mutate(&stream, &wire_edits, wire_resize);
    let untouched = wire == stream;

    // The relay reads frames in chunks, decrypts the first, and runs the join.
    let frames = read_frames(&wire, &cuts);
    if untouched {
        assert_eq!(frames.len(), 1, "an untouched stream must yield its one frame");
    }
    let Some(frame) = frames.first() else {
        return;
    };
    let opened = match relay.open(frame) {
        Ok(opened) => opened,
        Err(_) => {
            assert!(!untouched, "an untouched frame must decrypt");
            return;
        }
    };
    assert_eq!(frame.as_slice(), &stream[2..], "decrypted a frame the client never sent");
    assert_eq!(opened, plaintext, "decryption changed the plaintext");

    let rooms = [(room_or(EXISTING_ROOM.as_bytes(), EXISTING_ROOM), room_secret().verifier())];
    let outcome = relay_join(&opened, &hh, &rooms);
    let admitted = checked_admission(&outcome, &opened, &rooms[0].0);
    if let Some(joined) = admitted {
        assert_eq!(signed_hh, hh, "admitted a join signed for another session");
        assert_eq!(*joined.identity(), signer.public(), "admitted under an identity that did not sign");
        assert_eq!(*joined.room(), room, "admitted to a room the signer did not name");
        assert_eq!(*joined.nick(), nick, "admitted under a nickname the signer did not choose");
        assert_eq!(decoded_join(&opened).create, create, "the create flag changed");
    }
    let valid = op == 0
        && signed_hh == hh
        && if room == rooms[0].0 { spec.secret() == room_secret() } else { create };
    if valid {
        assert!(admitted.is_some(), "refused a valid join: {outcome:?}");
    }
}

/// The frames a relay reading `wire` in chunks cut at `cuts` gets, up to the first error.
fn read_frames(wire: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    let mut frames = Vec::new();
    let mut rest = wire;
    let mut index = 0;
    while !rest.is_empty() {
        let n = next_chunk(rest, cuts, index, decoder.wanted());
        match decoder.push(&rest[..n]) {
            Ok(got) => frames.extend(got),
            Err(_) => break,
        }
        rest = &rest[n..];
        index += 1;
    }
    frames
}

/// The join an outcome admitted, after checking that admission to `existing` needed its
/// secret and that a creation was asked for, of a new room, with the request's verifier.
fn checked_admission<'a>(
    outcome: &'a JoinOutcome,
    opened: &[u8],
    existing: &RoomName,
) -> Option<&'a VerifiedJoin> {
    match outcome {
        JoinOutcome::Admitted(joined) => {
            let request = decoded_join(opened);
            assert!(request.join_secret == room_secret(), "admitted without the room's join secret");
            Some(joined)
        }
        JoinOutcome::Created(joined, verifier) => {
            let request = decoded_join(opened);
            assert!(request.create, "created a room without being asked");
            assert!(joined.room() != existing, "created a room that exists");
            assert!(*verifier == request.join_secret.verifier(), "stored a verifier of another secret");
            Some(joined)
        }
        JoinOutcome::Refused(_) => None,
    }
}

fn decoded_join(plaintext: &[u8]) -> JoinRequest {
    match ClientMessage::decode_all(plaintext).ok().and_then(|mut m| m.pop()) {
        Some(ClientMessage::Join(request)) => request,
        other => panic!("the relay admitted a plaintext that is not one Join: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_plaintext(hh: &[u8; 32], room: &str, secret: JoinSecret, create: bool) -> Vec<u8> {
        let id = Identity::from_seed(&IDENTITY_SEEDS[0]);
        let request = JoinRequest::new(
            &id,
            hh,
            room_or(room.as_bytes(), room),
            nick_or(b"alice", "alice"),
            secret,
            create,
            0,
        );
        let mut out = Vec::new();
        ClientMessage::Join(request).encode(&mut out);
        out
    }

    fn rooms() -> [(RoomName, JoinVerifier); 1] {
        [(room_or(EXISTING_ROOM.as_bytes(), EXISTING_ROOM), room_secret().verifier())]
    }

    #[test]
    fn relay_join_admits_only_a_signed_join_with_the_room_secret() {
        let hh = [4; 32];
        let ok = relay_join(&join_plaintext(&hh, EXISTING_ROOM, room_secret(), false), &hh, &rooms());
        assert!(matches!(ok, JoinOutcome::Admitted(ref j) if j.nick().as_str() == "alice"), "{ok:?}");
        let other_session =
            relay_join(&join_plaintext(&[5; 32], EXISTING_ROOM, room_secret(), false), &hh, &rooms());
        assert!(matches!(other_session, JoinOutcome::Refused(ErrorCode::BadSignature)));
        let wrong = JoinSecret::from_bytes([1; 32]);
        let wrong = relay_join(&join_plaintext(&hh, EXISTING_ROOM, wrong, true), &hh, &rooms());
        assert!(matches!(wrong, JoinOutcome::Refused(ErrorCode::WrongPassword)));
    }

    #[test]
    fn relay_join_creates_only_when_asked() {
        let hh = [4; 32];
        let secret = JoinSecret::from_bytes([1; 32]);
        let created = relay_join(&join_plaintext(&hh, NEW_ROOM, secret.clone(), true), &hh, &rooms());
        assert!(matches!(created, JoinOutcome::Created(_, v) if v == secret.verifier()));
        let missing = relay_join(&join_plaintext(&hh, NEW_ROOM, secret, false), &hh, &rooms());
        assert!(matches!(missing, JoinOutcome::Refused(ErrorCode::NoSuchRoom)));
    }

    #[test]
    fn relay_join_wants_exactly_one_join() {
        let hh = [4; 32];
        let mut two = join_plaintext(&hh, EXISTING_ROOM, room_secret(), false);
        ClientMessage::Who.encode(&mut two);
        assert!(matches!(
            relay_join(&two, &hh, &rooms()),
            JoinOutcome::Refused(ErrorCode::UnexpectedMessage)
        ));
        let mut who = Vec::new();
        ClientMessage::Who.encode(&mut who);
        assert!(matches!(
            relay_join(&who, &hh, &rooms()),
            JoinOutcome::Refused(ErrorCode::UnexpectedMessage)
        ));
        assert!(matches!(relay_join(&[1, 0], &hh, &rooms()), JoinOutcome::Refused(ErrorCode::Malformed)));
    }
}
