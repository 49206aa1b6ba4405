//! AWS mls-rs with the RustCrypto provider and its in-memory storage.

use crate::common::{
    err, note, report, timed, Res, Samples, PSK_ID, PSK_SECRET, REPS, SIZES, WRONG_PSK_SECRET,
};
use mls_rs::client_builder::MlsConfig;
use mls_rs::crypto::{SignaturePublicKey, SignatureSecretKey};
use mls_rs::error::MlsError;
use mls_rs::group::ReceivedMessage;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rules::{
    CommitDirection, CommitOptions, CommitSource, DefaultMlsRules, EncryptionOptions, ProposalBundle,
};
use mls_rs::psk::{ExternalPskId, PreSharedKey};
use mls_rs::storage_provider::in_memory::InMemoryPreSharedKeyStorage;
use mls_rs::{CipherSuite, Client, ExtensionList, Group, MlsMessage, MlsRules};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;

const CS: CipherSuite = CipherSuite::CURVE25519_CHACHA;
const IMP: &str = "mls-rs";

/// The rule protocol v2 needs: an external commit must carry a PSK (the room's; a wrong one
/// then fails the key schedule). Everything else as mls-rs's defaults, with commits encrypted.
#[derive(Debug, Clone, Copy)]
struct RoomRules;

#[derive(Debug)]
struct NoRoomPsk;
impl std::fmt::Display for NoRoomPsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("external commit without the room PSK")
    }
}
impl std::error::Error for NoRoomPsk {}
impl mls_rs::error::IntoAnyError for NoRoomPsk {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

fn defaults() -> DefaultMlsRules {
    DefaultMlsRules::new()
        .with_commit_options(
            CommitOptions::new().with_ratchet_tree_extension(true).with_allow_external_commit(true),
        )
        .with_encryption_options(EncryptionOptions::new(true, Default::default()))
}

impl MlsRules for RoomRules {
    type Error = NoRoomPsk;

    fn filter_proposals(
        &self,
        direction: CommitDirection,
        source: CommitSource,
        _: &mls_rs::group::Roster,
        _: &mls_rs::group::GroupContext,
        proposals: ProposalBundle,
    ) -> Result<ProposalBundle, NoRoomPsk> {
        let external = matches!(source, CommitSource::NewMember(_));
        if direction == CommitDirection::Receive && external && proposals.psk_proposals().is_empty() {
            return Err(NoRoomPsk);
        }
        Ok(proposals)
    }

    fn commit_options(
        &self,
        r: &mls_rs::group::Roster,
        c: &mls_rs::group::GroupContext,
        p: &ProposalBundle,
    ) -> Result<CommitOptions, NoRoomPsk> {
        let Ok(o) = defaults().commit_options(r, c, p);
        Ok(o)
    }

    fn encryption_options(
        &self,
        r: &mls_rs::group::Roster,
        c: &mls_rs::group::GroupContext,
    ) -> Result<EncryptionOptions, NoRoomPsk> {
        let Ok(o) = defaults().encryption_options(r, c);
        Ok(o)
    }
}

struct Member<C: MlsConfig> {
    client: Client<C>,
    public: Vec<u8>,
    group: Option<Group<C>>,
}

/// chatroom's Ed25519 identity as the credential: mls-rs takes the key pair bytes and signs
/// itself (its crypto provider holds a copy of the private key).
fn member(psk: &[u8; 32]) -> Res<Member<impl MlsConfig>> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let public = key.verifying_key().to_bytes().to_vec();
    let mut psks = InMemoryPreSharedKeyStorage::default();
    psks.insert(ExternalPskId::new(PSK_ID.to_vec()), PreSharedKey::new(psk.to_vec()));
    let identity = SigningIdentity::new(
        BasicCredential::new(public.clone()).into_credential(),
        SignaturePublicKey::new(public.clone()),
    );
    let client = Client::builder()
        .identity_provider(BasicIdentityProvider)
        .crypto_provider(RustCryptoProvider::default())
        .psk_store(psks)
        .mls_rules(RoomRules)
        .signing_identity(identity, SignatureSecretKey::new(key.to_keypair_bytes().to_vec()), CS)
        .build();
    Ok(Member { client, public, group: None })
}

impl<C: MlsConfig> Member<C> {
    fn group(&mut self) -> Res<&mut Group<C>> {
        self.group.as_mut().ok_or_else(|| "not in a group".to_string())
    }

    fn group_info(&mut self) -> Res<Vec<u8>> {
        let gi = self.group()?.group_info_message_allowing_ext_commit(true).map_err(err("gi"))?;
        gi.to_bytes().map_err(err("encode gi"))
    }

    fn process(&mut self, bytes: &[u8]) -> Res<()> {
        let msg = MlsMessage::from_bytes(bytes).map_err(err("decode"))?;
        match self.group()?.process_incoming_message(msg).map_err(err("process"))? {
            ReceivedMessage::Commit(_) => Ok(()),
            _ => Err("not a commit".into()),
        }
    }

    /// A newcomer enters from the GroupInfo alone, by an external commit carrying the PSK.
    fn external_join(&mut self, group_info: &[u8]) -> Res<Vec<u8>> {
        self.external_join_psk(group_info, true)
    }

    fn external_join_psk(&mut self, group_info: &[u8], with_psk: bool) -> Res<Vec<u8>> {
        let gi = MlsMessage::from_bytes(group_info).map_err(err("decode gi"))?;
        let mut builder = self.client.external_commit_builder().map_err(err("builder"))?;
        if with_psk {
            builder = builder.with_external_psk(ExternalPskId::new(PSK_ID.to_vec()));
        }
        let (g, commit) = builder.build(gi).map_err(err("external commit"))?;
        self.group = Some(g);
        commit.to_bytes().map_err(err("encode"))
    }

    fn commit(
        &mut self,
        f: impl FnOnce(&mut Group<C>) -> Result<mls_rs::group::CommitOutput, MlsError>,
    ) -> Res<(Vec<u8>, usize)> {
        let g = self.group()?;
        let out = f(g).map_err(err("commit"))?;
        g.apply_pending_commit().map_err(err("apply own"))?;
        let mut welcome = 0;
        for w in &out.welcome_messages {
            welcome += w.to_bytes().map_err(err("encode"))?.len();
        }
        // The fresh GroupInfo protocol v2 publishes after each commit (built by commit()).
        let gi = out.external_commit_group_info.as_ref().ok_or("no group info")?;
        std::hint::black_box(gi.to_bytes().map_err(err("encode gi"))?.len());
        Ok((out.commit_message.to_bytes().map_err(err("encode"))?, welcome))
    }

    fn remove(&mut self, key: &[u8]) -> Res<Vec<u8>> {
        let idx = self
            .group()?
            .roster()
            .members()
            .into_iter()
            .find(|m| m.signing_identity.signature_key.as_ref() == key)
            .ok_or("no such member")?
            .index;
        Ok(self.commit(|g| g.commit_builder().remove_member(idx)?.build())?.0)
    }

    fn epoch_authenticator(&mut self) -> Res<Vec<u8>> {
        Ok(self.group()?.epoch_authenticator().map_err(err("auth"))?.to_vec())
    }
}

fn grow<C: MlsConfig, D: MlsConfig>(a: &mut Member<C>, b: Option<&mut Member<D>>) -> Res<()> {
    let gi = a.group_info()?;
    let mut joiner = member(&PSK_SECRET)?;
    let commit = joiner.external_join(&gi)?;
    a.process(&commit)?;
    if let Some(b) = b {
        b.process(&commit)?;
    }
    Ok(())
}

/// Runs the whole measurement: grows the group by external joins to each size, then measures.
pub fn run() -> Res<()> {
    let mut a = member(&PSK_SECRET)?;
    a.group =
        Some(a.client.create_group(ExtensionList::new(), ExtensionList::new(), None).map_err(err("create"))?);
    let mut b = member(&PSK_SECRET)?;
    let gi = a.group_info()?;
    let c = b.external_join(&gi)?;
    a.process(&c)?;
    let mut members = 2;
    let started = std::time::Instant::now();
    for size in SIZES {
        while members < size {
            grow(&mut a, Some(&mut b))?;
            members += 1;
        }
        note(IMP, size, "grow_total_s", format!("{:.1}", started.elapsed().as_secs_f64()));
        measure(&mut a, &mut b, size)?;
    }
    Ok(())
}

fn measure<C: MlsConfig, D: MlsConfig>(a: &mut Member<C>, b: &mut Member<D>, size: usize) -> Res<()> {
    let gi = a.group_info()?;
    note(IMP, size, "group_info_bytes", gi.len());
    wrong_password_refused(a, &gi)?;
    let (mut ext, mut upd, mut addm, mut rem): (Samples, Samples, Samples, Samples) = Default::default();
    for _ in 0..REPS {
        let gi = a.group_info()?;
        let mut joiner = member(&PSK_SECRET)?;
        let (c, t_create) = timed(|| joiner.external_join(&gi))?;
        let ((), t_proc) = timed(|| a.process(&c))?;
        b.process(&c)?;
        ext.push(t_create, t_proc, c.len());
        remove_timed(a, b, &joiner.public, &mut rem)?;

        let newcomer = member(&PSK_SECRET)?;
        let kp = newcomer
            .client
            .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)
            .map_err(err("key package"))?;
        let ((c, welcome), t_create) = timed(|| a.commit(|g| g.commit_builder().add_member(kp)?.build()))?;
        let ((), t_proc) = timed(|| b.process(&c))?;
        addm.push(t_create, t_proc, c.len() + welcome);
        remove_timed(a, b, &newcomer.public, &mut rem)?;

        let ((c, _), t_create) = timed(|| a.commit(|g| g.commit_builder().build()))?;
        let ((), t_proc) = timed(|| b.process(&c))?;
        upd.push(t_create, t_proc, c.len());
        if a.epoch_authenticator()? != b.epoch_authenticator()? {
            return Err("members disagree on the epoch authenticator".into());
        }
    }
    report(IMP, size, "external_commit_psk", &ext);
    report(IMP, size, "add(commit+welcome)", &addm);
    report(IMP, size, "remove", &rem);
    report(IMP, size, "update", &upd);
    Ok(())
}

fn remove_timed<C: MlsConfig, D: MlsConfig>(
    a: &mut Member<C>,
    b: &mut Member<D>,
    key: &[u8],
    s: &mut Samples,
) -> Res<()> {
    let (c, t_create) = timed(|| a.remove(key))?;
    let ((), t_proc) = timed(|| b.process(&c))?;
    s.push(t_create, t_proc, c.len());
    Ok(())
}

/// A joiner holding the wrong password, or leaving the PSK out, builds an external commit that
/// no member accepts.
fn wrong_password_refused<C: MlsConfig>(a: &mut Member<C>, gi: &[u8]) -> Res<()> {
    let mut joiner = member(&WRONG_PSK_SECRET)?;
    let c = joiner.external_join(gi)?;
    if a.process(&c).is_ok() {
        return Err("a wrong PSK was accepted".into());
    }
    let c = member(&PSK_SECRET)?.external_join_psk(gi, false)?;
    match a.process(&c) {
        Err(_) => Ok(()),
        Ok(()) => Err("an external commit without the PSK was accepted".into()),
    }
}
