//! The listener and one connection's relay side: handshake, framed transport, join.

use std::net::SocketAddr;
use std::time::Duration;

use chatroom_crypto::{
    encode_frame, ClientMessage, Identity, JoinRequest, Member, PublicIdentity, RelayMessage, Responder,
    SignedJoin, StaticKeypair, Transport, HANDSHAKE1_LEN, HANDSHAKE3_LEN,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::BoxError;

/// The longest a fake relay waits for a peer's next frame.
pub(crate) const READ_LIMIT: Duration = Duration::from_secs(120);

/// A fake relay listening on a free port of 127.0.0.1 with its own static key.
pub struct FakeRelay {
    listener: TcpListener,
    key: StaticKeypair,
}

impl std::fmt::Debug for FakeRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRelay").field("addr", &self.listener.local_addr().ok()).finish()
    }
}

impl FakeRelay {
    /// Listens on a free port of 127.0.0.1, answering handshakes with `key`.
    pub async fn bind(key: StaticKeypair) -> Result<Self, BoxError> {
        Ok(Self { listener: TcpListener::bind("127.0.0.1:0").await?, key })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The public half of its static key.
    pub fn public_key(&self) -> &[u8; 32] {
        self.key.public()
    }

    /// The fingerprint of its static key, as an invite names it.
    pub fn fingerprint(&self) -> String {
        self.key.public().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Accepts a connection and runs the responder side of the handshake.
    pub async fn accept(&self) -> Result<FakeConn, BoxError> {
        let (mut stream, _) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        // -> e
        let msg1 = read_frame(&mut stream).await?;
        if msg1.len() != HANDSHAKE1_LEN {
            return Err("bad handshake message 1".into());
        }
        let (awaiting, msg2) = Responder::new(&self.key)?.read_hello(&msg1)?;
        // <- e, ee, s, es
        let mut out = Vec::new();
        encode_frame(&msg2, &mut out)?;
        stream.write_all(&out).await?;
        // -> s, se
        let msg3 = read_frame(&mut stream).await?;
        if msg3.len() != HANDSHAKE3_LEN {
            return Err("bad handshake message 3".into());
        }
        let transport = awaiting.read_finish(&msg3)?;
        Ok(FakeConn { stream, transport })
    }

    /// Accepts, reads the join, and admits it into a room owned by `owner` with an empty
    /// history and the joiner as its only member.
    pub async fn admit(&self, owner: &Identity) -> Result<(FakeConn, JoinRequest), BoxError> {
        let mut conn = self.accept().await?;
        let (join, signed) = conn.read_join().await?;
        let member = Member { nick: signed.request().nick.clone(), identity: signed.request().identity };
        conn.send(&[
            RelayMessage::Joined { created: false, owner: owner.public(), latest_seq: 0, oldest_seq: 0 },
            RelayMessage::Members { more: false, members: vec![member] },
            RelayMessage::HistoryEnd { latest_seq: 0 },
        ])
        .await?;
        Ok((conn, join))
    }
}

/// One connection's relay side after the handshake.
pub struct FakeConn {
    stream: TcpStream,
    transport: Transport,
}

impl std::fmt::Debug for FakeConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeConn").field("peer", &self.stream.peer_addr().ok()).finish()
    }
}

impl FakeConn {
    /// The handshake hash a join signs.
    pub fn handshake_hash(&self) -> [u8; 32] {
        *self.transport.handshake_hash()
    }

    /// The client's next frame, decoded.
    pub async fn recv(&mut self) -> Result<Vec<ClientMessage>, BoxError> {
        let frame = read_frame(&mut self.stream).await?;
        Ok(ClientMessage::decode_all(&self.transport.open(&frame)?)?)
    }

    /// Reads the first message, which must be a join, and checks its signature (a fake relay
    /// checks no password: it admits anyone). Returns the request as sent and as verified.
    pub async fn read_join(&mut self) -> Result<(JoinRequest, SignedJoin), BoxError> {
        let join = match self.recv().await?.into_iter().next() {
            Some(ClientMessage::Join(j)) => j,
            other => return Err(format!("expected Join, got {other:?}").into()),
        };
        let signed = join.clone().verify(&self.handshake_hash())?;
        Ok((join, signed))
    }

    /// Sends `messages` as the items of one transport frame.
    pub async fn send(&mut self, messages: &[RelayMessage]) -> Result<(), BoxError> {
        self.send_plain(&encode(messages)).await
    }

    /// Sends already encoded items (a hand-built `Deliver`, garbage) as one transport frame.
    pub async fn send_plain(&mut self, plain: &[u8]) -> Result<(), BoxError> {
        let mut out = Vec::new();
        self.transport.seal_frame(plain, &mut out)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// The socket and the transport, for a relay that reads and writes from separate tasks.
    pub(crate) fn into_parts(self) -> (TcpStream, Transport) {
        (self.stream, self.transport)
    }
}

/// `messages` encoded as the items of one plaintext.
pub(crate) fn encode(messages: &[RelayMessage]) -> Vec<u8> {
    let mut plain = Vec::new();
    for m in messages {
        m.encode(&mut plain);
    }
    plain
}

/// One `length(u16) | bytes` frame, within [`READ_LIMIT`].
pub(crate) async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, BoxError> {
    let read = async {
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).await?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(header))];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    Ok(timeout(READ_LIMIT, read).await??)
}

/// A member list entry.
pub(crate) fn member(nick: &chatroom_crypto::Nick, identity: PublicIdentity) -> Member {
    Member { nick: nick.clone(), identity }
}
