//! The full-screen terminal UI, used when stdin and stdout are terminals and `--plain` is not
//! given. It runs the same protocol core as the line mode: session events go to the `App`
//! state, keys become actions on the `SessionHandle`, and the screen is redrawn after each
//! batch of events.

mod app;
#[cfg(test)]
mod bench;
mod colors;
mod editor;
mod render;
mod terminal;

use std::future::Future;
use std::io::{self, IsTerminal};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chatroom_client::config::Bell;
use chatroom_client::crypto::{ContentKind, ErrorCode, Identity, Zeroizing};
use chatroom_client::display::neutralize;
use chatroom_client::error::SessionError;
use chatroom_client::passphrase;
use chatroom_client::session::{
    Callbacks, Event, RoomKeyCache, Session, SessionConfig, SessionEnd, SessionHandle,
};
use crossterm::event::Event as TermEvent;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use self::app::{Action, App, Conn, NoticeKind};
use self::terminal::{Screen, TermRead};
use crate::app_error::AppError;
use crate::chat::FLUSH_ON_EXIT;
use crate::prompt::Input;

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
}

type Starting = Pin<Box<dyn Future<Output = Result<SessionHandle, SessionError>> + Send>>;

fn start_session(start: &Start, callbacks: &Arc<dyn Callbacks>) -> Starting {
    Box::pin(Session::start(
        start.config.clone(),
        start.keys.clone(),
        start.identity.clone(),
        callbacks.clone(),
    ))
}

async fn starting(f: &mut Option<Starting>) -> Result<SessionHandle, SessionError> {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn ended(h: &mut Option<SessionHandle>) -> SessionEnd {
    match h {
        Some(h) => h.ended().await,
        None => std::future::pending().await,
    }
}

/// Runs the UI until the user leaves. The terminal is restored before this returns, so the
/// caller can print the error.
pub(crate) async fn run(start: Start) -> Result<(), AppError> {
    let mut app = App::new(&start.relay_label, start.config.room.as_str(), start.config.nick.as_str());
    app.set_alerts(&start.highlight, start.bell);
    if start.config.create {
        weak_password_notice(&mut app, &start);
    }
    let (tx, events) = mpsc::unbounded_channel::<Event>();
    // The session's events are few per relay message (the relay rate-limits senders) and the
    // loop below drains them all before each redraw, so the queue stays short.
    let callbacks: Arc<dyn Callbacks> = Arc::new(move |event: Event| {
        let _ = tx.send(event);
    });
    let (mut screen, keys) = Screen::enter().map_err(|e| {
        AppError::new(format!("cannot use the terminal full screen: {e}; run with --plain for line mode"))
    })?;
    let result = event_loop(&mut screen, keys, events, &mut app, start, callbacks).await;
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
            crate::chat::new_password(&mut start.input, Some(&start.password))?;
        }
        crate::chat::warn_if_weak(&start.password, room, start.config.nick.as_str());
        Ok(true)
    })();
    screen.resume().map_err(|e| AppError::new(format!("cannot return to the full screen: {e}")))?;
    asked
}

/// The session side of the event loop: starting, running, or ended.
struct Link {
    /// The first join, while it runs.
    pending_start: Option<Starting>,
    /// The running session.
    handle: Option<SessionHandle>,
    /// Lines typed before the first join: sent once the session runs.
    queued: Vec<(ContentKind, String, u64)>,
    /// Why the session ended for good, to print after leaving.
    failure: Option<String>,
}

impl Link {
    /// The first join finished: send what was typed meanwhile, or offer to create a missing
    /// room, or fail.
    async fn started(
        &mut self,
        result: Result<SessionHandle, SessionError>,
        screen: &mut Screen,
        app: &mut App,
        start: &mut Start,
        callbacks: &Arc<dyn Callbacks>,
    ) -> Result<(), AppError> {
        match result {
            Ok(h) => {
                self.handle = Some(h);
                for message in std::mem::take(&mut self.queued) {
                    self.send(app, message).await;
                }
            }
            Err(e) if e.refusal() == Some(ErrorCode::NoSuchRoom) && !start.config.create => {
                if !ask_create(screen, start)? {
                    return Err(AppError::new(
                        "nothing was created; check the room name, or answer y to create it",
                    ));
                }
                start.config.create = true;
                self.pending_start = Some(start_session(start, callbacks));
            }
            // The first connection failed: leave and print why.
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The session ended on its own.
    fn ended(&mut self, end: SessionEnd, app: &mut App) {
        self.handle = None;
        match end {
            SessionEnd::Failed(e) => {
                let why = neutralize(&e.to_string());
                app.ended(Some(&why));
                self.failure = Some(why);
            }
            _ => app.ended(None),
        }
    }

    /// Sends one message (kind, text, scrollback entry); before the first join it is queued,
    /// and after the session ended it is marked as not delivered.
    async fn send(&mut self, app: &mut App, (kind, text, entry): (ContentKind, String, u64)) {
        match &mut self.handle {
            Some(h) => match h.send(kind, &text).await {
                Ok(id) => app.track(id, entry),
                Err(e) => {
                    app.failed(entry);
                    app.notice(NoticeKind::Error, &format!("error: {e}"));
                }
            },
            None if self.pending_start.is_some() => self.queued.push((kind, text, entry)),
            None => {
                app.failed(entry);
                app.notice(NoticeKind::Error, "error: the session has ended; nothing was sent");
            }
        }
    }

    /// Carries out what a key or line asked for (other than leaving).
    async fn act(&mut self, action: Action, screen: &mut Screen, app: &mut App, start: &Start) {
        match action {
            Action::Redraw => {
                let _ = screen.terminal.clear();
            }
            Action::Send { kind, text, entry } => self.send(app, (kind, text, entry)).await,
            Action::SendLines(lines) => {
                for (text, entry) in lines {
                    self.send(app, (ContentKind::Text, text, entry)).await;
                }
            }
            Action::Invite => match &self.handle {
                Some(h) => {
                    let url = crate::chat::invite_url(h.relay_fingerprint(), &start.config, &start.keys);
                    let text = format!("invite: {url} (it holds no password: give that separately)");
                    app.notice(NoticeKind::Info, &text);
                }
                None => app.notice(NoticeKind::Error, "not joined yet; the invite is shown once joined"),
            },
            Action::Who | Action::Kick(_) | Action::Ban(_) | Action::Unban(_) => {
                let Some(h) = &self.handle else {
                    app.notice(NoticeKind::Error, "error: not joined; the command was not sent");
                    return;
                };
                let sent = match action {
                    Action::Who => h.who().await,
                    Action::Kick(nick) => h.kick(nick).await,
                    Action::Ban(nick) => h.ban(nick).await,
                    Action::Unban(nick) => h.unban(nick).await,
                    _ => Ok(()),
                };
                if let Err(e) = sent {
                    app.notice(NoticeKind::Error, &format!("error: {e}"));
                }
            }
            Action::None | Action::Quit | Action::Terminate | Action::Hangup => {}
        }
    }
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

async fn event_loop(
    screen: &mut Screen,
    mut keys: mpsc::Receiver<TermRead>,
    mut events: mpsc::UnboundedReceiver<Event>,
    app: &mut App,
    mut start: Start,
    callbacks: Arc<dyn Callbacks>,
) -> Result<(), AppError> {
    let signal_err = |e: io::Error| AppError::new(format!("cannot watch for signals: {e}"));
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(signal_err)?;
    // SIGINT is left alone: in raw mode Ctrl-C is a key, and at the "Create room?" question
    // (asked outside the full screen) Ctrl-C must still end the program at once.
    let mut link = Link {
        pending_start: Some(start_session(&start, &callbacks)),
        handle: None,
        queued: Vec::new(),
        failure: None,
    };
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
            if let Err(e) = screen.terminal.draw(|frame| render::render(frame, app)) {
                if terminal::gone() {
                    break Action::Hangup;
                }
                return Err(AppError::new(format!("cannot draw on the terminal: {e}")));
            }
        }
        let action = tokio::select! {
            Some(event) = events.recv() => {
                app.on_event(event);
                while let Ok(event) = events.try_recv() {
                    app.on_event(event);
                }
                Action::None
            }
            key = keys.recv() => key_batch(app, key, &mut keys),
            result = starting(&mut link.pending_start) => {
                link.pending_start = None;
                link.started(result, screen, app, &mut start, &callbacks).await?;
                Action::None
            }
            end = ended(&mut link.handle) => {
                link.ended(end, app);
                Action::None
            }
            _ = tick.tick(), if app.animating() => Action::None,
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
        if app.take_ring() {
            terminal::ring(&format!("* {} - chatroom", app.room));
        }
        match action {
            Action::Quit | Action::Terminate | Action::Hangup => break action,
            action => link.act(action, screen, app, &start).await,
        }
    };
    let Some(handle) = link.handle else {
        return match link.failure {
            Some(why) => Err(AppError::new(why)),
            None => Ok(()),
        };
    };
    match exit {
        Action::Hangup => {
            // Saves the room state; nothing can be shown any more.
            handle.close(QUICK_FLUSH).await;
            Ok(())
        }
        Action::Terminate => ended_report(Some(handle.close(QUICK_FLUSH).await), &app.unsent()),
        _ => leave(screen, keys, events, app, handle).await,
    }
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
    mut events: mpsc::UnboundedReceiver<Event>,
    app: &mut App,
    handle: SessionHandle,
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
            Some(event) = events.recv() => app.on_event(event),
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
        Some(SessionEnd::Failed(e)) => Err(AppError::new(neutralize(&e.to_string()))),
        Some(_) => Ok(()),
    }
}
