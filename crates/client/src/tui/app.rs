//! The UI's state, without I/O: the scrollback, the member list, the status, the input line,
//! and what keys and session events do to them. Text from other members or the relay is
//! neutralised when it enters the scrollback, so nothing drawn later can carry a control
//! character; what kind of line an entry is (message, notice, warning) is decided here from the
//! event, never from its text.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::commands::{parse_line, Command, Input as Line, COMMAND_NAMES, HELP};
use crate::config::Bell;
use chatroom_session::crypto::{ContentKind, KdfParams, Nick, PresenceEvent, PublicIdentity, MAX_BODY_LEN};
use chatroom_session::display::{key_tag, neutralize};
use chatroom_session::session::{ConnState, Event, GroupEvent, KdfProgress, MemberInfo};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};

use super::editor::LineEditor;
use super::entry::{Body, Delivery, Entry, NoticeKind};
use crate::event_text::event_line;

/// Most entries kept in the scrollback.
pub(crate) const MAX_SCROLLBACK: usize = 5000;

/// Most lines one multi-line paste may send (each is a message).
pub(crate) const MAX_PASTE_LINES: usize = 50;

/// Rows scrolled per mouse wheel step.
const WHEEL_ROWS: usize = 3;

/// Keys of the UI, listed by `/help` after the commands.
pub(crate) const KEYS_HELP: &str = "\
keys:
  PageUp/PageDown, mouse wheel   scroll the conversation
  Ctrl-End or Alt-End            jump to the newest message
  Alt+1 .. Alt+9                 show window 1 to 9 (/window N)
  Up/Down                        previous/next line you sent
  Tab                            complete a command or nickname (again: next match)
  Left/Right, Home/End, Ctrl-A/E move in the line
  Backspace/Delete, Ctrl-U/K/W   delete a character, to start/end of line, a word
  Esc                            dismiss the warning banner
  Ctrl-L                         redraw the screen
  Ctrl-C                         leave (like /quit)";

/// The connection as the status bar shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Conn {
    /// Opening the connection: 0 for the first attempt, then 1, 2, ... while reconnecting.
    Connecting {
        /// The attempt.
        attempt: u32,
    },
    /// Deriving the room key.
    Deriving {
        /// Parameters.
        params: KdfParams,
        /// Time spent so far.
        elapsed: Duration,
    },
    /// Handshake and join.
    Joining,
    /// Joined, replaying history.
    CatchingUp,
    /// Live.
    Connected,
    /// Waiting to reconnect.
    Reconnecting {
        /// When the wait started.
        since: Instant,
        /// How long it lasts.
        delay: Duration,
    },
    /// The session ended; nothing more will arrive.
    Offline,
    /// Leaving: waiting for the relay to acknowledge what was sent.
    Leaving,
}

/// What the event loop must do after a key or a typed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing beyond redrawing.
    None,
    /// Send a message; `entry` is the scrollback entry showing it.
    Send {
        /// Text or action.
        kind: ContentKind,
        /// The text.
        text: String,
        /// Its entry number.
        entry: u64,
    },
    /// Send pasted lines, each a message; `entry` numbers the scrollback entries showing them.
    SendLines(Vec<(String, u64)>),
    /// Ask for the member list.
    Who,
    /// Ask what is known of a nickname.
    Whois(Nick),
    /// Show the invite URL.
    Invite,
    /// Show the codes to compare (protocol 2 asks the session for the epoch code).
    Safety,
    /// Protocol 2, owner only: rotate the room's password to the one in the file.
    RotatePassword(std::path::PathBuf),
    /// Join another room in a new window.
    Join(String),
    /// Leave this window's room.
    Part,
    /// Show window N (0-based).
    Window(usize),
    /// Owner commands.
    Kick(Nick),
    /// Ban.
    Ban(Nick),
    /// Unban.
    Unban(Nick),
    /// Clear and redraw the terminal.
    Redraw,
    /// Leave.
    Quit,
    /// Leave soon (SIGTERM): wait only briefly for the relay's acknowledgements.
    Terminate,
    /// The terminal is gone (SIGHUP, or it can no longer be read): leave at once, drawing and
    /// printing nothing.
    Hangup,
}

/// Formats a time in milliseconds since the epoch.
pub(crate) type Clock = fn(u64) -> String;

/// `1 message`, `2 messages`.
pub(crate) fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Most characters of one message quoted in a notice.
const QUOTE_CHARS: usize = 30;
/// Most messages quoted in a notice.
const QUOTE_COUNT: usize = 3;

/// `"first", "second" and 3 more`, each cut to `QUOTE_CHARS` with an ellipsis.
pub(crate) fn quote_list(texts: &[String]) -> String {
    let mut quoted: Vec<String> = texts
        .iter()
        .take(QUOTE_COUNT)
        .map(|t| match t.char_indices().nth(QUOTE_CHARS) {
            Some((at, _)) => format!("\"{}...\"", &t[..at]),
            None => format!("\"{t}\""),
        })
        .collect();
    if texts.len() > QUOTE_COUNT {
        quoted.push(format!("{} more", texts.len() - QUOTE_COUNT));
    }
    quoted.join(", ")
}

/// The whole state of the UI.
#[derive(Debug)]
pub(crate) struct App {
    /// Relay as shown (neutralised), e.g. `host:7777` or `host:7777 via socks5h://...`.
    pub(crate) relay: String,
    /// Room name.
    pub(crate) room: String,
    /// Our nickname.
    pub(crate) nick: String,
    /// Connection state.
    pub(crate) conn: Conn,
    /// The relay's fingerprint (64 hex digits), once connected.
    pub(crate) relay_fingerprint: Option<String>,
    /// The room safety code, once joined.
    pub(crate) safety_code: Option<String>,
    /// Members, sorted by nickname.
    pub(crate) members: Vec<MemberInfo>,
    /// The room owner's identity, once joined.
    owner: Option<PublicIdentity>,
    /// The input line.
    pub(crate) editor: LineEditor,
    /// The latest security warning not yet dismissed, and how many arrived since dismissal.
    pub(crate) alert: Option<(String, usize)>,
    /// Rows scrolled up from the bottom (clamped when drawn).
    pub(crate) scroll: usize,
    /// Entries added below the view while scrolled up.
    pub(crate) unseen: usize,
    /// Rows of the conversation pane at the last draw (for PageUp/PageDown).
    pub(crate) page: usize,
    /// Width of the conversation pane at the last draw (to keep the view still while scrolled).
    pub(crate) pane_width: usize,
    entries: VecDeque<Entry>,
    /// Number of the first entry in `entries`.
    first: u64,
    /// Send ids of our own messages -> entry numbers.
    pending: HashMap<u64, u64>,
    /// History messages shown since the last join.
    history_seen: usize,
    /// `/who` was typed: show the next member list as a notice too.
    who_asked: bool,
    /// When the connection was lost, while it is; the loss was reported once.
    lost_since: Option<Instant>,
    /// After a reconnect, until the end of history: messages caught up so far.
    caught_up: Option<usize>,
    /// `/quit` while offline with messages unsent: said what is unsent once; the next leaves.
    quit_asked: bool,
    /// Words that make a message a mention (lower case): our nickname and configured words.
    highlight: Vec<String>,
    /// When a mention rings the bell.
    bell: Bell,
    /// The terminal window has the focus (assumed until it says otherwise).
    pub(crate) focused: bool,
    /// The unread marker was placed since the focus was lost.
    marked: bool,
    /// The entry the unread marker line is drawn above: the first to arrive while unfocused.
    pub(crate) unread_at: Option<u64>,
    /// A mention asks for the bell (and the window title); taken by the event loop.
    ring: bool,
    /// Joined someone else's room: the join notice waits for the member list, to name the
    /// owner by nickname.
    owner_to_name: Option<PublicIdentity>,
    /// A multi-line paste waiting for Enter (send) or Esc (cancel).
    pub(crate) paste: Option<Vec<String>>,
    /// The room's topic, as last set by its owner (neutralised).
    pub(crate) topic: Option<String>,
    /// We own the room (only the owner sets the topic).
    owner_is_me: bool,
    /// This window is the one shown.
    active: bool,
    /// Recent context (already seen messages) was shown since the start.
    context_shown: bool,
    /// Messages that arrived while this window was not shown, and whether one mentioned us.
    unread: (usize, bool),
    /// The status bar's window list (empty with one window).
    pub(crate) windows: String,
    /// Nicknames whose messages are hidden (lower case), until the client ends.
    ignored: std::collections::HashSet<String>,
    /// The room speaks protocol 2: messages show the sender's key tag, `/safety` asks the
    /// session for the epoch code.
    v2: bool,
    clock: Clock,
    now_ms: fn() -> u64,
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Local `HH:MM`.
pub(crate) fn local_clock(timestamp_ms: u64) -> String {
    let full = crate::event_text::clock(timestamp_ms);
    full.get(..5).unwrap_or(&full).to_owned()
}

impl App {
    /// A new UI state for `nick` in `room` on `relay`.
    pub(crate) fn new(relay: &str, room: &str, nick: &str) -> Self {
        Self::with_clock(relay, room, nick, local_clock, wall_clock_ms)
    }

    /// `new` with a given clock (tests use a fixed one).
    pub(crate) fn with_clock(relay: &str, room: &str, nick: &str, clock: Clock, now_ms: fn() -> u64) -> Self {
        Self {
            relay: neutralize(relay),
            room: neutralize(room),
            nick: neutralize(nick),
            conn: Conn::Connecting { attempt: 0 },
            relay_fingerprint: None,
            safety_code: None,
            members: Vec::new(),
            owner: None,
            editor: LineEditor::default(),
            alert: None,
            scroll: 0,
            unseen: 0,
            page: 10,
            pane_width: 80,
            entries: VecDeque::new(),
            first: 0,
            pending: HashMap::new(),
            history_seen: 0,
            who_asked: false,
            lost_since: None,
            caught_up: None,
            quit_asked: false,
            highlight: vec![nick.to_lowercase()],
            bell: Bell::default(),
            focused: true,
            marked: false,
            unread_at: None,
            ring: false,
            owner_to_name: None,
            paste: None,
            v2: false,
            ignored: std::collections::HashSet::new(),
            topic: None,
            owner_is_me: false,
            active: true,
            context_shown: false,
            unread: (0, false),
            windows: String::new(),
            clock,
            now_ms,
        }
    }

    /// The number of the oldest entry kept.
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// The scrollback, oldest first.
    pub(crate) fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> + ExactSizeIterator {
        self.entries.iter()
    }

    fn now(&self) -> String {
        (self.clock)((self.now_ms)())
    }

    /// Appends an entry; returns its number.
    pub(crate) fn push(&mut self, body: Body, time: String) -> u64 {
        let entry = Entry { time, body };
        if self.scroll > 0 {
            // Keep the rows on screen where they are.
            self.scroll += super::rows::entry_rows(&entry, self.pane_width).len();
            self.unseen += 1;
        }
        if self.entries.len() >= MAX_SCROLLBACK {
            self.entries.pop_front();
            self.first += 1;
        }
        self.entries.push_back(entry);
        self.first + self.entries.len() as u64 - 1
    }

    /// Appends a notice (text already neutralised or produced by the program).
    pub(crate) fn notice(&mut self, kind: NoticeKind, text: &str) {
        // Program text may hold several lines; each becomes its own notice.
        for line in text.split('\n') {
            let line = line.strip_prefix("-!- ").unwrap_or(line);
            let time = self.now();
            self.push(Body::Notice { kind, text: neutralize(line) }, time);
        }
    }

    /// Raises the warning banner.
    fn alert(&mut self, text: &str) {
        let count = self.alert.as_ref().map_or(0, |(_, n)| *n) + 1;
        self.alert = Some((neutralize(text), count));
        self.notice(NoticeKind::Alert, text);
    }

    /// Shows one of our own messages before the relay has it.
    pub(crate) fn own_message(&mut self, kind: ContentKind, text: &str) -> u64 {
        let time = self.now();
        self.push(
            Body::Message {
                nick: self.nick.clone(),
                text: neutralize(text),
                action: kind == ContentKind::Action,
                history: false,
                mine: true,
                delivery: Delivery::Pending,
                mention: false,
                key: self.members.iter().find(|m| m.me).map(|m| m.identity),
            },
            time,
        )
    }

    /// Links a send id to the entry showing that message.
    pub(crate) fn track(&mut self, id: u64, entry: u64) {
        self.pending.insert(id, entry);
    }

    fn set_delivery(&mut self, id: u64, delivery: Delivery) {
        let Some(number) = self.pending.remove(&id) else { return };
        let Some(index) = number.checked_sub(self.first).and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if let Some(Entry { body: Body::Message { delivery: d, .. }, .. }) = self.entries.get_mut(index) {
            *d = delivery;
        }
    }

    /// Marks our own message as refused (not delivered).
    pub(crate) fn failed(&mut self, entry: u64) {
        let Some(index) = entry.checked_sub(self.first).and_then(|i| usize::try_from(i).ok()) else { return };
        if let Some(Entry { body: Body::Message { delivery, .. }, .. }) = self.entries.get_mut(index) {
            *delivery = Delivery::Failed;
        }
    }

    /// The members' nicknames, for completion.
    pub(crate) fn member_nicks(&self) -> Vec<String> {
        self.members.iter().filter(|m| !m.me).map(|m| m.nick.as_str().to_owned()).collect()
    }

    fn set_members(&mut self, mut list: Vec<MemberInfo>) {
        list.sort_by_key(|m| m.nick.as_str().to_ascii_lowercase());
        self.members = list;
    }

    /// Whether something on screen changes with time alone (spinner, countdown).
    pub(crate) fn animating(&self) -> bool {
        matches!(self.conn, Conn::Deriving { .. } | Conn::Reconnecting { .. } | Conn::Leaving)
    }

    /// Marks the room as a protocol 2 room.
    pub(crate) fn set_protocol_2(&mut self) {
        self.v2 = true;
    }

    /// Sets the highlight words (besides our nickname) and when a mention rings the bell.
    pub(crate) fn set_alerts(&mut self, words: &[String], bell: Bell) {
        self.highlight.extend(words.iter().map(|w| w.to_lowercase()));
        self.bell = bell;
    }

    /// Whether `text` names us or a highlight word, as a whole word (case-insensitive).
    pub(crate) fn mentions(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        self.highlight.iter().any(|word| {
            text.match_indices(word.as_str()).any(|(at, _)| {
                !is_word(text[..at].chars().next_back()) && !is_word(text[at + word.len()..].chars().next())
            })
        })
    }

    /// The terminal window gained or lost the focus.
    pub(crate) fn focus(&mut self, focused: bool) {
        self.focused = focused;
        if !focused {
            self.marked = false;
        }
    }

    /// A live message arrives: while unfocused, the unread marker goes before the first one;
    /// a mention rings the bell as configured.
    fn arrived(&mut self, mention: bool) {
        if !self.focused && !self.marked {
            self.marked = true;
            self.unread_at = Some(self.first + self.entries.len() as u64);
            if self.scroll > 0 {
                // The marker row appears below the view: keep the view still.
                self.scroll += 1;
            }
        }
        if !self.active {
            self.unread.0 += 1;
            self.unread.1 |= mention;
        }
        let away = !self.focused || !self.active;
        if mention && (self.bell == Bell::Always || (self.bell == Bell::Unfocused && away)) {
            self.ring = true;
        }
    }

    /// Shows or hides this window; showing it clears its activity.
    pub(crate) fn set_active(&mut self, active: bool) {
        self.active = active;
        if active {
            self.unread = (0, false);
        }
    }

    /// Messages that arrived while this window was not shown, and whether one mentioned us.
    pub(crate) fn activity(&self) -> (usize, bool) {
        self.unread
    }

    /// Whether a mention asked for the bell since the last call.
    pub(crate) fn take_ring(&mut self) -> bool {
        std::mem::take(&mut self.ring)
    }

    /// Whether the connection is lost (and being re-established).
    pub(crate) fn offline(&self) -> bool {
        self.lost_since.is_some()
    }

    /// The texts of our own messages the relay has not acknowledged, oldest first.
    pub(crate) fn unsent(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| match &e.body {
                Body::Message { text, mine: true, delivery: Delivery::Pending, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    /// `/quit` or Ctrl-C: while offline with messages unsent, says which and asks once.
    fn quit(&mut self) -> Action {
        let unsent = self.unsent();
        let leaving = self.conn == Conn::Leaving;
        if leaving || !self.offline() || unsent.is_empty() || std::mem::replace(&mut self.quit_asked, true) {
            return Action::Quit;
        }
        self.notice(
            NoticeKind::Error,
            &format!(
                "not connected, so {} would be lost: {}. Wait for the reconnect, or /quit again to leave anyway.",
                count(unsent.len(), "unsent message"),
                quote_list(&unsent)
            ),
        );
        Action::None
    }

    /// A connection state change: the first loss and the return are notices, the rest is
    /// shown in the status bar only.
    fn on_state(&mut self, state: ConnState) {
        match state {
            ConnState::Connecting { attempt, addr } => {
                // Attempts count from 0 after each loss; the status bar counts retries from 1.
                let retry = if self.offline() { attempt.saturating_add(1) } else { 0 };
                self.conn = Conn::Connecting { attempt: retry };
                if retry == 0 {
                    let text = format!("connecting to {}", crate::event_text::at(&self.relay, &addr));
                    self.notice(NoticeKind::Info, &text);
                }
            }
            ConnState::Joining => self.conn = Conn::Joining,
            ConnState::CatchingUp => self.conn = Conn::CatchingUp,
            ConnState::Live => self.conn = Conn::Connected,
            ConnState::Reconnecting { delay, reason } => {
                self.conn = Conn::Reconnecting { since: Instant::now(), delay };
                if self.lost_since.is_none() {
                    self.lost_since = Some(Instant::now());
                    // The reason says what happened, without advice: the client retries on its own.
                    let reason = reason.trim_end_matches('.');
                    let text = format!(
                        "connection lost: {}. Reconnecting on its own; the status bar counts down.",
                        neutralize(reason.strip_prefix("connection lost: ").unwrap_or(reason))
                    );
                    self.notice(NoticeKind::Error, &text);
                }
            }
            _ => {}
        }
    }

    /// The notices of a first join: who owns the room, the safety code, where help is.
    fn joined_notices(&mut self, owner: &str) {
        self.notice(NoticeKind::Info, owner);
        // Protocol 2 said which code to compare (the epoch code, `/safety`) with the room code.
        if !self.v2 {
            self.notice(
                NoticeKind::Info,
                "compare the safety code (status bar, /safety) with the other members out of band",
            );
        }
        self.notice(NoticeKind::Info, "type /help for commands and keys");
    }

    /// Names the owner of a room we joined, once the member list is in (or history ended).
    fn name_owner(&mut self) {
        let Some(owner) = self.owner_to_name.take() else { return };
        let text = match self.members.iter().find(|m| m.identity == owner) {
            Some(m) => format!(
                "joined the room; its owner is {} (@ in the member list)",
                neutralize(m.nick.as_str())
            ),
            None => format!("joined the room; its owner (key {}) is not here now", owner.short_fingerprint()),
        };
        self.joined_notices(&text);
    }

    /// The end of history after a reconnect: one notice that the connection is back.
    fn back_online(&mut self, caught_up: usize) {
        let after = match self.lost_since.take() {
            Some(since) => format!(" after {} s", since.elapsed().as_secs().max(1)),
            None => String::new(),
        };
        let missed = match caught_up {
            0 => "nothing was missed".to_owned(),
            n => format!("{} caught up above", count(n, "missed message")),
        };
        self.quit_asked = false;
        let text = format!("reconnected{after}; {missed}");
        self.notice(NoticeKind::Info, &text);
    }

    /// The session ended.
    pub(crate) fn ended(&mut self, why: Option<&str>) {
        self.conn = Conn::Offline;
        match why {
            Some(why) => self.notice(
                NoticeKind::Error,
                &format!("session ended: {}. /quit leaves.", neutralize(why.trim_end_matches('.'))),
            ),
            None => self.notice(NoticeKind::Info, "session closed"),
        }
    }

    /// Applies a session event.
    pub(crate) fn on_event(&mut self, event: Event) {
        if self.v2 {
            if let Some(line) = crate::event_text::v2_joined_line(&event, &self.relay) {
                // The room code and the hint that the epoch code is the one to compare.
                let text = line.lines().skip(1).map(|l| l.trim_start_matches("-!- ")).collect::<Vec<_>>();
                self.notice(NoticeKind::Info, &text.join("\n"));
            }
        }
        let line = event_line(&event, &self.relay);
        match event {
            Event::Group(GroupEvent::SharedHistory { by, by_nick, messages }) => {
                let (notice, lines) =
                    crate::event_text::shared_history_lines(&by, by_nick.as_ref(), &messages);
                self.notice(NoticeKind::Info, &notice);
                for line in lines {
                    self.notice(NoticeKind::Info, &line);
                }
            }
            Event::Group(GroupEvent::Refused { .. }) => {
                if let Some(line) = line {
                    self.alert(line.strip_prefix("warning: ").unwrap_or(&line));
                }
            }
            Event::State(state) => self.on_state(state),
            Event::KeyDerivation(progress) => self.on_key_derivation(progress, line),
            Event::Joined { safety_code, relay_fingerprint, rejoin, owner, created, owner_is_me, .. } => {
                self.on_joined(&safety_code, &relay_fingerprint, owner, owner_is_me, (rejoin, created))
            }
            Event::HistoryEnd => self.on_history_end(),
            Event::Message(m) => self.on_message(m),
            Event::Context(m) => self.context(m),
            Event::Rejected(_) | Event::KeyChanged { .. } => {
                if let Some(line) = line {
                    self.alert(line.strip_prefix("WARNING: ").unwrap_or(&line));
                }
            }
            Event::Members(list) => {
                self.set_members(list);
                self.name_owner();
                if std::mem::take(&mut self.who_asked) {
                    if let Some(line) = line {
                        self.notice(NoticeKind::Info, &line);
                    }
                }
            }
            Event::Presence { event, nick, identity } => self.on_presence(event, nick, identity, line),
            Event::Sent { id, .. } => self.set_delivery(id, Delivery::Delivered),
            Event::SendFailed { id, .. } => {
                self.set_delivery(id, Delivery::Failed);
                if let Some(line) = line {
                    self.notice(NoticeKind::Error, &line);
                }
            }
            Event::HistoryGap { .. } => {
                if let Some(line) = line {
                    self.notice(NoticeKind::Error, line.strip_prefix("WARNING: ").unwrap_or(&line));
                }
            }
            Event::CommandFailed { .. } | Event::Warning(_) => {
                if let Some(line) = line {
                    self.notice(NoticeKind::Error, &line);
                }
            }
            _ => {
                if let Some(line) = line {
                    self.notice(NoticeKind::Info, &line);
                }
            }
        }
    }

    fn on_key_derivation(&mut self, progress: KdfProgress, line: Option<String>) {
        match progress {
            KdfProgress::Started(params) => self.conn = Conn::Deriving { params, elapsed: Duration::ZERO },
            KdfProgress::Running(elapsed) => {
                if let Conn::Deriving { elapsed: e, .. } = &mut self.conn {
                    *e = elapsed;
                }
            }
            KdfProgress::Done(_) => self.conn = Conn::Joining,
        }
        if let Some(line) = line {
            self.notice(NoticeKind::Info, &line);
        }
    }

    /// `rejoin` and `created` as the `Joined` event has them.
    fn on_joined(
        &mut self,
        safety_code: &str,
        relay_fingerprint: &str,
        owner: PublicIdentity,
        owner_is_me: bool,
        (rejoin, created): (bool, bool),
    ) {
        self.owner = Some(owner);
        self.owner_is_me = owner_is_me;
        // Protocol 2's room code shows no fork: the status bar keeps to protocol 1's code.
        self.safety_code = (!self.v2).then(|| neutralize(safety_code));
        self.relay_fingerprint = Some(neutralize(relay_fingerprint));
        self.history_seen = 0;
        if rejoin {
            // Reported once the missed messages are in (`back_online`).
            self.caught_up = Some(0);
        } else if created {
            self.joined_notices("created the room; you are its owner (@ in the member list)");
        } else if owner_is_me {
            self.joined_notices("joined the room; you are its owner (@ in the member list)");
        } else {
            self.owner_to_name = Some(owner);
        }
    }

    fn on_history_end(&mut self) {
        self.name_owner();
        if let Some(n) = self.caught_up.take() {
            self.back_online(n);
        } else if self.history_seen > 0 {
            let time = self.now();
            self.push(Body::Divider("end of history; now live".into()), time);
        }
    }

    fn on_message(&mut self, m: chatroom_session::session::ChatMessage) {
        if let Some(n) = &mut self.caught_up {
            *n += 1;
        } else if m.history && self.history_seen == 0 {
            let time = self.now();
            self.push(Body::Divider("history".into()), time);
        }
        if m.history {
            self.history_seen += 1;
        }
        if m.kind == ContentKind::Topic {
            let text = crate::event_text::topic_line(&m, self.owner);
            if Some(m.sender) == self.owner {
                self.topic = Some(neutralize(&m.body)).filter(|t| !t.is_empty());
                self.notice(NoticeKind::Info, &text);
            } else {
                self.notice(NoticeKind::Error, text.strip_prefix("WARNING: ").unwrap_or(&text));
            }
            return;
        }
        if self.ignored.contains(&m.nick.as_str().to_lowercase()) {
            return;
        }
        let time = (self.clock)(m.timestamp_ms);
        let mention = !m.from_me && self.mentions(&m.body);
        if !m.history {
            self.arrived(mention);
        }
        // Protocol 2: the key tag MLS authenticated, beside the nickname (which is not pinned).
        let nick = match self.v2 {
            true => format!("{} {}", neutralize(m.nick.as_str()), key_tag(&m.sender)),
            false => neutralize(m.nick.as_str()),
        };
        self.push(
            Body::Message {
                nick,
                text: neutralize(&m.body),
                action: m.kind == ContentKind::Action,
                history: m.history,
                mine: m.from_me,
                delivery: Delivery::Delivered,
                mention,
                key: Some(m.sender),
            },
            time,
        );
    }

    fn on_presence(
        &mut self,
        event: PresenceEvent,
        nick: Nick,
        identity: PublicIdentity,
        line: Option<String>,
    ) {
        let mut list = std::mem::take(&mut self.members);
        match event {
            PresenceEvent::Joined => {
                list.retain(|m| !m.nick.same_as(&nick));
                if list.len() < chatroom_session::session::MAX_MEMBERS {
                    let owner = self.owner == Some(identity);
                    list.push(MemberInfo { nick, identity, owner, me: false });
                }
            }
            PresenceEvent::Left | PresenceEvent::Kicked | PresenceEvent::Banned => {
                list.retain(|m| !m.nick.same_as(&nick));
            }
            _ => {}
        }
        self.set_members(list);
        if let Some(line) = line {
            self.notice(NoticeKind::Presence, &line);
        }
    }

    fn help(&mut self) {
        self.notice(NoticeKind::Info, HELP);
        self.notice(NoticeKind::Info, KEYS_HELP);
    }

    /// What a typed line does.
    pub(crate) fn submit(&mut self, line: &str) -> Action {
        match parse_line(line) {
            Ok(Line::Empty) => Action::None,
            Ok(Line::Text(text)) => {
                let entry = self.own_message(ContentKind::Text, &text);
                Action::Send { kind: ContentKind::Text, text, entry }
            }
            Ok(Line::Command(command)) => match command {
                Command::Help => {
                    self.help();
                    Action::None
                }
                Command::Safety if self.v2 => Action::Safety,
                Command::Safety => {
                    match (&self.safety_code, &self.relay_fingerprint) {
                        (Some(code), Some(fp)) => {
                            let text = format!("safety code: {code}\nrelay fingerprint: {fp}");
                            self.notice(NoticeKind::Info, &text);
                        }
                        _ => self
                            .notice(NoticeKind::Info, "not joined yet; the safety code is shown once joined"),
                    }
                    Action::None
                }
                Command::Quit => self.quit(),
                Command::Who => {
                    self.who_asked = true;
                    Action::Who
                }
                Command::Me(text) => {
                    let entry = self.own_message(ContentKind::Action, &text);
                    Action::Send { kind: ContentKind::Action, text, entry }
                }
                // Both protocols answer with the nickname's pin (`Event::Whois`).
                Command::Whois(nick) => Action::Whois(nick),
                Command::Invite => Action::Invite,
                Command::Join(target) => Action::Join(target),
                Command::Part => Action::Part,
                Command::Window(n) => Action::Window(n),
                Command::Topic(text) => self.set_topic(text),
                Command::Clear => {
                    self.first += self.entries.len() as u64;
                    self.entries.clear();
                    (self.scroll, self.unseen, self.unread_at) = (0, 0, None);
                    Action::None
                }
                Command::Ignore(nick) => {
                    let key = nick.as_str().to_lowercase();
                    let shown = neutralize(nick.as_str());
                    let text = if self.ignored.remove(&key) {
                        format!("showing {shown}'s messages again")
                    } else {
                        self.ignored.insert(key);
                        format!("hiding {shown}'s messages until you leave; /ignore {shown} shows them again")
                    };
                    self.notice(NoticeKind::Info, &text);
                    Action::None
                }
                Command::Kick(nick) => Action::Kick(nick),
                Command::Ban(nick) => Action::Ban(nick),
                Command::Unban(nick) => Action::Unban(nick),
                Command::RotatePassword(file) if self.v2 => Action::RotatePassword(file),
                Command::RotatePassword(_) => {
                    self.notice(
                        NoticeKind::Error,
                        "/rotate-password is for protocol 2 rooms (chatroom --protocol 2); nothing was done",
                    );
                    Action::None
                }
            },
            Err(e) => {
                self.notice(NoticeKind::Error, &format!("error: {e}"));
                Action::None
            }
        }
    }

    /// An already seen message shown again on start as recent context: dimmed as history,
    /// under a rule of its own, never a mention. A topic in it is the topic again.
    fn context(&mut self, m: chatroom_session::session::ChatMessage) {
        if m.kind == ContentKind::Topic {
            if Some(m.sender) == self.owner {
                self.topic = Some(neutralize(&m.body)).filter(|t| !t.is_empty());
            }
            return;
        }
        if self.ignored.contains(&m.nick.as_str().to_lowercase()) {
            return;
        }
        if !std::mem::replace(&mut self.context_shown, true) {
            let time = self.now();
            self.push(Body::Divider("earlier, already seen".into()), time);
        }
        let time = (self.clock)(m.timestamp_ms);
        self.push(
            Body::Message {
                nick: neutralize(m.nick.as_str()),
                text: neutralize(&m.body),
                action: m.kind == ContentKind::Action,
                history: true,
                mine: m.from_me,
                delivery: Delivery::Delivered,
                mention: false,
                key: Some(m.sender),
            },
            time,
        );
    }

    /// `/topic [TEXT]`: shows the topic, or sets it when we own the room.
    fn set_topic(&mut self, text: String) -> Action {
        if text.is_empty() {
            let shown = match &self.topic {
                Some(topic) => format!("the topic is: {topic}"),
                None => "no topic is set; the room owner sets one with /topic TEXT".to_owned(),
            };
            self.notice(NoticeKind::Info, &shown);
            return Action::None;
        }
        if !self.owner_is_me {
            self.notice(NoticeKind::Error, "only the room owner sets the topic; nothing was sent");
            return Action::None;
        }
        self.topic = Some(neutralize(&text));
        let time = self.now();
        let body = Body::Notice {
            kind: NoticeKind::Info,
            text: format!("you set the topic: {}", neutralize(&text)),
        };
        let entry = self.push(body, time);
        Action::Send { kind: ContentKind::Topic, text, entry }
    }

    /// Scrolls towards older rows.
    pub(crate) fn scroll_up(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_add(rows);
    }

    /// Scrolls towards newer rows.
    pub(crate) fn scroll_down(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_sub(rows);
        if self.scroll == 0 {
            self.unseen = 0;
        }
    }

    /// Pasted text (bracketed paste): one line goes into the input line as far as it fits;
    /// several lines wait for Enter to be sent as that many messages, or Esc.
    pub(crate) fn on_paste(&mut self, text: &str) {
        if self.paste.is_some() {
            self.notice(
                NoticeKind::Error,
                "a paste already waits: Enter sends it, Esc cancels it; this one was dropped",
            );
            return;
        }
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let text = text.strip_suffix('\n').unwrap_or(&text);
        if !text.contains('\n') {
            if !self.editor.insert_str(text) {
                self.notice(
                    NoticeKind::Error,
                    &format!(
                        "the paste is longer than one message ({MAX_BODY_LEN} bytes), so only its start was \
                         inserted. Send the rest as another message."
                    ),
                );
            }
            return;
        }
        let lines: Vec<String> = text
            .split('\n')
            .map(|l| l.replace('\t', "    ").chars().filter(|c| !c.is_control()).collect::<String>())
            .filter(|l| !l.trim().is_empty())
            .collect();
        if lines.len() > MAX_PASTE_LINES {
            let text = format!(
                "a paste of {} lines would be as many messages, more than {MAX_PASTE_LINES}; nothing was \
                 inserted. Paste it in parts.",
                lines.len()
            );
            self.notice(NoticeKind::Error, &text);
            return;
        }
        if let Some((i, long)) = lines.iter().enumerate().find(|(_, l)| l.len() > MAX_BODY_LEN) {
            let text = format!(
                "line {} of the paste is {} bytes, more than one message holds ({MAX_BODY_LEN}); nothing was \
                 inserted. Shorten it and paste again.",
                i + 1,
                long.len()
            );
            self.notice(NoticeKind::Error, &text);
            return;
        }
        let text =
            format!("pasted {}: Enter sends them as messages, Esc cancels", count(lines.len(), "line"));
        self.notice(NoticeKind::Info, &text);
        self.paste = Some(lines);
    }

    /// A key while a multi-line paste waits: Enter sends it, Esc cancels it.
    fn on_paste_key(&mut self, key: KeyEvent) -> Action {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Enter => {
                let lines = self.paste.take().unwrap_or_default();
                let sends =
                    lines.into_iter().map(|l| (l.clone(), self.own_message(ContentKind::Text, &l))).collect();
                Action::SendLines(sends)
            }
            KeyCode::Esc => {
                self.paste = None;
                self.notice(NoticeKind::Info, "paste cancelled; nothing was sent");
                Action::None
            }
            KeyCode::Char('c') if ctrl => self.quit(),
            _ => Action::None,
        }
    }

    /// What a key does.
    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        if self.paste.is_some() {
            return self.on_paste_key(key);
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let e = &mut self.editor;
        match key.code {
            KeyCode::Char('c') if ctrl => return self.quit(),
            KeyCode::Char('d') if ctrl && e.text().is_empty() => return self.quit(),
            KeyCode::Char('l') if ctrl => return Action::Redraw,
            KeyCode::Char('a') if ctrl => e.home(),
            KeyCode::Char('e') if ctrl => e.end(),
            KeyCode::Char('u') if ctrl => e.kill_to_start(),
            KeyCode::Char('k') if ctrl => e.kill_to_end(),
            KeyCode::Char('w') if ctrl => e.kill_word(),
            KeyCode::Char('h') if ctrl => e.backspace(),
            KeyCode::Char('b') if ctrl => e.left(),
            KeyCode::Char('f') if ctrl => e.right(),
            KeyCode::Char('p') if ctrl => e.history_older(),
            KeyCode::Char('n') if ctrl => e.history_newer(),
            KeyCode::Char(c @ '1'..='9') if key.modifiers.contains(KeyModifiers::ALT) => {
                return Action::Window(usize::from(c as u8 - b'1'));
            }
            KeyCode::Char(_) if ctrl || key.modifiers.contains(KeyModifiers::ALT) => {}
            KeyCode::Char(c) => e.insert(c),
            KeyCode::Enter => {
                let line = e.take();
                return self.submit(&line);
            }
            KeyCode::Backspace => e.backspace(),
            KeyCode::Delete => e.delete(),
            KeyCode::Left => e.left(),
            KeyCode::Right => e.right(),
            KeyCode::End if ctrl || key.modifiers.contains(KeyModifiers::ALT) => self.scroll_down(usize::MAX),
            KeyCode::Home => e.home(),
            KeyCode::End => e.end(),
            KeyCode::Up => e.history_older(),
            KeyCode::Down => e.history_newer(),
            KeyCode::Tab => {
                let nicks = self.member_nicks();
                self.editor.complete(&nicks, COMMAND_NAMES);
            }
            KeyCode::PageUp => self.scroll_up(self.page.saturating_sub(1).max(1)),
            KeyCode::PageDown => self.scroll_down(self.page.saturating_sub(1).max(1)),
            KeyCode::Esc => self.alert = None,
            _ => {}
        }
        Action::None
    }

    /// What the mouse does: the wheel scrolls.
    pub(crate) fn on_mouse(&mut self, mouse: MouseEvent) {
        match mouse.kind {
            MouseEventKind::ScrollUp => self.scroll_up(WHEEL_ROWS),
            MouseEventKind::ScrollDown => self.scroll_down(WHEEL_ROWS),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        App::with_clock("127.0.0.1:7777", "lobby", "alice", |_| "12:00".into(), || 0)
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn type_line(app: &mut App, text: &str) -> Action {
        for c in text.chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::Enter))
    }

    fn member(nick: &str, id: u8) -> MemberInfo {
        MemberInfo {
            nick: Nick::new(nick).unwrap(),
            identity: PublicIdentity([id; 32]),
            owner: false,
            me: false,
        }
    }

    #[test]
    fn typed_lines_become_actions_and_unknown_commands_are_never_sent() {
        let mut app = app();
        assert!(
            matches!(type_line(&mut app, "hello"), Action::Send { kind: ContentKind::Text, ref text, .. } if text == "hello")
        );
        assert!(matches!(type_line(&mut app, "/me waves"), Action::Send { kind: ContentKind::Action, .. }));
        assert_eq!(type_line(&mut app, "/who"), Action::Who);
        assert_eq!(type_line(&mut app, "/kick bob"), Action::Kick(Nick::new("bob").unwrap()));
        assert_eq!(type_line(&mut app, "/frob"), Action::None);
        assert_eq!(type_line(&mut app, "/quit"), Action::Quit);
        let texts: Vec<String> = app
            .entries()
            .filter_map(|e| match &e.body {
                Body::Notice { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            texts,
            ["error: unknown command /frob, nothing was sent; /help lists the commands, //frob sends the line as text"],
            "one line, not the whole help"
        );
        type_line(&mut app, "/help");
        let texts: Vec<String> = app
            .entries()
            .filter_map(|e| match &e.body {
                Body::Notice { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert!(texts.iter().any(|t| t.contains("/safety")), "/help lists the commands");
        assert!(texts.iter().any(|t| t.contains("PageUp/PageDown")), "/help lists the keys");
        app.editor.history_older();
        assert_eq!(app.editor.text(), "/help", "sent lines are in the history");
    }

    #[test]
    fn safety_shows_the_code_once_joined() {
        let mut app = app();
        assert_eq!(type_line(&mut app, "/safety"), Action::None);
        app.on_event(Event::Joined {
            created: true,
            owner: PublicIdentity([1; 32]),
            owner_is_me: true,
            safety_code: "04821 99310 12345 67890 11111".into(),
            relay_fingerprint: "ab".repeat(32),
            rejoin: false,
            addr: "127.0.0.1:7777".into(),
        });
        type_line(&mut app, "/safety");
        let texts: Vec<String> = app
            .entries()
            .filter_map(|e| match &e.body {
                Body::Notice { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert!(texts[0].starts_with("not joined yet"), "{texts:?}");
        assert!(texts.contains(&"safety code: 04821 99310 12345 67890 11111".to_owned()), "{texts:?}");
        assert!(texts.contains(&format!("relay fingerprint: {}", "ab".repeat(32))), "{texts:?}");
    }

    #[test]
    fn a_protocol_2_room_tags_senders_and_asks_the_session_for_the_codes() {
        let mut app = app();
        app.set_protocol_2();
        app.on_event(Event::Message(chatroom_session::session::ChatMessage {
            seq: 1,
            history: false,
            sender: PublicIdentity([0xb0; 32]),
            nick: Nick::new("bob").unwrap(),
            from_me: false,
            kind: ContentKind::Text,
            body: "hi".into(),
            timestamp_ms: 0,
        }));
        assert!(
            matches!(&app.entries().last().unwrap().body, Body::Message { nick, .. } if nick == "bob b0b0b0b0"),
            "the key tag beside the nickname"
        );
        assert_eq!(type_line(&mut app, "/safety"), Action::Safety);
        assert_eq!(type_line(&mut app, "/rotate-password /tmp/pw"), Action::RotatePassword("/tmp/pw".into()));
        app.on_event(Event::Group(GroupEvent::Commit {
            epoch: 1,
            committer: PublicIdentity([0xb0; 32]),
            entry: true,
            removed: vec![],
            own: false,
        }));
        assert!(matches!(
            &app.entries().last().unwrap().body,
            Body::Notice { kind: NoticeKind::Info, text } if text == "member b0b0b0b0 entered the group (epoch 1)"
        ));
        let mut v1 = self::app();
        assert_eq!(type_line(&mut v1, "/rotate-password /tmp/pw"), Action::None);
    }

    #[test]
    fn own_messages_are_pending_until_acknowledged() {
        let mut app = app();
        let Action::Send { entry, .. } = type_line(&mut app, "one") else { panic!() };
        app.track(7, entry);
        let delivery = |app: &App| match &app.entries().last().unwrap().body {
            Body::Message { delivery, .. } => *delivery,
            _ => panic!(),
        };
        assert_eq!(delivery(&app), Delivery::Pending);
        app.on_event(Event::Sent { id: 7, seq: 1 });
        assert_eq!(delivery(&app), Delivery::Delivered);
    }

    #[test]
    fn presence_updates_the_member_list_and_tab_completes_from_it() {
        let mut app = app();
        app.on_event(Event::Joined {
            created: false,
            owner: PublicIdentity([2; 32]),
            owner_is_me: false,
            safety_code: "1".into(),
            relay_fingerprint: "ab".into(),
            rejoin: false,
            addr: "127.0.0.1:7777".into(),
        });
        let mut me = member("alice", 1);
        me.me = true;
        app.on_event(Event::Members(vec![member("zoe", 3), me]));
        app.on_event(Event::Presence {
            event: PresenceEvent::Joined,
            nick: Nick::new("Bob").unwrap(),
            identity: PublicIdentity([2; 32]),
        });
        let nicks: Vec<&str> = app.members.iter().map(|m| m.nick.as_str()).collect();
        assert_eq!(nicks, ["alice", "Bob", "zoe"]);
        assert!(app.members[1].owner, "a member who joins later is marked owner from the join's owner key");
        for c in "b".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.editor.text(), "Bob: ");
        app.on_event(Event::Presence {
            event: PresenceEvent::Left,
            nick: Nick::new("bob").unwrap(),
            identity: PublicIdentity([2; 32]),
        });
        assert_eq!(app.members.len(), 2);
        assert!(
            matches!(&app.entries().last().unwrap().body, Body::Notice { kind: NoticeKind::Presence, text } if text == "relay says: bob left (key 02020202)")
        );
    }

    #[test]
    fn the_join_notice_names_the_owner_by_nickname() {
        let mut app = app();
        app.on_event(Event::Joined {
            created: false,
            owner: PublicIdentity([2; 32]),
            owner_is_me: false,
            safety_code: "1".into(),
            relay_fingerprint: "ab".into(),
            rejoin: false,
            addr: "127.0.0.1:7777".into(),
        });
        assert!(notices(&app).is_empty(), "waits for the member list");
        let mut bob = member("bob", 2);
        bob.owner = true;
        app.on_event(Event::Members(vec![member("alice", 1), bob]));
        let said = notices(&app);
        assert_eq!(said[0], "joined the room; its owner is bob (@ in the member list)");
        assert_eq!(said.len(), 3, "{said:?}");
        app.on_event(Event::HistoryEnd);
        assert_eq!(notices(&app).len(), 3, "said once");

        let mut app = self::app();
        app.on_event(Event::Joined {
            created: false,
            owner: PublicIdentity([7; 32]),
            owner_is_me: false,
            safety_code: "1".into(),
            relay_fingerprint: "ab".into(),
            rejoin: false,
            addr: "127.0.0.1:7777".into(),
        });
        app.on_event(Event::Members(vec![member("alice", 1)]));
        let said = notices(&app);
        assert!(said[0].starts_with("joined the room; its owner (key 0707"), "{said:?}");
        assert!(said[0].ends_with(") is not here now"), "{said:?}");
    }

    #[test]
    fn scrollback_is_bounded_and_scrolling_keeps_the_view_still() {
        let mut app = app();
        for i in 0..MAX_SCROLLBACK + 10 {
            app.notice(NoticeKind::Info, &i.to_string());
        }
        assert_eq!(app.entries().len(), MAX_SCROLLBACK);
        app.scroll_up(5);
        app.notice(NoticeKind::Info, "new");
        assert_eq!((app.scroll, app.unseen), (6, 1));
        app.scroll_down(100);
        assert_eq!((app.scroll, app.unseen), (0, 0));
    }

    fn notices(app: &App) -> Vec<String> {
        app.entries()
            .filter_map(|e| match &e.body {
                Body::Notice { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    fn history(nick: &str, body: &str) -> Event {
        Event::Message(chatroom_session::session::ChatMessage {
            seq: 1,
            history: true,
            sender: PublicIdentity([2; 32]),
            nick: Nick::new(nick).unwrap(),
            from_me: false,
            kind: ContentKind::Text,
            body: body.into(),
            timestamp_ms: 0,
        })
    }

    fn outage(app: &mut App, attempts: u32) {
        for attempt in 1..=attempts {
            app.on_event(Event::State(ConnState::Reconnecting {
                delay: Duration::from_secs(2),
                reason: "cannot connect to 127.0.0.1:7777: Connection refused; check the address.".into(),
            }));
            app.on_event(Event::State(ConnState::Connecting { attempt, addr: "127.0.0.1:7777".into() }));
        }
    }

    #[test]
    fn an_outage_is_one_notice_when_lost_and_one_when_back() {
        let mut app = app();
        app.on_event(Event::State(ConnState::Live));
        let before = notices(&app).len();
        outage(&mut app, 12);
        assert_eq!(app.conn, Conn::Connecting { attempt: 13 });
        app.on_event(Event::Joined {
            created: false,
            owner: PublicIdentity([2; 32]),
            owner_is_me: false,
            safety_code: "1".into(),
            relay_fingerprint: "ab".into(),
            rejoin: true,
            addr: "127.0.0.1:7777".into(),
        });
        app.on_event(Event::State(ConnState::CatchingUp));
        app.on_event(history("bob", "one"));
        app.on_event(history("bob", "two"));
        app.on_event(Event::HistoryEnd);
        app.on_event(Event::State(ConnState::Live));
        let added = &notices(&app)[before..];
        assert_eq!(added.len(), 2, "{added:?}");
        assert!(added[0].starts_with("connection lost: cannot connect to 127.0.0.1:7777: Connection refused"));
        assert!(added[0].ends_with("Reconnecting on its own; the status bar counts down."), "{added:?}");
        assert!(added[1].starts_with("reconnected after "), "{added:?}");
        assert!(added[1].ends_with("; 2 missed messages caught up above"), "{added:?}");
        assert!(!app.offline());
        assert!(
            !app.entries().any(|e| matches!(e.body, Body::Divider(_))),
            "caught-up messages are not framed as history"
        );
    }

    #[test]
    fn quit_while_offline_says_what_is_unsent_and_asks_once() {
        let mut app = app();
        app.on_event(Event::State(ConnState::Live));
        let Action::Send { entry, .. } = type_line(&mut app, "delivered") else { panic!() };
        app.track(1, entry);
        app.on_event(Event::Sent { id: 1, seq: 1 });
        assert_eq!(type_line(&mut app, "/quit"), Action::Quit, "online: leaves at once");
        outage(&mut app, 1);
        assert_eq!(type_line(&mut app, "/quit"), Action::Quit, "offline, nothing unsent: leaves at once");
        let Action::Send { entry, .. } = type_line(&mut app, "are you there?") else { panic!() };
        app.track(2, entry);
        let before = notices(&app).len();
        assert_eq!(type_line(&mut app, "/quit"), Action::None);
        let said = &notices(&app)[before..];
        assert_eq!(
            said,
            ["not connected, so 1 unsent message would be lost: \"are you there?\". Wait for the reconnect, or \
              /quit again to leave anyway."]
        );
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit,
            "asked once"
        );
        assert_eq!(app.unsent(), ["are you there?"]);
    }

    #[test]
    fn quoted_lists_are_short() {
        let texts: Vec<String> =
            ["a", &"x".repeat(40), "c", "d", "e"].iter().map(|s| s.to_string()).collect();
        assert_eq!(quote_list(&texts), format!("\"a\", \"{}...\", \"c\", 2 more", "x".repeat(30)));
        assert_eq!(count(1, "message"), "1 message");
        assert_eq!(count(0, "message"), "0 messages");
    }

    #[test]
    fn pastes_are_inserted_or_confirmed_and_never_commands() {
        let mut app = app();
        app.on_paste("a single line\n");
        assert_eq!(app.editor.text(), "a single line");
        app.editor.take();
        app.on_paste("/quit\nsecond\tline");
        assert!(app.paste.is_some());
        assert_eq!(app.on_key(key(KeyCode::Char('x'))), Action::None, "other keys wait");
        let Action::SendLines(lines) = app.on_key(key(KeyCode::Enter)) else { panic!("Enter sends") };
        let texts: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["/quit", "second    line"], "pasted lines are text, even with a slash");
        assert_eq!(app.unsent(), ["/quit", "second    line"]);
        app.on_paste("x\ny");
        app.on_paste("dropped");
        assert_eq!(
            app.paste.as_deref(),
            Some(&["x".to_owned(), "y".to_owned()][..]),
            "the first paste still waits"
        );
        assert_eq!(app.on_key(key(KeyCode::Esc)), Action::None);
        assert!(app.paste.is_none());
        assert_eq!(notices(&app).last().unwrap(), "paste cancelled; nothing was sent");
        app.on_paste(&"l\n".repeat(MAX_PASTE_LINES + 1));
        assert!(app.paste.is_none(), "too many lines");
        app.on_paste(&format!("short\n{}", "x".repeat(MAX_BODY_LEN + 1)));
        assert!(app.paste.is_none(), "a line too long");
        assert!(
            notices(&app).last().unwrap().starts_with("line 2 of the paste is 4097 bytes"),
            "{:?}",
            notices(&app)
        );
        app.on_paste(&"y".repeat(MAX_BODY_LEN + 10));
        assert_eq!(app.editor.body_len(), MAX_BODY_LEN, "one line: as much as fits");
        assert!(notices(&app).last().unwrap().contains("only its start was inserted"));
    }

    #[test]
    fn ignore_hides_a_nick_until_asked_again_and_clear_empties_the_screen() {
        let mut app = app();
        type_line(&mut app, "/ignore Bob");
        app.on_event(history("bob", "hidden"));
        app.on_event(history("carol", "shown"));
        type_line(&mut app, "/ignore bob");
        app.on_event(history("bob", "shown again"));
        let texts: Vec<String> = app
            .entries()
            .filter_map(|e| match &e.body {
                Body::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["shown", "shown again"]);
        assert_eq!(notices(&app)[0], "hiding Bob's messages until you leave; /ignore Bob shows them again");
        assert_eq!(type_line(&mut app, "/invite"), Action::Invite);
        let Action::Send { entry, .. } = type_line(&mut app, "pending") else { panic!() };
        app.track(9, entry);
        assert_eq!(type_line(&mut app, "/clear"), Action::None);
        assert_eq!(app.entries().len(), 0);
        app.on_event(Event::Sent { id: 9, seq: 3 });
        app.notice(NoticeKind::Info, "after");
        assert_eq!(notices(&app), ["after"], "numbering carries on after a clear");
    }

    #[test]
    fn only_the_owner_sets_the_topic() {
        let mut app = app();
        assert_eq!(type_line(&mut app, "/topic hello"), Action::None);
        assert_eq!(notices(&app).last().unwrap(), "only the room owner sets the topic; nothing was sent");
        app.on_event(Event::Joined {
            created: true,
            owner: PublicIdentity([1; 32]),
            owner_is_me: true,
            safety_code: "1".into(),
            relay_fingerprint: "ab".into(),
            rejoin: false,
            addr: "127.0.0.1:7777".into(),
        });
        let action = type_line(&mut app, "/topic ship it");
        assert!(
            matches!(action, Action::Send { kind: ContentKind::Topic, ref text, .. } if text == "ship it")
        );
        assert_eq!(app.topic.as_deref(), Some("ship it"));
        type_line(&mut app, "/topic");
        assert_eq!(notices(&app).last().unwrap(), "the topic is: ship it");
    }

    #[test]
    fn keys_quit_and_dismiss() {
        let mut app = app();
        app.on_event(Event::KeyChanged {
            nick: Nick::new("bob").unwrap(),
            pinned: PublicIdentity([1; 32]),
            seen: PublicIdentity([2; 32]),
        });
        assert!(app.alert.is_some());
        app.on_key(key(KeyCode::Esc));
        assert!(app.alert.is_none());
        assert_eq!(app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
    }
}
