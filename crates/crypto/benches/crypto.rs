//! Crypto micro-benchmarks: envelope seal+open, the Noise transport seal (snow's transport
//! state on its two ChaCha20-Poly1305 backends, RustCrypto and ring, and the crate's own, ring's
//! cipher in the frame's buffer), X25519, a whole handshake, and room key derivation.
//! Run: `cargo bench -p chatroom-crypto --bench crypto`; figures go to docs/BENCHMARKS.md.

use std::hint::black_box;

use chatroom_crypto::internal::split_master;
use chatroom_crypto::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn envelope(c: &mut Criterion) {
    let keys = split_master(&[7; 32]);
    let id = Identity::from_seed(&[1; 32]);
    let room = RoomName::new("general").expect("valid room");
    let mut group = c.benchmark_group("envelope seal+open");
    for size in [100usize, 1024, MAX_BODY_LEN] {
        let content = Content {
            timestamp_ms: 1,
            kind: ContentKind::Text,
            nick: Nick::new("alice").expect("valid nick"),
            body: "x".repeat(size),
        };
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size} B"), |b| {
            b.iter(|| {
                let env = seal(&keys.message_key, &id, &room, 1, black_box(&content)).expect("seal");
                open(&keys.message_key, &room, black_box(&env)).expect("open")
            })
        });
    }
    group.finish();
}

fn handshake_pair() -> (Transport, Transport) {
    let relay = StaticKeypair::generate();
    let (init, m1) = Initiator::start(&StaticKeypair::generate()).expect("start");
    let (resp, m2) = Responder::new(&relay).expect("responder").read_hello(&m1).expect("hello");
    let (client, m3) = init.read_reply(&m2).expect("reply").finish().expect("finish");
    (client, resp.read_finish(&m3).expect("finish"))
}

/// A finished snow transport state: on snow's default (RustCrypto) resolver, or with ring's
/// ChaCha20-Poly1305 in front of it; the alternatives to `chatroom_crypto::handshake`'s own
/// transport.
fn snow_transport(ring: bool) -> snow::TransportState {
    use snow::resolvers::{BoxedCryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
    let params: snow::params::NoiseParams = NOISE_PARAMS.parse().expect("params");
    let resolver = || -> BoxedCryptoResolver {
        if ring {
            Box::new(FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver)))
        } else {
            Box::new(DefaultResolver)
        }
    };
    let build = |initiator: bool| {
        let key = StaticKeypair::generate();
        let builder = snow::Builder::with_resolver(params.clone(), resolver())
            .local_private_key(key.private())
            .expect("key");
        if initiator { builder.build_initiator() } else { builder.build_responder() }.expect("build")
    };
    let (mut init, mut resp) = (build(true), build(false));
    let (mut buf, mut scratch) = ([0u8; 256], [0u8; 256]);
    let n = init.write_message(&[], &mut buf).expect("m1");
    resp.read_message(&buf[..n], &mut scratch).expect("m1");
    let n = resp.write_message(&[], &mut buf).expect("m2");
    init.read_message(&buf[..n], &mut scratch).expect("m2");
    let n = init.write_message(&[], &mut buf).expect("m3");
    resp.read_message(&buf[..n], &mut scratch).expect("m3");
    init.into_transport_mode().expect("transport")
}

fn transport(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise transport seal");
    for size in [150usize, 1024, 16 * 1024, MAX_PLAINTEXT_LEN] {
        let plaintext = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        let mut out = vec![0u8; size + 16];
        for (name, ring) in [("snow/RustCrypto", false), ("snow/ring", true)] {
            let mut snow = snow_transport(ring);
            group.bench_function(format!("{name} {size} B"), |b| {
                b.iter(|| snow.write_message(black_box(&plaintext), &mut out).expect("seal"))
            });
        }
        // What the relay and client run: Transport::seal_frame (ring's cipher in the frame's
        // buffer, the frame header included).
        let (mut client, _) = handshake_pair();
        let mut framed = Vec::with_capacity(size + 64);
        group.bench_function(format!("in place/ring {size} B"), |b| {
            b.iter(|| {
                framed.clear();
                client.seal_frame(black_box(&plaintext), &mut framed).expect("seal");
            })
        });
    }
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let a = x25519_dalek::StaticSecret::from([1; 32]);
    let b_pub = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([2; 32]));
    c.bench_function("x25519 diffie-hellman", |b| b.iter(|| a.diffie_hellman(black_box(&b_pub))));
    let relay = StaticKeypair::generate();
    c.bench_function("noise XX handshake, both sides", |b| {
        b.iter_batched(
            StaticKeypair::generate,
            |client| {
                let (init, m1) = Initiator::start(&client).expect("start");
                let (resp, m2) = Responder::new(&relay).expect("responder").read_hello(&m1).expect("hello");
                let (_, m3) = init.read_reply(&m2).expect("reply").finish().expect("finish");
                resp.read_finish(&m3).expect("finish")
            },
            BatchSize::SmallInput,
        )
    });
    let relay_only = StaticKeypair::generate();
    c.bench_function("noise XX handshake, relay side", |b| {
        b.iter_batched(
            || {
                let (init, m1) = Initiator::start(&StaticKeypair::generate()).expect("start");
                let (resp, m2) =
                    Responder::new(&relay_only).expect("responder").read_hello(&m1).expect("hello");
                let (_, m3) = init.read_reply(&m2).expect("reply").finish().expect("finish");
                let (init2, m1b) = Initiator::start(&StaticKeypair::generate()).expect("start");
                drop((resp, m3, init2));
                m1b
            },
            |m1| {
                // The relay's share of a handshake: read 1, write 2 (the DH-heavy part).
                Responder::new(&relay_only).expect("responder").read_hello(&m1).expect("hello")
            },
            BatchSize::SmallInput,
        )
    });
}

fn kdf(c: &mut Criterion) {
    let room = RoomName::new("general").expect("valid room");
    let mut group = c.benchmark_group("room key derivation");
    group.sample_size(10);
    group.bench_function("argon2id m65536t3p1 + hkdf", |b| {
        b.iter(|| derive_room_keys(b"correct horse battery staple", &[1; 32], &room, KdfParams::DEFAULT))
    });
    group.finish();
}

criterion_group!(benches, envelope, transport, handshake, kdf);
criterion_main!(benches);
