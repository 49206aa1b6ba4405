//! Taking over the terminal and giving it back exactly as it was: raw mode, the alternate
//! screen, mouse wheel reports, bracketed paste, focus reports, the window title and a visible
//! cursor are undone on every way out (normal exit, error, and panic, whose hook restores the
//! terminal before the panic message is printed).
//! Terminal events are read on a thread of their own.
//!
//! A terminal can also go away under the client (an SSH connection or a tmux session closed):
//! the kernel hangs the tty up, reads return end of file and writes fail with EIO. crossterm's
//! reader retries such reads forever, so the reader thread is never waited on for long, and
//! the event loop asks `gone` on a timer as well as watching for SIGHUP.

use std::fmt;
use std::io::{self, IsTerminal, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossterm::cursor::Show;
use crossterm::event::{
    DisableBracketedPaste, DisableFocusChange, EnableBracketedPaste, EnableFocusChange, Event as TermEvent,
};
use crossterm::terminal::SetTitle;
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{execute, Command};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc;

/// The terminal is in full-screen mode.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// A panic happened (and restored the terminal).
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Mouse button reports (wheel included) in SGR encoding, without motion tracking: the wheel
/// scrolls, and moving the mouse costs nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WheelReports(pub(crate) bool);

impl Command for WheelReports {
    fn write_ansi(&self, f: &mut impl fmt::Write) -> fmt::Result {
        if self.0 {
            f.write_str("\x1b[?1000h\x1b[?1006h")
        } else {
            f.write_str("\x1b[?1006l\x1b[?1000l")
        }
    }

    #[cfg(windows)]
    fn execute_winapi(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Saves (`true`) or restores the window title on the terminal's title stack (xterm; other
/// terminals ignore it), so a title set on a mention does not outlive the client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TitleStack(pub(crate) bool);

impl Command for TitleStack {
    fn write_ansi(&self, f: &mut impl fmt::Write) -> fmt::Result {
        f.write_str(if self.0 { "\x1b[22;0t" } else { "\x1b[23;0t" })
    }

    #[cfg(windows)]
    fn execute_winapi(&self) -> io::Result<()> {
        Ok(())
    }
}

fn enter_modes(out: &mut impl Write) -> io::Result<()> {
    execute!(
        out,
        EnterAlternateScreen,
        WheelReports(true),
        EnableBracketedPaste,
        EnableFocusChange,
        TitleStack(true)
    )
}

fn leave_modes(out: &mut impl Write) -> io::Result<()> {
    execute!(
        out,
        TitleStack(false),
        DisableFocusChange,
        DisableBracketedPaste,
        WheelReports(false),
        LeaveAlternateScreen,
        Show
    )
}

/// Rings the terminal bell and sets the window title (after a mention).
pub(crate) fn ring(title: &str) {
    let mut out = io::stdout();
    let _ = execute!(out, SetTitle(title));
    let _ = out.write_all(b"\x07");
    let _ = out.flush();
}

/// Sets the window title.
pub(crate) fn title(title: &str) {
    let _ = execute!(io::stdout(), SetTitle(title));
}

/// Gives the terminal back, once; safe to call from anywhere, any number of times.
pub(crate) fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = leave_modes(&mut io::stdout());
        let _ = disable_raw_mode();
    }
}

/// Whether the terminal is gone: on a hung-up tty the terminal attribute query (`isatty`)
/// fails with EIO, so standard input or output no longer counts as a terminal.
pub(crate) fn gone() -> bool {
    !io::stdin().is_terminal() || !io::stdout().is_terminal()
}

/// Whether a panic happened since the UI started.
pub(crate) fn panicked() -> bool {
    PANICKED.load(Ordering::SeqCst)
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// What the reader thread hands over: an event, or the error that stopped it (the terminal
/// is unusable).
pub(crate) type TermRead = io::Result<TermEvent>;

/// Reads terminal events on a thread and hands them over; stops within `POLL` when asked,
/// unless crossterm is stuck on a hung-up terminal, in which case it is left behind.
#[derive(Debug)]
struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the reader thread checks whether to stop.
const POLL: Duration = Duration::from_millis(50);

/// How long `stop` waits for the reader thread before leaving it behind.
const STOP_WAIT: Duration = Duration::from_millis(200);

impl Reader {
    fn start(tx: mpsc::Sender<TermRead>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let read = match crossterm::event::poll(POLL) {
                    Ok(true) if flag.load(Ordering::SeqCst) => break,
                    Ok(true) => crossterm::event::read(),
                    Ok(false) => continue,
                    Err(e) => Err(e),
                };
                let failed = read.is_err();
                if tx.blocking_send(read).is_err() || failed {
                    break;
                }
            }
        });
        Self { stop, thread: Some(thread) }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else { return };
        let deadline = Instant::now() + STOP_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
        // Otherwise the thread is stuck in a read of a hung-up terminal; the process is about
        // to end, and waiting for it would hang the exit.
    }
}

/// The full-screen terminal and its event reader. Dropping it restores the terminal.
pub(crate) struct Screen {
    pub(crate) terminal: Terminal<CrosstermBackend<Stdout>>,
    reader: Reader,
    tx: mpsc::Sender<TermRead>,
}

impl fmt::Debug for Screen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Screen")
    }
}

impl Screen {
    /// Takes over the terminal; terminal events arrive on the returned receiver, and an error
    /// when the terminal can no longer be read.
    pub(crate) fn enter() -> io::Result<(Self, mpsc::Receiver<TermRead>)> {
        install_panic_hook();
        let (tx, rx) = mpsc::channel(256);
        take_over()?;
        let terminal = match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e);
            }
        };
        let reader = Reader::start(tx.clone());
        Ok((Self { terminal, reader, tx }, rx))
    }

    /// Gives the terminal back for a while (to ask a question on the normal screen).
    pub(crate) fn suspend(&mut self) {
        self.reader.stop();
        restore();
    }

    /// Takes the terminal over again after `suspend`.
    pub(crate) fn resume(&mut self) -> io::Result<()> {
        take_over()?;
        self.terminal.clear()?;
        self.reader = Reader::start(self.tx.clone());
        Ok(())
    }
}

fn take_over() -> io::Result<()> {
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    if let Err(e) = enter_modes(&mut io::stdout()) {
        restore();
        return Err(e);
    }
    Ok(())
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.reader.stop();
        restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_undoes_every_mode_entering_sets() -> Result<(), Box<dyn std::error::Error>> {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        enter_modes(&mut on)?;
        leave_modes(&mut off)?;
        let (on, off) = (String::from_utf8(on)?, String::from_utf8(off)?);
        assert_eq!(on, "\x1b[?1049h\x1b[?1000h\x1b[?1006h\x1b[?2004h\x1b[?1004h\x1b[22;0t");
        assert_eq!(off, "\x1b[23;0t\x1b[?1004l\x1b[?2004l\x1b[?1006l\x1b[?1000l\x1b[?1049l\x1b[?25h");
        assert!(off.contains("\x1b[23;0t"), "the saved title is restored");
        for set in on.split('\x1b').filter(|s| !s.is_empty() && s.ends_with('h')) {
            let reset = format!("\x1b{}l", set.trim_end_matches('h'));
            assert!(off.contains(&reset), "{set:?} is not undone");
        }
        Ok(())
    }

    #[test]
    fn a_panic_restores_the_terminal_before_its_message_and_restore_runs_once() {
        // Without the full screen, restoring does nothing (and leaves this terminal alone).
        restore();
        assert!(!ACTIVE.load(Ordering::SeqCst));
        install_panic_hook();
        // As if the full screen were on. The hook writes the mode resets to stdout, which is
        // harmless here; raw mode was never set, so there is none to undo.
        ACTIVE.store(true, Ordering::SeqCst);
        let result = std::panic::catch_unwind(|| panic!("a bug in the UI"));
        assert!(result.is_err());
        assert!(!ACTIVE.load(Ordering::SeqCst), "the hook restored the terminal");
        assert!(panicked(), "the event loop is told to stop");
        restore();
        assert!(!ACTIVE.load(Ordering::SeqCst));
    }
}
