//! Asking the user: lines from stdin (prompts on stderr), passwords without echo on a
//! terminal. When stdin is not a terminal every answer is read as one line from stdin, so
//! scripts and tests can feed the prompts.

use std::io::{self, BufRead, BufReader, IsTerminal, Read, Stdin, Write};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::app_error::AppError;

/// Longest input line read.
const MAX_LINE: u64 = 1 << 20;

/// Standard input, read line by line.
pub(crate) struct Input {
    reader: BufReader<Stdin>,
    tty: bool,
}

impl Input {
    pub(crate) fn new() -> Self {
        let stdin = io::stdin();
        let tty = stdin.is_terminal();
        Self { reader: BufReader::new(stdin), tty }
    }

    /// Whether stdin is a terminal.
    pub(crate) fn is_tty(&self) -> bool {
        self.tty
    }

    /// Reads one line without its line ending; `None` at end of input.
    pub(crate) fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut buf = Vec::new();
        let n = Read::take(&mut self.reader, MAX_LINE).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Asks for a line.
    pub(crate) fn ask(&mut self, prompt: &str) -> Result<String, AppError> {
        eprint!("{prompt}");
        let _ = io::stderr().flush();
        match self.read_line() {
            Ok(Some(line)) => {
                if !self.tty {
                    // The answer was not echoed by a terminal: end the prompt's line.
                    eprintln!();
                }
                Ok(line.trim().to_owned())
            }
            Ok(None) => Err(AppError::new(format!(
                "input ended while asking {:?}; give it as a flag instead (see chatroom --help)",
                prompt.trim_end_matches([':', ' ', '?'])
            ))),
            Err(e) => Err(AppError::new(format!("cannot read standard input: {e}"))),
        }
    }

    /// Asks for a secret, without echo on a terminal.
    pub(crate) fn secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, AppError> {
        if self.tty {
            return rpassword::prompt_password(prompt)
                .map(Zeroizing::new)
                .map_err(|e| AppError::new(format!("cannot read the password from the terminal: {e}")));
        }
        eprint!("{prompt}");
        let _ = io::stderr().flush();
        match self.read_line() {
            Ok(Some(line)) => {
                eprintln!();
                Ok(Zeroizing::new(line))
            }
            Ok(None) => Err(AppError::new(
                "input ended while asking for the password; use --password-file PATH in scripts",
            )),
            Err(e) => Err(AppError::new(format!("cannot read standard input: {e}"))),
        }
    }

    /// Asks a yes/no question; anything but y/yes is no.
    pub(crate) fn confirm(&mut self, prompt: &str) -> Result<bool, AppError> {
        let answer = self.ask(prompt)?;
        Ok(matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes"))
    }

    /// Hands the rest of stdin to a thread that sends each line (or `None` at the end).
    pub(crate) fn into_lines(mut self) -> tokio::sync::mpsc::Receiver<Option<String>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        std::thread::spawn(move || loop {
            let line = self.read_line().ok().flatten();
            let end = line.is_none();
            if tx.blocking_send(line).is_err() || end {
                break;
            }
        });
        rx
    }
}

/// Whether two secrets are equal, compared in constant time.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("correct horse", "correct horse"));
        assert!(!same_secret("correct horse", "correct hors"));
        assert!(!same_secret("a", "b"));
    }
}
