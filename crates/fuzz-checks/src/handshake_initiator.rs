//! `handshake_initiator`: the client side of the Noise handshake and what it reads after.
//!
//! Input: `mode(u8) | rest`, mode modulo 3:
//! - `RAW`: `msg2(bytes16)` fed to an initiator: a wrong length is refused by its length, and
//!   no message 2 is accepted (the fuzzer cannot know the initiator's fresh ephemeral key).
//! - `MSG2`: `edits | resize`: a real relay answers, message 2 is altered and must be refused
//!   unless unchanged; an accepted one yields the relay's real key (what the pin is checked
//!   against).
//! - `SESSION`: `count(u8) | plaintexts(bytes16 each) | transport edits | resize | cuts`: after
//!   a real handshake the relay seals each plaintext as one frame; the stream may be altered
//!   and arrives in chunks. The client decrypts frames in order and decodes each as relay
//!   messages, stopping at the first failure as it would by closing. Every decrypted frame is
//!   exactly what the relay sealed at that position, every decoded batch re-encodes to its
//!   plaintext, and an envelope in a `Deliver` opens only if it is one a member really sealed.

use chatroom_crypto::{
    open, EnvelopeHeader, FrameDecoder, Initiator, NoiseError, RelayMessage, Responder, StaticKeypair,
    HANDSHAKE2_LEN, MAX_FRAME_LEN, MAX_PLAINTEXT_LEN,
};

use crate::envelope_open::fixture;
use crate::handshake_responder::{handshake, relay_static};
use crate::{mutate, next_chunk, Input};

/// Mode byte: a raw message 2.
pub const RAW: u8 = 0;
/// Mode byte: an altered real message 2.
pub const MSG2: u8 = 1;
/// Mode byte: transport messages after a real handshake.
pub const SESSION: u8 = 2;

const CLIENT_PRIVATE: [u8; 32] = [5; 32];

/// Runs the check on one input.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        RAW => raw(&mut input),
        MSG2 => altered_msg2(&mut input),
        _ => session(&mut input),
    }
}

fn raw(input: &mut Input<'_>) {
    let msg2 = input.bytes16();
    let Ok((init, _msg1)) = Initiator::start(&StaticKeypair::from_private(&CLIENT_PRIVATE)) else {
        panic!("an initiator must start");
    };
    match init.read_reply(msg2) {
        Ok(ready) => {
            panic!("accepted a message 2 written without message 1 (relay key {:?})", ready.relay_key())
        }
        Err(e) => {
            if msg2.len() != HANDSHAKE2_LEN {
                assert!(
                    matches!(e, NoiseError::HandshakeLength { step: 2, .. }),
                    "message 2 of a wrong length must be refused by its length"
                );
            }
        }
    }
}

fn altered_msg2(input: &mut Input<'_>) {
    let edits = input.edits();
    let resize = input.u8();
    let relay = relay_static();
    let steps = (|| -> Result<_, NoiseError> {
        let (init, msg1) = Initiator::start(&StaticKeypair::from_private(&CLIENT_PRIVATE))?;
        let (_resp, msg2) = Responder::new(&relay)?.read_hello(&msg1)?;
        Ok((init, msg2))
    })();
    let Ok((init, msg2)) = steps else {
        panic!("a real handshake must reach message 2");
    };
    let altered = mutate(&msg2, &edits, resize);
    match init.read_reply(&altered) {
        Ok(ready) => {
            assert_eq!(altered, msg2, "accepted an altered message 2");
            assert_eq!(ready.relay_key(), relay.public(), "learned a relay key the relay does not hold");
        }
        Err(e) => assert_ne!(altered, msg2, "refused a genuine message 2: {e}"),
    }
}

fn session(input: &mut Input<'_>) {
    let count = usize::from(input.u8() % 9);
    let plaintexts: Vec<&[u8]> = (0..count).map(|_| input.bytes16()).collect();
    let edits = input.edits();
    let resize = input.u8();
    let cuts = input.cuts();

    let (mut client, mut relay) = handshake(&CLIENT_PRIVATE);
    let mut stream = Vec::new();
    let mut sealed: Vec<(&[u8], usize)> = Vec::new();
    for p in plaintexts {
        let start = stream.len();
        match relay.seal_frame(p, &mut stream) {
            Ok(()) => sealed.push((p, start)),
            Err(_) => assert!(p.len() > MAX_PLAINTEXT_LEN, "refused to seal a valid plaintext"),
        }
    }
    let wire = mutate(&stream, &edits, resize);
    let untouched = wire == stream;

    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    let mut frames = Vec::new();
    let mut rest = &wire[..];
    let mut index = 0;
    while !rest.is_empty() {
        let n = next_chunk(rest, &cuts, index, decoder.wanted());
        match decoder.push(&rest[..n]) {
            Ok(got) => frames.extend(got),
            Err(_) => {
                assert!(!untouched, "an untouched stream failed to frame");
                break;
            }
        }
        rest = &rest[n..];
        index += 1;
    }
    if untouched {
        assert_eq!(frames.len(), sealed.len(), "an untouched stream lost frames");
    }

    for (i, frame) in frames.iter().enumerate() {
        let plaintext = match client.open(frame) {
            Ok(p) => p,
            Err(_) => {
                assert!(!untouched, "an untouched frame failed to decrypt");
                return;
            }
        };
        let Some(&(expected, start)) = sealed.get(i) else {
            panic!("decrypted frame {i}, but the relay sealed only {}", sealed.len());
        };
        assert_eq!(plaintext, expected, "frame {i} decrypted to something the relay did not seal");
        let original = stream.get(start + 2..start + 2 + frame.len());
        assert_eq!(Some(frame.as_slice()), original, "frame {i} decrypted but is not what the relay sent");
        let Ok(msgs) = RelayMessage::decode_all(&plaintext) else {
            return;
        };
        let mut again = Vec::new();
        for m in &msgs {
            m.encode(&mut again);
        }
        assert_eq!(again, plaintext, "a relay message has two encodings");
        for m in &msgs {
            if let RelayMessage::Deliver { envelope, .. } = m {
                check_delivered(envelope);
            }
        }
    }
}

/// A delivered envelope opens only if a member of the room really sealed it, and then as
/// exactly what was sealed.
fn check_delivered(envelope: &[u8]) {
    let fixture = fixture();
    let header = EnvelopeHeader::parse(envelope);
    if let Ok(opened) = open(&fixture.key, &fixture.room, envelope) {
        assert!(header.is_ok(), "opened an envelope whose header does not parse");
        let known = fixture.known.iter().any(|(known, _)| known.as_slice() == envelope);
        assert!(known, "opened an envelope no member sealed: {opened:?}");
    }
}
