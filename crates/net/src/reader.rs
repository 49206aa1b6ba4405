//! Reading `length(u16 BE) | bytes` frames off a stream.
//!
//! A read takes whatever bytes have arrived, up to a bounded read length, so a frame that
//! arrived whole costs one read, not a header read and a body read. The bytes then go through
//! crypto's fuzzed `FrameDecoder` no faster than it asks for them (`wanted`), so each frame is
//! checked against the limit in force when it is reached and a length over it is refused from
//! the header alone, before its body is buffered.

use chatroom_crypto::{DecodeError, FrameDecoder};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes one read asks for by default: a few typical frames.
pub const DEFAULT_READ_LEN: usize = 4096;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame header announced an empty frame or one longer than the limit.
    #[error("bad frame: {0}")]
    Malformed(#[from] DecodeError),
    /// The frame is shorter than this point of the protocol allows.
    #[error("frame of {len} bytes where at least {min} are expected")]
    TooShort {
        /// The frame's length.
        len: usize,
        /// The least allowed.
        min: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frame reader over one direction of a stream. Holds at most one read's worth of bytes
/// ahead (`read_len`) plus the frame being assembled (at most the frame limit), and nothing
/// but its read buffer between frames.
///
/// `next_frame` is cancel-safe: bytes are taken from the stream only by a read that
/// completes, and are kept in the reader, so a `select!` may drop the call and call again.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
    /// Read buffer, allocated at the first read; `buf[start..end]` is not yet decoded.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    read_len: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
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
            end: 0,
            read_len: read_len.max(1),
        }
    }

    /// Changes the frame limit for frames whose header has not been read yet.
    pub fn set_max_frame_len(&mut self, max: usize) {
        self.decoder.set_max(max);
    }

    /// The next frame's payload; `Ok(None)` at a clean end of stream.
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if let Some(frame) = self.decode_ahead()? {
                return Ok(Some(frame));
            }
            if self.buf.is_empty() {
                self.buf = vec![0; self.read_len];
            }
            let n = self.inner.read(&mut self.buf).await?;
            if n == 0 {
                return if self.decoder.is_mid_frame() { Err(FrameError::Truncated) } else { Ok(None) };
            }
            (self.start, self.end) = (0, n);
        }
    }

    /// The next frame, whose length must be within `min..=max`: a longer one is refused from
    /// its header, a shorter one once it is in. The limit stays at `max` afterwards.
    pub async fn next_frame_within(&mut self, min: usize, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
        self.set_max_frame_len(max);
        match self.next_frame().await? {
            Some(frame) if frame.len() < min => Err(FrameError::TooShort { len: frame.len(), min }),
            other => Ok(other),
        }
    }

    /// Feeds read-ahead bytes to the decoder, never more than it wants, until a frame is
    /// complete or the bytes run out.
    fn decode_ahead(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        while self.start < self.end {
            let n = self.decoder.wanted().max(1).min(self.end - self.start);
            let frames = self.decoder.push(&self.buf[self.start..self.start + n])?;
            self.start += n;
            // At most one: the bytes fed never reach past the frame being assembled.
            if let Some(frame) = frames.into_iter().next() {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }

    /// Reads and discards up to `max` bytes until end of stream: lets a goodbye reach a peer
    /// that is still sending, instead of resetting the connection under it.
    pub async fn discard(&mut self, max: usize) {
        let mut total = self.end - self.start;
        (self.start, self.end) = (0, 0);
        if self.buf.is_empty() {
            self.buf = vec![0; self.read_len];
        }
        while total < max {
            match self.inner.read(&mut self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use chatroom_crypto::encode_frame;
    use tokio::io::{AsyncWriteExt, ReadBuf};

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
        at: usize,
        chunk: usize,
        reads: usize,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.chunk.min(buf.remaining()).min(self.data.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            self.reads += 1;
            Poll::Ready(Ok(()))
        }
    }

    fn counting(data: Vec<u8>, chunk: usize) -> Counting {
        Counting { data, at: 0, chunk, reads: 0 }
    }

    #[tokio::test]
    async fn a_frame_that_arrived_whole_costs_one_read() -> TestResult {
        let mut reader = FrameReader::new(counting(framed(&[&[7; 300]]), usize::MAX), 1000);
        assert_eq!(reader.next_frame().await?, Some(vec![7; 300]));
        assert_eq!(reader.inner.reads, 1);
        // Several small frames that arrived together: still one read for all of them.
        let mut reader = FrameReader::new(counting(framed(&[b"a", b"bc", b"def"]), usize::MAX), 1000);
        for want in [&b"a"[..], b"bc", b"def"] {
            assert_eq!(reader.next_frame().await?.as_deref(), Some(want));
        }
        assert_eq!(reader.inner.reads, 1);
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
        let (mut a, b) = tokio::io::duplex(64);
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
            Err(FrameError::TooShort { len: 31, min: 32 })
        ));
        let mut reader = FrameReader::new(counting(framed(&[&[1; 33]]), usize::MAX), 100);
        assert!(matches!(reader.next_frame_within(32, 32).await, Err(FrameError::Malformed(_))));
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
        let (mut a, b) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(b, 100);
        a.write_all(&[0, 40]).await?;
        a.write_all(&[5; 10]).await?;
        {
            // Read as far as the bytes go, then dropped, as a `select!` does.
            let next = reader.next_frame();
            tokio::pin!(next);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(next.as_mut().poll(&mut cx).is_pending());
        }
        a.write_all(&[6; 30]).await?;
        let frame = reader.next_frame().await?.ok_or("a frame")?;
        assert_eq!((&frame[..10], &frame[10..]), (&[5; 10][..], &[6; 30][..]));
        Ok(())
    }
}
