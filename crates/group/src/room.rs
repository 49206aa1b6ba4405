//! A member's view of the room's MLS group: create, enter by external commit, and process the
//! room's log in relay order, where the first valid commit of each epoch wins.

use chatroom_crypto::{epoch_code, GroupInfoKey, Identity, PublicIdentity, RoomPsk, SafetyCode};
use mls_rs::group::{CommitEffect, ReceivedMessage};
use mls_rs::{ExtensionList, Group, MlsMessage};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::client::{self, Handles, RoomConfig};
use crate::error::GroupError;
use crate::group_info;
use crate::ids::{RoomRef, CIPHER_SUITE};
use crate::rules::Expected;
use crate::settings::RoomSettings;
use crate::storage::BlobStorage;

/// The largest MLSMessage `process` takes: 16 384 bytes, `MAX_MLS` (docs/PROTOCOL.md section 22.1),
/// checked before parsing. Commits measured at 500 members are under 2 KB.
pub const MAX_MLS_LEN: usize = chatroom_crypto::MAX_MLS_LEN;

/// The envelope's clear `kind` byte (docs/PROTOCOL.md section 22.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An MLS commit (entry, removal, update).
    Commit = 1,
    /// An MLS application message.
    Application = 2,
    /// Any other handshake message (a proposal).
    Proposal = 3,
}

/// One entry of the room's log, as the envelope layer verified it (outer signature checked).
#[derive(Debug, Clone, Copy)]
pub struct LogEntry<'a> {
    /// The envelope's signer.
    pub sender: PublicIdentity,
    /// The envelope's kind byte.
    pub kind: Kind,
    /// The MLSMessage.
    pub mls: &'a [u8],
}

/// What a commit did, once it won its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// The epoch the group is now in.
    pub epoch: u64,
    /// Who committed (for an entry: the newcomer).
    pub committer: PublicIdentity,
    /// It was this client's own commit.
    pub own: bool,
    /// This client had a commit pending for the same epoch, which lost: retry it on the new
    /// epoch if it still applies.
    pub own_commit_lost: bool,
    /// It was an entry by external commit.
    pub entry: bool,
    /// Identities whose leaves it removed.
    pub removed: Vec<PublicIdentity>,
}

/// The result of processing one log entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// An application message, decrypted.
    Message {
        /// Its MLS sender (equal to the envelope's signer).
        sender: PublicIdentity,
        /// The plaintext (v2 content encoding).
        plaintext: Zeroizing<Vec<u8>>,
    },
    /// A commit won its epoch and was merged; the previous epoch's secrets are gone.
    Commit(CommitSummary),
    /// This client was removed: its state reads nothing more.
    Removed,
    /// This client's entry commit won: it is a member from now on.
    Entered,
    /// Another commit won the epoch this client tried to enter: fetch the GroupInfo again and
    /// enter anew.
    EntryLost,
    /// This client's own application message was sequenced after its epoch ended: nobody can
    /// read it; send the same content again.
    Resend,
    /// Nothing to do: an entry of another epoch, this client's own message, or (while
    /// entering) anything before its entry.
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Member,
    /// Waiting for our external commit (its SHA-256) to win `epoch`.
    Entering {
        epoch: u64,
        commit: [u8; 32],
    },
    /// Removed, or an entry that lost: nothing more can happen.
    Gone,
}

/// A member's MLS state for one room.
pub struct Room {
    pub(crate) room: RoomRef,
    pub(crate) me: PublicIdentity,
    pub(crate) group: Group<RoomConfig>,
    pub(crate) handles: Handles,
    pub(crate) phase: Phase,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("epoch", &self.epoch())
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

fn public_of(id: &mls_rs::identity::SigningIdentity) -> Result<PublicIdentity, GroupError> {
    let bytes: [u8; 32] = id.signature_key.as_bytes().try_into().map_err(|_| GroupError::SenderMismatch)?;
    Ok(PublicIdentity(bytes))
}

impl Room {
    /// The creator's group at epoch 0, with itself as the only member and the owner; the
    /// settings' other fields are the protocol's defaults.
    pub fn create(identity: &Identity, room: RoomRef, psk: &RoomPsk) -> Result<Self, GroupError> {
        Self::create_with(identity, room, psk, RoomSettings::defaults(identity.public()))
    }

    /// As `create`, with the creator's choice of settings (its `history_share`, say); the
    /// owner is always the creator.
    pub fn create_with(
        identity: &Identity,
        room: RoomRef,
        psk: &RoomPsk,
        settings: RoomSettings,
    ) -> Result<Self, GroupError> {
        let (client, handles) = client::build(identity, &room, psk, BlobStorage::default());
        let settings = RoomSettings { owner: identity.public(), ..settings }.to_extensions();
        let group = client.create_group_with_id(room.group_id(), settings, ExtensionList::new(), None)?;
        Ok(Self { room, me: identity.public(), group, handles, phase: Phase::Member })
    }

    /// Enters from the sealed GroupInfo alone: an external commit carrying the room's PSK, and the
    /// removal of an old leaf of this identity if the tree holds one (RFC 9420 resync). Returns
    /// the room, in the entering phase, and the commit to send as an envelope of kind `Commit`.
    pub fn enter(
        identity: &Identity,
        room: RoomRef,
        psk: &RoomPsk,
        key: &GroupInfoKey,
        sealed: &[u8],
    ) -> Result<(Self, Vec<u8>), GroupError> {
        // The generation in the seal's header is bound by its AEAD: the room's current password
        // is whichever one opens it, and the entry carries that generation's PSK id.
        let opened = group_info::open(key, &room, sealed)?;
        let room = RoomRef { psk_generation: opened.psk_generation, ..room };
        let message = MlsMessage::from_bytes(&opened.group_info)?;
        if message.epoch() != Some(opened.epoch) || message.group_id() != Some(room.group_id().as_slice()) {
            return Err(GroupError::WrongGroup("group id or epoch differ from the seal's"));
        }
        if message.cipher_suite() != Some(CIPHER_SUITE) {
            return Err(GroupError::WrongGroup("not ciphersuite 0x0003"));
        }
        let info = message.as_group_info().ok_or(GroupError::WrongGroup("not a GroupInfo"))?;
        if RoomSettings::from_extensions(&info.group_context().extensions).is_none() {
            return Err(GroupError::WrongGroup("no room settings extension"));
        }
        let (client, handles) = client::build(identity, &room, psk, BlobStorage::default());
        let me = identity.public();
        let mut builder = client.external_commit_builder()?.with_external_psk(room.psk_id());
        if let Some(old) = old_leaf(&message, &me) {
            builder = builder.with_removal(old);
        }
        let (group, commit) = builder.build(message)?;
        let commit = commit.to_bytes()?;
        let phase = Phase::Entering { epoch: opened.epoch, commit: Sha256::digest(&commit).into() };
        Ok((Self { room, me, group, handles, phase }, commit))
    }

    /// The password generation whose PSK entries must carry (docs/PROTOCOL.md section 26, rotation).
    pub fn psk_generation(&self) -> u32 {
        self.room.psk_generation
    }

    /// A password rotation: from now on entries must carry `psk` under `psk_generation`'s
    /// PSK id, and the GroupInfo is sealed with that generation. The previous PSK is dropped
    /// from the group's store. The group state (epoch, pending commit, phase) is unchanged.
    pub fn rotate_psk(
        &mut self,
        identity: &Identity,
        psk_generation: u32,
        psk: &RoomPsk,
    ) -> Result<(), GroupError> {
        if identity.public() != self.me {
            return Err(GroupError::State("a rotation for another identity"));
        }
        let phase = self.phase;
        let blob = self.export_state()?;
        let room = RoomRef { psk_generation, ..self.room.clone() };
        let mut rotated = Room::load_state(identity, room, psk, &blob)?;
        rotated.phase = phase;
        *self = rotated;
        Ok(())
    }

    /// The current epoch (while entering: the epoch after the entry commit).
    pub fn epoch(&self) -> u64 {
        self.group.current_epoch()
    }

    /// Whether this client's entry has been confirmed by the log (and it was not removed).
    pub fn is_member(&self) -> bool {
        self.phase == Phase::Member
    }

    /// The epoch code people compare with `/safety` (docs/PROTOCOL.md section 20).
    pub fn epoch_code(&self) -> Result<SafetyCode, GroupError> {
        let authenticator = self.group.epoch_authenticator()?;
        Ok(epoch_code(self.epoch(), authenticator.as_bytes()))
    }

    /// The room's settings, from the group context (the owner among them).
    pub fn settings(&self) -> Option<RoomSettings> {
        RoomSettings::from_extensions(&self.group.context().extensions)
    }

    /// The members' identities, in leaf order.
    pub fn members(&self) -> Vec<PublicIdentity> {
        self.group.roster().members_iter().filter_map(|m| public_of(&m.signing_identity).ok()).collect()
    }

    /// The GroupInfo of the current epoch, sealed for the relay.
    pub fn sealed_group_info(&self, key: &GroupInfoKey) -> Result<Vec<u8>, GroupError> {
        self.require_member()?;
        let info = self.group.group_info_message_allowing_ext_commit(true)?.to_bytes()?;
        group_info::seal(key, &self.room, self.epoch(), &info)
    }

    /// Encrypts an application message for the current epoch.
    pub fn seal_message(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, GroupError> {
        self.require_member()?;
        Ok(self.group.encrypt_application_message(plaintext, vec![])?.to_bytes()?)
    }

    /// A commit removing every leaf of `who` (kick or ban), kept pending until the log shows
    /// whether it won.
    pub fn remove(&mut self, who: &PublicIdentity) -> Result<Vec<u8>, GroupError> {
        self.require_member()?;
        let leaves: Vec<u32> = self
            .group
            .roster()
            .members_iter()
            .filter(|m| m.signing_identity.signature_key.as_bytes() == who.0)
            .map(|m| m.index)
            .collect();
        if leaves.is_empty() {
            return Err(GroupError::NotAMember);
        }
        let mut builder = self.group.commit_builder();
        for leaf in leaves {
            builder = builder.remove_member(leaf)?;
        }
        Ok(builder.build()?.commit_message.to_bytes()?)
    }

    /// An empty commit with a fresh path (healing), kept pending until the log decides.
    pub fn update(&mut self) -> Result<Vec<u8>, GroupError> {
        self.require_member()?;
        Ok(self.group.commit_builder().build()?.commit_message.to_bytes()?)
    }

    fn require_member(&self) -> Result<(), GroupError> {
        match self.phase {
            Phase::Member => Ok(()),
            _ => Err(GroupError::NotEntered),
        }
    }

    /// Processes the next entry of the log, in sequence order. An error means the entry was
    /// refused and the group state is unchanged.
    pub fn process(&mut self, entry: LogEntry<'_>) -> Result<Event, GroupError> {
        if entry.mls.len() > MAX_MLS_LEN {
            return Err(GroupError::TooLarge(entry.mls.len()));
        }
        let message = MlsMessage::from_bytes(entry.mls)?;
        let Some(epoch) = message.epoch() else {
            return Ok(Event::Skipped);
        };
        // Checked before anything is decrypted, so a lying envelope costs no key.
        if crate::wire::content_kind(entry.mls) != Some(entry.kind) {
            return Err(GroupError::KindMismatch);
        }
        match self.phase {
            Phase::Gone => Ok(Event::Skipped),
            Phase::Entering { epoch: entering, commit } => {
                Ok(self.while_entering(entry, epoch, entering, commit))
            }
            Phase::Member => self.as_member(entry, epoch, message),
        }
    }

    /// The ordering rule seen by a newcomer: the first commit of the GroupInfo's epoch decides.
    fn while_entering(&mut self, entry: LogEntry<'_>, epoch: u64, entering: u64, commit: [u8; 32]) -> Event {
        if entry.kind != Kind::Commit || epoch != entering {
            return Event::Skipped;
        }
        if <[u8; 32]>::from(Sha256::digest(entry.mls)) == commit {
            self.phase = Phase::Member;
            Event::Entered
        } else {
            self.phase = Phase::Gone;
            Event::EntryLost
        }
    }

    fn as_member(
        &mut self,
        entry: LogEntry<'_>,
        epoch: u64,
        message: MlsMessage,
    ) -> Result<Event, GroupError> {
        let own = entry.sender == self.me;
        if epoch != self.epoch() {
            // Sent before its sender saw the commit that ended its epoch: unreadable now.
            let late_own = own && entry.kind == Kind::Application && epoch < self.epoch();
            return Ok(if late_own { Event::Resend } else { Event::Skipped });
        }
        if own && entry.kind != Kind::Commit {
            return Ok(Event::Skipped);
        }
        let had_pending = self.group.has_pending_commit();
        // mls-rs ratchets its handshake keys while decrypting, before the rules refuse a
        // commit (say, one replayed by another member): keep a copy so that a refused commit
        // changes nothing. Commits are rare; application messages are not copied.
        let checkpoint = (entry.kind == Kind::Commit).then(|| self.group.clone());
        self.expect(Expected { commit: entry.kind == Kind::Commit, sender: entry.sender.0 })?;
        let received = self.group.process_incoming_message(message);
        self.expect(Expected::default())?;
        let received = match (received, checkpoint) {
            (Err(e), Some(checkpoint)) => {
                self.group = checkpoint;
                return Err(e.into());
            }
            (received, _) => received?,
        };
        match received {
            ReceivedMessage::ApplicationMessage(m) => {
                let sender =
                    public_of(&self.group.roster().member_with_index(m.sender_index)?.signing_identity)?;
                let plaintext = Zeroizing::new(m.data().to_vec());
                if sender != entry.sender {
                    return Err(GroupError::SenderMismatch);
                }
                Ok(Event::Message { sender, plaintext })
            }
            ReceivedMessage::Commit(c) => self.merged(c, entry.sender, own, had_pending),
            _ => Err(GroupError::KindMismatch),
        }
    }

    fn merged(
        &mut self,
        c: mls_rs::group::CommitMessageDescription,
        committer: PublicIdentity,
        own: bool,
        had_pending: bool,
    ) -> Result<Event, GroupError> {
        let new_epoch = match c.effect {
            CommitEffect::NewEpoch(e) => e,
            CommitEffect::Removed { .. } => {
                self.phase = Phase::Gone;
                return Ok(Event::Removed);
            }
            CommitEffect::ReInit(_) => return Err(GroupError::KindMismatch),
        };
        let removed = new_epoch
            .applied_proposals
            .iter()
            .filter_map(|p| match &p.proposal {
                mls_rs::group::proposal::Proposal::Remove(r) => Some(r.to_remove()),
                _ => None,
            })
            .filter_map(|leaf| new_epoch.prior_state.roster().member_with_index(leaf).ok())
            .filter_map(|m| public_of(&m.signing_identity).ok())
            .collect();
        Ok(Event::Commit(CommitSummary {
            epoch: new_epoch.epoch,
            committer,
            own,
            own_commit_lost: had_pending && !own,
            entry: c.is_external,
            removed,
        }))
    }

    fn expect(&self, expected: Expected) -> Result<(), GroupError> {
        let mut cell = self.handles.expected.lock().map_err(|_| GroupError::State("rules lock poisoned"))?;
        *cell = expected;
        Ok(())
    }
}

/// The leaf of an earlier membership of this identity in the GroupInfo's tree, if any: a
/// member whose state is gone re-enters under the same identity by removing it.
fn old_leaf(message: &MlsMessage, me: &PublicIdentity) -> Option<u32> {
    use mls_rs::extension::built_in::RatchetTreeExt;
    let info = message.clone().into_group_info()?;
    let tree = info.extensions().get_as::<RatchetTreeExt>().ok()??;
    let roster = tree.tree_data.roster();
    let found = roster.members_iter().find(|m| m.signing_identity.signature_key.as_bytes() == me.0);
    found.map(|m| m.index)
}
