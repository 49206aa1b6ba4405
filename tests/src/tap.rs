//! A wiretap for the chatroom protocol: a TCP forwarder on 127.0.0.1 that records every byte
//! in both directions and can flip one byte of a chosen relay-to-client frame.
//!
//! It reads each direction frame by frame (`u16 BE length | payload`, the protocol's framing),
//! so it knows where frames start. Arming a flip with [`Wiretap::flip_next_to_client`] (or
//! [`Wiretap::flip_next_to_relay`]) makes the next frame in that direction that is not a
//! handshake message (on any connection through the tap) arrive with one payload byte XORed
//! with 0x01.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::BoxError;

#[derive(Debug, Default)]
struct Shared {
    to_relay: Mutex<Vec<u8>>,
    to_client: Mutex<Vec<u8>>,
    flip_armed: AtomicBool,
    flip_to_relay_armed: AtomicBool,
    flipped: AtomicUsize,
    connections: AtomicUsize,
}

/// A recording (and optionally tampering) TCP forwarder in front of a relay.
#[derive(Debug)]
pub struct Wiretap {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Wiretap {
    /// Starts a tap on a free port of 127.0.0.1 forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { break };
                let Ok(relay) = TcpStream::connect(upstream) else { continue };
                sh.connections.fetch_add(1, Ordering::SeqCst);
                let (Ok(client2), Ok(relay2)) = (client.try_clone(), relay.try_clone()) else { continue };
                let up = sh.clone();
                thread::spawn(move || pump(client, relay, &up, Direction::ToRelay));
                let down = sh.clone();
                thread::spawn(move || pump(relay2, client2, &down, Direction::ToClient));
            }
        });
        Ok(Self { addr, shared })
    }

    /// `HOST:PORT` for clients.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Every byte clients sent to the relay so far.
    pub fn to_relay(&self) -> Vec<u8> {
        self.shared.to_relay.lock().unwrap().clone()
    }

    /// Every byte the relay sent to clients so far.
    pub fn to_client(&self) -> Vec<u8> {
        self.shared.to_client.lock().unwrap().clone()
    }

    /// Both directions, concatenated.
    pub fn recorded(&self) -> Vec<u8> {
        let mut all = self.to_relay();
        all.extend(self.to_client());
        all
    }

    /// Flips one byte of the next relay-to-client transport frame (the first frame of each
    /// connection, the handshake reply, is never touched).
    pub fn flip_next_to_client(&self) {
        self.shared.flip_armed.store(true, Ordering::SeqCst);
    }

    /// Flips one byte of the next client-to-relay transport frame (each connection's first
    /// two frames, handshake messages 1 and 3, are never touched).
    pub fn flip_next_to_relay(&self) {
        self.shared.flip_to_relay_armed.store(true, Ordering::SeqCst);
    }

    /// How many frames have been altered so far.
    pub fn flipped(&self) -> usize {
        self.shared.flipped.load(Ordering::SeqCst)
    }

    /// How many connections went through the tap.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToRelay,
    ToClient,
}

fn read_frame(from: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 2];
    from.read_exact(&mut header)?;
    let len = usize::from(u16::from_be_bytes(header));
    let mut frame = vec![0u8; 2 + len];
    frame[..2].copy_from_slice(&header);
    from.read_exact(&mut frame[2..])?;
    Ok(frame)
}

fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, dir: Direction) {
    let mut index = 0usize;
    while let Ok(mut frame) = read_frame(&mut from) {
        let record = match dir {
            Direction::ToRelay => &shared.to_relay,
            Direction::ToClient => &shared.to_client,
        };
        record.lock().unwrap().extend_from_slice(&frame);
        // Frame 0 relay->client is the handshake reply, frames 0 and 1 client->relay are
        // handshake messages 1 and 3; later frames are transport messages.
        let armed = match dir {
            Direction::ToClient => index > 0 && shared.flip_armed.swap(false, Ordering::SeqCst),
            Direction::ToRelay => index > 1 && shared.flip_to_relay_armed.swap(false, Ordering::SeqCst),
        };
        if armed && frame.len() > 2 {
            let at = 2 + (frame.len() - 2) / 2;
            frame[at] ^= 0x01;
            shared.flipped.fetch_add(1, Ordering::SeqCst);
        }
        index += 1;
        if to.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
