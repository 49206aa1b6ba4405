//! Line-mode output. Received messages go to stdout, one line each:
//!
//! ```text
//! HH:MM:SS <nick> text
//! HH:MM:SS * nick action text
//! HH:MM:SS [history] <nick> text
//! HH:MM:SS [history] * nick action text
//! ```
//!
//! (local time of the sender's clock). Everything else goes to stderr as lines starting with
//! `-!- `, in the words of `event_text.rs`, which neutralises text from other members or the relay.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use chatroom_session::crypto::{ContentKind, PublicIdentity};
use chatroom_session::session::{Callbacks, Event, GroupEvent, KdfProgress};

use crate::event_text::{event_line, message_line, shared_history_lines, tagged_message_line, topic_line};

/// The line-mode front end's event sink. It also counts, for the exit status and for pacing
/// the input, the messages the relay answered and the refusals it reported.
pub(crate) struct PlainUi {
    relay: String,
    spinner: bool,
    no_history: bool,
    out: Mutex<()>,
    /// Messages answered (acknowledged or refused).
    settled: AtomicU64,
    /// Messages and commands the relay refused.
    failures: AtomicUsize,
    progress: Notify,
    /// The room owner, once joined: only their topic is shown as the topic.
    owner: Mutex<Option<PublicIdentity>>,
    /// Protocol 2: each message shows its MLS-authenticated sender's key tag, and the first
    /// join points to the epoch code.
    v2: bool,
}

impl PlainUi {
    pub(crate) fn new(relay: String, plain: bool, no_history: bool) -> Self {
        Self {
            relay,
            spinner: !plain && io::stderr().is_terminal(),
            no_history,
            out: Mutex::new(()),
            settled: AtomicU64::new(0),
            failures: AtomicUsize::new(0),
            progress: Notify::new(),
            owner: Mutex::new(None),
            v2: false,
        }
    }

    /// Shows each message's sender key tag beside the nickname (protocol 2, where the key is
    /// what MLS authenticates and nicknames are not pinned).
    pub(crate) fn for_protocol_2(mut self) -> Self {
        self.v2 = true;
        self
    }

    /// Messages the relay has answered so far.
    pub(crate) fn settled(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    /// Messages and commands the relay refused so far.
    pub(crate) fn failures(&self) -> usize {
        self.failures.load(Ordering::Acquire)
    }

    /// Resolves after the relay answered a message (or at once if one was answered since the
    /// last call).
    pub(crate) async fn progressed(&self) {
        self.progress.notified().await;
    }

    fn count(&self, event: &Event) {
        match event {
            Event::Sent { .. } => {
                self.settled.fetch_add(1, Ordering::AcqRel);
                self.progress.notify_one();
            }
            Event::SendFailed { .. } => {
                self.failures.fetch_add(1, Ordering::AcqRel);
                self.settled.fetch_add(1, Ordering::AcqRel);
                self.progress.notify_one();
            }
            Event::CommandFailed { .. } => {
                self.failures.fetch_add(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// Prints a notice on stderr.
    pub(crate) fn notice(&self, text: &str) {
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = io::stderr().lock();
        let _ = writeln!(err, "-!- {text}");
    }
}

impl Callbacks for PlainUi {
    fn event(&self, event: Event) {
        self.count(&event);
        if let Event::Joined { owner, .. } = &event {
            *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = Some(*owner);
        }
        if let Event::Message(m) = &event {
            if m.kind == ContentKind::Topic {
                let owner = *self.owner.lock().unwrap_or_else(|e| e.into_inner());
                self.notice(&topic_line(m, owner));
                return;
            }
            if m.history && self.no_history {
                return;
            }
            let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = io::stdout().lock();
            let line = if self.v2 { tagged_message_line(m) } else { message_line(m) };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            return;
        }
        if let Event::Group(GroupEvent::SharedHistory { by, by_nick, messages }) = &event {
            let (notice, lines) = shared_history_lines(by, by_nick.as_ref(), messages);
            self.notice(&notice);
            if self.no_history {
                return;
            }
            let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = io::stdout().lock();
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
            return;
        }
        if self.spinner {
            if let Event::KeyDerivation(KdfProgress::Running(elapsed)) = &event {
                const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
                let frame = FRAMES[(elapsed.as_millis() / 100) as usize % FRAMES.len()];
                let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
                let mut err = io::stderr().lock();
                let _ = write!(err, "\r-!- deriving the room key {frame} {:.1} s", elapsed.as_secs_f64());
                let _ = err.flush();
                return;
            }
            if let Event::KeyDerivation(KdfProgress::Done(_)) = &event {
                let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
                let _ = write!(io::stderr().lock(), "\r\x1b[K");
            }
        }
        if self.v2 {
            if let Some(line) = crate::event_text::v2_joined_line(&event, &self.relay) {
                self.notice(&line);
                return;
            }
        }
        if let Some(line) = event_line(&event, &self.relay) {
            self.notice(&line);
        }
    }
}
