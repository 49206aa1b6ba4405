//! Several rooms in one client, as irssi windows: each window is a room with its own UI state
//! (scrollback, member list, safety code, connection state) and its own session; one is shown
//! at a time, and the status bar lists the others with their activity.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatroom_session::crypto::{ContentKind, Identity, Zeroizing};
use chatroom_session::error::SessionError;
use chatroom_session::session::{
    Callbacks, Event, RoomKeyCache, SendError, Session, SessionConfig, SessionEnd, SessionHandle,
};
use chatroom_session::v2_session::{V2Handle, V2Limits, V2Session};
use tokio::sync::mpsc;

use crate::chat::ChatHandle;
use crate::commands::Command;

use super::app::{Action, App};
use super::entry::NoticeKind;

/// Most windows (Alt+1 to Alt+9 reach them).
pub(crate) const MAX_WINDOWS: usize = 9;

/// A session being started.
pub(crate) type Starting = Pin<Box<dyn Future<Output = Result<Handle, SessionError>> + Send>>;

/// A room's protocol version, with what a protocol 2 session needs to start.
#[derive(Clone)]
pub(crate) enum Protocol {
    /// Protocol 1: the room key cache is all it needs.
    V1,
    /// Protocol 2 (MLS): the driver's limits and the room password, from which the session
    /// derives the room's v2 secrets.
    V2 {
        /// The driver's limits.
        limits: V2Limits,
        /// The room password.
        password: Arc<Zeroizing<Vec<u8>>>,
    },
}

/// A window's running session, whichever the protocol version: the UI's counterpart of line
/// mode's `ChatHandle`, so the window logic exists once.
pub(crate) enum Handle {
    /// Protocol 1.
    V1(SessionHandle),
    /// Protocol 2.
    V2(V2Handle),
}

impl Handle {
    /// Queues a message; its id comes back in `Event::Sent` or `Event::SendFailed`.
    pub(crate) async fn send(&mut self, kind: ContentKind, body: &str) -> Result<u64, SendError> {
        match self {
            Self::V1(h) => h.send(kind, body).await,
            Self::V2(h) => h.send(kind, body).await,
        }
    }

    /// The relay's fingerprint, as pinned.
    pub(crate) fn relay_fingerprint(&self) -> &str {
        match self {
            Self::V1(h) => h.relay_fingerprint(),
            Self::V2(h) => h.relay_fingerprint(),
        }
    }

    /// Sends `/who`, `/whois`, `/kick`, `/ban` or `/unban` to the relay.
    async fn command(&mut self, command: Command) -> Result<(), SendError> {
        match self {
            Self::V1(h) => ChatHandle::command(h, command).await,
            Self::V2(h) => ChatHandle::command(h, command).await,
        }
    }

    /// The lines `/safety` shows: the safety code (protocol 1), or the room code and the
    /// epoch code (protocol 2); then the relay's fingerprint.
    async fn safety(&self) -> Vec<String> {
        match self {
            Self::V1(h) => ChatHandle::safety(h).await,
            Self::V2(h) => ChatHandle::safety(h).await,
        }
    }

    /// `/rotate-password FILE`: the lines to show, or why nothing was done.
    async fn rotate_password_from(&mut self, file: &std::path::Path) -> Result<Vec<String>, String> {
        match self {
            Self::V1(h) => ChatHandle::rotate_password_from(h, file).await,
            Self::V2(h) => ChatHandle::rotate_password_from(h, file).await,
        }
    }

    /// Waits until the session ends on its own. Cancel-safe.
    pub(crate) async fn ended(&mut self) -> SessionEnd {
        match self {
            Self::V1(h) => h.ended().await,
            Self::V2(h) => h.ended().await,
        }
    }

    /// Closes the session after flushing.
    pub(crate) async fn close(self, flush: std::time::Duration) -> SessionEnd {
        match self {
            Self::V1(h) => h.close(flush).await,
            Self::V2(h) => h.close(flush).await,
        }
    }
}

/// Starts the session of a room; its events reach the event loop tagged with `id`.
pub(crate) fn start_session(
    config: &SessionConfig,
    keys: &Arc<RoomKeyCache>,
    protocol: &Protocol,
    identity: &Arc<Identity>,
    events: &mpsc::UnboundedSender<(u64, Event)>,
    id: u64,
) -> Starting {
    let tx = events.clone();
    // The session's events are few per relay message (the relay rate-limits senders) and the
    // event loop drains them all before each redraw, so the queue stays short.
    let callbacks: Arc<dyn Callbacks> = Arc::new(move |event: Event| {
        let _ = tx.send((id, event));
    });
    let (config, identity) = (config.clone(), identity.clone());
    match protocol {
        Protocol::V1 => {
            let keys = keys.clone();
            Box::pin(async move { Session::start(config, keys, identity, callbacks).await.map(Handle::V1) })
        }
        Protocol::V2 { limits, password } => {
            let (limits, params) = (limits.clone(), keys.params());
            let password = Zeroizing::new(password.to_vec());
            Box::pin(async move {
                V2Session::start(config, limits, password, params, identity, callbacks).await.map(Handle::V2)
            })
        }
    }
}

/// One room: its UI state, its session, and what it was started with.
pub(crate) struct Window {
    /// Tags this window's session events.
    pub(crate) id: u64,
    /// The UI state.
    pub(crate) app: App,
    /// The session.
    pub(crate) link: Link,
    /// Its configuration (for `/invite`, and to start again after creating the room).
    pub(crate) config: SessionConfig,
    /// Its room key cache.
    pub(crate) keys: Arc<RoomKeyCache>,
    /// Its protocol version.
    pub(crate) protocol: Protocol,
    /// That version and why (for the words of a refusal).
    pub(crate) chosen: crate::version::Chosen,
}

/// The session side of a window: starting, running, or ended.
pub(crate) struct Link {
    /// The first join, while it runs.
    pub(crate) pending_start: Option<Starting>,
    /// The running session.
    pub(crate) handle: Option<Handle>,
    /// Lines typed before the first join: sent once the session runs.
    pub(crate) queued: Vec<(ContentKind, String, u64)>,
    /// Why the session ended for good, to print after leaving.
    pub(crate) failure: Option<String>,
}

impl Link {
    /// A link whose first join is `starting`.
    pub(crate) fn new(starting: Starting) -> Self {
        Self { pending_start: Some(starting), handle: None, queued: Vec::new(), failure: None }
    }

    /// The session ended on its own.
    pub(crate) fn ended(&mut self, end: SessionEnd, app: &mut App) {
        match end {
            SessionEnd::Failed(e) => self.failed(crate::advice::session(&e), app),
            _ => {
                self.handle = None;
                app.ended(None);
            }
        }
    }

    /// The session ended for good for the reason `why`.
    pub(crate) fn failed(&mut self, why: String, app: &mut App) {
        self.handle = None;
        let why = chatroom_session::display::neutralize(&why);
        app.ended(Some(&why));
        self.failure = Some(why);
    }

    /// Sends one message (kind, text, scrollback entry); before the first join it is queued,
    /// and after the session ended it is marked as not delivered.
    pub(crate) async fn send(&mut self, app: &mut App, (kind, text, entry): (ContentKind, String, u64)) {
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

    /// The first join succeeded: send what was typed meanwhile.
    pub(crate) async fn joined(&mut self, handle: Handle, app: &mut App) {
        self.handle = Some(handle);
        for message in std::mem::take(&mut self.queued) {
            self.send(app, message).await;
        }
    }

    /// Carries out what a key or line asked for in this window (other than leaving or
    /// managing windows).
    pub(crate) async fn act(
        &mut self,
        action: Action,
        app: &mut App,
        config: &SessionConfig,
        keys: &RoomKeyCache,
    ) {
        match action {
            Action::Send { kind, text, entry } => self.send(app, (kind, text, entry)).await,
            Action::SendLines(lines) => {
                for (text, entry) in lines {
                    self.send(app, (ContentKind::Text, text, entry)).await;
                }
            }
            Action::Invite => match &self.handle {
                Some(h) => {
                    let version = if matches!(h, Handle::V2(_)) { 2 } else { 1 };
                    let url = crate::flow::invite_url(h.relay_fingerprint(), config, keys, version);
                    let text = format!("invite: {url} (it holds no password: give that separately)");
                    app.notice(NoticeKind::Info, &text);
                }
                None => app.notice(NoticeKind::Error, "not joined yet; the invite is shown once joined"),
            },
            Action::Who | Action::Whois(_) | Action::Kick(_) | Action::Ban(_) | Action::Unban(_) => {
                let Some(h) = &mut self.handle else {
                    app.notice(NoticeKind::Error, "error: not joined; the command was not sent");
                    return;
                };
                let command = match action {
                    Action::Whois(nick) => Command::Whois(nick),
                    Action::Kick(nick) => Command::Kick(nick),
                    Action::Ban(nick) => Command::Ban(nick),
                    Action::Unban(nick) => Command::Unban(nick),
                    _ => Command::Who,
                };
                if let Err(e) = h.command(command).await {
                    app.notice(NoticeKind::Error, &format!("error: {e}"));
                }
            }
            Action::Safety => match &self.handle {
                Some(h) => {
                    let lines = h.safety().await;
                    app.notice(NoticeKind::Info, &lines.join("\n"));
                }
                None => app.notice(NoticeKind::Info, "not joined yet; the codes are shown once joined"),
            },
            Action::RotatePassword(file) => match &mut self.handle {
                Some(h) => match h.rotate_password_from(&file).await {
                    Ok(lines) => app.notice(NoticeKind::Info, &lines.join("\n")),
                    Err(e) => app.notice(NoticeKind::Error, &format!("error: {e}")),
                },
                None => app.notice(
                    NoticeKind::Error,
                    "error: not joined; the password was not changed (try again once joined)",
                ),
            },
            _ => {}
        }
    }
}

/// Something happened to one window's session.
pub(crate) enum LinkEvent {
    /// The first join of window `.0` finished.
    Started(usize, Result<Handle, SessionError>),
    /// The session of window `.0` ended on its own.
    Ended(usize, SessionEnd),
}

/// Waits until a window's first join finishes or its session ends.
pub(crate) async fn link_event(windows: &mut [Window]) -> LinkEvent {
    std::future::poll_fn(|cx| poll_links(windows, cx)).await
}

fn poll_links(windows: &mut [Window], cx: &mut Context<'_>) -> Poll<LinkEvent> {
    for (i, w) in windows.iter_mut().enumerate() {
        if let Some(starting) = w.link.pending_start.as_mut() {
            if let Poll::Ready(result) = starting.as_mut().poll(cx) {
                w.link.pending_start = None;
                return Poll::Ready(LinkEvent::Started(i, result));
            }
        }
        if let Some(handle) = w.link.handle.as_mut() {
            // `ended` is cancel-safe: a fresh future each poll waits on the same task.
            let ended = std::pin::pin!(handle.ended());
            if let Poll::Ready(end) = ended.poll(cx) {
                return Poll::Ready(LinkEvent::Ended(i, end));
            }
        }
    }
    Poll::Pending
}

/// The status bar's window list: `[1:lobby] 2:ops(3!) 3:dev`, the shown window in brackets,
/// the others with their unread count and `!` after a mention. Empty with one window.
pub(crate) fn activity(windows: &[Window], shown: usize) -> String {
    if windows.len() < 2 {
        return String::new();
    }
    let parts: Vec<String> = windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let name = format!("{}:{}", i + 1, w.app.room);
            let (unread, mentioned) = w.app.activity();
            match (i == shown, unread, mentioned) {
                (true, _, _) => format!("[{name}]"),
                (false, 0, _) => name,
                (false, n, true) => format!("{name}({n}!)"),
                (false, n, false) => format!("{name}({n})"),
            }
        })
        .collect();
    parts.join(" ")
}
