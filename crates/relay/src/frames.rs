//! Reading frames off a socket: the two-byte length is checked against the caller's bounds
//! before a single byte of the body is read, and never more than the current frame is
//! buffered. `next_frame` is cancel-safe: a `select!` may drop it and call it again.

use bytes::{BufMut, BytesMut};
use chatroom_crypto::FRAME_HEADER_LEN;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The peer announced a length outside what this point of the protocol allows.
    #[error("frame of {len} bytes announced where {min}..={max} are allowed")]
    BadLength { len: usize, min: usize, max: usize },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frame reader over one direction of a socket.
///
/// Between frames it holds no buffer: the length header is read into a two-byte array, and
/// the body's buffer is allocated at the announced length once the header is in and checked.
/// A member that sends nothing (most of a large room) costs no read buffer at all.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    inner: R,
    /// The current frame's length header, `header_len` bytes of it read so far.
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// The current frame's body as far as it has arrived; unallocated between frames.
    body: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, header: [0; FRAME_HEADER_LEN], header_len: 0, body: BytesMut::new() }
    }

    /// The next frame's payload, whose length must be within `min..=max`; `Ok(None)` at a
    /// clean end of stream.
    pub(crate) async fn next_frame(
        &mut self,
        min: usize,
        max: usize,
    ) -> Result<Option<BytesMut>, FrameError> {
        while self.header_len < FRAME_HEADER_LEN {
            let n = self.inner.read(&mut self.header[self.header_len..]).await?;
            if n == 0 {
                return if self.header_len == 0 { Ok(None) } else { Err(FrameError::Truncated) };
            }
            self.header_len += n;
        }
        let len = usize::from(u16::from_be_bytes(self.header));
        if len < min || len > max {
            return Err(FrameError::BadLength { len, min, max });
        }
        if self.body.is_empty() {
            // Exactly the announced length, which the check above bounded.
            self.body = BytesMut::with_capacity(len);
        }
        while self.body.len() < len {
            let wanted = len - self.body.len();
            let n = self.inner.read_buf(&mut (&mut self.body).limit(wanted)).await?;
            if n == 0 {
                return Err(FrameError::Truncated);
            }
        }
        self.header_len = 0;
        crate::metrics::received(FRAME_HEADER_LEN + len);
        Ok(Some(std::mem::take(&mut self.body)))
    }

    /// Reads and discards up to `max` bytes until end of stream: lets a goodbye reach a peer
    /// that is still sending, instead of resetting the connection under it.
    pub(crate) async fn discard(&mut self, max: usize) {
        // On the heap, and only while lingering: an array here would make every connection's
        // task that much larger for its whole life.
        let mut scratch = vec![0u8; 4096];
        let mut total = 0;
        while total < max {
            match self.inner.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn frames_arrive_whole_across_split_writes() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(b);
        tokio::spawn(async move {
            a.write_all(&[0, 3, 1]).await.unwrap();
            a.write_all(&[2, 3, 0, 1]).await.unwrap();
            a.write_all(&[9]).await.unwrap();
        });
        assert_eq!(&reader.next_frame(1, 10).await.unwrap().unwrap()[..], &[1, 2, 3]);
        assert_eq!(&reader.next_frame(1, 10).await.unwrap().unwrap()[..], &[9]);
        assert!(reader.next_frame(1, 10).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn no_buffer_is_held_between_frames_and_a_frame_gets_exactly_its_length() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(b);
        assert_eq!(reader.body.capacity(), 0);
        // A whole 3-byte frame, then the header and 10 of the 40 bytes of the next one.
        a.write_all(&[0, 3, 1, 2, 3, 0, 40]).await.unwrap();
        a.write_all(&[5; 10]).await.unwrap();
        let frame = reader.next_frame(1, 100).await.unwrap().unwrap();
        assert_eq!((&frame[..], frame.capacity()), (&[1, 2, 3][..], 3));
        assert_eq!(reader.body.capacity(), 0, "nothing kept after a frame");
        {
            // Read as far as the bytes go, then dropped, as a `select!` does.
            let next = reader.next_frame(1, 100);
            tokio::pin!(next);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(next.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!((reader.body.len(), reader.body.capacity()), (10, 40), "the announced length only");
        a.write_all(&[6; 30]).await.unwrap();
        let frame = reader.next_frame(1, 100).await.unwrap().unwrap();
        assert_eq!(frame.len(), 40);
        assert_eq!((&frame[..10], &frame[10..]), (&[5; 10][..], &[6; 30][..]));
        assert_eq!(reader.body.capacity(), 0);
    }

    #[tokio::test]
    async fn a_bad_length_is_refused_from_the_header() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0xff, 0xff]).await.unwrap();
        let mut reader = FrameReader::new(b);
        assert!(matches!(reader.next_frame(32, 32).await, Err(FrameError::BadLength { len: 65535, .. })));
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 31]).await.unwrap();
        let mut reader = FrameReader::new(b);
        assert!(matches!(reader.next_frame(32, 32).await, Err(FrameError::BadLength { len: 31, .. })));
    }

    #[tokio::test]
    async fn a_stream_cut_mid_frame_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 5, 1]).await.unwrap();
        drop(a);
        let mut reader = FrameReader::new(b);
        assert!(matches!(reader.next_frame(1, 10).await, Err(FrameError::Truncated)));
    }
}
