//! The relay's TOML config file. Each key is the long name of a flag (`max-connections = 100`,
//! `synchronous = "normal"`, `listen = "0.0.0.0:7878"`), so a flag added to the command line is
//! available in the file with no further code: the file's values are handed to the same clap
//! parser as extra arguments, after the command line, and only for flags the command line and
//! the environment left unset. Unknown keys are refused with their line and the valid keys.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// Largest config file read.
const MAX_CONFIG_LEN: u64 = 1 << 20;
/// The flag naming the config file, which the file itself cannot set.
const CONFIG_ARG: &str = "config";

/// Why the command line and config file could not be parsed.
#[derive(Debug)]
pub(crate) enum ParseError {
    /// clap's own error (including `--help` and `--version`), printed by clap.
    Clap(clap::Error),
    /// The config file is unreadable or invalid.
    File(String),
}

/// Where the effective configuration came from.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// Matches after the file's values were added.
    pub(crate) matches: ArgMatches,
    /// The config file read, if any.
    pub(crate) file: Option<PathBuf>,
    /// The argument ids whose values came from the file.
    from_file: Vec<String>,
}

/// One `key = value` of the file.
#[derive(Debug)]
struct Entry {
    key: String,
    line: usize,
    value: toml::Value,
}

/// `~/.config/chatroom-relay/relay.toml` on Linux; read only when it exists.
pub(crate) fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "chatroom-relay").map(|d| d.config_dir().join("relay.toml"))
}

/// Parses `args` with `cmd`, then adds the values of the config file named by `--config` (or
/// found at the default path) for the chosen (sub)command. `valid_keys` are the keys a file may
/// hold: the run flags, so one file serves the relay and its maintenance commands.
pub(crate) fn parse(cmd: Command, args: Vec<OsString>, valid_keys: &[String]) -> Result<Parsed, ParseError> {
    let matches = cmd.clone().try_get_matches_from(&args).map_err(ParseError::Clap)?;
    let (leaf, leaf_matches) = leaf(&cmd, &matches);
    if leaf.get_arguments().all(|a| a.get_id() != CONFIG_ARG) {
        return Ok(Parsed { matches, file: None, from_file: Vec::new() });
    }
    let path = match leaf_matches.get_one::<PathBuf>(CONFIG_ARG) {
        Some(path) => path.clone(),
        None => match default_path().filter(|p| p.exists()) {
            Some(path) => path,
            None => return Ok(Parsed { matches, file: None, from_file: Vec::new() }),
        },
    };
    let entries = load(&path)?;
    check_keys(&entries, valid_keys, &path)?;
    let mut extra = Vec::new();
    let mut from_file = Vec::new();
    for entry in &entries {
        let Some(arg) = leaf.get_arguments().find(|a| a.get_long() == Some(entry.key.as_str())) else {
            continue; // A run setting this command does not use.
        };
        let id = arg.get_id().as_str();
        if matches!(leaf_matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
        {
            continue;
        }
        extra.extend(to_args(entry, arg.get_action()).map_err(|why| at(&path, entry.line, &why))?);
        from_file.push(id.to_owned());
    }
    let mut all = args;
    all.extend(extra);
    let matches = cmd.try_get_matches_from(all).map_err(|e| file_value_error(e, &entries, &path))?;
    Ok(Parsed { matches, file: Some(path), from_file })
}

/// The innermost subcommand chosen and its matches.
fn leaf<'a>(cmd: &'a Command, matches: &'a ArgMatches) -> (&'a Command, &'a ArgMatches) {
    match matches.subcommand() {
        Some((name, sub)) => match cmd.find_subcommand(name) {
            Some(sub_cmd) => leaf(sub_cmd, sub),
            None => (cmd, matches),
        },
        None => (cmd, matches),
    }
}

fn at(path: &Path, line: usize, why: &str) -> ParseError {
    ParseError::File(format!("{} line {line}: {why}", path.display()))
}

fn load(path: &Path) -> Result<Vec<Entry>, ParseError> {
    let file = std::fs::File::open(path).map_err(|e| {
        ParseError::File(format!(
            "cannot read the config file {}: {e}; create it or pass another --config",
            path.display()
        ))
    })?;
    let mut text = String::new();
    file.take(MAX_CONFIG_LEN + 1).read_to_string(&mut text).map_err(|e| {
        ParseError::File(format!(
            "cannot read the config file {}: {e}; it must be UTF-8 text",
            path.display()
        ))
    })?;
    if text.len() as u64 > MAX_CONFIG_LEN {
        return Err(ParseError::File(format!(
            "{} is larger than {MAX_CONFIG_LEN} bytes; a relay config is a few lines",
            path.display()
        )));
    }
    let table: BTreeMap<toml::Spanned<String>, toml::Value> = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(&text, s.start));
        at(path, line, &format!("{}; fix the TOML syntax", e.message().trim_end()))
    })?;
    let mut entries: Vec<Entry> = table
        .into_iter()
        .map(|(key, value)| Entry { line: line_of(&text, key.span().start), key: key.into_inner(), value })
        .collect();
    entries.sort_by_key(|e| e.line);
    Ok(entries)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

fn check_keys(entries: &[Entry], valid: &[String], path: &Path) -> Result<(), ParseError> {
    match entries.iter().find(|e| !valid.contains(&e.key)) {
        None => Ok(()),
        Some(e) => {
            Err(at(path, e.line, &format!("unknown key {:?}; valid keys are: {}", e.key, valid.join(", "))))
        }
    }
}

/// The arguments that give the flag a file value.
fn to_args(entry: &Entry, action: &ArgAction) -> Result<Vec<OsString>, String> {
    let flag = format!("--{}", entry.key);
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!("{} must be a string or a number", entry.key)),
    };
    match (action, &entry.value) {
        (ArgAction::SetTrue, toml::Value::Boolean(on)) => {
            Ok(if *on { vec![flag.into()] } else { Vec::new() })
        }
        (ArgAction::SetTrue, _) => Err(format!("{} must be true or false", entry.key)),
        (ArgAction::Count, toml::Value::Integer(n @ 0..=3)) => Ok(vec![flag.into(); *n as usize]),
        (ArgAction::Count, _) => Err(format!("{} must be a number from 0 to 3", entry.key)),
        (ArgAction::Append, toml::Value::Array(items)) => {
            items.iter().map(|v| scalar(v).map(|s| OsString::from(format!("{flag}={s}")))).collect()
        }
        (_, value) => Ok(vec![format!("{flag}={}", scalar(value)?).into()]),
    }
}

/// A clap error caused by a file value, told with the file's line.
fn file_value_error(e: clap::Error, entries: &[Entry], path: &Path) -> ParseError {
    use clap::error::{ContextKind, ContextValue};
    let culprit = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => {
            arg.trim_start_matches('-').split([' ', '=']).next().map(str::to_owned)
        }
        _ => None,
    };
    let line = culprit.and_then(|key| entries.iter().find(|e| e.key == key)).map_or(1, |e| e.line);
    let message = e.render().to_string();
    let first = message.lines().next().unwrap_or_default().trim_start_matches("error: ");
    at(path, line, &format!("{first}; fix the value in the config file"))
}

/// The effective configuration of the chosen command as a config file: one `key = value` per
/// flag, each with a comment saying where the value came from.
pub(crate) fn render(cmd: &Command, parsed: &Parsed) -> String {
    let (leaf, matches) = leaf(cmd, &parsed.matches);
    let mut out = String::new();
    for arg in leaf.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(key) = arg.get_long() else { continue };
        if id == CONFIG_ARG || matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
            continue;
        }
        let source = match matches.value_source(id) {
            _ if parsed.from_file.iter().any(|f| f == id) => "config file",
            Some(ValueSource::CommandLine) => "command line",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            Some(_) => "other",
            None => {
                let _ = writeln!(out, "# {key} is not set");
                continue;
            }
        };
        let value = match arg.get_action() {
            ArgAction::SetTrue => matches.get_flag(id).to_string(),
            ArgAction::Count => matches.get_count(id).to_string(),
            _ => {
                let raw: Vec<String> = matches
                    .get_raw(id)
                    .into_iter()
                    .flatten()
                    .map(|v| toml_scalar(&v.to_string_lossy()))
                    .collect();
                if matches!(arg.get_action(), ArgAction::Append) {
                    format!("[{}]", raw.join(", "))
                } else {
                    raw.join(" ")
                }
            }
        };
        let _ = writeln!(out, "{key} = {value}  # {source}");
    }
    out
}

fn toml_scalar(raw: &str) -> String {
    if !raw.is_empty() && raw.len() < 19 && raw.bytes().all(|b| b.is_ascii_digit()) {
        raw.to_owned()
    } else {
        toml::Value::String(raw.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cmd() -> Command {
        Command::new("t")
            .arg(Arg::new(CONFIG_ARG).long("config").value_parser(clap::value_parser!(PathBuf)))
            .arg(
                Arg::new("history")
                    .long("history")
                    .default_value("10")
                    .value_parser(clap::value_parser!(u32)),
            )
            .arg(Arg::new("listen").long("listen").default_value("127.0.0.1:1"))
            .arg(Arg::new("onion").long("onion").action(ArgAction::SetTrue))
            .arg(Arg::new("verbose").long("verbose").short('v').action(ArgAction::Count))
    }

    fn keys() -> Vec<String> {
        ["history", "listen", "onion", "verbose"].map(String::from).to_vec()
    }

    fn run(file: &str, extra: &[&str]) -> Result<Parsed, ParseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, file).unwrap();
        let mut args: Vec<OsString> = vec!["t".into(), "--config".into(), path.into()];
        args.extend(extra.iter().map(OsString::from));
        parse(cmd(), args, &keys())
    }

    #[test]
    fn file_values_apply_and_flags_override_them() {
        let parsed = run("history = 5\nonion = true\nverbose = 2\n", &["--listen", "127.0.0.2:9"]).unwrap();
        let m = &parsed.matches;
        assert_eq!(m.get_one::<u32>("history"), Some(&5));
        assert!(m.get_flag("onion"));
        assert_eq!(m.get_count("verbose"), 2);
        assert_eq!(m.get_one::<String>("listen").map(String::as_str), Some("127.0.0.2:9"));
        let text = render(&cmd(), &parsed);
        assert!(text.contains("history = 5  # config file"), "{text}");
        assert!(text.contains("verbose = 2  # config file"), "{text}");
        let parsed = run("history = 5\n", &["--history", "7"]).unwrap();
        assert_eq!(parsed.matches.get_one::<u32>("history"), Some(&7));
        let text = render(&cmd(), &parsed);
        assert!(text.contains("history = 7  # command line"), "{text}");
        assert!(text.contains("listen = \"127.0.0.1:1\"  # default"), "{text}");
    }

    #[test]
    fn unknown_keys_bad_values_and_syntax_errors_name_the_line() {
        let Err(ParseError::File(e)) = run("history = 5\n\nhistroy = 6\n", &[]) else { panic!() };
        assert!(e.contains("line 3: unknown key \"histroy\"; valid keys are: history, listen"), "{e}");
        let Err(ParseError::File(e)) = run("listen = \"x\"\nhistory = \"lots\"\n", &[]) else { panic!() };
        assert!(e.contains("line 2: invalid value 'lots' for '--history"), "{e}");
        let Err(ParseError::File(e)) = run("onion = 1\n", &[]) else { panic!() };
        assert!(e.contains("line 1: onion must be true or false"), "{e}");
        let Err(ParseError::File(e)) = run("history = 5\nlisten = \n", &[]) else { panic!() };
        assert!(e.contains("line 2: "), "{e}");
        let Err(ParseError::File(e)) = run("[history]\nx = 1\n", &[]) else { panic!() };
        assert!(e.contains("line 1: history must be a string or a number"), "{e}");
    }

    #[test]
    fn an_explicit_missing_file_is_an_error() {
        let args: Vec<OsString> = ["t", "--config", "/nonexistent/relay.toml"].map(OsString::from).to_vec();
        let Err(ParseError::File(e)) = parse(cmd(), args, &keys()) else { panic!() };
        assert!(e.contains("cannot read the config file /nonexistent/relay.toml"), "{e}");
    }
}
