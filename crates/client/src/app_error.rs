//! The program's error: what went wrong and what to do next, printed as `chatroom: error: ...`.

use std::fmt;

use chatroom_session::error::{FileError, SessionError};

use crate::advice;

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

impl From<SessionError> for AppError {
    fn from(e: SessionError) -> Self {
        AppError(advice::session(&e))
    }
}

impl From<FileError> for AppError {
    fn from(e: FileError) -> Self {
        AppError(advice::file(&e))
    }
}

from_display!(
    chatroom_session::error::AddressError,
    chatroom_session::crypto::KeyFileError,
    chatroom_session::crypto::KdfError
);
