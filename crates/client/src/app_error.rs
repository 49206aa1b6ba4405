//! The program's error: what went wrong and what to do next, printed as `chatroom: error: ...`.

use std::fmt;

/// A fatal error of the program.
#[derive(Debug)]
pub(crate) struct AppError(String);

impl AppError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! from_display {
    ($($t:ty),*) => {$(
        impl From<$t> for AppError {
            fn from(e: $t) -> Self {
                AppError(e.to_string())
            }
        }
    )*};
}

from_display!(
    chatroom_client::error::SessionError,
    chatroom_client::error::FileError,
    chatroom_client::error::AddressError,
    chatroom_client::crypto::KeyFileError,
    chatroom_client::crypto::KdfError
);
