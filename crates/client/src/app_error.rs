//! The program's error: what went wrong and what to do next, printed as `chatroom: error: ...`.

use std::error::Error;
use std::fmt;

use chatroom_session::error::{FileError, SessionError};

use crate::advice;

type Cause = Box<dyn Error + Send + Sync + 'static>;

/// A fatal error of the program: the sentence shown to the user, and the typed error it came
/// from, kept as `source()` so nothing of the cause is lost to a string.
#[derive(Debug)]
pub(crate) struct AppError {
    message: String,
    cause: Option<Cause>,
}

impl AppError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), cause: None }
    }

    /// `message` worded for the user, with the error that caused it kept as its source.
    fn caused_by(message: String, cause: impl Error + Send + Sync + 'static) -> Self {
        Self { message, cause: Some(Box::new(cause)) }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for AppError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

macro_rules! from_display {
    ($($t:ty),*) => {$(
        impl From<$t> for AppError {
            fn from(e: $t) -> Self {
                AppError::caused_by(e.to_string(), e)
            }
        }
    )*};
}

impl From<SessionError> for AppError {
    fn from(e: SessionError) -> Self {
        AppError::caused_by(advice::session(&e), e)
    }
}

impl From<FileError> for AppError {
    fn from(e: FileError) -> Self {
        AppError::caused_by(advice::file(&e), e)
    }
}

from_display!(
    chatroom_session::error::AddressError,
    chatroom_session::crypto::KeyFileError,
    chatroom_session::crypto::KdfError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worded_message_keeps_the_typed_cause_as_its_source() {
        let lost = || SessionError::Lost("reset by peer".into());
        let worded = advice::session(&lost());
        let app = AppError::from(lost());
        assert_eq!(app.to_string(), worded, "the user sees the advice");
        let source = app.source().expect("the cause is kept");
        assert!(source.downcast_ref::<SessionError>().is_some(), "{source:?}");
        assert!(AppError::new("plain").source().is_none());
    }
}
