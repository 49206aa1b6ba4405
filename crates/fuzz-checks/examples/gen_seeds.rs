//! Writes the committed seed corpus: `cargo run -p chatroom-fuzz-checks --example gen_seeds --
//! fuzz/seeds` (or `scripts/fuzz-seeds`). Every seed is built from real protocol objects:
//! handshake messages, signed joins, sealed envelopes and the relay's replies, in the input
//! format of its target. Seeds holding handshake bytes differ on every run (fresh ephemeral
//! keys); all others are reproducible.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use chatroom_crypto::internal::split_master;
use chatroom_crypto::{
    encode_frame, ClientMessage, ErrorCode, Identity, Initiator, JoinRequest, Member, Nick, PresenceEvent,
    RelayMessage, Responder, RoomName, StaticKeypair,
};
use chatroom_fuzz_checks::client_session as cs;
use chatroom_fuzz_checks::envelope_open::{self, known_specs, Spec};
use chatroom_fuzz_checks::handshake_responder::{self as responder, relay_static, JoinSpec};
use chatroom_fuzz_checks::relay_session as rs;
use chatroom_fuzz_checks::{frame_decode, handshake_initiator as initiator, message_decode, Writer, TARGETS};
use chatroom_fuzz_checks::{group_content_kind as gck, group_fixture, group_info_open as gio};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Seeds {
    root: PathBuf,
    count: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        // Every seed must pass its own target's check.
        let (_, check) = TARGETS.iter().find(|(n, _)| *n == target).ok_or("unknown target")?;
        check(bytes);
        self.count += 1;
        Ok(())
    }
}

fn w() -> Writer {
    Writer::new()
}

fn frame(payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_frame(payload, &mut out)?;
    Ok(out)
}

fn main() -> Result<()> {
    let root = std::env::args().nth(1).ok_or("usage: gen_seeds <seed directory>")?;
    let mut s = Seeds { root: Path::new(&root).to_path_buf(), count: 0 };

    // Real objects.
    let fixture = envelope_open::fixture();
    let env_alice = fixture.known[0].0.clone();
    let env_bob = fixture.known[1].0.clone();
    let alice = Identity::from_seed(&[11; 32]);
    let room = RoomName::new("lobby")?;
    let nick = Nick::new("alice")?;
    let keys = split_master(&[7; 32]);
    let join = ClientMessage::Join(JoinRequest::new(
        &alice,
        &[9; 32],
        room.clone(),
        nick.clone(),
        keys.join_secret.clone(),
        false,
        0,
    ));
    let client_msgs = [
        join.clone(),
        ClientMessage::Send { envelope: env_alice.clone() },
        ClientMessage::Who,
        ClientMessage::Kick { nick: Nick::new("bob")? },
        ClientMessage::Ban { nick: Nick::new("bob")? },
        ClientMessage::Unban { nick: Nick::new("bob")? },
        ClientMessage::Ping { token: 7 },
        ClientMessage::Pong { token: 7 },
    ];
    let member = |n: &str, id: &Identity| -> Result<Member> {
        Ok(Member { nick: Nick::new(n)?, identity: id.public() })
    };
    let bob = Identity::from_seed(&[12; 32]);
    let relay_msgs = [
        RelayMessage::Joined { created: false, owner: alice.public(), latest_seq: 2, oldest_seq: 1 },
        RelayMessage::Members { more: false, members: vec![member("alice", &alice)?, member("bob", &bob)?] },
        RelayMessage::Deliver { seq: 1, history: true, envelope: env_alice.clone() },
        RelayMessage::HistoryEnd { latest_seq: 2 },
        RelayMessage::Deliver { seq: 2, history: false, envelope: env_bob.clone() },
        RelayMessage::Ack { counter: 1_700_000_000_000_000, seq: 3 },
        RelayMessage::Presence {
            event: PresenceEvent::Joined,
            nick: Nick::new("bob")?,
            identity: bob.public(),
        },
        RelayMessage::Error {
            code: ErrorCode::RateLimited,
            detail: "rate limit 5/s with burst 20 exceeded; message not delivered".into(),
        },
        RelayMessage::SendError {
            counter: 1_700_000_000_000_001,
            code: ErrorCode::Internal,
            detail: "the relay could not store this; try again later".into(),
        },
        RelayMessage::Ping { token: 9 },
        RelayMessage::Pong { token: 9 },
        RelayMessage::Goodbye { code: ErrorCode::Kicked, detail: "kicked by the owner".into() },
    ];
    let encode_client = |m: &[ClientMessage]| {
        let mut out = Vec::new();
        m.iter().for_each(|m| m.encode(&mut out));
        out
    };
    let encode_relay = |m: &[RelayMessage]| {
        let mut out = Vec::new();
        m.iter().for_each(|m| m.encode(&mut out));
        out
    };
    let join_response = encode_relay(&relay_msgs[..4]);

    // A real handshake transcript, and transport frames.
    let (init, msg1) = Initiator::start(&StaticKeypair::from_private(&[5; 32]))?;
    let (resp, msg2) = Responder::new(&relay_static())?.read_hello(&msg1)?;
    let (mut client_t, msg3) = init.read_reply(&msg2)?.finish()?;
    let mut relay_t = resp.read_finish(&msg3)?;

    // frame_decode
    let t = "frame_decode";
    s.put(t, "msg1", &frame_decode::input(0, 0, &[], &frame(&msg1)?))?;
    s.put(t, "msg2-chunked", &frame_decode::input(1, 0, &[1, 5, 0], &frame(&msg2)?))?;
    s.put(t, "msg3-wanted", &frame_decode::input(2, 0, &[0], &frame(&msg3)?))?;
    let mut transport = Vec::new();
    client_t.seal_frame(&encode_client(&client_msgs[..1]), &mut transport)?;
    client_t.seal_frame(&encode_client(&client_msgs[1..]), &mut transport)?;
    s.put(t, "client-transport", &frame_decode::input(3, 0, &[0], &transport))?;
    let mut transport = Vec::new();
    relay_t.seal_frame(&join_response, &mut transport)?;
    relay_t.seal_frame(&encode_relay(&relay_msgs[4..]), &mut transport)?;
    s.put(t, "relay-transport-bytewise", &frame_decode::input(3, 0, &[1], &transport))?;
    s.put(t, "oversized-header", &frame_decode::input(4, 64, &[], &[0x01, 0x00, 1, 2, 3]))?;
    s.put(t, "empty-frame-after-frame", &frame_decode::input(3, 0, &[3, 0], &[0, 1, 0xaa, 0, 0]))?;
    s.put(t, "cut-mid-frame", &frame_decode::input(0, 0, &[7], &frame(&msg1)?[..20]))?;

    // message_decode
    let t = "message_decode";
    for (i, m) in client_msgs.iter().enumerate() {
        s.put(
            t,
            &format!("client-{i}"),
            &w().u8(message_decode::RAW).raw(&encode_client(std::slice::from_ref(m))).out,
        )?;
    }
    s.put(t, "client-batch", &w().u8(message_decode::RAW).raw(&encode_client(&client_msgs[1..])).out)?;
    for (i, m) in relay_msgs.iter().enumerate() {
        s.put(
            t,
            &format!("relay-{i}"),
            &w().u8(message_decode::RAW).raw(&encode_relay(std::slice::from_ref(m))).out,
        )?;
    }
    s.put(t, "relay-join-response", &w().u8(message_decode::RAW).raw(&join_response).out)?;
    let pattern: Vec<u8> = (0..=255u8).collect();
    s.put(t, "structured-a", &w().u8(message_decode::STRUCTURED).raw(&pattern).out)?;
    s.put(t, "structured-b", &w().u8(message_decode::STRUCTURED).raw(&encode_relay(&relay_msgs)).out)?;

    // envelope_open
    let t = "envelope_open";
    s.put(t, "known-alice", &w().u8(envelope_open::RAW).raw(&env_alice).out)?;
    s.put(t, "known-bob", &w().u8(envelope_open::RAW).raw(&env_bob).out)?;
    let mut flipped = env_alice.clone();
    flipped[50] ^= 1;
    s.put(t, "flipped-nonce", &w().u8(envelope_open::RAW).raw(&flipped).out)?;
    for (i, spec) in known_specs().iter().enumerate() {
        let mut x = w();
        x.u8(envelope_open::SEAL);
        spec.write(&mut x);
        x.edits(&[]).u8(0);
        s.put(t, &format!("seal-{i}"), &x.out)?;
        let mut x = w();
        x.u8(envelope_open::SEAL);
        spec.write(&mut x);
        x.edits(&[(1, 0x80), (300, 1)]).u8(3);
        s.put(t, &format!("seal-{i}-altered"), &x.out)?;
    }
    let long = Spec {
        sender: 0,
        counter: u64::MAX,
        timestamp_ms: 0,
        kind: 1,
        nick: b"_Z-9".to_vec(),
        body: vec![b'x'; chatroom_crypto::MAX_BODY_LEN],
        nonce_seed: [3; 32],
    };
    let mut x = w();
    x.u8(envelope_open::SEAL);
    long.write(&mut x);
    x.edits(&[(4000, 4)]).u8(0);
    s.put(t, "seal-max-body", &x.out)?;

    // handshake_responder
    let t = "handshake_responder";
    s.put(t, "raw-real-msg1", &w().u8(responder::RAW).bytes16(&msg1).bytes16(&msg3).out)?;
    s.put(t, "raw-short-msg1", &w().u8(responder::RAW).bytes16(&msg1[..31]).bytes16(&[]).out)?;
    s.put(t, "msg3-genuine", &w().u8(responder::MSG3).raw(&[5; 32]).edits(&[]).u8(0).out)?;
    s.put(t, "msg3-altered", &w().u8(responder::MSG3).raw(&[5; 32]).edits(&[(40, 2)]).u8(0).out)?;
    let base = JoinSpec { nick: b"alice".to_vec(), ..Default::default() };
    let specs = [
        ("join-existing", base.clone()),
        ("join-create", JoinSpec { room: 1, create: 1, ..base.clone() }),
        ("join-no-such-room", JoinSpec { room: 1, ..base.clone() }),
        ("join-wrong-secret", JoinSpec { secret: 1, secret_bytes: [1; 32], ..base.clone() }),
        ("join-other-session", JoinSpec { hh: 1, hh_bytes: [9; 32], ..base.clone() }),
        (
            "join-named-room",
            JoinSpec { room: 2, room_name: b"ops.team-1".to_vec(), create: 1, ..base.clone() },
        ),
        ("join-history", JoinSpec { identity: 1, nick: b"Bob".to_vec(), history_after: 41, ..base.clone() }),
    ];
    for (name, spec) in &specs {
        let mut x = w();
        x.u8(responder::JOIN).raw(&[6; 32]);
        spec.write(&mut x);
        x.u8(0).edits(&[]).u8(0).cuts(&[0]);
        s.put(t, name, &x.out)?;
    }
    let mut x = w();
    x.u8(responder::JOIN).raw(&[6; 32]);
    base.write(&mut x);
    x.u8(1).edits(&[(170, 0x01)]).u8(0).edits(&[]).u8(0).cuts(&[3, 0]);
    s.put(t, "join-edited-plaintext", &x.out)?;
    let mut x = w();
    x.u8(responder::JOIN).raw(&[6; 32]);
    base.write(&mut x);
    x.u8(2).bytes16(&encode_client(&client_msgs[..3])).edits(&[]).u8(0).cuts(&[]);
    s.put(t, "join-raw-batch", &x.out)?;
    let mut x = w();
    x.u8(responder::JOIN).raw(&[6; 32]);
    base.write(&mut x);
    x.u8(0).edits(&[(30, 0x10)]).u8(0).cuts(&[0]);
    s.put(t, "join-tampered-wire", &x.out)?;

    // handshake_initiator
    let t = "handshake_initiator";
    s.put(t, "raw-real-msg2", &w().u8(initiator::RAW).bytes16(&msg2).out)?;
    s.put(t, "raw-short-msg2", &w().u8(initiator::RAW).bytes16(&msg2[..64]).out)?;
    s.put(t, "msg2-genuine", &w().u8(initiator::MSG2).edits(&[]).u8(0).out)?;
    s.put(t, "msg2-altered-key", &w().u8(initiator::MSG2).edits(&[(40, 1)]).u8(0).out)?;
    let session = |plaintexts: &[Vec<u8>], edits: &[(u16, u8)], cuts: &[u8]| {
        let mut x = w();
        x.u8(initiator::SESSION).u8(plaintexts.len() as u8);
        for p in plaintexts {
            x.bytes16(p);
        }
        x.edits(edits).u8(0).cuts(cuts);
        x.out
    };
    let live = [
        join_response.clone(),
        encode_relay(&relay_msgs[4..5]),
        encode_relay(&relay_msgs[5..7]),
        encode_relay(&relay_msgs[7..10]),
        encode_relay(&relay_msgs[10..]),
    ];
    s.put(t, "session", &session(&live, &[], &[0]))?;
    s.put(t, "session-chunked", &session(&live, &[], &[1, 7, 200, 0]))?;
    s.put(t, "session-tampered", &session(&live, &[(700, 4)], &[0]))?;
    let mut forged = encode_relay(&relay_msgs[4..5]);
    let at = forged.len() - 10;
    forged[at] ^= 1;
    s.put(t, "session-forged-envelope", &session(&[forged], &[], &[]))?;
    s.put(t, "session-garbage", &session(&[vec![0x82, 0, 1, 0], Vec::new()], &[], &[0]))?;

    // client_session
    let t = "client_session";
    #[allow(clippy::too_many_arguments)]
    fn seal(
        x: &mut Writer,
        sender: u8,
        counter: u16,
        nick: &str,
        body: &str,
        scope: u8,
        seq: u16,
        history: u8,
        edits: &[(u16, u8)],
        resize: u8,
    ) {
        x.u8(cs::SEAL).u8(sender).u16(counter).u8(1).u8(0).bytes8(nick.as_bytes()).bytes8(body.as_bytes());
        x.u8(sender).u8(scope).u16(seq).u8(history).edits(edits).u8(resize);
    }
    let mut x = w();
    x.u8(cs::JOINED).u8(1).u16(3).u16(1);
    x.u8(cs::MEMBERS).u8(0).u8(2).bytes8(b"alice").u8(0).bytes8(b"bob").u8(1);
    seal(&mut x, 1, 10, "bob", "hello from history", 0, 1, 1, &[], 0);
    seal(&mut x, 2, 20, "carol", "hi", 0, 2, 1, &[], 0);
    x.u8(cs::OTHER).u8(1).u64(2).u16(0).bytes8(b"");
    seal(&mut x, 1, 11, "bob", "live now", 0, 3, 0, &[], 0);
    seal(&mut x, 0, 12, "alice", "from my other device", 0, 4, 0, &[], 0);
    x.u8(cs::PRESENCE).u8(0).bytes8(b"dave").u8(4).raw(&[42; 32]);
    x.u8(cs::OTHER).u8(0).u64(13).u16(5).bytes8(b"");
    x.u8(cs::OTHER)
        .u8(2)
        .u64(0)
        .u16(9)
        .bytes8(b"rate limit 5/s with burst 20 exceeded; message not delivered");
    x.u8(cs::OTHER).u8(4).u64(9).u16(0).bytes8(b"");
    x.u8(cs::OTHER).u8(3).u64(0).u16(11).bytes8(b"kicked by the owner");
    s.put(t, "history-and-live", &x.out)?;
    let mut x = w();
    seal(&mut x, 1, 10, "bob", "tampered", 0, 1, 0, &[(60, 1)], 0);
    seal(&mut x, 1, 10, "bob", "truncated", 0, 2, 0, &[], 7);
    seal(&mut x, 1, 10, "bob", "extended", 0, 3, 0, &[], 8);
    seal(&mut x, 1, 10, "bob", "other room", 1, 4, 0, &[], 0);
    seal(&mut x, 1, 10, "bob", "other key", 2, 5, 0, &[], 0);
    // Sealed under the room key but not by this target's members, then altered.
    x.u8(cs::RAW).u16(6).u8(0).bytes16(&flipped);
    x.u8(cs::RAW).u16(7).u8(0).bytes16(&[1, 2, 3]);
    seal(&mut x, 1, 10, "bob", "genuine at last", 0, 8, 0, &[], 0);
    s.put(t, "forgeries", &x.out)?;
    let mut x = w();
    x.u8(cs::PRESENCE).u8(0).bytes8(b"bob").u8(1);
    seal(&mut x, 3, 5, "Bob", "send money", 0, 1, 0, &[], 0);
    seal(&mut x, 1, 6, "robert", "it is me", 0, 2, 0, &[], 0);
    x.u8(cs::PRESENCE).u8(0).bytes8(b"robert").u8(1);
    seal(&mut x, 1, 7, "robert", "now bound", 0, 3, 0, &[], 0);
    seal(&mut x, 3, 8, "alice", "not alice", 0, 4, 0, &[], 0);
    x.u8(cs::MEMBERS).u8(1).u8(1).bytes8(b"bob").u8(4).raw(&[43; 32]);
    x.u8(cs::MEMBERS).u8(0).u8(1).bytes8(b"carol").u8(2);
    s.put(t, "impostors", &x.out)?;
    let mut x = w();
    seal(&mut x, 2, 30, "carol", "once", 0, 5, 0, &[], 0);
    x.u8(cs::REPLAY).u8(0).u16(5).u8(0);
    x.u8(cs::REPLAY).u8(0).u16(4).u8(1);
    x.u8(cs::REPLAY).u8(0).u16(6).u8(0);
    seal(&mut x, 2, 29, "carol", "older counter", 0, 7, 0, &[], 0);
    x.u8(cs::JOINED).u8(2).u16(40).u16(20);
    seal(&mut x, 2, 31, "carol", "after the gap", 0, 40, 0, &[], 0);
    s.put(t, "replays-and-gaps", &x.out)?;

    // relay_session: an op byte is `connection + 4 * kind`.
    let t = "relay_session";
    let op = |who: u8, kind: u8| who + 4 * kind;
    let mut x = w();
    for who in 0..4 {
        x.u8(op(who, rs::SEND)).u16(100).bytes8(format!("hello from {who}").as_bytes());
    }
    x.u8(op(1, rs::SEND)).u16(0).bytes8(b"again");
    x.u8(op(3, rs::SEND)).u16(0).bytes8(b"other room");
    s.put(t, "chat", &x.out)?;
    let mut x = w();
    x.u8(op(1, rs::CONTROL)).u8(0).u64(0).bytes8(b"");
    x.u8(op(2, rs::CONTROL)).u8(1).u64(77).bytes8(b"");
    x.u8(op(0, rs::CONTROL)).u8(3).u64(0).bytes8(b"bob");
    x.u8(op(0, rs::CONTROL)).u8(4).u64(0).bytes8(b"carol");
    x.u8(op(0, rs::CONTROL)).u8(5).u64(0).bytes8(b"carol");
    x.u8(op(3, rs::CONTROL)).u8(4).u64(0).bytes8(b"alice");
    x.u8(op(2, rs::CONTROL)).u8(6).u64(0).bytes8(b"");
    x.u8(op(0, rs::SEND)).u16(5).bytes8(b"after the kick");
    s.put(t, "owner-controls", &x.out)?;
    let mut x = w();
    x.u8(op(0, rs::ENVELOPE)).bytes16(&env_alice);
    x.u8(op(1, rs::ENVELOPE)).bytes16(&[1, 2, 3]);
    x.u8(op(2, rs::PLAINTEXT)).bytes16(&encode_client(&client_msgs[1..3]));
    x.u8(op(3, rs::PLAINTEXT)).bytes16(&[0x82, 0, 1, 0]);
    x.u8(op(0, rs::SEND)).u16(9).bytes8(b"still here");
    x.u8(op(1, rs::WIRE)).bytes8(&[0, 4, 1, 2, 3, 4]);
    x.u8(op(2, rs::SEND)).u16(9).bytes8(b"and here");
    s.put(t, "hostile", &x.out)?;
    // dave's version 2 room: uploads (token = after_seq | parts - 1 << 8 | part << 16),
    // fetches, an envelope, the verifier; bob's v1 connection asking for the GroupInfo.
    let mut x = w();
    x.u8(op(3, rs::CONTROL)).u8(7).u64(0).bytes8(b"sealed group info");
    x.u8(op(3, rs::CONTROL)).u8(8).u64(0).bytes8(b"");
    x.u8(op(3, rs::SEND)).u16(1).bytes8(b"commit");
    x.u8(op(3, rs::CONTROL)).u8(7).u64(1 | 1 << 8).bytes8(b"first half ");
    x.u8(op(3, rs::CONTROL)).u8(7).u64(1 | 1 << 8 | 1 << 16).bytes8(b"second half");
    x.u8(op(3, rs::CONTROL)).u8(8).u64(0).bytes8(b"");
    x.u8(op(3, rs::CONTROL)).u8(9).u64(5).bytes8(b"");
    x.u8(op(1, rs::CONTROL)).u8(8).u64(0).bytes8(b"");
    s.put(t, "group-info", &x.out)?;

    group_seeds(&mut s)?;
    history_seeds(&mut s)?;

    eprintln!("wrote {} seeds under {}", s.count, s.root.display());
    Ok(())
}

/// Seeds of the v2 targets. Fixture messages are named by index (reproducible); raw copies of
/// them differ per run (MLS randomness) and are refused by a later run's fixture, which still
/// exercises the parsers.
fn group_seeds(s: &mut Seeds) -> Result<()> {
    let known = &group_fixture::fixture().known;
    let t = "group_content_kind";
    for (i, k) in known.iter().enumerate() {
        s.put(t, &format!("known-{i}"), &w().u8(gck::KNOWN).u8(i as u8).edits(&[]).u8(0).out)?;
        s.put(t, &format!("raw-{i}"), &w().u8(gck::RAW).raw(&k.mls).out)?;
    }
    s.put(t, "known-0-cut", &w().u8(gck::KNOWN).u8(0).edits(&[(3, 1)]).u8(41).out)?;
    s.put(t, "raw-short", &w().u8(gck::RAW).raw(&[0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3]).out)?;

    let t = "group_info_open";
    s.put(t, "known", &w().u8(gio::RAW).raw(gio::known()).out)?;
    let mut flipped = gio::known().to_vec();
    flipped[12] ^= 1;
    s.put(t, "known-epoch-relabelled", &w().u8(gio::RAW).raw(&flipped).out)?;
    s.put(t, "raw-short", &w().u8(gio::RAW).raw(&[2; 52]).out)?;
    let seal = |epoch: u64, body: &[u8], edits: &[(u16, u8)], resize: u8| {
        w().u8(gio::SEAL).u64(epoch).raw(&[0x24; 24]).bytes16(body).edits(edits).u8(resize).out.clone()
    };
    s.put(t, "seal", &seal(1, b"group info", &[], 0))?;
    s.put(t, "seal-altered-header", &seal(7, b"group info", &[(1, 1)], 0))?;
    s.put(t, "seal-altered-tag", &seal(7, b"group info", &[(60, 0x80)], 0))?;
    s.put(t, "seal-truncated", &seal(u64::MAX, &known[4].mls, &[], 3))?;
    s.put(t, "seal-extended", &seal(2, &[0; 300], &[], 8))?;

    let t = "group_process";
    let real = |x: &mut Writer, index: u8, sender: u8, kind: u8| {
        x.u8(1).u8(sender).u8(kind).u8(index).edits(&[]).u8(0);
    };
    let mut x = w();
    for i in 0..4 {
        real(&mut x, i, 0, 0);
    }
    s.put(t, "each-known-message", &x.out)?;
    let mut x = w();
    real(&mut x, 2, 0, 0);
    real(&mut x, 0, 0, 0);
    real(&mut x, 1, 0, 0);
    s.put(t, "entry-wins-then-stale", &x.out)?;
    let mut x = w();
    real(&mut x, 3, 0, 0); // the wrong password's entry
    real(&mut x, 1, 0, 2); // bob's commit called an application message
    real(&mut x, 0, 0, 1); // bob's message called a commit
    real(&mut x, 1, 3, 0); // bob's commit under carol's envelope
    real(&mut x, 0, 0, 0);
    real(&mut x, 0, 3, 0); // bob's message again, under carol's envelope
    real(&mut x, 1, 0, 0);
    s.put(t, "lying-envelopes", &x.out)?;
    let mut x = w();
    x.u8(1).u8(0).u8(0).u8(0).edits(&[(60, 1)]).u8(0);
    x.u8(1).u8(0).u8(0).u8(1).edits(&[(20, 4)]).u8(0);
    x.u8(1).u8(0).u8(0).u8(2).edits(&[]).u8(9);
    x.u8(1).u8(0).u8(0).u8(2).edits(&[]).u8(4);
    real(&mut x, 2, 0, 0);
    s.put(t, "altered", &x.out)?;
    let mut x = w();
    x.u8(0).u8(2).u8(1).bytes16(&known[1].mls);
    x.u8(0).u8(1).u8(2).bytes16(&known[4].mls);
    x.u8(0).u8(2).u8(2).bytes16(&[0, 1, 0, 2, 32]);
    x.u8(0).u8(3).u8(1).bytes16(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3]);
    s.put(t, "raw", &x.out)?;
    Ok(())
}

/// Seeds of `history_share_decode`: real shares (one envelope, and the first of several), and
/// each cut, extended and with a bad count. Reproducible.
fn history_seeds(s: &mut Seeds) -> Result<()> {
    use chatroom_crypto::{Content, ContentKind, PublicIdentity};
    use chatroom_session::v2_history::{encode_share, SharedMessage};
    let t = "history_share_decode";
    let message = |seq: u64, kind, nick: &str, body: String| -> Result<SharedMessage> {
        let content = Content { timestamp_ms: 1_700_000_000_000 + seq, kind, nick: Nick::new(nick)?, body };
        Ok(SharedMessage { sender: PublicIdentity([seq as u8; 32]), seq, content })
    };
    let three = [
        message(3, ContentKind::Text, "alice", "hello".into())?,
        message(4, ContentKind::Action, "bob", "waves".into())?,
        message(7, ContentKind::Text, "carol", "h\u{e9}llo \u{1b}[2J".into())?,
    ];
    let one = encode_share(1_700_000_000_000, 9, &three)?.remove(0);
    s.put(t, "three", &one)?;
    s.put(t, "three-cut", &one[..one.len() - 64])?;
    let mut extended = one.to_vec();
    extended.extend_from_slice(&[0; 64]);
    s.put(t, "three-extended", &extended)?;
    let mut no_count = one.to_vec();
    no_count[19] = 0;
    s.put(t, "three-count-0", &no_count)?;
    let long: Vec<SharedMessage> = (1..=5)
        .map(|seq| message(seq, ContentKind::Text, "alice", "x".repeat(4096)))
        .collect::<Result<_>>()?;
    let parts = encode_share(1, 6, &long)?;
    s.put(t, "long-part-0", &parts[0])?;
    s.put(t, "long-part-last", &parts[parts.len() - 1])?;
    s.put(t, "raw-short", &[0, 0, 0, 0, 0, 0, 0, 0, 5])?;
    Ok(())
}
