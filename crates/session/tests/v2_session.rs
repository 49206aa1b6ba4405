//! The v2 network driver (`chatroom_session::v2_session`) against the real relay, run in this
//! process on 127.0.0.1 with its real SQLite store: creation, entry by external commit (with
//! retries when two newcomers collide), messages authenticated by MLS, one epoch code for
//! everyone, catch-up from the saved cursor after a restart, the owner's kick as an MLS
//! removal, a wrong password refused, and healing: a member's update commit after its
//! configured number of messages, which leaves a stolen copy of its state unable to read on;
//! the owner's password rotation, after which only the new password enters.

#![allow(clippy::unwrap_used)]

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chatroom_relay::{Config, Relay, Synchronous};
use chatroom_session::crypto::{
    ContentKind, ErrorCode, Identity, KdfParams, Nick, PublicIdentity, RoomName, Zeroizing,
};
use chatroom_session::error::SessionError;
use chatroom_session::session::{ChatMessage, Event, GroupEvent, Limits, SessionConfig, SessionEnd};
use chatroom_session::transport::HostPort;
use chatroom_session::trust::RelayPin;
use chatroom_session::v2_session::{RotateError, V2Handle, V2Limits, V2Session};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

/// Generous: Argon2id at the real parameters and MLS on a loaded machine.
const LIMIT: Duration = Duration::from_secs(30);
const PASSWORD: &[u8] = b"correct horse battery staple";

struct TestRelay {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), chatroom_relay::RelayError>>,
}

async fn relay(dir: &Path) -> Result<TestRelay, Box<dyn Error + Send + Sync>> {
    relay_keeping(dir, None).await
}

/// A relay that keeps `history` envelopes per room (its default if `None`).
async fn relay_keeping(
    dir: &Path,
    history: Option<usize>,
) -> Result<TestRelay, Box<dyn Error + Send + Sync>> {
    let mut config = Config::new(dir);
    if let Some(history) = history {
        config.history = history;
    }
    config.synchronous = Synchronous::Normal;
    config.handshake_burst = 100_000;
    config.handshakes_per_sec = 100_000;
    config.shutdown_grace = Duration::from_secs(2);
    let relay = Relay::open(config)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(listener, async move {
        let _ = stopped.await;
    }));
    Ok(TestRelay { addr, stop: Some(stop), task })
}

impl TestRelay {
    async fn stop(mut self) -> TestResult {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(LIMIT, self.task).await???;
        Ok(())
    }
}

struct Client {
    handle: V2Handle,
    events: mpsc::UnboundedReceiver<Event>,
    me: PublicIdentity,
}

fn config(relay: &TestRelay, nick: &str, dir: &Path, create: bool) -> SessionConfig {
    paced_config(relay, nick, dir, create, None)
}

fn paced_config(
    relay: &TestRelay,
    nick: &str,
    dir: &Path,
    create: bool,
    send_rate: Option<(u32, f64)>,
) -> SessionConfig {
    SessionConfig {
        relay: HostPort { host: relay.addr.ip().to_string(), port: relay.addr.port() }.into(),
        proxy: None,
        room: RoomName::new("general").unwrap(),
        nick: Nick::new(nick).unwrap(),
        create,
        relay_pin: RelayPin::default(),
        data_dir: Some(dir.to_owned()),
        limits: Limits {
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            send_rate,
            ..Limits::default()
        },
    }
}

/// A client whose identity is the seed `[seed; 32]`, with its data in `dir`.
async fn start(
    relay: &TestRelay,
    (nick, seed): (&str, u8),
    dir: &Path,
    create: bool,
    password: &[u8],
) -> Result<Client, SessionError> {
    start_with(config(relay, nick, dir, create), seed, password).await
}

async fn start_with(config: SessionConfig, seed: u8, password: &[u8]) -> Result<Client, SessionError> {
    let limits = V2Limits { group_info_grace: Duration::from_millis(200), ..V2Limits::default() };
    start_limited(config, seed, password, limits).await
}

async fn start_limited(
    config: SessionConfig,
    seed: u8,
    password: &[u8],
    limits: V2Limits,
) -> Result<Client, SessionError> {
    let (tx, events) = mpsc::unbounded_channel();
    let identity = Identity::from_seed(&[seed; 32]);
    let me = identity.public();
    let handle = V2Session::start(
        config,
        limits,
        Zeroizing::new(password.to_vec()),
        KdfParams::DEFAULT,
        Arc::new(identity),
        Arc::new(move |e: Event| {
            let _ = tx.send(e);
        }),
    )
    .await?;
    Ok(Client { handle, events, me })
}

impl Client {
    /// The first event `pick` maps to a value; everything before it is passed over.
    async fn until<T>(
        &mut self,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, Box<dyn Error + Send + Sync>> {
        let wait = async {
            while let Some(e) = self.events.recv().await {
                if let Some(found) = pick(&e) {
                    return Ok(found);
                }
            }
            Err("the session ended".into())
        };
        timeout(LIMIT, wait).await.map_err(|_| "timed out waiting for an event")?
    }

    async fn entered(&mut self) -> Result<u64, Box<dyn Error + Send + Sync>> {
        self.until(|e| match e {
            Event::Group(GroupEvent::Entered { epoch, .. }) => Some(*epoch),
            _ => None,
        })
        .await
    }

    async fn message(&mut self) -> Result<ChatMessage, Box<dyn Error + Send + Sync>> {
        self.until(|e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the commit that brings the group to `epoch`.
    async fn epoch(&mut self, epoch: u64) -> Result<GroupEvent, Box<dyn Error + Send + Sync>> {
        self.until(|e| match e {
            Event::Group(g @ GroupEvent::Commit { epoch: at, .. }) if *at == epoch => Some(g.clone()),
            _ => None,
        })
        .await
    }

    async fn say(&mut self, body: &str) -> TestResult {
        self.handle.send(ContentKind::Text, body).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_create_enter_talk_agree_and_catch_up_after_a_restart() -> TestResult {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let relay = relay(dirs[0].path()).await?;

    let mut alice = start(&relay, ("alice", 1), dirs[1].path(), true, PASSWORD).await?;
    assert_eq!(alice.entered().await?, 0, "the creator's group starts at epoch 0");
    // Bob and carol enter together: their external commits may collide, and the loser
    // enters again from the winner's GroupInfo.
    let (bob, carol) = tokio::join!(
        start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD),
        start(&relay, ("carol", 3), dirs[3].path(), false, PASSWORD)
    );
    let (mut bob, mut carol) = (bob?, carol?);
    bob.entered().await?;
    carol.entered().await?;
    let entries = [bob.me, carol.me];
    for want in 1..=2 {
        match alice.epoch(want).await? {
            GroupEvent::Commit { entry: true, committer, .. } => assert!(entries.contains(&committer)),
            other => panic!("{other:?}"),
        }
    }
    // Everyone is at epoch 2 with one group state (a Ping and its Pong: each has processed
    // what the relay sent it before).
    for member in [&alice, &bob, &carol] {
        assert!(member.handle.sync().await, "not connected");
    }
    let codes = [alice.handle.safety().await, bob.handle.safety().await, carol.handle.safety().await];
    let first = codes[0].clone().ok_or("alice has no epoch code")?;
    assert_eq!(first.epoch, 2);
    assert!(codes.iter().all(|c| c.as_ref() == Some(&first)), "{codes:?}");

    alice.say("hello both").await?;
    for member in [&mut bob, &mut carol] {
        let m = member.message().await?;
        assert_eq!((m.sender, m.body.as_str(), m.from_me), (alice.me, "hello both", false));
    }

    // Bob closes; what alice says meanwhile he reads from his saved cursor, without entering
    // again (no new epoch).
    bob.handle.close(LIMIT).await;
    alice.say("while you were away").await?;
    carol.message().await?;
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    let m = bob.message().await?;
    assert_eq!((m.body.as_str(), m.history), ("while you were away", true));
    bob.say("back").await?;
    assert_eq!(carol.message().await?.body, "back");
    assert_eq!(alice.message().await?.sender, bob.me);
    assert_eq!(bob.handle.safety().await.ok_or("bob is no member")?.epoch, 2, "no re-entry");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_or_a_ban_removes_the_member_from_the_group_and_a_wrong_password_is_refused() -> TestResult {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let relay = relay(dirs[0].path()).await?;
    let mut alice = start(&relay, ("alice", 1), dirs[1].path(), true, PASSWORD).await?;
    alice.entered().await?;
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    bob.entered().await?;
    alice.epoch(1).await?;
    let mut carol = start(&relay, ("carol", 3), dirs[3].path(), false, PASSWORD).await?;
    carol.entered().await?;
    alice.epoch(2).await?;

    let alice_me = alice.me;
    alice.handle.kick(Nick::new("bob")?).await?;
    match timeout(LIMIT, bob.handle.ended()).await? {
        SessionEnd::Failed(e) => assert_eq!(e.refusal(), Some(ErrorCode::Kicked), "{e}"),
        other => panic!("{other:?}"),
    }
    for member in [&mut alice, &mut carol] {
        match member.epoch(3).await? {
            GroupEvent::Commit { removed, committer, entry: false, .. } => {
                assert_eq!((removed, committer), (vec![bob.me], alice_me));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(alice.handle.safety().await, carol.handle.safety().await);

    // A ban is a removal too, and the banned identity cannot come back.
    let carol_me = carol.me;
    alice.handle.ban(Nick::new("carol")?).await?;
    match timeout(LIMIT, carol.handle.ended()).await? {
        SessionEnd::Failed(e) => assert_eq!(e.refusal(), Some(ErrorCode::Banned), "{e}"),
        other => panic!("{other:?}"),
    }
    match alice.epoch(4).await? {
        GroupEvent::Commit { removed, .. } => assert_eq!(removed, vec![carol_me]),
        other => panic!("{other:?}"),
    }
    let back = start(&relay, ("carol", 3), dirs[3].path(), false, PASSWORD).await;
    assert_eq!(back.err().and_then(|e| e.refusal()), Some(ErrorCode::Banned));

    let wrong = start(&relay, ("eve", 5), dirs[2].path(), false, b"not the password").await;
    match wrong {
        Err(e) => assert_eq!(e.refusal(), Some(ErrorCode::WrongPassword), "{e}"),
        Ok(_) => panic!("a wrong password got in"),
    }
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_relays_rate_limit_is_paced_and_all_of_it_arrives() -> TestResult {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let relay = relay(dirs[0].path()).await?;
    // The relay's default limit for one identity: a burst of 20, then 5 per second; the
    // client's default pacing stays under it.
    let paced = paced_config(&relay, "alice", dirs[1].path(), true, Limits::default().send_rate);
    let mut alice = start_with(paced, 1, PASSWORD).await?;
    alice.entered().await?;
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    bob.entered().await?;
    alice.epoch(1).await?;
    const N: usize = 30;
    for i in 0..N {
        alice.say(&format!("m{i}")).await?;
    }
    for i in 0..N {
        assert_eq!(bob.message().await?.body, format!("m{i}"));
    }
    // Without pacing the relay refuses the 21st (`RateLimited`) and bob never gets it.
    while let Ok(e) = alice.events.try_recv() {
        assert!(!matches!(e, Event::SendFailed { .. }), "{e:?}");
    }
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_offline_across_epochs_catches_up_in_order_or_enters_again_when_history_is_gone(
) -> TestResult {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let relay = relay_keeping(dirs[0].path(), Some(6)).await?;
    let mut alice = start(&relay, ("alice", 1), dirs[1].path(), true, PASSWORD).await?;
    alice.entered().await?;
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    bob.entered().await?;
    alice.epoch(1).await?;
    bob.handle.close(LIMIT).await;

    // While bob is away: two entries (epochs 2 and 3) with a message in each.
    let mut carol = start(&relay, ("carol", 3), dirs[3].path(), false, PASSWORD).await?;
    carol.entered().await?;
    alice.epoch(2).await?;
    alice.say("in epoch two").await?;
    let mut dave = start(&relay, ("dave", 4), dirs[4].path(), false, PASSWORD).await?;
    dave.entered().await?;
    alice.epoch(3).await?;
    alice.say("in epoch three").await?;
    dave.message().await?;

    // Bob processes both commits and both messages in log order, and ends in alice's group.
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    assert_eq!(bob.message().await?.body, "in epoch two");
    assert_eq!(bob.message().await?.body, "in epoch three");
    assert!(bob.handle.sync().await && alice.handle.sync().await);
    assert_eq!(bob.handle.safety().await.map(|s| s.epoch), Some(3));
    assert_eq!(bob.handle.safety().await, alice.handle.safety().await);
    bob.handle.close(LIMIT).await;

    // Now away for longer than the relay keeps (6 envelopes): bob learns what he missed and
    // enters again, which the others see.
    for i in 0..8 {
        alice.say(&format!("while bob is gone {i}")).await?;
    }
    assert_eq!(
        dave.until(|e| matches!(e, Event::Message(m) if m.body.ends_with(" 7")).then_some(())).await?,
        ()
    );
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    bob.until(|e| matches!(e, Event::Group(GroupEvent::FellBehind { .. })).then_some(())).await?;
    bob.entered().await?;
    let bob_me = bob.me;
    match alice.epoch(4).await? {
        GroupEvent::Commit { entry: true, committer, .. } => assert_eq!(committer, bob_me),
        other => panic!("{other:?}"),
    }
    alice.say("welcome back").await?;
    assert_eq!(bob.message().await?.body, "welcome back");
    relay.stop().await
}

/// Copies every file under `from` into `to` (a thief's copy of a client's data directory).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_update_after_its_message_limit_leaves_a_copy_of_its_state_unable_to_read_on() -> TestResult
{
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let relay = relay(dirs[0].path()).await?;
    let healing =
        V2Limits { heal_messages: 3, group_info_grace: Duration::from_millis(200), ..V2Limits::default() };
    let mut alice =
        start_limited(config(&relay, "alice", dirs[1].path(), true), 1, PASSWORD, healing).await?;
    alice.entered().await?;
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    bob.entered().await?;
    alice.epoch(1).await?;
    // After the barrier alice's state of epoch 1 is on disk: a thief copies all of it.
    assert!(alice.handle.sync().await);
    copy_tree(dirs[1].path(), dirs[3].path())?;

    bob.say("before").await?;
    assert_eq!(alice.message().await?.body, "before");
    for i in 0..3 {
        alice.say(&format!("a{i}")).await?;
    }
    // Her third message makes her update due: an empty commit of hers moves the group on.
    let alice_me = alice.me;
    match bob.epoch(2).await? {
        GroupEvent::Commit { committer, entry: false, removed, .. } => {
            assert_eq!((committer, removed), (alice_me, vec![]))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(alice.epoch(2).await?, GroupEvent::Commit { own: true, .. }));
    bob.say("after").await?;
    assert_eq!(alice.message().await?.body, "after");
    assert!(alice.handle.sync().await && bob.handle.sync().await);
    assert_eq!(alice.handle.safety().await, bob.handle.safety().await);
    alice.handle.close(LIMIT).await;

    // The thief runs alice's identity with the password and the copy: it reads the log up to
    // her update and nothing after it.
    let mut thief = start(&relay, ("alice", 1), dirs[3].path(), false, PASSWORD).await?;
    let mut read = Vec::new();
    thief
        .until(|e| match e {
            Event::Message(m) => {
                read.push(m.body.clone());
                None
            }
            Event::HistoryEnd => Some(()),
            _ => None,
        })
        .await?;
    assert!(thief.handle.sync().await);
    while let Ok(e) = thief.events.try_recv() {
        if let Event::Message(m) = e {
            read.push(m.body);
        }
    }
    assert_eq!(read, vec!["before".to_string()]);
    assert_eq!(thief.handle.safety().await.map(|s| s.epoch), Some(1), "stuck at the copied epoch");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_owner_rotates_the_password_members_talk_on_and_only_the_new_one_enters() -> TestResult {
    const NEW: &[u8] = b"a new password for the room";
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let relay = relay(dirs[0].path()).await?;
    let mut alice = start(&relay, ("alice", 1), dirs[1].path(), true, PASSWORD).await?;
    alice.entered().await?;
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    bob.entered().await?;
    alice.epoch(1).await?;

    // Only the owner rotates.
    let refused = bob.handle.rotate_password(Zeroizing::new(NEW.to_vec())).await;
    assert!(matches!(refused, Err(RotateError::NotOwner)), "{refused:?}");

    assert_eq!(alice.handle.rotate_password(Zeroizing::new(NEW.to_vec())).await?, 1);
    let (alice_me, bob_me) = (alice.me, bob.me);
    let rotated = |own: bool, by: PublicIdentity| {
        move |e: &Event| match e {
            Event::Group(GroupEvent::PasswordRotated { generation, by: who, own: o }) => {
                Some((*generation, *who == by, *o == own))
            }
            _ => None,
        }
    };
    assert_eq!(alice.until(rotated(true, alice_me)).await?, (1, true, true));
    assert_eq!(bob.until(rotated(false, alice_me)).await?, (1, true, true));
    // The relay has the new verifier and the new GroupInfo (a Ping after them, answered).
    assert!(alice.handle.sync().await);

    // Bob, inside, talks on.
    bob.say("after the rotation").await?;
    assert_eq!(alice.message().await?.body, "after the rotation");
    alice.say("still here").await?;
    assert_eq!(bob.message().await?.body, "still here");

    // The old password no longer joins; the new one enters and reads what is sent after.
    let old = start(&relay, ("eve", 5), dirs[3].path(), false, PASSWORD).await;
    match old {
        Err(e) => assert_eq!(e.refusal(), Some(ErrorCode::WrongPassword), "{e}"),
        Ok(_) => panic!("the old password got in"),
    }
    let mut carol = start(&relay, ("carol", 3), dirs[3].path(), false, NEW).await?;
    carol.entered().await?;
    for member in [&mut alice, &mut bob] {
        member.epoch(2).await?;
    }
    alice.say("welcome carol").await?;
    assert_eq!(carol.message().await?.body, "welcome carol");
    // Bob has read it too before he stops, so his saved cursor is past it.
    assert_eq!(bob.message().await?.body, "welcome carol");

    // Bob restarts with the only password he knows, the old one: his saved state holds the
    // new one's outputs, so he joins the relay and reads on without entering again.
    bob.handle.close(LIMIT).await;
    alice.say("while bob was away").await?;
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    assert_eq!(bob.message().await?.body, "while bob was away");
    assert_eq!(carol.message().await?.body, "while bob was away");
    bob.say("back").await?;
    assert_eq!(carol.message().await?.sender, bob_me);
    let codes = [alice.handle.safety().await, bob.handle.safety().await, carol.handle.safety().await];
    assert!(codes.iter().all(|c| c.is_some() && *c == codes[0]), "{codes:?}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_away_during_a_rotation_joins_with_the_new_password_and_reads_on_without_entering_again(
) -> TestResult {
    const NEW: &[u8] = b"a new password for the room";
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let relay = relay(dirs[0].path()).await?;
    let mut alice = start(&relay, ("alice", 1), dirs[1].path(), true, PASSWORD).await?;
    alice.entered().await?;
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    bob.entered().await?;
    alice.epoch(1).await?;
    bob.handle.close(LIMIT).await;

    assert_eq!(alice.handle.rotate_password(Zeroizing::new(NEW.to_vec())).await?, 1);
    alice.say("while bob was away").await?;
    assert!(alice.handle.sync().await);

    // His saved state holds the old password's join secret, which the relay now refuses; the
    // new password he was given joins, and the log brings him the rotation.
    let mut bob = start(&relay, ("bob", 2), dirs[2].path(), false, NEW).await?;
    let rotated = bob
        .until(|e| match e {
            Event::Group(GroupEvent::PasswordRotated { generation, own: false, .. }) => Some(*generation),
            _ => None,
        })
        .await?;
    assert_eq!(rotated, 1);
    assert_eq!(bob.message().await?.body, "while bob was away");
    bob.say("back").await?;
    assert_eq!(alice.message().await?.body, "back");
    assert_eq!(bob.handle.safety().await.ok_or("bob is no member")?.epoch, 1, "no re-entry");
    assert_eq!(alice.handle.safety().await, bob.handle.safety().await);

    // Started again with the old password, his state (now the new generation's) still joins.
    bob.handle.close(LIMIT).await;
    let bob = start(&relay, ("bob", 2), dirs[2].path(), false, PASSWORD).await?;
    assert!(bob.handle.sync().await);
    assert_eq!(bob.handle.safety().await.ok_or("bob is no member")?.epoch, 1);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_is_shown_the_last_messages_once_when_the_room_shares_history() -> TestResult {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let relay = relay(dirs[0].path()).await?;
    // No random wait: both members share at once, so the second share, if any were shown,
    // would come before their later messages.
    let limits = V2Limits {
        group_info_grace: Duration::from_millis(200),
        share_delay: Duration::ZERO,
        create_history_share: 3,
        ..V2Limits::default()
    };
    let mut alice =
        start_limited(config(&relay, "alice", dirs[1].path(), true), 1, PASSWORD, limits.clone()).await?;
    alice.entered().await?;
    let mut bob =
        start_limited(config(&relay, "bob", dirs[2].path(), false), 2, PASSWORD, limits.clone()).await?;
    bob.entered().await?;
    alice.epoch(1).await?;
    for body in ["one", "two", "three", "four"] {
        alice.say(body).await?;
        assert_eq!(bob.message().await?.body, body);
    }
    bob.say("five").await?;
    assert_eq!(alice.message().await?.body, "five");

    let mut carol =
        start_limited(config(&relay, "carol", dirs[3].path(), false), 3, PASSWORD, limits).await?;
    carol.entered().await?;
    let (by, by_nick, messages) = carol
        .until(|e| match e {
            Event::Group(GroupEvent::SharedHistory { by, by_nick, messages }) => {
                Some((*by, by_nick.clone(), messages.clone()))
            }
            _ => None,
        })
        .await?;
    assert!(by == alice.me || by == bob.me, "shared by a member");
    assert_eq!(
        by_nick.map(|n| n.as_str().to_owned()),
        Some(if by == alice.me { "alice" } else { "bob" }.into())
    );
    let got: Vec<(PublicIdentity, &str, bool)> =
        messages.iter().map(|m| (m.sender, m.body.as_str(), m.history)).collect();
    assert_eq!(got, vec![(alice.me, "three", true), (alice.me, "four", true), (bob.me, "five", true)]);
    assert!(messages.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first, with their seqs");

    // Once: what the members say next reaches carol with no second share before it.
    alice.say("after a").await?;
    bob.say("after b").await?;
    let (mut read, mut again) = (0, 0);
    carol
        .until(|e| {
            match e {
                Event::Group(GroupEvent::SharedHistory { .. }) => again += 1,
                Event::Message(_) => read += 1,
                _ => {}
            }
            (read == 2).then_some(())
        })
        .await?;
    assert_eq!(again, 0, "a second share was shown");
    relay.stop().await
}
