//! The full-screen terminal UI, used when stdin and stdout are terminals and `--plain` is not
//! given. It runs the same protocol core as the line mode: session events go to the `App`
//! state, keys become actions on the `SessionHandle`, and the screen is redrawn after each
//! batch of events.

mod app;
mod colors;
mod editor;
mod render;
mod terminal;

use std::future::Future;
use std::io::{self, IsTerminal};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

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
use self::terminal::Screen;
use crate::app_error::AppError;
use crate::chat::FLUSH_ON_EXIT;
use crate::prompt::Input;

/// How often the screen is redrawn while something moves on its own (spinner, countdown).
const TICK: Duration = Duration::from_millis(200);

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
        crate::chat::confirm_if_weak(
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

async fn event_loop(
    screen: &mut Screen,
    mut keys: mpsc::Receiver<TermEvent>,
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
    let mut pending_start = Some(start_session(&start, &callbacks));
    let mut handle: Option<SessionHandle> = None;
    // Lines typed before the first join: sent once the session runs.
    let mut queued: Vec<(ContentKind, String, u64)> = Vec::new();
    let mut failure: Option<String> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if terminal::panicked() {
            return Ok(());
        }
        screen
            .terminal
            .draw(|frame| render::render(frame, app))
            .map_err(|e| AppError::new(format!("cannot draw on the terminal: {e}")))?;
        let action = tokio::select! {
            Some(event) = events.recv() => {
                app.on_event(event);
                while let Ok(event) = events.try_recv() {
                    app.on_event(event);
                }
                Action::None
            }
            key = keys.recv() => match key {
                Some(TermEvent::Key(key)) => app.on_key(key),
                Some(TermEvent::Mouse(mouse)) => {
                    app.on_mouse(mouse);
                    Action::None
                }
                Some(_) => Action::None,
                // The terminal went away.
                None => Action::Quit,
            },
            result = starting(&mut pending_start) => {
                pending_start = None;
                match result {
                    Ok(mut h) => {
                        for (kind, text, entry) in queued.drain(..) {
                            match h.send(kind, &text).await {
                                Ok(id) => app.track(id, entry),
                                Err(e) => {
                                    app.failed(entry);
                                    app.notice(NoticeKind::Error, &format!("error: {e}"));
                                }
                            }
                        }
                        handle = Some(h);
                    }
                    Err(e) if e.refusal() == Some(ErrorCode::NoSuchRoom) && !start.config.create => {
                        if !ask_create(screen, &mut start)? {
                            return Err(AppError::new(
                                "nothing was created; check the room name, or answer y to create it",
                            ));
                        }
                        start.config.create = true;
                        pending_start = Some(start_session(&start, &callbacks));
                    }
                    // The first connection failed: leave and print why.
                    Err(e) => return Err(e.into()),
                }
                Action::None
            }
            end = ended(&mut handle) => {
                handle = None;
                match end {
                    SessionEnd::Failed(e) => {
                        let why = neutralize(&e.to_string());
                        app.ended(Some(&why));
                        failure = Some(why);
                    }
                    _ => app.ended(None),
                }
                Action::None
            }
            _ = tick.tick(), if app.animating() => Action::None,
            _ = sigterm.recv() => Action::Quit,
            _ = sighup.recv() => Action::Quit,
        };
        match action {
            Action::None => {}
            Action::Quit => break,
            Action::Redraw => {
                let _ = screen.terminal.clear();
            }
            Action::Send { kind, text, entry } => match &mut handle {
                Some(h) => match h.send(kind, &text).await {
                    Ok(id) => app.track(id, entry),
                    Err(e) => {
                        app.failed(entry);
                        app.notice(NoticeKind::Error, &format!("error: {e}"));
                    }
                },
                None if pending_start.is_some() => queued.push((kind, text, entry)),
                None => {
                    app.failed(entry);
                    app.notice(NoticeKind::Error, "error: the session has ended; nothing was sent");
                }
            },
            Action::Who | Action::Whois(_) | Action::Kick(_) | Action::Ban(_) | Action::Unban(_) => {
                let Some(h) = &handle else {
                    app.notice(NoticeKind::Error, "error: not joined; the command was not sent");
                    continue;
                };
                let sent = match action {
                    Action::Who => h.who().await,
                    Action::Whois(nick) => h.whois(nick).await,
                    Action::Kick(nick) => h.kick(nick).await,
                    Action::Ban(nick) => h.ban(nick).await,
                    Action::Unban(nick) => h.unban(nick).await,
                    _ => Ok(()),
                };
                if let Err(e) = sent {
                    app.notice(NoticeKind::Error, &format!("error: {e}"));
                }
            }
        }
    }
    let Some(handle) = handle else {
        return match failure {
            Some(why) => Err(AppError::new(why)),
            None => Ok(()),
        };
    };
    leave(screen, keys, events, app, handle).await
}

/// Closes the session, waiting up to `FLUSH_ON_EXIT` for the relay to acknowledge what was
/// sent; Ctrl-C again leaves at once.
async fn leave(
    screen: &mut Screen,
    mut keys: mpsc::Receiver<TermEvent>,
    mut events: mpsc::UnboundedReceiver<Event>,
    app: &mut App,
    handle: SessionHandle,
) -> Result<(), AppError> {
    app.conn = Conn::Leaving;
    let mut close = std::pin::pin!(handle.close(FLUSH_ON_EXIT));
    let mut tick = tokio::time::interval(TICK);
    let mut hinted = false;
    let end = loop {
        let _ = screen.terminal.draw(|frame| render::render(frame, app));
        tokio::select! {
            end = &mut close => break Some(end),
            Some(event) = events.recv() => app.on_event(event),
            key = keys.recv() => match key {
                Some(TermEvent::Key(key)) if app.on_key(key) == Action::Quit => break None,
                Some(_) => {}
                None => break None,
            },
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
    match end {
        None | Some(SessionEnd::Closed { unacknowledged: 0 }) => Ok(()),
        Some(SessionEnd::Closed { unacknowledged }) => Err(AppError::new(format!(
            "{unacknowledged} message(s) were not acknowledged by the relay within {} s and may not have been \
             delivered",
            FLUSH_ON_EXIT.as_secs()
        ))),
        Some(SessionEnd::Failed(e)) => Err(AppError::new(neutralize(&e.to_string()))),
        Some(_) => Ok(()),
    }
}
