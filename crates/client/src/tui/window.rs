//! Several rooms in one client, as irssi windows: each window is a room with its own UI state
//! (scrollback, member list, safety code, connection state) and its own session; one is shown
//! at a time, and the status bar lists the others with their activity.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatroom_session::crypto::{ContentKind, Identity};
use chatroom_session::error::SessionError;
use chatroom_session::session::{
    Callbacks, Event, RoomKeyCache, Session, SessionConfig, SessionEnd, SessionHandle,
};
use tokio::sync::mpsc;

use super::app::{Action, App};
use super::entry::NoticeKind;

/// Most windows (Alt+1 to Alt+9 reach them).
pub(crate) const MAX_WINDOWS: usize = 9;

/// A session being started.
pub(crate) type Starting = Pin<Box<dyn Future<Output = Result<SessionHandle, SessionError>> + Send>>;

/// Starts the session of a room; its events reach the event loop tagged with `id`.
pub(crate) fn start_session(
    config: &SessionConfig,
    keys: &Arc<RoomKeyCache>,
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
    Box::pin(Session::start(config.clone(), keys.clone(), identity.clone(), callbacks))
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
}

/// The session side of a window: starting, running, or ended.
pub(crate) struct Link {
    /// The first join, while it runs.
    pub(crate) pending_start: Option<Starting>,
    /// The running session.
    pub(crate) handle: Option<SessionHandle>,
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
        self.handle = None;
        match end {
            SessionEnd::Failed(e) => {
                let why = chatroom_session::display::neutralize(&crate::advice::session(&e));
                app.ended(Some(&why));
                self.failure = Some(why);
            }
            _ => app.ended(None),
        }
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
    pub(crate) async fn joined(&mut self, handle: SessionHandle, app: &mut App) {
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
                    let url = crate::flow::invite_url(h.relay_fingerprint(), config, keys);
                    let text = format!("invite: {url} (it holds no password: give that separately)");
                    app.notice(NoticeKind::Info, &text);
                }
                None => app.notice(NoticeKind::Error, "not joined yet; the invite is shown once joined"),
            },
            Action::Who | Action::Whois(_) | Action::Kick(_) | Action::Ban(_) | Action::Unban(_) => {
                let Some(h) = &self.handle else {
                    app.notice(NoticeKind::Error, "error: not joined; the command was not sent");
                    return;
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
            _ => {}
        }
    }
}

/// Something happened to one window's session.
pub(crate) enum LinkEvent {
    /// The first join of window `.0` finished.
    Started(usize, Result<SessionHandle, SessionError>),
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
