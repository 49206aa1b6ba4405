//! What to do next, after an error of the protocol core. The library says what happened; this
//! binary words the advice, because it names this program's flags and commands.

use chatroom_session::crypto::ErrorCode;
use chatroom_session::error::{FileError, SessionError};

/// What a user should do after a refusal (capitalised: it follows a sentence).
pub(crate) fn refusal(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NoSuchRoom => "Check the room name, or add --create to create the room.",
        ErrorCode::WrongPassword => {
            "Check the password (or the invite) with the other members and try again."
        }
        ErrorCode::NickTaken => "Choose another nickname with --nick.",
        ErrorCode::NickBound => {
            "Join with the nickname this identity already has here, or give another member its own --profile NAME."
        }
        ErrorCode::Banned => "Ask the owner to /unban you.",
        ErrorCode::TooManyAttempts => "Wait a few minutes before trying again.",
        ErrorCode::AlreadyConnected => {
            "To run two members on one machine, give the second its own --profile NAME."
        }
        ErrorCode::Kicked => "You may join again.",
        ErrorCode::BadSignature | ErrorCode::UnsupportedVersion | ErrorCode::Malformed => {
            "Update the client or ask the relay's operator to update the relay."
        }
        _ => "Try again later.",
    }
}

/// A session error as shown: what happened, then what to do.
pub(crate) fn session(e: &SessionError) -> String {
    match e {
        SessionError::Connect { .. } => format!("{e}; check the address and that the relay is running"),
        SessionError::Proxy { .. } => format!("{e}; check that the proxy is running and can reach the relay"),
        SessionError::Timeout { .. } => format!("{e}; check the address and your network"),
        SessionError::RelayKeyMismatch { addr, .. } => format!(
            "{e}. If the relay's operator confirms that its key changed, run `chatroom relays forget {addr}` \
             and connect again (with a new invite if you used one)"
        ),
        SessionError::Refused { code, .. } => format!("{e}. {}", refusal(*code)),
        SessionError::Protocol(_) | SessionError::Malformed { .. } => {
            format!("{e}; try again later or report it to the relay's operator")
        }
        SessionError::File(f) => file(f),
        SessionError::GroupKeyMismatch => {
            format!("{e}; check the password, and the relay's fingerprint, with the other members")
        }
        SessionError::EntryFailed => format!("{e}; try again"),
        SessionError::RemovedFromGroup => format!(
            "{e}. Run chatroom again to re-enter with the password (every member will see it), or ask the \
             owner why"
        ),
        _ => e.to_string(),
    }
}

/// A local file error as shown: what happened, then what to do.
pub(crate) fn file(e: &FileError) -> String {
    match e {
        FileError::Syntax { .. } => format!("{e}; fix or remove that line"),
        FileError::Damaged { path, .. } => format!(
            "{e}. Move it aside (`mv {path} {path}.damaged`) to start afresh in this room; its member pins \
             and counters are then forgotten, so compare fingerprints (/whois) again"
        ),
        FileError::Permissions { path, .. } => format!("{e}; run `chmod 600 {path}`"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_happened_then_what_to_do() {
        let e = SessionError::Refused { code: ErrorCode::WrongPassword, detail: "no\n\u{1b}[2Jway".into() };
        assert_eq!(
            session(&e),
            "the relay refused the room password. Check the password (or the invite) with the other members and \
             try again."
        );
        let other = SessionError::Refused { code: ErrorCode::Internal, detail: "disk\u{1b}[2J full".into() };
        assert_eq!(session(&other), "the relay refused: disk^[[2J full (Internal). Try again later.");
        let missing = SessionError::Refused { code: ErrorCode::NoSuchRoom, detail: String::new() };
        assert!(session(&missing).ends_with("add --create to create the room."), "{}", session(&missing));
    }

    #[test]
    fn a_key_mismatch_names_the_command_that_forgets_the_pin() {
        let e = SessionError::RelayKeyMismatch {
            addr: "h:1".into(),
            expected: "aa".into(),
            actual: "bb".into(),
            pin_source: "the invite".into(),
        };
        let shown = session(&e);
        assert!(shown.starts_with("RELAY KEY MISMATCH for h:1"), "{shown}");
        assert!(shown.contains("run `chatroom relays forget h:1`"), "{shown}");
    }

    #[test]
    fn file_errors_name_the_fix() {
        let e = FileError::Permissions { path: "/p".into(), mode: 0o644 };
        assert_eq!(file(&e), "/p has mode 644, so other users may read it; run `chmod 600 /p`");
        let e = SessionError::File(FileError::Damaged { path: "/s".into(), why: "cut short".into() });
        assert!(session(&e).contains("`mv /s /s.damaged`"), "{}", session(&e));
        let e = FileError::Syntax { path: "/c".into(), line: 2, why: "bad".into() };
        assert_eq!(file(&e), "/c, line 2: bad; fix or remove that line");
    }
}
