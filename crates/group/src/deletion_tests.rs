//! What the MLS state deletes, checked below our ordering rule (straight on mls-rs), so the
//! refusals come from missing keys, not from our epoch filter; and the entry rule.

use chatroom_crypto::{split_master_v2, Identity, RoomName, RoomSecretsV2};
use mls_rs::error::MlsError;
use mls_rs::MlsMessage;

use crate::client;
use crate::room::{Event, Kind, LogEntry, Room};
use crate::storage::BlobStorage;
use crate::{GroupError, RoomRef};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn room_ref() -> RoomRef {
    RoomRef { room: RoomName::new("general").unwrap(), relay_key: [9; 32], psk_generation: 0 }
}

fn keys() -> RoomSecretsV2 {
    split_master_v2(&[1; 32])
}

/// Alice creates, the others enter one by one; every commit is processed by everyone.
fn members(n: u8) -> Result<Vec<(Identity, Room)>, GroupError> {
    let keys = keys();
    let alice = Identity::from_seed(&[1; 32]);
    let room = Room::create(&alice, room_ref(), &keys.room_psk)?;
    let mut all = vec![(alice, room)];
    for seed in 2..=n {
        let id = Identity::from_seed(&[seed; 32]);
        let sealed = all[0].1.sealed_group_info(&keys.group_info_key)?;
        let (mut room, commit) = Room::enter(&id, room_ref(), &keys.room_psk, &keys.group_info_key, &sealed)?;
        let entry = LogEntry { sender: id.public(), kind: Kind::Commit, mls: &commit };
        assert_eq!(room.process(entry)?, Event::Entered);
        for (_, other) in &mut all {
            other.process(entry)?;
        }
        all.push((id, room));
    }
    Ok(all)
}

fn mls(bytes: &[u8]) -> MlsMessage {
    MlsMessage::from_bytes(bytes).unwrap()
}

#[test]
fn previous_epoch_message_is_refused_once_the_commit_is_merged() -> TestResult {
    let mut all = members(2)?;
    let old = all[0].1.seal_message(b"epoch e")?;
    // Control: before the commit, bob's state reads it.
    let mut control = all[1].1.group.clone();
    assert!(control.process_incoming_message(mls(&old)).is_ok());

    let update = all[1].1.update()?;
    let entry = LogEntry { sender: all[1].0.public(), kind: Kind::Commit, mls: &update };
    assert!(matches!(all[1].1.process(entry)?, Event::Commit(c) if c.own));
    assert!(all[1].1.group.process_incoming_message(mls(&old)).is_err());
    // Nor from the state blob written after the commit.
    let blob = all[1].1.export_state()?;
    let mut reloaded = Room::load_state(&all[1].0, room_ref(), &keys().room_psk, &blob)?;
    assert!(reloaded.group.process_incoming_message(mls(&old)).is_err());
    Ok(())
}

#[test]
fn removed_member_state_cannot_decrypt_what_follows() -> TestResult {
    let mut all = members(3)?;
    let before_removal = all[2].1.group.clone();
    let carol = all[2].0.public();
    let kick = all[0].1.remove(&carol)?;
    let entry = LogEntry { sender: all[0].0.public(), kind: Kind::Commit, mls: &kick };
    all[0].1.process(entry)?;
    all[1].1.process(entry)?;
    assert_eq!(all[2].1.process(entry)?, Event::Removed);

    let after = all[0].1.seal_message(b"after the removal")?;
    assert!(all[1].1.group.process_incoming_message(mls(&after)).is_ok(), "control: bob reads it");
    assert!(all[2].1.group.process_incoming_message(mls(&after)).is_err());
    let mut stale = before_removal;
    assert!(stale.process_incoming_message(mls(&after)).is_err());
    Ok(())
}

#[test]
fn external_commit_without_the_psk_is_refused_before_any_state_change() -> TestResult {
    let mut all = members(2)?;
    let keys = keys();
    let info = all[0].1.group.group_info_message_allowing_ext_commit(true)?;
    let eve = Identity::from_seed(&[66; 32]);
    let (client, _) = client::build(&eve, &room_ref(), &keys.room_psk, BlobStorage::default());
    let (_, commit) = client.external_commit_builder()?.build(info)?;
    let commit = commit.to_bytes()?;
    let code = all[0].1.epoch_code()?;
    let entry = LogEntry { sender: eve.public(), kind: Kind::Commit, mls: &commit };
    let refused = all[0].1.process(entry);
    assert!(matches!(refused, Err(GroupError::Mls(MlsError::MlsRulesError(_)))), "{refused:?}");
    assert_eq!(all[0].1.epoch_code()?, code);
    // The members still talk in the unchanged epoch.
    let hello = all[1].1.seal_message(b"still here")?;
    let entry = LogEntry { sender: all[1].0.public(), kind: Kind::Application, mls: &hello };
    assert!(matches!(all[0].1.process(entry)?, Event::Message { .. }));
    Ok(())
}

#[test]
fn content_kind_reads_every_message_type_and_never_panics_on_a_prefix() -> TestResult {
    let mut all = members(2)?;
    let keys = keys();
    let app = all[0].1.seal_message(b"hi")?;
    let update = all[0].1.update()?;
    let sealed = all[1].1.sealed_group_info(&keys.group_info_key)?;
    let (_, entry) = Room::enter(
        &Identity::from_seed(&[7; 32]),
        room_ref(),
        &keys.room_psk,
        &keys.group_info_key,
        &sealed,
    )?;
    let info = all[1].1.group.group_info_message_allowing_ext_commit(true)?.to_bytes()?;
    use crate::wire::content_kind;
    assert_eq!(content_kind(&app), Some(Kind::Application));
    assert_eq!(content_kind(&update), Some(Kind::Commit));
    assert_eq!(content_kind(&entry), Some(Kind::Commit));
    assert_eq!(content_kind(&info), None);
    use crate::wire::message_epoch;
    let epoch = all[0].1.epoch();
    assert_eq!([&app, &update, &entry].map(|m| message_epoch(m)), [Some(epoch); 3]);
    assert_eq!(message_epoch(&info), None);
    for m in [&app, &update, &entry] {
        assert!((0..m.len()).filter_map(|n| message_epoch(&m[..n])).all(|e| e == epoch));
        // Every strict prefix that stops before the content type reads as nothing.
        let found = (0..m.len()).filter(|&n| content_kind(&m[..n]).is_some()).min().unwrap();
        assert!((0..found).all(|n| content_kind(&m[..n]).is_none()));
        assert!(found > 12, "the type follows version, wire format, group id and epoch");
    }
    Ok(())
}
