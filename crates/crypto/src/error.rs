//! One error enum for the crate, split by category: malformed bytes are kept apart from
//! well-formed input that a check refused, and crypto failures stay opaque.

use thiserror::Error;

/// Everything that can go wrong in this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that do not follow the wire format.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A well-formed envelope that did not verify (wrong key, forged, altered).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Key-derivation parameters outside the allowed range, or Argon2 failed.
    #[error(transparent)]
    Kdf(#[from] KdfError),
    /// The Noise handshake or transport failed.
    #[error(transparent)]
    Noise(#[from] NoiseError),
    /// A join request was refused.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// A key file could not be read or written.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
}

/// Malformed input: the bytes do not follow `docs/PROTOCOL.md`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before a field was complete.
    #[error("input ended in the middle of a field")]
    Truncated,
    /// Bytes were left over after the last field.
    #[error("{0} unexpected bytes after the end of the message")]
    TrailingBytes(usize),
    /// A frame declared a length of zero.
    #[error("empty frame")]
    EmptyFrame,
    /// A frame or field is longer than the protocol allows.
    #[error("{what} is {len} bytes, more than the maximum of {max}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// The declared or actual length.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// A list declares more entries than the protocol allows.
    #[error("{what} has {count} entries, more than the maximum of {max}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// The declared count.
        count: usize,
        /// The limit it broke.
        max: usize,
    },
    /// A field is shorter than the protocol requires.
    #[error("{what} is {len} bytes, less than the minimum of {min}")]
    TooShort {
        /// What was too short.
        what: &'static str,
        /// The actual length.
        len: usize,
        /// The limit it broke.
        min: usize,
    },
    /// A message type byte this version does not know.
    #[error("unknown message type 0x{0:02x}")]
    UnknownMessageType(u8),
    /// A version byte this implementation does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A field that must be UTF-8 is not.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A room name or nickname uses characters outside its alphabet.
    #[error("{what} {value:?} is not allowed: {rule}")]
    InvalidName {
        /// "room name" or "nickname".
        what: &'static str,
        /// The offending value, already known to be short, printable UTF-8.
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// An enumerated field holds a value this version does not define.
    #[error("{what} has undefined value {value}")]
    UndefinedValue {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// Padding after the end of an envelope's content was not all zero.
    #[error("non-zero padding")]
    BadPadding,
}

/// An envelope did not open. Deliberately opaque: which check failed (AEAD tag, signature,
/// wrong room) is never told, to the peer or to the caller.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("message failed verification (altered, forged, or sealed under another room key)")]
pub struct OpenError;

/// Key-derivation parameters refused, or the derivation itself failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KdfError {
    /// Parameters below the v1 floor (m = 64 MiB, t = 3, p = 1).
    #[error("key-derivation parameters {0} are weaker than the minimum m65536t3p1")]
    TooWeak(String),
    /// Parameters above the v1 ceiling, which would let a room make clients spend minutes or
    /// gigabytes.
    #[error("key-derivation parameters {0} exceed the maximum m1048576t16p8")]
    TooCostly(String),
    /// The parameter string does not parse (expected e.g. `m65536t3p1`).
    #[error("cannot parse key-derivation parameters {0:?}: expected the form m65536t3p1")]
    Syntax(String),
    /// Argon2 itself reported a failure.
    #[error("Argon2id failed: {0}")]
    Argon2(String),
}

/// The Noise layer failed. Details from `snow` are kept out on purpose.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoiseError {
    /// A handshake message had the wrong length for its position in the pattern.
    #[error("handshake message {step} is {len} bytes; expected {expected}")]
    HandshakeLength {
        /// Which message (1, 2 or 3).
        step: u8,
        /// Its length.
        len: usize,
        /// The only valid length.
        expected: usize,
    },
    /// A handshake message did not decrypt or authenticate.
    #[error(
        "Noise handshake failed (wrong protocol, altered traffic, or a peer that is not a chatroom endpoint)"
    )]
    Handshake,
    /// A transport message did not decrypt: the connection is no longer trustworthy.
    #[error("Noise transport message failed to decrypt (altered or out-of-order traffic)")]
    Decrypt,
    /// A plaintext is too large for one Noise transport message.
    #[error("plaintext of {0} bytes exceeds one Noise message")]
    PlaintextTooLong(usize),
    /// The 2^64 message counter is exhausted; a new connection is needed.
    #[error("Noise nonce exhausted; reconnect")]
    NonceExhausted,
}

/// Why a join request was refused. Malformed joins are `DecodeError`s instead.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// The identity signature over the handshake hash did not verify.
    #[error("join signature does not verify for this session")]
    BadSignature,
    /// The join secret does not match the room's verifier: the room password is wrong.
    #[error("wrong room password")]
    WrongSecret,
}

/// A key file could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is readable or writable by other users.
    #[error("{path} has mode {mode:o}, readable by other users; run `chmod 600 {path}`")]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a key file of the expected kind.
    #[error("{path} is not a {kind} key file: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What kind of key was expected.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}
