//! A real v2 room shared by the MLS targets (`group_content_kind`, `group_process`): `alice`
//! created it, `bob` entered by external commit and `alice` processed the entry, so she is at
//! epoch 1. Built once per process; MLS randomness makes the bytes differ between processes,
//! but no check depends on them, only on what each message is.

use std::sync::OnceLock;

use chatroom_crypto::{split_master_v2, Identity, PublicIdentity, RoomName, RoomSecretsV2};
use chatroom_group::{Event, Kind, LogEntry, Room, RoomRef};

/// The only plaintext any member of the fixture seals.
pub const HELLO: &[u8] = b"hello from bob";

/// A real MLS message of the fixture and what it is.
#[derive(Debug)]
pub struct Known {
    /// The envelope signer who built it.
    pub sender: PublicIdentity,
    /// Its kind (`None`: not a message with content, a GroupInfo).
    pub kind: Option<Kind>,
    /// The MLSMessage.
    pub mls: Vec<u8>,
    /// What alice's state at epoch 1 makes of it.
    pub expect: Expect,
}

/// What processing a known message from alice's saved state yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Bob's application message: [`HELLO`].
    Hello,
    /// A valid commit of epoch 1 from this committer, taking the group to epoch 2.
    Commit,
    /// Refused (an entry under the wrong password).
    Refused,
    /// Not processed as content (a GroupInfo): skipped.
    Skipped,
}

/// The room, its members and its messages.
pub struct Fixture {
    /// The room's password outputs.
    pub keys: RoomSecretsV2,
    /// Alice (creator and owner).
    pub alice: Identity,
    /// Alice's saved state at epoch 1, bob a member.
    pub alice_state: Vec<u8>,
    /// The messages (index = what the inputs name, modulo the length).
    pub known: Vec<Known>,
    /// Identities the inputs may name as envelope signers: alice, bob, carol, dave.
    pub senders: [PublicIdentity; 4],
}

/// The room the fixture lives in.
pub fn room_ref() -> RoomRef {
    let room = RoomName::new("general").unwrap_or_else(|_| panic!("a valid room name"));
    RoomRef { room, relay_key: [9; 32], psk_generation: 0 }
}

/// The fixture, built on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| build().unwrap_or_else(|e| panic!("building the MLS fixture: {e}")))
}

fn build() -> Result<Fixture, chatroom_group::GroupError> {
    let keys = split_master_v2(&[7; 32]);
    let wrong = split_master_v2(&[8; 32]);
    let [alice, bob, carol, dave] = [1u8, 2, 3, 4].map(|s| Identity::from_seed(&[s; 32]));
    let mut a = Room::create(&alice, room_ref(), &keys.room_psk)?;
    let info0 = a.sealed_group_info(&keys.group_info_key)?;
    let (mut b, entry) = Room::enter(&bob, room_ref(), &keys.room_psk, &keys.group_info_key, &info0)?;
    let entry_ok = LogEntry { sender: bob.public(), kind: Kind::Commit, mls: &entry };
    assert!(matches!(a.process(entry_ok)?, Event::Commit(_)), "alice accepts bob's entry");
    assert_eq!(b.process(entry_ok)?, Event::Entered, "bob's entry wins");
    let info1 = a.sealed_group_info(&keys.group_info_key)?;
    let alice_state = a.export_state()?.to_vec();

    let hello = b.seal_message(HELLO)?;
    // Built after the message, still in epoch 1: both are valid for alice's saved state.
    let update = b.update()?;
    let (_, carol_entry) = Room::enter(&carol, room_ref(), &keys.room_psk, &keys.group_info_key, &info1)?;
    let (_, wrong_entry) = Room::enter(&dave, room_ref(), &wrong.room_psk, &keys.group_info_key, &info1)?;
    let opened = chatroom_group::open_group_info(&keys.group_info_key, &room_ref(), &info1)?;
    let known = vec![
        Known { sender: bob.public(), kind: Some(Kind::Application), mls: hello, expect: Expect::Hello },
        Known { sender: bob.public(), kind: Some(Kind::Commit), mls: update, expect: Expect::Commit },
        Known { sender: carol.public(), kind: Some(Kind::Commit), mls: carol_entry, expect: Expect::Commit },
        Known { sender: dave.public(), kind: Some(Kind::Commit), mls: wrong_entry, expect: Expect::Refused },
        Known { sender: alice.public(), kind: None, mls: opened.group_info, expect: Expect::Skipped },
    ];
    let senders = [alice.public(), bob.public(), carol.public(), dave.public()];
    Ok(Fixture { keys, alice, alice_state, known, senders })
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").field("known", &self.known.len()).finish_non_exhaustive()
    }
}
