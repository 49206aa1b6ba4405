//! The full-screen terminal UI, used when stdin and stdout are terminals and `--plain` is not
//! given. It runs the same protocol core as the line mode: session events go to the `App`
//! state, keys become actions on the session's handle (protocol 1's `SessionHandle` or
//! protocol 2's `V2Handle`, one `window::Handle`), and the screen is redrawn after each batch
//! of events.

mod app;
#[cfg(test)]
mod bench;
mod colors;
mod editor;
mod entry;
mod join;
mod render;
mod rows;
mod terminal;
mod window;

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Bell, Config};
use crate::passphrase;
use chatroom_session::crypto::{ErrorCode, Identity, RoomName, Zeroizing};
use chatroom_session::display::neutralize;
use chatroom_session::error::SessionError;
use chatroom_session::session::{Event, RoomKeyCache, SessionConfig, SessionEnd};
use crossterm::event::Event as TermEvent;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use self::app::{Action, App, Conn};
use self::entry::NoticeKind;
use self::terminal::{Screen, TermRead};
pub(crate) use self::window::Protocol;
use self::window::{activity, link_event, start_session, Handle, Link, LinkEvent, Window, MAX_WINDOWS};
use crate::app_error::AppError;
use crate::flow::FLUSH_ON_EXIT;
use crate::prompt::Input;

/// Already seen messages shown again on start, before the unseen ones, so a conversation
/// never starts mid-reply.
pub(crate) const RECENT_CONTEXT: u64 = 10;

/// How often the screen is redrawn while something moves on its own (spinner, countdown).
const TICK: Duration = Duration::from_millis(200);

/// How often the event loop checks that the terminal is still there (see `terminal::gone`).
const TTY_CHECK: Duration = Duration::from_millis(250);

/// How long leaving after SIGTERM or a closed terminal waits for the relay to acknowledge
/// what was sent (the room state is saved either way).
const QUICK_FLUSH: Duration = Duration::from_millis(500);

/// Whether to use the full-screen UI: both stdin and stdout are terminals and `--plain` was
/// not given.
pub(crate) fn wanted(plain: bool) -> bool {
    !plain && io::stdin().is_terminal() && io::stdout().is_terminal()
}

/// Everything the UI needs to start the session.
pub(crate) struct Start {
    /// The session's configuration.
    pub(crate) config: SessionConfig,
    /// The room's protocol version.
    pub(crate) protocol: Protocol,
    /// That version and why.
    pub(crate) chosen: crate::version::Chosen,
    /// The limits of protocol 2 rooms joined with `/join`.
    pub(crate) v2_limits: chatroom_session::v2_session::V2Limits,
    /// The room password's key cache.
    pub(crate) keys: Arc<RoomKeyCache>,
    /// Our identity.
    pub(crate) identity: Arc<Identity>,
    /// The relay as shown (with the proxy, if any).
    pub(crate) relay_label: String,
    /// The password, to confirm it if the room must be created.
    pub(crate) password: Zeroizing<String>,
    /// The password came from a file (not asked twice).
    pub(crate) from_file: bool,
    /// Standard input, for questions asked outside the full screen.
    pub(crate) input: Input,
    /// Words that mark a message as a mention, besides our nickname.
    pub(crate) highlight: Vec<String>,
    /// When a mention rings the bell.
    pub(crate) bell: Bell,
    /// The config file, for `/join NAME`.
    pub(crate) config_file: Config,
    /// Its path, for messages.
    pub(crate) config_path: PathBuf,
}

/// Runs the UI until the user leaves. The terminal is restored before this returns, so the
/// caller can print the error.
pub(crate) async fn run(start: Start) -> Result<(), AppError> {
    let (mut screen, keys) = Screen::enter().map_err(|e| {
        AppError::new(format!("cannot use the terminal full screen: {e}; run with --plain for line mode"))
    })?;
    let result = event_loop(&mut screen, keys, start).await;
    drop(screen);
    if terminal::gone() {
        // Nobody is left to read a message, and writing one would fail.
        return Ok(());
    }
    if terminal::panicked() {
        return Err(AppError::new(
            "the terminal UI failed (see the message above); run with --plain for line mode",
        ));
    }
    result
}

fn weak_password_notice(app: &mut App, start: &Start) {
    let s = passphrase::strength(&start.password, &[start.config.room.as_str(), start.config.nick.as_str()]);
    if s.is_weak() {
        app.notice(
            NoticeKind::Error,
            &format!(
                "WARNING: this room password is weak: about 10^{} guesses (zxcvbn score {}/4), roughly {} for one \
                 attacker. Anyone who obtains the relay's ciphertext can guess offline. Consider a generated one: \
                 chatroom passphrase",
                s.guesses_log10, s.score, s.crack_time
            ),
        );
    }
}

/// Leaves the full screen to ask whether to create the missing room (and to confirm the
/// password), then comes back. Returns whether to create it.
fn ask_create(screen: &mut Screen, start: &mut Start) -> Result<bool, AppError> {
    screen.suspend();
    let asked = (|| {
        let (room, relay) = (start.config.room.as_str(), start.config.relay.to_string());
        eprintln!("-!- room {room} does not exist on {relay}");
        if !start.input.confirm(&format!("Create room {room}? [y/N] "))? {
            return Ok(false);
        }
        if !start.from_file {
            crate::flow::new_password(&mut start.input, Some(&start.password))?;
        }
        crate::flow::confirm_if_weak(
            &mut start.input,
            &start.password,
            room,
            start.config.nick.as_str(),
            !start.from_file,
        )?;
        Ok(true)
    })();
    screen.resume().map_err(|e| AppError::new(format!("cannot return to the full screen: {e}")))?;
    asked
}

/// Leaves the full screen to ask for the password of a room joined with `/join`.
fn ask_password(
    screen: &mut Screen,
    input: &mut Input,
    room: &RoomName,
) -> Result<Zeroizing<String>, AppError> {
    screen.suspend();
    let asked = input.secret(&format!("Password of room {room}: "));
    screen.resume().map_err(|e| AppError::new(format!("cannot return to the full screen: {e}")))?;
    asked
}

/// The windows, the one shown, and what every window shares.
struct Windows {
    list: Vec<Window>,
    shown: usize,
    next_id: u64,
    events: mpsc::UnboundedSender<(u64, Event)>,
}

impl Windows {
    fn shown(&mut self) -> &mut Window {
        let i = self.shown.min(self.list.len().saturating_sub(1));
        &mut self.list[i]
    }

    /// Opens a window for a room and starts its session.
    fn open(
        &mut self,
        mut app: App,
        config: SessionConfig,
        keys: Arc<RoomKeyCache>,
        (protocol, chosen): (Protocol, crate::version::Chosen),
        identity: &Arc<Identity>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let link = Link::new(start_session(&config, &keys, &protocol, identity, &self.events, id));
        if matches!(protocol, Protocol::V2 { .. }) {
            app.set_protocol_2();
        }
        app.set_active(false);
        self.list.push(Window { id, app, link, config, keys, protocol, chosen });
    }

    /// Shows window `i`, if there is one.
    fn show(&mut self, i: usize) {
        if i >= self.list.len() {
            let text = format!("there is no window {}; {} open (Alt+1 to Alt+{0})", i + 1, self.list.len());
            self.shown().app.notice(NoticeKind::Error, &text);
            return;
        }
        self.shown().app.set_active(false);
        self.shown = i;
        self.shown().app.set_active(true);
    }

    /// Puts the window list into the shown window's status bar.
    fn update_activity(&mut self) {
        let line = activity(&self.list, self.shown);
        self.shown().app.windows = line;
    }
}

/// The first join of window `i` finished.
async fn started(
    windows: &mut Windows,
    i: usize,
    result: Result<Handle, SessionError>,
    screen: &mut Screen,
    start: &mut Start,
) -> Result<(), AppError> {
    let only = windows.list.len() == 1;
    let w = &mut windows.list[i];
    match result {
        Ok(h) => {
            if i == 0 {
                // Only a missing first room needed the password again (to confirm it).
                start.password = Zeroizing::new(String::new());
            }
            w.link.joined(h, &mut w.app).await
        }
        // The first room may be created, after asking.
        Err(e) if i == 0 && e.refusal() == Some(ErrorCode::NoSuchRoom) && !start.config.create => {
            if !ask_create(screen, start)? {
                return Err(AppError::new(
                    "nothing was created; check the room name, or answer y to create it",
                ));
            }
            start.config.create = true;
            w.config.create = true;
            w.link = Link::new(start_session(
                &w.config,
                &w.keys,
                &w.protocol,
                &start.identity,
                &windows.events,
                w.id,
            ));
        }
        // The first connection of the first room failed: leave and print why.
        Err(e) if i == 0 && only => return Err(crate::chat::start_error(e, w.chosen, &w.config.room)),
        // A room joined later: the reason stays in its window.
        Err(e) => match crate::version::refused(&e, w.chosen, &w.config.room) {
            Some(why) => w.link.failed(why, &mut w.app),
            None => w.link.ended(SessionEnd::Failed(e), &mut w.app),
        },
    }
    Ok(())
}

/// `/join TARGET`: a new window for another room, shown at once.
fn join(windows: &mut Windows, target: &str, screen: &mut Screen, start: &mut Start) {
    if windows.list.len() >= MAX_WINDOWS {
        let text = format!("{MAX_WINDOWS} windows are open, the most there can be; /part one first");
        windows.shown().app.notice(NoticeKind::Error, &text);
        return;
    }
    let base = windows.list[0].config.clone();
    let input = &mut start.input;
    let prepared =
        join::prepare(target, &base, &start.v2_limits, &start.config_file, &start.config_path, |room| {
            ask_password(screen, input, room)
        });
    let joining = match prepared {
        Ok(j) => j,
        Err(e) => {
            let text = format!("error: {e}; nothing was joined");
            windows.shown().app.notice(NoticeKind::Error, &text);
            return;
        }
    };
    let same = |w: &Window| w.config.relay == joining.config.relay && w.config.room == joining.config.room;
    if let Some(i) = windows.list.iter().position(same) {
        windows.show(i);
        return;
    }
    let mut app = App::new(&joining.relay_label, joining.config.room.as_str(), joining.config.nick.as_str());
    app.set_alerts(&start.highlight, start.bell);
    windows.open(app, joining.config, joining.keys, (joining.protocol, joining.chosen), &start.identity);
    windows.show(windows.list.len() - 1);
}

/// `/part`: closes the shown window's session (in the background, the room state saved) and
/// the window; the last window leaves like `/quit`.
fn part(windows: &mut Windows) -> bool {
    if windows.list.len() < 2 {
        return false;
    }
    let w = windows.list.remove(windows.shown);
    if let Some(handle) = w.link.handle {
        tokio::spawn(handle.close(FLUSH_ON_EXIT));
    }
    windows.shown = windows.shown.min(windows.list.len() - 1);
    windows.shown().app.set_active(true);
    true
}

async fn event_loop(
    screen: &mut Screen,
    mut keys: mpsc::Receiver<TermRead>,
    mut start: Start,
) -> Result<(), AppError> {
    let signal_err = |e: io::Error| AppError::new(format!("cannot watch for signals: {e}"));
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(signal_err)?;
    // SIGINT is left alone: in raw mode Ctrl-C is a key, and at the "Create room?" question
    // (asked outside the full screen) Ctrl-C must still end the program at once.
    let (tx, mut events) = mpsc::unbounded_channel::<(u64, Event)>();
    let mut windows = first_window(&start, tx);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tty_check = tokio::time::interval(TTY_CHECK);
    // Whether something may have changed on screen since the last draw.
    let mut changed = true;
    let exit = loop {
        if terminal::panicked() {
            return Ok(());
        }
        if std::mem::replace(&mut changed, true) {
            windows.update_activity();
            let app = &mut windows.shown().app;
            if let Err(e) = screen.terminal.draw(|frame| render::render(frame, app)) {
                if terminal::gone() {
                    break Action::Hangup;
                }
                return Err(AppError::new(format!("cannot draw on the terminal: {e}")));
            }
        }
        let action = tokio::select! {
            Some(event) = events.recv() => {
                apply(&mut windows, event);
                while let Ok(event) = events.try_recv() {
                    apply(&mut windows, event);
                }
                Action::None
            }
            key = keys.recv() => key_batch(&mut windows.shown().app, key, &mut keys),
            link = link_event(&mut windows.list) => {
                match link {
                    LinkEvent::Started(i, result) => started(&mut windows, i, result, screen, &mut start).await?,
                    LinkEvent::Ended(i, end) => {
                        let w = &mut windows.list[i];
                        w.link.ended(end, &mut w.app);
                    }
                }
                Action::None
            }
            _ = tick.tick(), if windows.list.iter().any(|w| w.app.animating()) => Action::None,
            _ = tty_check.tick() => {
                if terminal::gone() {
                    Action::Hangup
                } else {
                    changed = false;
                    Action::None
                }
            }
            _ = sigterm.recv() => Action::Terminate,
            _ = sighup.recv() => Action::Hangup,
        };
        if let Some(exit) = act(&mut windows, action, screen, &mut start).await {
            break exit;
        }
    };
    finish(windows, exit, screen, keys, events).await
}

/// The first room's window, shown.
fn first_window(start: &Start, events: mpsc::UnboundedSender<(u64, Event)>) -> Windows {
    let mut windows = Windows { list: Vec::new(), shown: 0, next_id: 0, events };
    let mut app = App::new(&start.relay_label, start.config.room.as_str(), start.config.nick.as_str());
    app.set_alerts(&start.highlight, start.bell);
    if start.config.create {
        weak_password_notice(&mut app, start);
    }
    let protocol = (start.protocol.clone(), start.chosen);
    windows.open(app, start.config.clone(), start.keys.clone(), protocol, &start.identity);
    windows.show(0);
    windows
}

/// Rings for windows that asked to, then carries out one action of the loop; `Some` ends the
/// loop with that action.
async fn act(
    windows: &mut Windows,
    action: Action,
    screen: &mut Screen,
    start: &mut Start,
) -> Option<Action> {
    for w in &mut windows.list {
        if w.app.take_ring() {
            terminal::ring(&format!("* {} - chatroom", w.app.room));
        }
    }
    match action {
        Action::Quit | Action::Terminate | Action::Hangup => return Some(action),
        Action::Redraw => {
            let _ = screen.terminal.clear();
        }
        Action::Window(i) => windows.show(i),
        Action::Join(target) => join(windows, &target, screen, start),
        Action::Part => {
            if !part(windows) {
                return Some(Action::Quit);
            }
        }
        action => {
            let w = windows.shown();
            w.link.act(action, &mut w.app, &w.config, &w.keys).await;
        }
    }
    None
}

/// Applies a session event to the window it belongs to (none, after `/part`).
fn apply(windows: &mut Windows, (id, event): (u64, Event)) {
    if let Some(w) = windows.list.iter_mut().find(|w| w.id == id) {
        w.app.on_event(event);
    }
}

/// Leaves: the other windows' sessions close in the background while the shown one leaves
/// as a single room does (or all quickly, after SIGTERM or with the terminal gone).
async fn finish(
    mut windows: Windows,
    exit: Action,
    screen: &mut Screen,
    keys: mpsc::Receiver<TermRead>,
    events: mpsc::UnboundedReceiver<(u64, Event)>,
) -> Result<(), AppError> {
    let flush = if matches!(exit, Action::Quit) { FLUSH_ON_EXIT } else { QUICK_FLUSH };
    let shown = windows.shown.min(windows.list.len().saturating_sub(1));
    let mut others = Vec::new();
    for (i, w) in windows.list.iter_mut().enumerate() {
        if i != shown {
            if let Some(handle) = w.link.handle.take() {
                others.push(tokio::spawn(handle.close(flush)));
            }
        }
    }
    let w = &mut windows.list[shown];
    let result = match (w.link.handle.take(), exit) {
        (None, _) => match w.link.failure.take() {
            Some(why) => Err(AppError::new(why)),
            None => Ok(()),
        },
        // Saves the room state; nothing can be shown any more.
        (Some(handle), Action::Hangup) => {
            handle.close(QUICK_FLUSH).await;
            Ok(())
        }
        (Some(handle), Action::Terminate) => {
            ended_report(Some(handle.close(QUICK_FLUSH).await), &w.app.unsent())
        }
        (Some(handle), _) => leave(screen, keys, events, w.id, &mut w.app, handle).await,
    };
    for close in others {
        let _ = close.await;
    }
    result
}

/// Applies the terminal event `first` and the ones queued behind it (typing fast, a paste
/// without bracketed paste) before one redraw; stops at the first that asks for more.
fn key_batch(app: &mut App, first: Option<TermRead>, keys: &mut mpsc::Receiver<TermRead>) -> Action {
    let mut action = on_term(app, first);
    for _ in 0..KEY_BATCH {
        if action != Action::None {
            break;
        }
        match keys.try_recv() {
            Ok(key) => action = on_term(app, Some(key)),
            Err(_) => break,
        }
    }
    action
}

/// Most terminal events applied before a redraw.
const KEY_BATCH: usize = 4096;

/// What one terminal event does.
fn on_term(app: &mut App, read: Option<TermRead>) -> Action {
    match read {
        Some(Ok(TermEvent::Key(key))) => app.on_key(key),
        Some(Ok(TermEvent::Mouse(mouse))) => {
            app.on_mouse(mouse);
            Action::None
        }
        Some(Ok(TermEvent::Paste(text))) => {
            app.on_paste(&text);
            Action::None
        }
        Some(Ok(TermEvent::FocusGained)) => {
            app.focus(true);
            terminal::title(&format!("{} - chatroom", app.room));
            Action::None
        }
        Some(Ok(TermEvent::FocusLost)) => {
            app.focus(false);
            Action::None
        }
        Some(Ok(_)) => Action::None,
        // The terminal can no longer be read.
        Some(Err(_)) | None => Action::Hangup,
    }
}

/// Closes the session, waiting up to `FLUSH_ON_EXIT` for the relay to acknowledge what was
/// sent (not at all while offline: the user was told what is unsent); Ctrl-C again leaves at
/// once.
async fn leave(
    screen: &mut Screen,
    mut keys: mpsc::Receiver<TermRead>,
    mut events: mpsc::UnboundedReceiver<(u64, Event)>,
    id: u64,
    app: &mut App,
    handle: Handle,
) -> Result<(), AppError> {
    let flush = if app.offline() { Duration::ZERO } else { FLUSH_ON_EXIT };
    app.conn = Conn::Leaving;
    let mut close = std::pin::pin!(handle.close(flush));
    let mut tick = tokio::time::interval(TICK);
    let mut tty_check = tokio::time::interval(TTY_CHECK);
    let mut hinted = false;
    let end = loop {
        let _ = screen.terminal.draw(|frame| render::render(frame, app));
        tokio::select! {
            end = &mut close => break Some(end),
            Some((from, event)) = events.recv() => if from == id { app.on_event(event) },
            key = keys.recv() => match key {
                Some(Ok(TermEvent::Key(key))) if app.on_key(key) == Action::Quit => break None,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            },
            _ = tty_check.tick() => if terminal::gone() { break None },
            _ = tick.tick() => {
                if !hinted {
                    hinted = true;
                    app.notice(
                        NoticeKind::Info,
                        &format!(
                            "leaving: waiting up to {} s for the relay to acknowledge sent messages; Ctrl-C leaves now",
                            FLUSH_ON_EXIT.as_secs()
                        ),
                    );
                }
            }
        }
    };
    ended_report(end, &app.unsent())
}

/// What to print after the session closed (`None`: the user did not wait for it); `unsent`
/// are the texts of our messages still unacknowledged.
fn ended_report(end: Option<SessionEnd>, unsent: &[String]) -> Result<(), AppError> {
    match end {
        None | Some(SessionEnd::Closed { unacknowledged: 0 }) => Ok(()),
        Some(SessionEnd::Closed { unacknowledged }) => {
            let which =
                if unsent.is_empty() { String::new() } else { format!(": {}", app::quote_list(unsent)) };
            Err(AppError::new(format!(
                "the relay did not acknowledge {}{which}. Send again what matters once connected.",
                app::count(unacknowledged, "message")
            )))
        }
        Some(SessionEnd::Failed(e)) => Err(AppError::new(neutralize(&crate::advice::session(&e)))),
        Some(_) => Ok(()),
    }
}
