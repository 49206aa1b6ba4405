//! The words of each session event, shared by line mode (`plain.rs`, one line each) and the
//! full-screen UI (`tui/`, notices in the scrollback). Text from other members or the relay is
//! neutralised here.

use chatroom_session::crypto::{ContentKind, PresenceEvent, PublicIdentity};
use chatroom_session::display::{key_tag, neutralize, neutralize_line};
use chatroom_session::error::code_name;
use chatroom_session::session::{
    ChatMessage, ConnState, Event, GroupEvent, KdfProgress, MemberInfo, Rejected, Whois,
};

/// Formats the time of a message.
pub(crate) fn clock(timestamp_ms: u64) -> String {
    use chrono::{Local, TimeZone};
    i64::try_from(timestamp_ms)
        .ok()
        .and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "??:??:??".into())
}

/// The notice for a topic: shown when the room owner signed it, refused otherwise.
pub(crate) fn topic_line(m: &ChatMessage, owner: Option<PublicIdentity>) -> String {
    let nick = neutralize(m.nick.as_str());
    if owner == Some(m.sender) {
        format!("{nick} set the topic: {}", neutralize(&m.body))
    } else {
        format!(
            "WARNING: {nick} (key {}), who is not the room owner, tried to set the topic; ignored",
            short(&m.sender)
        )
    }
}

/// One stdout line for a message.
pub(crate) fn message_line(m: &ChatMessage) -> String {
    let history = if m.history { "[history] " } else { "" };
    let nick = neutralize(m.nick.as_str());
    let body = neutralize_line(&m.body);
    match m.kind {
        ContentKind::Action => format!("{} {history}* {nick} {body}", clock(m.timestamp_ms)),
        _ => format!("{} {history}<{nick}> {body}", clock(m.timestamp_ms)),
    }
}

/// A message line with the sender's key tag beside the nickname: `<alice 1a2b3c4d> text`.
pub(crate) fn tagged_message_line(m: &ChatMessage) -> String {
    let history = if m.history { "[history] " } else { "" };
    let nick = neutralize(m.nick.as_str());
    let body = neutralize_line(&m.body);
    let tag = key_tag(&m.sender);
    match m.kind {
        ContentKind::Action => format!("{} {history}* {nick} ({tag}) {body}", clock(m.timestamp_ms)),
        _ => format!("{} {history}<{nick} {tag}> {body}", clock(m.timestamp_ms)),
    }
}

/// History a member shared with this newcomer (protocol 2): a notice, then one line per
/// message, each marked as the sharer's claim: `12:00:01 [shared by alice 1a2b3c4d] <bob> hi`.
pub(crate) fn shared_history_lines(
    by: &PublicIdentity,
    by_nick: Option<&chatroom_session::crypto::Nick>,
    messages: &[ChatMessage],
) -> (String, Vec<String>) {
    let sharer = match by_nick {
        Some(nick) => format!("{} {}", neutralize(nick.as_str()), key_tag(by)),
        None => key_tag(by),
    };
    let notice = format!(
        "{sharer} shared {} message(s) sent before you entered: who wrote them is {sharer}'s claim, not \
         signed by their senders",
        messages.len()
    );
    let lines = messages
        .iter()
        .map(|m| {
            let nick = neutralize(m.nick.as_str());
            let body = neutralize_line(&m.body);
            match m.kind {
                ContentKind::Action => {
                    format!("{} [shared by {sharer}] * {nick} {body}", clock(m.timestamp_ms))
                }
                _ => format!("{} [shared by {sharer}] <{nick}> {body}", clock(m.timestamp_ms)),
            }
        })
        .collect();
    (notice, lines)
}

/// Protocol 2's first join: the room code is shown, but the code to compare is the epoch code
/// (`/safety`), since only it shows that members share one group. `None` for other events.
pub(crate) fn v2_joined_line(event: &Event, relay: &str) -> Option<String> {
    let Event::Joined { created, rejoin: false, owner_is_me, owner, safety_code, relay_fingerprint, .. } =
        event
    else {
        return None;
    };
    let what = if *created {
        format!("created the room on {relay}; you are its owner")
    } else {
        format!(
            "joined the room on {relay} (owner: {})",
            if *owner_is_me { "you".to_owned() } else { short(owner) }
        )
    };
    Some(format!(
        "{what}\n-!- relay fingerprint: {relay_fingerprint}\n-!- room code: {safety_code} (equal for everyone \
         with this password)\n-!- once you are in the room's group, /safety shows the epoch code: compare that \
         one with the other members out of band"
    ))
}

/// What the room's MLS group did (protocol 2); identities as key tags, which MLS authenticates.
fn group_line(g: &GroupEvent) -> String {
    match g {
        GroupEvent::Entered { epoch, history_share } => format!(
            "you entered the room's group (epoch {epoch}): you read what is sent from now on{}; /safety \
             shows the epoch code to compare with the other members",
            match history_share {
                0 => String::new(),
                n => format!(
                    ". This room shares history: a member who is online shows each newcomer the last {n} \
                     message(s), yours included"
                ),
            }
        ),
        GroupEvent::EntryRetry { attempt } => {
            // The newer group state comes from a member who is online: say so, since with none
            // online this waits until one comes.
            format!(
                "the group changed while you entered; entering again (attempt {attempt}) once a member \
                 who is online publishes the group's new state"
            )
        }
        // An entry that replaced the committer's own earlier leaf: the same member back with
        // a new state (it lost its state or fell behind the relay's history).
        GroupEvent::Commit { epoch, committer, entry: true, own: false, removed }
            if removed.contains(committer) =>
        {
            format!(
                "member {} entered the group again (epoch {epoch}), replacing its earlier place; it reads what \
                 is sent from now on",
                key_tag(committer)
            )
        }
        GroupEvent::Commit { epoch, committer, entry: true, own: false, .. } => {
            format!("member {} entered the group (epoch {epoch})", key_tag(committer))
        }
        GroupEvent::Commit { epoch, removed, .. } if !removed.is_empty() => {
            let tags: Vec<String> = removed.iter().map(key_tag).collect();
            format!(
                "removed from the group: {} (epoch {epoch}); they read nothing sent from now on",
                tags.join(", ")
            )
        }
        GroupEvent::Commit { epoch, committer, .. } => {
            format!("the group's keys changed (epoch {epoch}, by {})", key_tag(committer))
        }
        GroupEvent::Refused { seq, reason } => {
            format!("warning: entry #{seq} of the room's log was refused and skipped: {}", neutralize(reason))
        }
        GroupEvent::FellBehind { last, oldest } => format!(
            "messages after #{last} and before #{oldest} were not retained by the relay and cannot be read; \
             entering the group again"
        ),
        GroupEvent::PasswordRotated { generation, own: true, .. } => format!(
            "you rotated the room's password (generation {generation}): members inside keep talking without it; tell the other members the new password out of band, newcomers need it to enter"
        ),
        GroupEvent::PasswordRotated { generation, by, .. } => format!(
            "the owner {} rotated the room's password (generation {generation}): you stay in the room without it; entering anew (from another device, or after losing this state) needs the new password",
            key_tag(by)
        ),
        _ => "the room's group changed".into(),
    }
}

fn members_line(list: &[MemberInfo]) -> String {
    let names: Vec<String> = list
        .iter()
        .map(|m| {
            let mut s = format!("{} ({})", neutralize(m.nick.as_str()), key_tag(&m.identity));
            if m.owner {
                s.push_str(" [owner]");
            }
            if m.me {
                s.push_str(" [you]");
            }
            s
        })
        .collect();
    format!("members as the relay lists them ({}): {}", list.len(), names.join(", "))
}

fn whois_line(who: &Whois) -> String {
    let nick = neutralize(who.nick.as_str());
    let mut line = match who.pinned {
        Some(key) => format!("{nick}: messages signed by key {} (pinned in this room)", key.fingerprint()),
        None => format!("{nick}: no signed message seen under this nickname in this room; nothing pinned"),
    };
    match (who.listed, who.pinned) {
        (Some(listed), Some(pinned)) if listed == pinned => line.push_str("; the relay lists the same key"),
        (Some(listed), _) => {
            line.push_str(&format!("; the relay lists key {} (its claim)", listed.fingerprint()))
        }
        (None, _) => line.push_str("; not in the relay's member list"),
    }
    if let Some(like) = &who.look_alike {
        line.push_str(&format!("; WARNING: looks like {}, a different member", neutralize(like)));
    }
    line
}

fn short(id: &PublicIdentity) -> String {
    id.short_fingerprint()
}

/// One stderr line (without the `-!- ` prefix) for an event, or `None` for events not shown.
pub(crate) fn event_line(event: &Event, relay: &str) -> Option<String> {
    match event {
        Event::State(_) | Event::RelayFirstUse { .. } | Event::KeyDerivation(_) | Event::Joined { .. } => {
            connection_line(event, relay)
        }
        Event::Rejected(_) | Event::LookAlike { .. } | Event::KeyChanged { .. } => Some(warning_line(event)),
        _ => other_line(event),
    }
}

/// The relay label `relay` (`HOST:PORT[,HOST2:PORT2...][ via PROXY]`) for one address of it,
/// `addr`, the one a connection used: `addr[ via PROXY]`, the label itself for a single address.
pub(crate) fn at(relay: &str, addr: &str) -> String {
    match relay.split_once(" via ") {
        Some((_, proxy)) => format!("{} via {proxy}", neutralize(addr)),
        None => neutralize(addr),
    }
}

/// The connection's progress: connecting, key derivation, joined.
fn connection_line(event: &Event, relay: &str) -> Option<String> {
    Some(match event {
        Event::State(ConnState::Connecting { attempt: 0, addr }) => {
            format!("connecting to {}", at(relay, addr))
        }
        Event::State(ConnState::Connecting { attempt, addr }) => {
            format!("reconnecting to {} (attempt {})", at(relay, addr), attempt + 1)
        }
        // Within a round of a relay's several addresses the next one is tried at once.
        Event::State(ConnState::Reconnecting { delay, reason }) if delay.is_zero() => {
            format!("disconnected: {}; trying the relay's next address", neutralize(reason))
        }
        Event::State(ConnState::Reconnecting { delay, reason }) => {
            format!("disconnected: {}; reconnecting in {:.1} s", neutralize(reason), delay.as_secs_f64())
        }
        Event::State(_) => return None,
        Event::RelayFirstUse { addr, fingerprint } => {
            format!("first connection to {addr}: pinned its key {fingerprint} (trust on first use)")
        }
        Event::KeyDerivation(KdfProgress::Started(params)) => {
            format!("deriving the room key (Argon2id {params})...")
        }
        Event::KeyDerivation(KdfProgress::Done(took)) => {
            format!("room key ready ({:.2} s)", took.as_secs_f64())
        }
        Event::KeyDerivation(_) => return None,
        Event::Joined { created: true, rejoin: false, safety_code, relay_fingerprint, .. } => format!(
            "created the room on {relay}; you are its owner\n-!- relay fingerprint: {relay_fingerprint}\n\
             -!- safety code: {safety_code}\n-!- compare the safety code with the other members out of band; \
             /safety shows it again"
        ),
        Event::Joined { rejoin: false, owner_is_me, owner, safety_code, relay_fingerprint, .. } => format!(
            "joined the room on {relay} (owner: {})\n-!- relay fingerprint: {relay_fingerprint}\n\
             -!- safety code: {safety_code}\n-!- compare the safety code with the other members out of band; \
             /safety shows it again",
            if *owner_is_me { "you".to_owned() } else { short(owner) }
        ),
        Event::Joined { addr, .. } => format!("reconnected to {}", at(relay, addr)),
        _ => return None,
    })
}

/// Security warnings: rejected messages, look-alike nicknames, changed identity keys.
fn warning_line(event: &Event) -> String {
    match event {
        Event::Rejected(Rejected::Unverified { seq }) => format!(
            "WARNING: message #{seq} failed verification (altered, forged, or sealed with another room password) and was dropped"
        ),
        Event::Rejected(Rejected::Replayed { seq, sender, counter, highest }) => format!(
            "WARNING: message #{seq} from key {} repeats an old counter ({counter} <= {highest}) and was dropped: \
             the relay replayed or reordered it",
            short(sender)
        ),
        Event::Rejected(Rejected::NickMismatch { message, pinned }) => format!(
            "WARNING: IMPERSONATION: key {} signed a message claiming to be {}, whose pinned key is {}; \
             not shown as theirs. Its text: {}",
            message.sender.fingerprint(),
            neutralize(message.nick.as_str()),
            pinned.fingerprint(),
            neutralize_line(&message.body)
        ),
        Event::Rejected(Rejected::Unpinned { message, max }) => format!(
            "WARNING: key {} signed a message as {}, but this room's pin store is full ({max} nicknames), so the \
             nickname cannot be pinned to it; not shown as theirs. Its text: {}",
            message.sender.fingerprint(),
            neutralize(message.nick.as_str()),
            neutralize_line(&message.body)
        ),
        Event::LookAlike { nick, sender, like } => format!(
            "WARNING: {} (key {}) looks like {}, a different member; check /whois {} before trusting the next message",
            neutralize(nick.as_str()),
            key_tag(sender),
            neutralize(like),
            neutralize(nick.as_str())
        ),
        Event::KeyChanged { nick, pinned, seen } => format!(
            "WARNING: IDENTITY KEY CHANGED for {}: pinned {}, relay says {}. Someone may be impersonating \
             them; verify with them out of band. Messages under that key are not shown as theirs.",
            neutralize(nick.as_str()),
            pinned.fingerprint(),
            seen.fingerprint()
        ),
        _ => "WARNING: a message was rejected".into(),
    }
}

/// Everything else shown: history, members, presence, refusals, warnings of the session.
fn other_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::HistoryGap { from, to } => format!(
            "WARNING: messages #{from} to #{to} expired from the relay's history before they could be fetched"
        ),
        Event::SequenceWentBack { last_seen, relay_latest } => format!(
            "WARNING: the relay's latest message is #{relay_latest}, but this client had already seen #{last_seen}: \
             the relay lost messages (restored from a backup or reset). Messages it lost are not coming back; \
             new ones are shown as usual"
        ),
        Event::HistoryEnd => "end of history; now live".into(),
        Event::Message(_) => return None,
        Event::Whois(who) => whois_line(who),
        Event::Members(list) => members_line(list),
        Event::Presence { event, nick, identity } => {
            let what = match event {
                PresenceEvent::Joined => "joined",
                PresenceEvent::Left => "left",
                PresenceEvent::Kicked => "was kicked",
                PresenceEvent::Banned => "was banned",
                PresenceEvent::Unbanned => "was unbanned",
            };
            format!("relay says: {} {what} (key {})", neutralize(nick.as_str()), key_tag(identity))
        }
        Event::Sent { .. } => return None,
        Event::SendFailed { code, detail, .. } => {
            format!("error: message not delivered: {} ({})", neutralize(detail), code_name(*code))
        }
        Event::CommandFailed { code, detail } => format!("error: {} ({})", neutralize(detail), code_name(*code)),
        Event::Warning(text) => format!("warning: {}", neutralize(text)),
        Event::Group(g) => group_line(g),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connection_notices_name_the_address_used() {
        let connecting = |addr: &str, relay: &str| {
            event_line(&Event::State(ConnState::Connecting { attempt: 0, addr: addr.into() }), relay).unwrap()
        };
        assert_eq!(connecting("h:1", "h:1"), "connecting to h:1", "one address: as before");
        assert_eq!(connecting("b:2", "a:1,b:2"), "connecting to b:2");
        assert_eq!(connecting("b:2", "a:1,b:2 via socks5h://p:9"), "connecting to b:2 via socks5h://p:9");
        let lost = |delay: Duration| {
            let state = ConnState::Reconnecting { delay, reason: "connection refused".into() };
            event_line(&Event::State(state), "a:1,b:2").unwrap()
        };
        assert_eq!(
            lost(Duration::from_millis(1500)),
            "disconnected: connection refused; reconnecting in 1.5 s"
        );
        assert_eq!(lost(Duration::ZERO), "disconnected: connection refused; trying the relay's next address");
    }

    #[test]
    fn a_rotation_says_who_did_it_and_what_the_password_is_needed_for_in_one_plain_line() {
        let owner = PublicIdentity([0xa1; 32]);
        let theirs = group_line(&GroupEvent::PasswordRotated { generation: 2, by: owner, own: false });
        assert!(
            theirs.starts_with("the owner a1a1a1a1 rotated the room's password (generation 2)"),
            "{theirs}"
        );
        let mine = group_line(&GroupEvent::PasswordRotated { generation: 1, by: owner, own: true });
        assert!(mine.contains("tell the other members the new password out of band"), "{mine}");
        for line in [theirs, mine] {
            assert!(!line.contains("  ") && !line.contains('\n'), "one line, single spaces: {line:?}");
        }
    }

    #[test]
    fn group_events_name_members_by_the_key_mls_authenticated() {
        let bob = PublicIdentity([0xb0; 32]);
        let entry = GroupEvent::Commit { epoch: 3, committer: bob, entry: true, removed: vec![], own: false };
        assert_eq!(group_line(&entry), "member b0b0b0b0 entered the group (epoch 3)");
        let again =
            GroupEvent::Commit { epoch: 5, committer: bob, entry: true, removed: vec![bob], own: false };
        assert_eq!(
            group_line(&again),
            "member b0b0b0b0 entered the group again (epoch 5), replacing its earlier place; it reads what is \
             sent from now on"
        );
        let removal = GroupEvent::Commit {
            epoch: 4,
            committer: PublicIdentity([1; 32]),
            entry: false,
            removed: vec![bob],
            own: true,
        };
        assert_eq!(
            group_line(&removal),
            "removed from the group: b0b0b0b0 (epoch 4); they read nothing sent from now on"
        );
        let retry = group_line(&GroupEvent::EntryRetry { attempt: 2 });
        assert!(retry.contains("(attempt 2) once a member who is online publishes"), "{retry}");
        let refused = GroupEvent::Refused { seq: 9, reason: "forged\u{1b}[2J".into() };
        assert!(!group_line(&refused).contains('\u{1b}'), "relay-controlled text is neutralised");
        let joined = Event::Joined {
            created: false,
            owner: bob,
            owner_is_me: false,
            safety_code: "1 2 3".into(),
            relay_fingerprint: "ff".into(),
            rejoin: false,
            addr: "r:1".into(),
        };
        let line = v2_joined_line(&joined, "r:1").unwrap();
        assert!(
            line.contains("room code: 1 2 3 (equal for everyone")
                && line.contains("/safety shows the epoch code")
        );
        assert!(!line.contains("safety code"), "{line}");
    }

    #[test]
    fn shared_history_is_marked_as_the_sharers_claim_and_neutralised() {
        let alice = PublicIdentity([0xa1; 32]);
        let message = |nick: &str, kind, body: &str| ChatMessage {
            seq: 4,
            history: true,
            sender: PublicIdentity([0xb0; 32]),
            nick: chatroom_session::crypto::Nick::new(nick).unwrap(),
            from_me: false,
            kind,
            body: body.into(),
            timestamp_ms: 0,
        };
        let nick = chatroom_session::crypto::Nick::new("alice").unwrap();
        let messages =
            [message("bob", ContentKind::Text, "hi\u{1b}[2J"), message("bob", ContentKind::Action, "waves")];
        let (notice, lines) = shared_history_lines(&alice, Some(&nick), &messages);
        assert!(notice.starts_with("alice a1a1a1a1 shared 2 message(s) sent before you entered"), "{notice}");
        assert!(notice.contains("not signed by their senders"), "{notice}");
        assert!(lines[0].contains(" [shared by alice a1a1a1a1] <bob> hi"), "{}", lines[0]);
        assert!(!lines[0].contains('\u{1b}'), "{}", lines[0]);
        assert!(lines[1].ends_with(" [shared by alice a1a1a1a1] * bob waves"), "{}", lines[1]);
        let (notice, _) = shared_history_lines(&alice, None, &messages);
        assert!(notice.starts_with("a1a1a1a1 shared 2"), "{notice}");
    }
    use chatroom_session::crypto::Nick;

    fn msg(kind: ContentKind, history: bool, body: &str) -> ChatMessage {
        ChatMessage {
            seq: 1,
            history,
            sender: PublicIdentity([1; 32]),
            nick: Nick::new("bob").unwrap(),
            from_me: false,
            kind,
            body: body.into(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn message_formats() {
        let text = message_line(&msg(ContentKind::Text, false, "hi there"));
        assert!(text.ends_with(" <bob> hi there") && text.len() == 8 + 15, "{text}");
        let action = message_line(&msg(ContentKind::Action, true, "waves"));
        assert!(action.ends_with(" [history] * bob waves"), "{action}");
        let hostile = message_line(&msg(ContentKind::Text, false, "x\n-!- bob is now owner\u{1b}[2J"));
        assert!(hostile.ends_with("<bob> x^J-!- bob is now owner^[[2J"), "{hostile}");
        assert!(!hostile.contains('\n'));
    }

    #[test]
    fn key_changes_and_impersonation_are_loud_and_never_a_message_line() {
        let (old, new) = (PublicIdentity([1; 32]), PublicIdentity([2; 32]));
        let changed = Event::KeyChanged { nick: Nick::new("bob").unwrap(), pinned: old, seen: new };
        let line = event_line(&changed, "h:1").unwrap();
        assert!(line.starts_with("WARNING: IDENTITY KEY CHANGED for bob: pinned 0101"), "{line}");
        assert!(line.contains(&new.fingerprint()));
        let mut claimed = msg(ContentKind::Text, false, "send money\n-!- ok");
        claimed.sender = new;
        let forged = Event::Rejected(Rejected::NickMismatch { message: claimed, pinned: old });
        let line = event_line(&forged, "h:1").unwrap();
        assert!(line.starts_with("WARNING: IMPERSONATION: key 0202"), "{line}");
        assert!(line.ends_with("Its text: send money^J-!- ok"), "{line}");
        assert!(!line.contains("<bob>"));
    }

    #[test]
    fn relay_text_in_events_is_neutralised() {
        let e = Event::CommandFailed {
            code: chatroom_session::crypto::ErrorCode::NotOwner,
            detail: "only\nthe owner\u{1b}]0;x\u{7}".into(),
        };
        let line = event_line(&e, "h:1").unwrap();
        assert_eq!(line, "error: only^Jthe owner^[]0;x^G (NotOwner)");
    }
}
