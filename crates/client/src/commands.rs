//! Parsing what the user types: a slash command, or text to send.

use chatroom_crypto::{Nick, MAX_BODY_LEN};

/// The help text shown by `/help` and after an unknown command.
pub const HELP: &str = "\
commands:
  /help          show this help
  /who           list the members of the room (as the relay reports them)
  /whois NICK    show the identity key NICK's signed messages are pinned to
  /me TEXT       send an action (shown as: * nick TEXT)
  /kick NICK     disconnect a member (room owner only)
  /ban NICK      disconnect a member and refuse them from now on (room owner only)
  /unban NICK    lift a ban (room owner only)
  /safety        show the room safety code to compare with the other members
  /quit          leave (waits briefly for unsent messages)
  //TEXT         send TEXT starting with a single /
any other line is sent as a message";

/// A command typed by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/help`
    Help,
    /// `/who`
    Who,
    /// `/whois NICK`
    Whois(Nick),
    /// `/me TEXT`
    Me(String),
    /// `/kick NICK`
    Kick(Nick),
    /// `/ban NICK`
    Ban(Nick),
    /// `/unban NICK`
    Unban(Nick),
    /// `/safety`
    Safety,
    /// `/quit`
    Quit,
}

/// One line of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing to do (an empty line).
    Empty,
    /// Text to send.
    Text(String),
    /// A command.
    Command(Command),
}

/// A line that is neither valid text nor a valid command. Never sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// An unknown command.
    #[error("unknown command /{0}; nothing was sent (type //{0} to send a line starting with /)")]
    Unknown(String),
    /// A command used wrongly.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// Text longer than one message.
    #[error("message is {0} bytes, more than the maximum of {MAX_BODY_LEN}; nothing was sent")]
    TooLong(usize),
}

fn nick_arg(arg: &str, usage: &'static str) -> Result<Nick, InputError> {
    let arg = arg.trim();
    if arg.is_empty() || arg.contains(char::is_whitespace) {
        return Err(InputError::Usage(usage));
    }
    Nick::new(arg).map_err(|_| InputError::Usage(usage))
}

fn body(text: &str) -> Result<String, InputError> {
    if text.len() > MAX_BODY_LEN {
        return Err(InputError::TooLong(text.len()));
    }
    Ok(text.to_owned())
}

/// Parses one line (without its line ending).
pub fn parse_line(line: &str) -> Result<Input, InputError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Ok(Input::Empty);
    }
    if let Some(literal) = line.strip_prefix("//") {
        return Ok(Input::Text(body(&format!("/{literal}"))?));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Input::Text(body(line)?));
    };
    let (name, arg) = match command.split_once(char::is_whitespace) {
        Some((name, arg)) => (name, arg),
        None => (command, ""),
    };
    let no_arg = |c: Command, usage: &'static str| {
        if arg.trim().is_empty() {
            Ok(Input::Command(c))
        } else {
            Err(InputError::Usage(usage))
        }
    };
    match name.to_ascii_lowercase().as_str() {
        "help" => no_arg(Command::Help, "/help"),
        "who" | "names" => no_arg(Command::Who, "/who"),
        "safety" => no_arg(Command::Safety, "/safety"),
        "whois" => Ok(Input::Command(Command::Whois(nick_arg(arg, "/whois NICK")?))),
        "quit" | "exit" => no_arg(Command::Quit, "/quit"),
        "me" => {
            if arg.trim().is_empty() {
                Err(InputError::Usage("/me TEXT"))
            } else {
                Ok(Input::Command(Command::Me(body(arg)?)))
            }
        }
        "kick" => Ok(Input::Command(Command::Kick(nick_arg(arg, "/kick NICK")?))),
        "ban" => Ok(Input::Command(Command::Ban(nick_arg(arg, "/ban NICK")?))),
        "unban" => Ok(Input::Command(Command::Unban(nick_arg(arg, "/unban NICK")?))),
        _ => Err(InputError::Unknown(crate::display::neutralize_short(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nick(s: &str) -> Nick {
        Nick::new(s).unwrap()
    }

    #[test]
    fn text_and_commands() {
        assert_eq!(parse_line("hello"), Ok(Input::Text("hello".into())));
        assert_eq!(parse_line("hello\r"), Ok(Input::Text("hello".into())));
        assert_eq!(parse_line(""), Ok(Input::Empty));
        assert_eq!(parse_line("   "), Ok(Input::Empty));
        assert_eq!(parse_line("/help"), Ok(Input::Command(Command::Help)));
        assert_eq!(parse_line("/WHO"), Ok(Input::Command(Command::Who)));
        assert_eq!(parse_line("/me waves  slowly"), Ok(Input::Command(Command::Me("waves  slowly".into()))));
        assert_eq!(parse_line("/kick bob"), Ok(Input::Command(Command::Kick(nick("bob")))));
        assert_eq!(parse_line("/whois AIice"), Ok(Input::Command(Command::Whois(nick("AIice")))));
        assert_eq!(parse_line("/whois"), Err(InputError::Usage("/whois NICK")));
        assert_eq!(parse_line("/ban  bob "), Ok(Input::Command(Command::Ban(nick("bob")))));
        assert_eq!(parse_line("/unban bob"), Ok(Input::Command(Command::Unban(nick("bob")))));
        assert_eq!(parse_line("/safety"), Ok(Input::Command(Command::Safety)));
        assert_eq!(parse_line("/quit"), Ok(Input::Command(Command::Quit)));
    }

    #[test]
    fn double_slash_sends_a_literal_slash() {
        assert_eq!(parse_line("//quit"), Ok(Input::Text("/quit".into())));
        assert_eq!(parse_line("// x"), Ok(Input::Text("/ x".into())));
    }

    #[test]
    fn unknown_and_misused_commands_are_never_text() {
        assert_eq!(parse_line("/frobnicate now"), Err(InputError::Unknown("frobnicate".into())));
        assert_eq!(parse_line("/"), Err(InputError::Unknown(String::new())));
        assert_eq!(parse_line("/kick"), Err(InputError::Usage("/kick NICK")));
        assert_eq!(parse_line("/kick bob carol"), Err(InputError::Usage("/kick NICK")));
        assert_eq!(parse_line("/kick 9bob"), Err(InputError::Usage("/kick NICK")));
        assert_eq!(parse_line("/me"), Err(InputError::Usage("/me TEXT")));
        assert_eq!(parse_line("/quit now"), Err(InputError::Usage("/quit")));
        let err = parse_line("/\u{1b}[2J").unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
    }

    #[test]
    fn overlong_text_is_refused() {
        assert_eq!(parse_line(&"x".repeat(MAX_BODY_LEN)), Ok(Input::Text("x".repeat(MAX_BODY_LEN))));
        assert_eq!(parse_line(&"x".repeat(MAX_BODY_LEN + 1)), Err(InputError::TooLong(MAX_BODY_LEN + 1)));
    }
}
