//! Framing on the TCP stream: every Noise message travels as `length(u16 BE) | bytes`.
//! The length is checked against the caller's limit before anything is buffered.

use crate::error::DecodeError;

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 2;
/// Largest frame payload: one Noise message (65535 bytes).
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// Appends `payload` as one frame.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let len = u16::try_from(payload.len()).map_err(|_| DecodeError::TooLong {
        what: "frame",
        len: payload.len(),
        max: MAX_FRAME_LEN,
    })?;
    if len == 0 {
        return Err(DecodeError::EmptyFrame);
    }
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Reads a frame header and checks the declared length against `max` (at most
/// `MAX_FRAME_LEN`). Returns the payload length.
pub fn check_frame_header(header: [u8; FRAME_HEADER_LEN], max: usize) -> Result<usize, DecodeError> {
    let len = usize::from(u16::from_be_bytes(header));
    if len == 0 {
        return Err(DecodeError::EmptyFrame);
    }
    if len > max.min(MAX_FRAME_LEN) {
        return Err(DecodeError::TooLong { what: "frame", len, max: max.min(MAX_FRAME_LEN) });
    }
    Ok(len)
}

/// Splits one frame off the front of `buf`: `Ok(None)` means "read more bytes",
/// `Ok(Some((payload, consumed)))` a complete frame.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, DecodeError> {
    let Some((header, rest)) = buf.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let len = check_frame_header(*header, max)?;
    Ok(rest.get(..len).map(|payload| (payload, FRAME_HEADER_LEN + len)))
}

/// An incremental frame decoder for a byte stream arriving in arbitrary chunks. It never
/// holds more than one header plus one maximal frame. After a bad frame header it stays
/// failed: every later `push` returns the same error and buffers nothing.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
    failed: Option<DecodeError>,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), max: max.min(MAX_FRAME_LEN), failed: None }
    }

    /// Changes the limit (e.g. once a handshake is over).
    pub fn set_max(&mut self, max: usize) {
        self.max = max.min(MAX_FRAME_LEN);
    }

    /// How many bytes the decoder wants before it can make progress; a reader should read at
    /// most this many, which keeps the buffer bounded.
    pub fn wanted(&self) -> usize {
        match self.buf.split_first_chunk::<FRAME_HEADER_LEN>() {
            None => FRAME_HEADER_LEN - self.buf.len(),
            Some((header, rest)) => usize::from(u16::from_be_bytes(*header)).saturating_sub(rest.len()),
        }
    }

    /// Feeds bytes; returns the complete frames they finish. Bytes beyond what
    /// `wanted()` allowed are buffered only up to one further frame at a time.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let want = self.wanted().max(1).min(bytes.len());
            let (now, later) = bytes.split_at(want);
            self.buf.extend_from_slice(now);
            bytes = later;
            match decode_frame(&self.buf, self.max) {
                Ok(Some((_, used))) => {
                    // Only the wanted bytes were added, so the buffer is this frame and nothing
                    // more: hand it over whole, so the decoder holds no memory between frames.
                    let mut frame = std::mem::take(&mut self.buf);
                    frame.truncate(used);
                    frame.drain(..FRAME_HEADER_LEN);
                    frames.push(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    // Without this, the bad header would stay buffered and the next push would
                    // take as many bytes as it announces, past the limit.
                    self.buf = Vec::new();
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(frames)
    }

    /// Whether a partial frame is buffered (a stream ending now was cut mid-frame).
    pub fn is_mid_frame(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes currently buffered and the buffer's capacity: the fuzz targets' memory bound,
    /// and zero capacity between frames.
    pub fn buffered(&self) -> (usize, usize) {
        (self.buf.len(), self.buf.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        assert!(matches!(
            decode_frame(&[0xff, 0xff], 1000),
            Err(DecodeError::TooLong { len: 65535, max: 1000, .. })
        ));
        assert_eq!(decode_frame(&[0, 0], 1000), Err(DecodeError::EmptyFrame));
        assert_eq!(decode_frame(&[0], 1000), Ok(None));
        assert_eq!(decode_frame(&[0, 3, 1, 2], 1000), Ok(None));
        assert_eq!(decode_frame(&[0, 3, 1, 2, 3, 9], 1000), Ok(Some((&[1u8, 2, 3][..], 5))));
    }

    #[test]
    fn encode_refuses_empty_and_oversized() {
        let mut out = Vec::new();
        assert_eq!(encode_frame(&[], &mut out), Err(DecodeError::EmptyFrame));
        assert!(encode_frame(&vec![0; MAX_FRAME_LEN + 1], &mut out).is_err());
        assert!(out.is_empty());
        encode_frame(&vec![7; MAX_FRAME_LEN], &mut out).unwrap();
        assert_eq!(out.len(), MAX_FRAME_LEN + 2);
    }

    #[test]
    fn decoder_rejects_oversized_frame_without_buffering_it() {
        let mut d = FrameDecoder::new(64);
        assert!(d.push(&[0x01, 0x00]).is_err());
    }

    #[test]
    fn decoder_stays_failed_and_empty_after_a_bad_header() {
        // Found by the frame_decode fuzz target (fuzz/regressions/frame_decode/): a caller
        // pushing on after an error made the decoder buffer what the bad header announced.
        let mut d = FrameDecoder::new(0);
        assert!(matches!(d.push(&[0x00, 0x31]), Err(DecodeError::TooLong { len: 49, max: 0, .. })));
        assert!(d.push(&[0x44; 100]).is_err());
        assert!(d.push(&[]).is_err());
        assert_eq!(d.buffered().0, 0);
        let mut d = FrameDecoder::new(64);
        assert_eq!(d.push(&[0, 0, 0, 1, 7]), Err(DecodeError::EmptyFrame));
        assert_eq!(d.push(&[0, 1, 7]), Err(DecodeError::EmptyFrame), "a valid frame after the error");
        assert!(!d.is_mid_frame());
    }

    proptest! {
        #[test]
        fn frames_survive_any_chunking(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..8),
            cuts in proptest::collection::vec(1usize..50, 1..40),
        ) {
            let mut stream = Vec::new();
            for p in &payloads {
                encode_frame(p, &mut stream).unwrap();
            }
            let mut d = FrameDecoder::new(MAX_FRAME_LEN);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                got.extend(d.push(&rest[..n]).unwrap());
                rest = &rest[n..];
                i += 1;
            }
            prop_assert!(!d.is_mid_frame());
            prop_assert_eq!(d.buffered(), (0, 0), "no memory held between frames");
            prop_assert_eq!(got, payloads);
        }
    }
}
