//! The room's `MlsRules`: what members accept in a received commit, checked by mls-rs before
//! any state changes (a refused commit leaves the group exactly as it was).

use std::sync::{Arc, Mutex};

use mls_rs::client_builder::PaddingMode;
use mls_rs::error::IntoAnyError;
use mls_rs::group::{GroupContext, Roster};
use mls_rs::mls_rules::{CommitDirection, CommitOptions, CommitSource, EncryptionOptions, ProposalBundle};
use mls_rs::psk::ExternalPskId;
use mls_rs::MlsRules;

use crate::settings::RoomSettings;

/// What the log entry being processed says about itself (its envelope), so that the rules can
/// refuse a commit whose envelope does not claim one, or whose signer is someone else.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Expected {
    /// The envelope's kind is "commit".
    pub(crate) commit: bool,
    /// The envelope's signer (outer sender).
    pub(crate) sender: [u8; 32],
}

/// Why a received commit was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RuleError {
    #[error("a commit in an envelope that is not of kind commit")]
    NotACommitEnvelope,
    #[error("the committer is not the envelope's signer")]
    CommitterMismatch,
    #[error("an entry commit without exactly one PSK proposal for the room's PSK")]
    EntryWithoutRoomPsk,
    #[error("an entry commit with a proposal other than the PSK and a removal of the newcomer's old leaf")]
    EntryWithOtherProposals,
    #[error("a leaf whose credential is not its signature key")]
    CredentialMismatch,
    #[error("a removal of another member, or a settings change, by someone other than the owner")]
    NotOwner,
    #[error("a re-initialisation proposal, which rooms never use")]
    Forbidden,
    #[error("the rules' state lock was poisoned")]
    Poisoned,
}

impl IntoAnyError for RuleError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

/// The room's rules: the PSK id every entry must carry, and the current entry's envelope.
#[derive(Debug, Clone)]
pub(crate) struct RoomRules {
    pub(crate) psk_id: ExternalPskId,
    pub(crate) expected: Arc<Mutex<Expected>>,
}

impl RoomRules {
    fn check_entry(
        &self,
        newcomer: &mls_rs::identity::SigningIdentity,
        roster: &Roster,
        p: &ProposalBundle,
    ) -> Result<(), RuleError> {
        let key = newcomer.signature_key.as_bytes();
        let basic = newcomer.credential.as_basic().map(|b| b.identifier.as_slice());
        if basic != Some(key) {
            return Err(RuleError::CredentialMismatch);
        }
        let psks = p.psk_proposals();
        let ours = psks.len() == 1 && psks[0].proposal.external_psk_id() == Some(&self.psk_id);
        if !ours {
            return Err(RuleError::EntryWithoutRoomPsk);
        }
        // Only a resync: the removal of a leaf that holds the newcomer's own identity.
        let removals = p.remove_proposals();
        let own_leaf =
            |i: u32| roster.member_with_index(i).map(|m| m.signing_identity.signature_key.as_bytes() == key);
        let removal_ok = match removals {
            [] => true,
            [one] => own_leaf(one.proposal.to_remove()).unwrap_or(false),
            _ => false,
        };
        // (Update proposals and custom proposals do not exist in this build: no `by_ref_proposal`.)
        let others = p.add_proposals().len() + p.group_context_ext_proposals().len();
        if !removal_ok || others != 0 {
            return Err(RuleError::EntryWithOtherProposals);
        }
        Ok(())
    }
}

/// A member's commit may remove another member, or change the room's settings, only if the
/// committer is the owner named in the group context.
fn owner_only(
    committer: &mls_rs::group::Member,
    roster: &Roster,
    context: &GroupContext,
    p: &ProposalBundle,
) -> Result<(), RuleError> {
    let key = committer.signing_identity.signature_key.as_bytes();
    let is_owner = RoomSettings::from_extensions(&context.extensions).is_some_and(|s| s.owner.0 == key);
    let removes_other = p.remove_proposals().iter().any(|r| {
        roster
            .member_with_index(r.proposal.to_remove())
            .map_or(true, |m| m.signing_identity.signature_key.as_bytes() != key)
    });
    let changes_settings = !p.group_context_ext_proposals().is_empty();
    if (removes_other || changes_settings) && !is_owner {
        return Err(RuleError::NotOwner);
    }
    Ok(())
}

impl MlsRules for RoomRules {
    type Error = RuleError;

    fn filter_proposals(
        &self,
        direction: CommitDirection,
        source: CommitSource,
        roster: &Roster,
        context: &GroupContext,
        proposals: ProposalBundle,
    ) -> Result<ProposalBundle, RuleError> {
        if direction == CommitDirection::Send {
            return Ok(proposals);
        }
        let expected = *self.expected.lock().map_err(|_| RuleError::Poisoned)?;
        if !expected.commit {
            return Err(RuleError::NotACommitEnvelope);
        }
        if !proposals.reinit_proposals().is_empty() {
            return Err(RuleError::Forbidden);
        }
        let committer = match &source {
            CommitSource::ExistingMember(m) => &m.signing_identity,
            CommitSource::NewMember(id) => id,
        };
        if committer.signature_key.as_bytes() != expected.sender {
            return Err(RuleError::CommitterMismatch);
        }
        match &source {
            CommitSource::NewMember(id) => self.check_entry(id, roster, &proposals)?,
            CommitSource::ExistingMember(m) => owner_only(m, roster, context, &proposals)?,
        }
        Ok(proposals)
    }

    fn commit_options(
        &self,
        _: &Roster,
        _: &GroupContext,
        _: &ProposalBundle,
    ) -> Result<CommitOptions, RuleError> {
        // The tree travels in the GroupInfo (no Welcome is ever used), which allows external
        // commits; a path in every commit, so every commit re-keys its sender.
        Ok(CommitOptions::new()
            .with_ratchet_tree_extension(true)
            .with_allow_external_commit(true)
            .with_path_required(true))
    }

    fn encryption_options(&self, _: &Roster, _: &GroupContext) -> Result<EncryptionOptions, RuleError> {
        // Commits and proposals from members are PrivateMessages; MLS padding is off because the
        // v2 content keeps v1's 64-byte padding.
        Ok(EncryptionOptions::new(true, PaddingMode::None))
    }
}
