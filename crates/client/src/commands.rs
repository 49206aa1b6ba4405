//! Parsing what the user types: a slash command, or text to send.

use chatroom_crypto::{Nick, MAX_BODY_LEN};

/// The help text shown by `/help` and after an unknown command.
pub(crate) const HELP: &str = "\
commands:
  /help          show this help
  /who           list the members of the room (as the relay reports them)
  /whois NICK    show the identity key NICK's signed messages are pinned to
  /me TEXT       send an action (shown as: * nick TEXT)
  /kick NICK     disconnect a member (room owner only)
  /ban NICK      disconnect a member and refuse them from now on (room owner only)
  /unban NICK    lift a ban (room owner only)
  /safety        show the room safety code to compare with the other members
  /invite        show the room's invite URL (it holds no password)
  /topic TEXT    set the room's topic (room owner only); /topic alone shows it
  /rotate-password FILE
                 change the room's password to the one in FILE, mode 0600 (protocol 2, room
                 owner only): members inside stay, newcomers need the new password
  /ignore NICK   hide NICK's messages until you leave (again: show them)
  /clear         clear the conversation on screen
  /join ROOM     join another room in a new window (an invite URL or a saved room)
  /part          leave this window's room (the last one: like /quit)
  /window N      show window N (also Alt+N)
  /quit          leave (waits briefly for unsent messages)
  //TEXT         send TEXT starting with a single /
any other line is sent as a message";

/// The commands' names, for Tab completion (aliases left out).
pub(crate) const COMMAND_NAMES: &[&str] = &[
    "/help",
    "/who",
    "/whois",
    "/me",
    "/kick",
    "/ban",
    "/unban",
    "/safety",
    "/invite",
    "/topic",
    "/ignore",
    "/clear",
    "/join",
    "/part",
    "/window",
    "/quit",
    "/rotate-password",
];

/// A command typed by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
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
    /// `/invite`
    Invite,
    /// `/topic [TEXT]`: empty shows the topic.
    Topic(String),
    /// `/ignore NICK`
    Ignore(Nick),
    /// `/clear`
    Clear,
    /// `/join INVITE|NAME`
    Join(String),
    /// `/part`
    Part,
    /// `/window N` (1-based as typed; stored 0-based)
    Window(usize),
    /// `/quit`
    Quit,
    /// `/rotate-password FILE`: the file holding the new password (protocol 2, owner only).
    RotatePassword(std::path::PathBuf),
}

/// One line of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Nothing to do (an empty line).
    Empty,
    /// Text to send.
    Text(String),
    /// A command.
    Command(Command),
}

/// A line that is neither valid text nor a valid command. Never sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InputError {
    /// An unknown command.
    #[error(
        "unknown command /{0}, nothing was sent; /help lists the commands, //{0} sends the line as text"
    )]
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
pub(crate) fn parse_line(line: &str) -> Result<Input, InputError> {
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
        "invite" => no_arg(Command::Invite, "/invite"),
        "topic" => Ok(Input::Command(Command::Topic(body(arg.trim())?))),
        "clear" => no_arg(Command::Clear, "/clear"),
        "part" => no_arg(Command::Part, "/part"),
        "join" => match arg.trim() {
            "" => Err(InputError::Usage("/join INVITE|NAME")),
            target if target.contains(char::is_whitespace) => Err(InputError::Usage("/join INVITE|NAME")),
            target => Ok(Input::Command(Command::Join(target.to_owned()))),
        },
        "window" => match arg.trim().parse::<usize>() {
            Ok(n @ 1..=99) => Ok(Input::Command(Command::Window(n - 1))),
            _ => Err(InputError::Usage("/window N")),
        },
        "ignore" => Ok(Input::Command(Command::Ignore(nick_arg(arg, "/ignore NICK")?))),
        // The new password comes from a file: in line mode standard input carries the chat.
        "rotate-password" => match arg.trim() {
            "" => Err(InputError::Usage(
                "/rotate-password FILE (write the new password on the first line of FILE, mode 0600)",
            )),
            file => Ok(Input::Command(Command::RotatePassword(file.into()))),
        },
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
        _ => Err(InputError::Unknown(chatroom_session::display::neutralize_short(name))),
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
        assert_eq!(parse_line("/invite"), Ok(Input::Command(Command::Invite)));
        assert_eq!(parse_line("/clear"), Ok(Input::Command(Command::Clear)));
        assert_eq!(parse_line("/topic  ship it "), Ok(Input::Command(Command::Topic("ship it".into()))));
        assert_eq!(parse_line("/topic"), Ok(Input::Command(Command::Topic(String::new()))));
        assert_eq!(parse_line("/join ops"), Ok(Input::Command(Command::Join("ops".into()))));
        assert_eq!(parse_line("/join"), Err(InputError::Usage("/join INVITE|NAME")));
        assert_eq!(parse_line("/window 2"), Ok(Input::Command(Command::Window(1))));
        assert_eq!(parse_line("/window 0"), Err(InputError::Usage("/window N")));
        assert_eq!(parse_line("/part"), Ok(Input::Command(Command::Part)));
        assert_eq!(parse_line("/ignore bob"), Ok(Input::Command(Command::Ignore(nick("bob")))));
        assert_eq!(parse_line("/ignore"), Err(InputError::Usage("/ignore NICK")));
        assert_eq!(
            parse_line("/rotate-password  /tmp/new pass "),
            Ok(Input::Command(Command::RotatePassword("/tmp/new pass".into())))
        );
        assert!(matches!(parse_line("/rotate-password"), Err(InputError::Usage(_))));
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
