//! The UI's state, without I/O: the scrollback, the member list, the status, the input line,
//! and what keys and session events do to them. Text from other members or the relay is
//! neutralised when it enters the scrollback, so nothing drawn later can carry a control
//! character; what kind of line an entry is (message, notice, warning) is decided here from the
//! event, never from its text.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chatroom_client::commands::{parse_line, Command, Input as Line, InputError, HELP};
use chatroom_client::crypto::{ContentKind, KdfParams, Nick, PresenceEvent, PublicIdentity};
use chatroom_client::display::neutralize;
use chatroom_client::session::{ConnState, Event, KdfProgress, MemberInfo};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};

use super::editor::LineEditor;
use crate::plain::event_line;

/// Most entries kept in the scrollback.
pub(crate) const MAX_SCROLLBACK: usize = 5000;

/// Rows scrolled per mouse wheel step.
const WHEEL_ROWS: usize = 3;

/// Keys of the UI, listed by `/help` after the commands.
pub(crate) const KEYS_HELP: &str = "\
keys:
  PageUp/PageDown, mouse wheel   scroll the conversation
  Up/Down                        previous/next line you sent
  Tab                            complete a nickname (again: next match)
  Left/Right, Home/End, Ctrl-A/E move in the line
  Backspace/Delete, Ctrl-U/K/W   delete a character, to start/end of line, a word
  Esc                            dismiss the warning banner
  Ctrl-L                         redraw the screen
  Ctrl-C                         leave (like /quit)";

/// The connection as the status bar shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Conn {
    /// Opening the connection.
    Connecting,
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

/// Whether an own message reached the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Stored by the relay (or not ours).
    Delivered,
    /// Queued or in flight.
    Pending,
    /// Refused by the relay.
    Failed,
}

/// What kind of notice: decides its style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoticeKind {
    /// Ordinary information.
    Info,
    /// Someone joined, left, was kicked or banned.
    Presence,
    /// Something failed.
    Error,
    /// A security warning: changed identity key, failed verification, replay, impersonation.
    Alert,
}

/// One entry of the scrollback. All text is already neutralised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// A member's message or action.
    Message {
        /// Sender's nickname.
        nick: String,
        /// Text.
        text: String,
        /// A `/me` action.
        action: bool,
        /// Replayed from history.
        history: bool,
        /// Sent by us.
        mine: bool,
        /// For our own messages: whether the relay stored it.
        delivery: Delivery,
    },
    /// A line from the program itself.
    Notice {
        /// Its kind.
        kind: NoticeKind,
        /// Its text.
        text: String,
    },
    /// A horizontal rule with a label (start and end of history).
    Divider(String),
}

/// A scrollback entry: a time and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Formatted time (the sender's clock for messages).
    pub(crate) time: String,
    /// The content.
    pub(crate) body: Body,
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
    /// Ask for the member list.
    Who,
    /// Ask what is known of a nickname.
    Whois(Nick),
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
}

/// Formats a time in milliseconds since the epoch.
pub(crate) type Clock = fn(u64) -> String;

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
    let full = crate::plain::clock(timestamp_ms);
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
            conn: Conn::Connecting,
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
            clock,
            now_ms,
        }
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
            self.scroll += super::render::entry_rows(&entry, self.pane_width).len();
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

    /// The session ended.
    pub(crate) fn ended(&mut self, why: Option<&str>) {
        self.conn = Conn::Offline;
        match why {
            Some(why) => self.notice(
                NoticeKind::Error,
                &format!("disconnected for good: {}. /quit or Ctrl-C leaves", neutralize(why)),
            ),
            None => self.notice(NoticeKind::Info, "session closed"),
        }
    }

    /// Applies a session event.
    pub(crate) fn on_event(&mut self, event: Event) {
        let line = event_line(&event, &self.relay);
        match event {
            Event::State(state) => {
                self.conn = match state {
                    ConnState::Connecting { .. } => Conn::Connecting,
                    ConnState::Joining => Conn::Joining,
                    ConnState::CatchingUp => Conn::CatchingUp,
                    ConnState::Live => Conn::Connected,
                    ConnState::Reconnecting { delay, .. } => {
                        Conn::Reconnecting { since: Instant::now(), delay }
                    }
                    _ => self.conn.clone(),
                };
                if let Some(line) = line {
                    let kind = if matches!(self.conn, Conn::Reconnecting { .. }) {
                        NoticeKind::Error
                    } else {
                        NoticeKind::Info
                    };
                    self.notice(kind, &line);
                }
            }
            Event::KeyDerivation(progress) => {
                match progress {
                    KdfProgress::Started(params) => {
                        self.conn = Conn::Deriving { params, elapsed: Duration::ZERO }
                    }
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
            Event::Joined { safety_code, relay_fingerprint, rejoin, owner, .. } => {
                self.owner = Some(owner);
                self.safety_code = Some(neutralize(&safety_code));
                self.relay_fingerprint = Some(neutralize(&relay_fingerprint));
                self.history_seen = 0;
                if let Some(line) = line {
                    self.notice(NoticeKind::Info, &line);
                }
                if !rejoin {
                    self.notice(NoticeKind::Info, "type /help for commands and keys");
                }
            }
            Event::HistoryEnd => {
                if self.history_seen > 0 {
                    let time = self.now();
                    self.push(Body::Divider("end of history; now live".into()), time);
                }
            }
            Event::Message(m) => {
                if m.history && self.history_seen == 0 {
                    let time = self.now();
                    self.push(Body::Divider("history".into()), time);
                }
                if m.history {
                    self.history_seen += 1;
                }
                let time = (self.clock)(m.timestamp_ms);
                self.push(
                    Body::Message {
                        nick: neutralize(m.nick.as_str()),
                        text: neutralize(&m.body),
                        action: m.kind == ContentKind::Action,
                        history: m.history,
                        mine: m.from_me,
                        delivery: Delivery::Delivered,
                    },
                    time,
                );
            }
            Event::Rejected(_) | Event::KeyChanged { .. } => {
                if let Some(line) = line {
                    self.alert(line.strip_prefix("WARNING: ").unwrap_or(&line));
                }
            }
            Event::Members(list) => {
                self.set_members(list);
                if std::mem::take(&mut self.who_asked) {
                    if let Some(line) = line {
                        self.notice(NoticeKind::Info, &line);
                    }
                }
            }
            Event::Presence { event, nick, identity } => {
                let mut list = std::mem::take(&mut self.members);
                match event {
                    PresenceEvent::Joined => {
                        list.retain(|m| !m.nick.same_as(&nick));
                        if list.len() < chatroom_client::session::MAX_MEMBERS {
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
                Command::Quit => Action::Quit,
                Command::Who => {
                    self.who_asked = true;
                    Action::Who
                }
                Command::Me(text) => {
                    let entry = self.own_message(ContentKind::Action, &text);
                    Action::Send { kind: ContentKind::Action, text, entry }
                }
                Command::Whois(nick) => Action::Whois(nick),
                Command::Kick(nick) => Action::Kick(nick),
                Command::Ban(nick) => Action::Ban(nick),
                Command::Unban(nick) => Action::Unban(nick),
            },
            Err(e @ InputError::Unknown(_)) => {
                self.notice(NoticeKind::Error, &format!("error: {e}"));
                self.help();
                Action::None
            }
            Err(e) => {
                self.notice(NoticeKind::Error, &format!("error: {e}"));
                Action::None
            }
        }
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

    /// What a key does.
    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let e = &mut self.editor;
        match key.code {
            KeyCode::Char('c') if ctrl => return Action::Quit,
            KeyCode::Char('d') if ctrl && e.text().is_empty() => return Action::Quit,
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
            KeyCode::Home => e.home(),
            KeyCode::End => e.end(),
            KeyCode::Up => e.history_older(),
            KeyCode::Down => e.history_newer(),
            KeyCode::Tab => {
                let nicks = self.member_nicks();
                self.editor.complete(&nicks);
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
        assert!(texts.iter().any(|t| t.starts_with("error: unknown command /frob")));
        assert!(texts.iter().any(|t| t.contains("/safety")), "help follows an unknown command");
        assert!(texts.iter().any(|t| t.contains("PageUp/PageDown")), "help lists the keys");
        app.editor.history_older();
        assert_eq!(app.editor.text(), "/quit", "sent lines are in the history");
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
