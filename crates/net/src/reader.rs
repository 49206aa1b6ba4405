//! Reading `length(u16 BE) | bytes` frames off a stream.
//!
//! Between frames the reader holds no memory: it waits for the stream to become readable
//! without a buffer, and gives its read buffer back once every byte in it is decoded. A member
//! that sends nothing (most of a large room) costs no read buffer at all.
//!
//! A read takes whatever bytes have arrived, up to a bounded read length, so a frame that
//! arrived whole costs one read, not a header read and a body read. The bytes then go through
//! crypto's fuzzed `FrameDecoder` no faster than it asks for them (`wanted`), so each frame is
//! checked against the bounds in force when it is reached and a length outside them is refused
//! from the header alone, before its body is buffered.

use std::future::poll_fn;
use std::io::ErrorKind;
use std::task::{Context, Poll};

use chatroom_crypto::{DecodeError, FrameDecoder, FRAME_HEADER_LEN};
use tokio::io::Interest;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// Bytes one read asks for by default: a few typical frames.
pub const DEFAULT_READ_LEN: usize = 4096;

/// A stream that can wait until it has bytes to read and then read them without waiting, so
/// that waiting takes no buffer (tokio's `poll_read_ready` and `try_read_buf`).
pub trait Readable {
    /// Ready once the stream may be readable (or at its end, or failed); it may be ready
    /// spuriously, and then `try_read_buf` says `WouldBlock`. Waiting stores only the waker.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;

    /// Reads what has arrived into `buf`'s spare capacity without waiting: `Ok(0)` at the end
    /// of the stream, `WouldBlock` if nothing has arrived.
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize>;
}

impl Readable for OwnedReadHalf {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        read_draining(self.as_ref(), buf)
    }
}

impl Readable for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        read_draining(self, buf)
    }
}

/// `try_read_buf` that also clears the socket's read readiness when the read was short, as
/// tokio's own `poll_read` does: a short read emptied the receive queue, so the next wait
/// sleeps until more arrives instead of costing a `recv` that says `EAGAIN` (one per frame
/// otherwise). tokio clears only if no readiness event came in since the read began, so bytes
/// that arrive meanwhile still wake the wait.
fn read_draining(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let offered = buf.capacity() - buf.len();
    let mut taken = 0;
    let read = stream.try_io(Interest::READABLE, || {
        taken = stream.try_read_buf(buf)?;
        if taken > 0 && taken < offered {
            // `try_io` clears the readiness it saw on `WouldBlock`; the bytes are kept.
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    });
    match read {
        Err(e) if e.kind() == ErrorKind::WouldBlock && taken > 0 => Ok(taken),
        other => other,
    }
}

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame header announced an empty frame or one longer than the limit.
    #[error("bad frame: {0}")]
    Malformed(#[from] DecodeError),
    /// The frame header announced a length outside what this point of the protocol allows.
    #[error("frame of {len} bytes announced where {min} to {max} are allowed")]
    OutOfBounds {
        /// The announced length.
        len: usize,
        /// The least allowed.
        min: usize,
        /// The most allowed.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frame reader over one direction of a stream. While a frame is coming in it holds at most
/// one read's worth of bytes ahead (`read_len`) plus the frame being assembled (at most the
/// frame limit); between frames, nothing.
///
/// `next_frame` is cancel-safe: bytes are taken from the stream only by a read that
/// completes, and are kept in the reader, so a `select!` may drop the call and call again.
/// After an error the stream is out of step: the caller closes it.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
    /// Bytes read ahead, `buf[start..]` not yet decoded; unallocated when all are decoded.
    buf: Vec<u8>,
    start: usize,
    read_len: usize,
    /// The bounds the current call accepts, checked from the header.
    min: usize,
    max: usize,
}

impl<R: Readable> FrameReader<R> {
    /// A reader that refuses frames over `max_frame_len` bytes, reading `DEFAULT_READ_LEN`
    /// bytes at most at a time.
    pub fn new(inner: R, max_frame_len: usize) -> Self {
        Self::with_read_len(inner, max_frame_len, DEFAULT_READ_LEN)
    }

    /// As `new`, reading at most `read_len` bytes (at least one) at a time.
    pub fn with_read_len(inner: R, max_frame_len: usize, read_len: usize) -> Self {
        Self {
            inner,
            decoder: FrameDecoder::new(max_frame_len),
            buf: Vec::new(),
            start: 0,
            read_len: read_len.max(1),
            min: 1,
            max: max_frame_len,
        }
    }

    /// Changes the frame limit for frames whose header has not been read yet.
    pub fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
        self.decoder.set_max(max);
    }

    /// The next frame's payload; `Ok(None)` at a clean end of stream.
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.min = 1;
        self.read_frame().await
    }

    /// The next frame, whose length must be within `min..=max`: one outside is refused from
    /// its header, before its body is read. The limit stays at `max` afterwards.
    pub async fn next_frame_within(&mut self, min: usize, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
        self.set_max_frame_len(max);
        self.min = min.max(1);
        match self.read_frame().await {
            Err(FrameError::Malformed(DecodeError::TooLong { len, .. })) => {
                Err(FrameError::OutOfBounds { len, min, max })
            }
            Err(FrameError::Malformed(DecodeError::EmptyFrame)) => {
                Err(FrameError::OutOfBounds { len: 0, min, max })
            }
            other => other,
        }
    }

    async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if let Some(frame) = self.decode_ahead()? {
                return Ok(Some(frame));
            }
            let Some(buf) = self.read_arrived().await? else {
                return if self.decoder.is_mid_frame() { Err(FrameError::Truncated) } else { Ok(None) };
            };
            (self.buf, self.start) = (buf, 0);
        }
    }

    /// Waits with no buffer until bytes have arrived, then reads up to `read_len` of them into
    /// a new one; `None` at the end of the stream.
    async fn read_arrived(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            // A poll function, not tokio's `readable()`: an idle connection's task then stores
            // no waiter node for this wait, only the waker in the socket's registration.
            poll_fn(|cx| self.inner.poll_read_ready(cx)).await?;
            let mut buf = Vec::with_capacity(self.read_len);
            match self.inner.try_read_buf(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(buf)),
                // The readiness was stale: the buffer goes, and the wait starts again.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Feeds read-ahead bytes to the decoder, never more than it wants, until a frame is
    /// complete or the bytes run out; then gives the read buffer back.
    fn decode_ahead(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let mut frame = None;
        while frame.is_none() && self.start < self.buf.len() {
            let n = self.decoder.wanted().max(1).min(self.buf.len() - self.start);
            let frames = self.decoder.push(&self.buf[self.start..self.start + n])?;
            self.start += n;
            // At most one: the bytes fed never reach past the frame being assembled.
            frame = frames.into_iter().next();
            if frame.is_none() {
                self.check_announced()?;
            }
        }
        if self.start == self.buf.len() {
            (self.buf, self.start) = (Vec::new(), 0);
        }
        Ok(frame)
    }

    /// Refuses a frame shorter than `min` as soon as its header is in.
    fn check_announced(&self) -> Result<(), FrameError> {
        if self.decoder.buffered().0 == FRAME_HEADER_LEN {
            let len = self.decoder.wanted();
            if len < self.min {
                return Err(FrameError::OutOfBounds { len, min: self.min, max: self.max });
            }
        }
        Ok(())
    }

    /// Reads and discards up to `max` bytes until end of stream: lets a goodbye reach a peer
    /// that is still sending, instead of resetting the connection under it.
    pub async fn discard(&mut self, max: usize) {
        let mut total = self.buf.len() - self.start;
        (self.buf, self.start) = (Vec::new(), 0);
        while total < max {
            match self.read_arrived().await {
                Ok(Some(buf)) => total += buf.len(),
                Ok(None) | Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::future::Future;
    use std::sync::Mutex;

    use super::*;
    use chatroom_crypto::encode_frame;
    use tokio::io::AsyncWriteExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(p, &mut out).unwrap();
        }
        out
    }

    /// A stream that counts the reads it answered and gives out at most `chunk` bytes each.
    struct Counting {
        data: Vec<u8>,
        at: Cell<usize>,
        chunk: usize,
        reads: Cell<usize>,
    }

    /// Always readable, as a stream whose bytes have all arrived.
    impl Readable for Counting {
        fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn try_read_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
            let at = self.at.get();
            let n = self.chunk.min(buf.capacity() - buf.len()).min(self.data.len() - at);
            buf.extend_from_slice(&self.data[at..at + n]);
            self.at.set(at + n);
            self.reads.set(self.reads.get() + 1);
            Ok(n)
        }
    }

    fn counting(data: Vec<u8>, chunk: usize) -> Counting {
        Counting { data, at: Cell::new(0), chunk, reads: Cell::new(0) }
    }

    /// A real socket, read as `OwnedReadHalf` is, that records the spare capacity of every read
    /// that took bytes and counts the reads that found nothing.
    struct Probe {
        inner: OwnedReadHalf,
        reads: Mutex<Vec<usize>>,
        stale: Mutex<usize>,
        /// Kept open: dropping it would shut the direction down.
        _write: tokio::net::tcp::OwnedWriteHalf,
    }

    impl Readable for Probe {
        fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.inner.poll_read_ready(cx)
        }

        fn try_read_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
            let offered = buf.capacity() - buf.len();
            let read = Readable::try_read_buf(&self.inner, buf);
            match &read {
                Ok(_) => self.reads.lock().unwrap().push(offered),
                Err(e) if e.kind() == ErrorKind::WouldBlock => *self.stale.lock().unwrap() += 1,
                Err(_) => {}
            }
            read
        }
    }

    impl Probe {
        fn take_reads(&self) -> Vec<usize> {
            std::mem::take(&mut *self.reads.lock().unwrap())
        }
    }

    /// A connected pair over 127.0.0.1: the writing end and a probed reading end.
    async fn tcp_pair() -> Result<(TcpStream, Probe), Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        let (read, write) = server.into_split();
        Ok((
            client,
            Probe { inner: read, reads: Mutex::new(Vec::new()), stale: Mutex::new(0), _write: write },
        ))
    }

    #[tokio::test]
    async fn a_frame_that_arrived_whole_costs_one_read() -> TestResult {
        let mut reader = FrameReader::new(counting(framed(&[&[7; 300]]), usize::MAX), 1000);
        assert_eq!(reader.next_frame().await?, Some(vec![7; 300]));
        assert_eq!(reader.inner.reads.get(), 1);
        // Several small frames that arrived together: still one read for all of them.
        let mut reader = FrameReader::new(counting(framed(&[b"a", b"bc", b"def"]), usize::MAX), 1000);
        for want in [&b"a"[..], b"bc", b"def"] {
            assert_eq!(reader.next_frame().await?.as_deref(), Some(want));
        }
        assert_eq!(reader.inner.reads.get(), 1);
        assert_eq!(reader.next_frame().await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn byte_at_a_time_delivery_gives_the_same_frames() -> TestResult {
        let payloads: [&[u8]; 3] = [&[1, 2, 3], &[9; 70], &[4]];
        let mut reader = FrameReader::new(counting(framed(&payloads), 1), 100);
        for p in payloads {
            assert_eq!(reader.next_frame().await?.as_deref(), Some(p));
        }
        assert_eq!(reader.next_frame().await?, None);
        let mut reader = FrameReader::with_read_len(counting(framed(&payloads), usize::MAX), 100, 1);
        for p in payloads {
            assert_eq!(reader.next_frame().await?.as_deref(), Some(p), "a one-byte read buffer");
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_oversized_header_is_refused_before_its_body_arrives() -> TestResult {
        // Only the header is sent: the refusal cannot have waited for the body.
        let (mut a, b) = tcp_pair().await?;
        a.write_all(&[0x10, 0x00]).await?;
        let mut reader = FrameReader::new(b, 1000);
        let err = reader.next_frame().await.unwrap_err();
        assert!(
            matches!(err, FrameError::Malformed(DecodeError::TooLong { len: 4096, max: 1000, .. })),
            "{err}"
        );
        assert!(reader.next_frame().await.is_err(), "stays failed");
        let mut reader = FrameReader::new(counting(vec![0, 0], usize::MAX), 1000);
        assert!(matches!(reader.next_frame().await, Err(FrameError::Malformed(DecodeError::EmptyFrame))));
        Ok(())
    }

    #[tokio::test]
    async fn limits_apply_to_the_frame_they_are_set_for() -> TestResult {
        // Two frames arrive in one read; the second is checked against the limit in force
        // when it is reached, as the relay's handshake needs.
        let mut reader = FrameReader::new(counting(framed(&[&[1; 32], &[2; 500]]), usize::MAX), 32);
        assert_eq!(reader.next_frame_within(32, 32).await?, Some(vec![1; 32]));
        assert_eq!(reader.next_frame_within(1, 1000).await?, Some(vec![2; 500]));
        let mut reader = FrameReader::new(counting(framed(&[&[1; 31]]), usize::MAX), 100);
        assert!(matches!(
            reader.next_frame_within(32, 32).await,
            Err(FrameError::OutOfBounds { len: 31, min: 32, max: 32 })
        ));
        let mut reader = FrameReader::new(counting(framed(&[&[1; 33]]), usize::MAX), 100);
        assert!(matches!(
            reader.next_frame_within(32, 32).await,
            Err(FrameError::OutOfBounds { len: 33, min: 32, max: 32 })
        ));
        Ok(())
    }

    #[tokio::test]
    async fn bounds_are_checked_from_the_header_before_the_body() -> TestResult {
        // Only headers are sent: a refusal cannot have waited for a body. As the relay reads
        // its handshake (exactly 32 bytes) and its transport frames (16 to 65535 bytes).
        for (header, min, max, len) in [
            ([0, 31], 32, 32, 31),
            ([0, 33], 32, 32, 33),
            ([0xff, 0xff], 16, 1000, 65535),
            ([0, 0], 16, 1000, 0),
        ] {
            let (mut a, b) = tcp_pair().await?;
            a.write_all(&header).await?;
            let mut reader = FrameReader::new(b, 100);
            let err = reader.next_frame_within(min, max).await.unwrap_err();
            assert!(
                matches!(err, FrameError::OutOfBounds { len: l, min: m, max: x } if (l, m, x) == (len, min, max)),
                "{header:?}: {err}"
            );
        }
        // The bounds themselves are allowed, per call, on one stream.
        let stream = framed(&[&[1; 16], &[2; 1000], &[3; 32]]);
        let mut reader = FrameReader::new(counting(stream, usize::MAX), 32);
        assert_eq!(reader.next_frame_within(16, 16).await?, Some(vec![1; 16]));
        assert_eq!(reader.next_frame_within(16, 1000).await?, Some(vec![2; 1000]));
        assert_eq!(reader.next_frame_within(32, 32).await?, Some(vec![3; 32]));
        assert_eq!(reader.next_frame_within(32, 32).await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn no_memory_is_held_while_waiting_between_frames() -> TestResult {
        let (mut peer, probe) = tcp_pair().await?;
        let mut reader = FrameReader::new(probe, 1000);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for round in 0..3u8 {
            {
                // Nothing sent yet: the call waits, and it waits without a read.
                let next = reader.next_frame_within(1, 1000);
                tokio::pin!(next);
                assert!(next.as_mut().poll(&mut cx).is_pending());
            }
            assert_eq!(reader.inner.take_reads(), [], "round {round}: read while nothing had arrived");
            assert_eq!((reader.buf.capacity(), reader.decoder.buffered()), (0, (0, 0)));
            peer.write_all(&framed(&[&[round; 300]])).await?;
            assert_eq!(reader.next_frame_within(1, 1000).await?, Some(vec![round; 300]));
            assert_eq!(
                reader.inner.take_reads(),
                [DEFAULT_READ_LEN],
                "round {round}: one read for the frame"
            );
            assert_eq!((reader.buf.capacity(), reader.decoder.buffered()), (0, (0, 0)), "nothing kept");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_drained_socket_is_waited_on_without_a_read_that_finds_nothing() -> TestResult {
        let (mut peer, probe) = tcp_pair().await?;
        let mut reader = FrameReader::new(probe, 1000);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for round in 0..3u8 {
            peer.write_all(&framed(&[&[round; 300]])).await?;
            assert_eq!(reader.next_frame_within(1, 1000).await?, Some(vec![round; 300]));
            {
                // The read took all there was: the wait for the next frame sleeps at once.
                let next = reader.next_frame_within(1, 1000);
                tokio::pin!(next);
                assert!(next.as_mut().poll(&mut cx).is_pending());
            }
            assert_eq!(*reader.inner.stale.lock().unwrap(), 0, "round {round}: a read found nothing");
            assert_eq!(reader.inner.take_reads(), [DEFAULT_READ_LEN], "round {round}");
        }
        // Bytes that arrive after the readiness was cleared still wake the wait.
        let next = tokio::spawn(async move { reader.next_frame_within(1, 1000).await });
        tokio::task::yield_now().await;
        peer.write_all(&framed(&[b"late"])).await?;
        let late = tokio::time::timeout(std::time::Duration::from_secs(30), next).await???;
        assert_eq!(late.as_deref(), Some(&b"late"[..]));
        Ok(())
    }

    #[tokio::test]
    async fn eof_mid_frame_is_an_error_and_at_a_boundary_the_end() -> TestResult {
        let mut reader = FrameReader::new(counting(vec![0, 5, 1, 2], usize::MAX), 100);
        assert!(matches!(reader.next_frame().await, Err(FrameError::Truncated)));
        let mut reader = FrameReader::new(counting(vec![0], usize::MAX), 100);
        assert!(matches!(reader.next_frame().await, Err(FrameError::Truncated)), "cut in the header");
        let mut reader = FrameReader::new(counting(framed(&[b"x"]), usize::MAX), 100);
        assert_eq!(reader.next_frame().await?, Some(b"x".to_vec()));
        assert_eq!(reader.next_frame().await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn a_call_dropped_mid_frame_loses_nothing() -> TestResult {
        let (mut a, b) = tcp_pair().await?;
        let mut reader = FrameReader::new(b, 100);
        a.write_all(&[0, 40]).await?;
        a.write_all(&[5; 10]).await?;
        reader.inner.inner.as_ref().readable().await?;
        {
            // Read as far as the bytes go, then dropped, as a `select!` does.
            let next = reader.next_frame_within(1, 100);
            tokio::pin!(next);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(next.as_mut().poll(&mut cx).is_pending());
        }
        // The partial frame is kept by the reader, its read buffer given back.
        assert_eq!((reader.decoder.buffered().0, reader.buf.capacity()), (12, 0));
        a.write_all(&[6; 30]).await?;
        let frame = reader.next_frame().await?.ok_or("a frame")?;
        assert_eq!((&frame[..10], &frame[10..]), (&[5; 10][..], &[6; 30][..]));
        Ok(())
    }
}
