//! What the relay and the client both need around a socket: `FrameReader`, the one async
//! reader of `length | bytes` frames (over crypto's fuzzed `FrameDecoder`), and
//! `TokenBucket`, the one rate limiter (the relay's flood control, the client's pacing).
#![forbid(unsafe_code)]

mod bucket;
mod reader;

pub use bucket::{TokenBucket, MAX_WAIT};
pub use reader::{FrameError, FrameReader, DEFAULT_READ_LEN};
