//! `frame_decode`: the stream framing a relay and a client run on every byte they read.
//!
//! Input: `limit selector(u8) [limit(u16)] | cuts | stream`. The stream goes through a
//! `FrameDecoder` in the given chunks and, as a reference, through `decode_frame` on the
//! whole buffer. Checks: no panic; the decoder never buffers more than one header plus one
//! frame of the limit; it yields the frames the reference finds, in order, and fails exactly
//! when the reference does; every decoded frame re-encodes to the bytes it came from.

use chatroom_crypto::internal::frame_decoder_buffered;
use chatroom_crypto::{
    decode_frame, encode_frame, FrameDecoder, FRAME_HEADER_LEN, HANDSHAKE1_LEN, HANDSHAKE2_LEN,
    HANDSHAKE3_LEN, MAX_FRAME_LEN,
};

use crate::{next_chunk, Input, Writer};

/// The frame limits a connection uses: one per handshake step, then any Noise message.
pub const LIMITS: [usize; 4] = [HANDSHAKE1_LEN, HANDSHAKE2_LEN, HANDSHAKE3_LEN, MAX_FRAME_LEN];

/// Builds an input: limit selector (`0..4` picks from [`LIMITS`], otherwise `limit` is
/// used), chunking and stream.
pub fn input(selector: u8, limit: u16, cuts: &[u8], stream: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(selector);
    if usize::from(selector) >= LIMITS.len() {
        w.u16(limit);
    }
    w.cuts(cuts).raw(stream);
    w.out
}

/// Runs the check on one input.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let selector = usize::from(input.u8());
    let max = match LIMITS.get(selector) {
        Some(&limit) => limit,
        None => usize::from(input.u16()),
    };
    let cuts = input.cuts();
    let stream = input.rest();

    // Reference: frames split off the whole stream at once.
    let mut reference: Vec<&[u8]> = Vec::new();
    let mut offset = 0;
    let reference_failed = loop {
        match decode_frame(&stream[offset..], max) {
            Ok(Some((payload, used))) => {
                assert!(!payload.is_empty() && payload.len() <= max, "frame of {} bytes", payload.len());
                let mut again = Vec::new();
                assert!(encode_frame(payload, &mut again).is_ok(), "a decoded frame must re-encode");
                assert_eq!(again, &stream[offset..offset + used], "re-encoding changed the frame");
                reference.push(payload);
                offset += used;
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };

    // The incremental decoder, fed in chunks.
    let bound = FRAME_HEADER_LEN + max.min(MAX_FRAME_LEN);
    let mut decoder = FrameDecoder::new(max);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut rest = stream;
    let mut index = 0;
    let mut failed = false;
    while !rest.is_empty() {
        let wanted = decoder.wanted();
        assert!(wanted <= bound, "decoder wants {wanted} bytes with a limit of {max}");
        let n = next_chunk(rest, &cuts, index, wanted);
        match decoder.push(&rest[..n]) {
            Ok(frames) => got.extend(frames),
            Err(_) => {
                failed = true;
                rest = &rest[n..];
                index += 1;
                break;
            }
        }
        let (len, capacity) = frame_decoder_buffered(&decoder);
        assert!(len <= bound, "decoder buffers {len} bytes, bound {bound}");
        assert!(capacity <= 2 * bound + 16, "decoder buffer capacity {capacity}, bound {bound}");
        rest = &rest[n..];
        index += 1;
    }

    // A caller that keeps pushing after an error must keep getting errors, and the decoder
    // must still not buffer beyond its bound.
    if failed {
        while !rest.is_empty() {
            let n = next_chunk(rest, &cuts, index, decoder.wanted());
            assert!(decoder.push(&rest[..n]).is_err(), "the decoder recovered from a bad frame header");
            let (len, _) = frame_decoder_buffered(&decoder);
            assert!(len <= bound, "after an error the decoder buffers {len} bytes, bound {bound}");
            rest = &rest[n..];
            index += 1;
        }
    }

    assert_eq!(failed, reference_failed, "chunked and whole-buffer decoding disagree on failure");
    // Frames completed earlier in the same `push` as a bad header are dropped with the error,
    // so on failure the decoder yields a prefix of the reference.
    assert!(got.len() <= reference.len(), "decoder yielded frames the reference did not find");
    for (g, r) in got.iter().zip(&reference) {
        assert_eq!(g.as_slice(), *r, "decoder yielded a different frame");
    }
    if !failed {
        assert_eq!(got.len(), reference.len(), "decoder missed frames");
        assert_eq!(decoder.is_mid_frame(), offset < stream.len(), "mid-frame state is wrong");
    }
}
