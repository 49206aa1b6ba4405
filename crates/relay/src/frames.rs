//! Reading frames off a socket: the two-byte length is checked against the caller's bounds
//! before a single byte of the body is read, and never more than the current frame is
//! buffered. `next_frame` is cancel-safe: a `select!` may drop it and call it again.

use bytes::{Buf, BufMut, BytesMut};
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
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, buf: BytesMut::with_capacity(4096) }
    }

    /// The next frame's payload, whose length must be within `min..=max`; `Ok(None)` at a
    /// clean end of stream.
    pub(crate) async fn next_frame(
        &mut self,
        min: usize,
        max: usize,
    ) -> Result<Option<BytesMut>, FrameError> {
        loop {
            let wanted = match self.buf.first_chunk::<FRAME_HEADER_LEN>() {
                None => FRAME_HEADER_LEN - self.buf.len(),
                Some(header) => {
                    let len = usize::from(u16::from_be_bytes(*header));
                    if len < min || len > max {
                        return Err(FrameError::BadLength { len, min, max });
                    }
                    let have = self.buf.len() - FRAME_HEADER_LEN;
                    if have >= len {
                        self.buf.advance(FRAME_HEADER_LEN);
                        return Ok(Some(self.buf.split_to(len)));
                    }
                    len - have
                }
            };
            self.buf.reserve(wanted);
            let n = self.inner.read_buf(&mut (&mut self.buf).limit(wanted)).await?;
            if n == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(FrameError::Truncated) };
            }
        }
    }

    /// Reads and discards up to `max` bytes until end of stream: lets a goodbye reach a peer
    /// that is still sending, instead of resetting the connection under it.
    pub(crate) async fn discard(&mut self, max: usize) {
        let mut scratch = [0u8; 4096];
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
