//! One connection to a relay: the framed Noise handshake with the relay key checked against
//! its pins before the handshake finishes, the join, and framed transport messages. Used by
//! the session driver, and directly by tools that want raw connections.

use std::time::Duration;

use chatroom_crypto::{
    ClientMessage, Initiator, JoinRequest, PublicIdentity, RelayMessage, StaticKeypair, TransportReceiver,
    TransportSender, FRAME_HEADER_LEN, HANDSHAKE2_LEN, MAX_FRAME_LEN, MAX_PLAINTEXT_LEN,
};
use chatroom_net::{FrameError, FrameReader};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::error::SessionError;
use crate::trust::{check_relay, RelayCheck, RelayPin};

/// How long one write may block before the connection counts as dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The receiving half of an established connection.
#[derive(Debug)]
pub struct ConnReader {
    frames: FrameReader<OwnedReadHalf>,
    receiver: TransportReceiver,
}

/// The sending half of an established connection.
#[derive(Debug)]
pub struct ConnWriter {
    write: OwnedWriteHalf,
    sender: TransportSender,
    buf: Vec<u8>,
}

/// A connection after the Noise handshake.
#[derive(Debug)]
pub struct Handshaken {
    /// Receiving half.
    pub reader: ConnReader,
    /// Sending half.
    pub writer: ConnWriter,
    /// The relay's static key (checked against the pins).
    pub relay_key: [u8; 32],
    /// The Noise handshake hash, which a join request signs.
    pub handshake_hash: [u8; 32],
    /// How the relay key was trusted.
    pub check: RelayCheck,
}

/// What the relay said in `Joined`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinedInfo {
    /// This join created the room.
    pub created: bool,
    /// The room owner.
    pub owner: PublicIdentity,
    /// Highest sequence number assigned in the room.
    pub latest_seq: u64,
    /// Lowest sequence number retained.
    pub oldest_seq: u64,
}

fn lost(e: std::io::Error) -> SessionError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        SessionError::Lost("the relay closed the connection".into())
    } else {
        SessionError::Io(e)
    }
}

/// A frame that could not be read, as the session reports it.
fn frame_error(e: FrameError) -> SessionError {
    match e {
        FrameError::Io(e) => lost(e),
        FrameError::Truncated => SessionError::Lost("the relay closed the connection mid-frame".into()),
        other => SessionError::malformed("", other),
    }
}

/// The next frame; the end of the stream is a lost connection.
async fn read_frame(frames: &mut FrameReader<OwnedReadHalf>) -> Result<Vec<u8>, SessionError> {
    frames
        .next_frame()
        .await
        .map_err(frame_error)?
        .ok_or_else(|| SessionError::Lost("the relay closed the connection".into()))
}

async fn write_all(write: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), SessionError> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(bytes)).await {
        Ok(result) => result.map_err(lost),
        Err(_) => {
            Err(SessionError::Lost(format!("the relay did not read for {} s", WRITE_TIMEOUT.as_secs())))
        }
    }
}

/// Runs the Noise XX handshake as initiator with a fresh static key. The relay's key is
/// checked against `pin` (and recorded on first use) before message 3 is sent.
pub async fn handshake(stream: TcpStream, addr: &str, pin: &RelayPin) -> Result<Handshaken, SessionError> {
    handshake_version(stream, addr, pin, 1).await
}

/// As `handshake`, for protocol version 2: prologue `chatroom/2`, the version byte in clear in
/// message 1 (docs/PROTOCOL.md section 19.1).
pub async fn handshake_v2(stream: TcpStream, addr: &str, pin: &RelayPin) -> Result<Handshaken, SessionError> {
    handshake_version(stream, addr, pin, 2).await
}

async fn handshake_version(
    stream: TcpStream,
    addr: &str,
    pin: &RelayPin,
    version: u8,
) -> Result<Handshaken, SessionError> {
    let (read, mut write) = stream.into_split();
    // Nothing longer than the handshake reply until the handshake is over.
    let mut frames = FrameReader::new(read, HANDSHAKE2_LEN);
    let local = StaticKeypair::generate();
    let noise = |e: chatroom_crypto::NoiseError| SessionError::malformed("", e);
    // -> e
    let started = if version == 2 { Initiator::start_v2(&local) } else { Initiator::start(&local) };
    let (awaiting, msg1) = started.map_err(noise)?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + msg1.len());
    chatroom_crypto::encode_frame(&msg1, &mut out).map_err(|e| SessionError::malformed("", e))?;
    write_all(&mut write, &out).await?;
    // <- e, ee, s, es
    let msg2 = match frames.next_frame_within(HANDSHAKE2_LEN, HANDSHAKE2_LEN).await {
        Ok(Some(msg2)) => msg2,
        Ok(None) => return Err(SessionError::Lost("the relay closed the connection".into())),
        Err(e @ (FrameError::Malformed(_) | FrameError::OutOfBounds { .. })) => {
            return Err(SessionError::malformed(
                format!("the handshake reply is not {HANDSHAKE2_LEN} bytes (is this a chatroom relay?): "),
                e,
            ))
        }
        Err(e) => return Err(frame_error(e)),
    };
    frames.set_max_frame_len(MAX_FRAME_LEN);
    let ready = awaiting.read_reply(&msg2).map_err(noise)?;
    let relay_key = *ready.relay_key();
    let check = check_relay(pin, addr, &relay_key)?;
    // -> s, se
    let (transport, msg3) = ready.finish().map_err(noise)?;
    out.clear();
    chatroom_crypto::encode_frame(&msg3, &mut out).map_err(|e| SessionError::malformed("", e))?;
    write_all(&mut write, &out).await?;
    let handshake_hash = *transport.handshake_hash();
    let (sender, receiver) = transport.split();
    Ok(Handshaken {
        reader: ConnReader { frames, receiver },
        writer: ConnWriter { write, sender, buf: Vec::new() },
        relay_key,
        handshake_hash,
        check,
    })
}

impl ConnReader {
    /// Reads the next transport message and decodes its items. Any decryption or decoding
    /// failure ends the connection.
    pub async fn recv(&mut self) -> Result<Vec<RelayMessage>, SessionError> {
        let frame = read_frame(&mut self.frames).await?;
        let plaintext = self.receiver.open(&frame).map_err(|e| SessionError::malformed("", e))?;
        RelayMessage::decode_all(&plaintext)
            .map_err(|e| SessionError::malformed("malformed message from the relay: ", e))
    }
}

impl ConnWriter {
    /// Sends `messages`, packing as many items as fit into each transport message, in one write.
    pub async fn send(&mut self, messages: &[ClientMessage]) -> Result<(), SessionError> {
        self.buf.clear();
        let mut plaintext = Vec::new();
        let mut item = Vec::new();
        for m in messages {
            item.clear();
            m.encode(&mut item);
            if !plaintext.is_empty() && plaintext.len() + item.len() > MAX_PLAINTEXT_LEN {
                self.sender
                    .seal_frame(&plaintext, &mut self.buf)
                    .map_err(|e| SessionError::malformed("", e))?;
                plaintext.clear();
            }
            plaintext.extend_from_slice(&item);
        }
        if !plaintext.is_empty() {
            self.sender.seal_frame(&plaintext, &mut self.buf).map_err(|e| SessionError::malformed("", e))?;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        write_all(&mut self.write, &self.buf).await
    }

    /// Closes the sending direction.
    pub async fn shutdown(&mut self) {
        let _ = self.write.shutdown().await;
    }
}

/// Sends a join request and reads until `Joined`. Returns what `Joined` said and any items
/// that arrived after it in the same transport message; a `Goodbye` becomes `Refused`.
pub async fn join(
    conn: &mut Handshaken,
    request: JoinRequest,
) -> Result<(JoinedInfo, Vec<RelayMessage>), SessionError> {
    conn.writer.send(&[ClientMessage::Join(request)]).await?;
    let messages = conn.reader.recv().await?;
    let mut rest = messages.into_iter();
    match rest.next() {
        Some(RelayMessage::Joined { created, owner, latest_seq, oldest_seq }) => {
            Ok((JoinedInfo { created, owner, latest_seq, oldest_seq }, rest.collect()))
        }
        Some(RelayMessage::Goodbye { code, detail }) => Err(SessionError::Refused { code, detail }),
        Some(other) => Err(SessionError::Protocol(format!(
            "expected Joined or Goodbye after Join, got {}",
            kind(&other)
        ))),
        None => Err(SessionError::Protocol("empty reply to Join".into())),
    }
}

/// The name of a relay message type, for error messages.
pub(crate) fn kind(m: &RelayMessage) -> &'static str {
    match m {
        RelayMessage::Joined { .. } => "Joined",
        RelayMessage::Deliver { .. } => "Deliver",
        RelayMessage::Ack { .. } => "Ack",
        RelayMessage::Members { .. } => "Members",
        RelayMessage::Presence { .. } => "Presence",
        RelayMessage::HistoryEnd { .. } => "HistoryEnd",
        RelayMessage::Error { .. } => "Error",
        RelayMessage::Ping { .. } => "Ping",
        RelayMessage::Pong { .. } => "Pong",
        RelayMessage::Goodbye { .. } => "Goodbye",
        RelayMessage::GroupInfo(_) => "GroupInfo",
        RelayMessage::GroupInfoStored { .. } => "GroupInfoStored",
        _ => "an unknown message",
    }
}
