//! openmls 0.9 with the RustCrypto provider and its in-memory storage.

use crate::common::{
    err, note, report, timed, Res, Samples, PSK_ID, PSK_SECRET, REPS, SIZES, WRONG_PSK_SECRET,
};
use ed25519_dalek::Signer as _;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls::schedule::{ExternalPsk, PreSharedKeyId, Psk};
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;
use openmls_traits::OpenMlsProvider;

const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;
const IMP: &str = "openmls";

/// chatroom's Ed25519 identity as the MLS signer: openmls asks the application to sign, so the
/// private key stays in our own type.
struct Identity(ed25519_dalek::SigningKey);

impl Signer for Identity {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_bytes().to_vec())
    }
    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

struct Member {
    provider: OpenMlsRustCrypto,
    id: Identity,
    group: Option<MlsGroup>,
}

impl Member {
    fn new(psk: &[u8; 32]) -> Res<Self> {
        let id = Identity(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng));
        let provider = OpenMlsRustCrypto::default();
        psk_id(&provider)?.store(&provider, psk).map_err(err("store psk"))?;
        Ok(Member { provider, id, group: None })
    }

    fn credential(&self) -> CredentialWithKey {
        let public = self.id.0.verifying_key().to_bytes().to_vec();
        CredentialWithKey {
            credential: BasicCredential::new(public.clone()).into(),
            signature_key: public.into(),
        }
    }

    fn group(&mut self) -> Res<&mut MlsGroup> {
        self.group.as_mut().ok_or_else(|| "not in a group".to_string())
    }

    fn group_info(&mut self) -> Res<Vec<u8>> {
        let Member { provider, id, group, .. } = self;
        let g = group.as_ref().ok_or("not in a group")?;
        let gi = g.export_group_info(provider.crypto(), id, true).map_err(err("group info"))?;
        gi.tls_serialize_detached().map_err(err("encode group info"))
    }

    /// Processes a commit from the room log; refuses an external commit without the room PSK.
    fn process(&mut self, bytes: &[u8]) -> Res<()> {
        let Member { provider, group, .. } = self;
        let g = group.as_mut().ok_or("not in a group")?;
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).map_err(err("decode"))?;
        let msg = msg.try_into_protocol_message().map_err(err("not a protocol message"))?;
        let processed = g.process_message(provider, msg).map_err(err("process"))?;
        let external = matches!(processed.sender(), Sender::NewMemberCommit);
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                if external && staged.psk_proposals().next().is_none() {
                    return Err("external commit without the room PSK".into());
                }
                g.merge_staged_commit(provider, *staged).map_err(err("merge"))
            }
            _ => Err("not a commit".into()),
        }
    }
}

fn psk_id(provider: &OpenMlsRustCrypto) -> Res<PreSharedKeyId> {
    let psk = Psk::External(ExternalPsk::new(PSK_ID.to_vec()));
    PreSharedKeyId::new(CS, provider.rand(), psk).map_err(err("psk id"))
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build()
}

fn create(m: &mut Member) -> Res<()> {
    let cfg = MlsGroupCreateConfig::builder()
        .ciphersuite(CS)
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build();
    let g = MlsGroup::new(&m.provider, &m.id, &cfg, m.credential()).map_err(err("create"))?;
    m.group = Some(g);
    Ok(())
}

/// A newcomer enters from the GroupInfo alone, by an external commit carrying the PSK.
fn external_join(joiner: &mut Member, group_info: &[u8]) -> Res<Vec<u8>> {
    external_join_psk(joiner, group_info, true)
}

fn external_join_psk(joiner: &mut Member, group_info: &[u8], with_psk: bool) -> Res<Vec<u8>> {
    let msg = MlsMessageIn::tls_deserialize_exact(group_info).map_err(err("decode gi"))?;
    let MlsMessageBodyIn::GroupInfo(vgi) = msg.extract() else {
        return Err("not a group info".into());
    };
    let psks = if with_psk { vec![PreSharedKeyProposal::new(psk_id(&joiner.provider)?)] } else { vec![] };
    let (g, bundle) = MlsGroup::external_commit_builder()
        .with_config(join_config())
        .build_group(&joiner.provider, vgi, joiner.credential())
        .map_err(err("external build_group"))?
        .add_psk_proposals(psks)
        .load_psks(joiner.provider.storage())
        .map_err(err("load psks"))?
        .build(joiner.provider.rand(), joiner.provider.crypto(), &joiner.id, |_| true)
        .map_err(err("external build"))?
        .finalize(&joiner.provider)
        .map_err(err("external finalize"))?;
    joiner.group = Some(g);
    bundle.commit().tls_serialize_detached().map_err(err("encode commit"))
}

/// The committer publishes a fresh GroupInfo after its commit, as protocol v2 requires (mls-rs
/// builds it inside the commit when external commits are allowed): counted in the commit's cost.
fn with_group_info(m: &mut Member, commit: Vec<u8>) -> Res<Vec<u8>> {
    let gi = m.group_info()?;
    std::hint::black_box(gi.len());
    Ok(commit)
}

fn self_update(m: &mut Member) -> Res<Vec<u8>> {
    let Member { provider, id, group } = m;
    let g = group.as_mut().ok_or("not in a group")?;
    let bundle = g.self_update(provider, id, LeafNodeParameters::default()).map_err(err("update"))?;
    g.merge_pending_commit(provider).map_err(err("merge own"))?;
    let c = bundle.commit().tls_serialize_detached().map_err(err("encode"))?;
    with_group_info(m, c)
}

fn add(m: &mut Member, kp: &KeyPackage) -> Res<(Vec<u8>, usize)> {
    let Member { provider, id, group } = m;
    let g = group.as_mut().ok_or("not in a group")?;
    let (commit, welcome, _) = g.add_members(provider, id, std::slice::from_ref(kp)).map_err(err("add"))?;
    g.merge_pending_commit(provider).map_err(err("merge own"))?;
    let welcome_len = welcome.tls_serialize_detached().map_err(err("encode"))?.len();
    let c = commit.tls_serialize_detached().map_err(err("encode"))?;
    Ok((with_group_info(m, c)?, welcome_len))
}

fn remove(m: &mut Member, key: &[u8]) -> Res<Vec<u8>> {
    let Member { provider, id, group } = m;
    let g = group.as_mut().ok_or("not in a group")?;
    let leaf = g.members().find(|x| x.signature_key == key).ok_or("no such member")?.index;
    let (commit, _, _) = g.remove_members(provider, id, &[leaf]).map_err(err("remove"))?;
    g.merge_pending_commit(provider).map_err(err("merge own"))?;
    let c = commit.tls_serialize_detached().map_err(err("encode"))?;
    with_group_info(m, c)
}

fn same_epoch(a: &mut Member, b: &mut Member) -> Res<()> {
    let ea = a.group()?.epoch_authenticator().as_slice().to_vec();
    if ea != b.group()?.epoch_authenticator().as_slice() {
        return Err("members disagree on the epoch authenticator".into());
    }
    Ok(())
}

/// Grows the group by one external join: a (the creator) and b (a member) process it.
fn grow(a: &mut Member, b: Option<&mut Member>) -> Res<Member> {
    let gi = a.group_info()?;
    let mut joiner = Member::new(&PSK_SECRET)?;
    let commit = external_join(&mut joiner, &gi)?;
    a.process(&commit)?;
    if let Some(b) = b {
        b.process(&commit)?;
    }
    Ok(joiner)
}

/// Runs the whole measurement: grows the group by external joins to each size, then measures.
pub fn run() -> Res<()> {
    let mut a = Member::new(&PSK_SECRET)?;
    create(&mut a)?;
    let mut b = grow(&mut a, None)?;
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

fn measure(a: &mut Member, b: &mut Member, size: usize) -> Res<()> {
    let gi = a.group_info()?;
    note(IMP, size, "group_info_bytes", gi.len());
    wrong_password_refused(a, &gi)?;
    let (mut ext, mut upd, mut addm, mut rem): (Samples, Samples, Samples, Samples) = Default::default();
    for _ in 0..REPS {
        let gi = a.group_info()?;
        let mut joiner = Member::new(&PSK_SECRET)?;
        let (c, t_create) = timed(|| external_join(&mut joiner, &gi))?;
        let ((), t_proc) = timed(|| a.process(&c))?;
        b.process(&c)?;
        Samples::push(&mut ext, t_create, t_proc, c.len());
        remove_timed(a, b, &joiner.credential(), &mut rem)?;

        let newcomer = Member::new(&PSK_SECRET)?;
        let kp = KeyPackage::builder()
            .build(CS, &newcomer.provider, &newcomer.id, newcomer.credential())
            .map_err(err("key package"))?;
        let ((c, welcome), t_create) = timed(|| add(a, kp.key_package()))?;
        let ((), t_proc) = timed(|| b.process(&c))?;
        Samples::push(&mut addm, t_create, t_proc, c.len() + welcome);
        remove_timed(a, b, &newcomer.credential(), &mut rem)?;

        let (c, t_create) = timed(|| self_update(a))?;
        let ((), t_proc) = timed(|| b.process(&c))?;
        Samples::push(&mut upd, t_create, t_proc, c.len());
        same_epoch(a, b)?;
    }
    report(IMP, size, "external_commit_psk", &ext);
    report(IMP, size, "add(commit+welcome)", &addm);
    report(IMP, size, "remove", &rem);
    report(IMP, size, "update", &upd);
    Ok(())
}

fn remove_timed(a: &mut Member, b: &mut Member, who: &CredentialWithKey, s: &mut Samples) -> Res<()> {
    let key = who.signature_key.as_slice().to_vec();
    let (c, t_create) = timed(|| remove(a, &key))?;
    let ((), t_proc) = timed(|| b.process(&c))?;
    s.push(t_create, t_proc, c.len());
    Ok(())
}

/// A joiner holding the wrong password, or leaving the PSK out, builds an external commit that
/// no member accepts.
fn wrong_password_refused(a: &mut Member, gi: &[u8]) -> Res<()> {
    let mut joiner = Member::new(&WRONG_PSK_SECRET)?;
    let c = external_join(&mut joiner, gi)?;
    if a.process(&c).is_ok() {
        return Err("a wrong PSK was accepted".into());
    }
    let c = external_join_psk(&mut Member::new(&PSK_SECRET)?, gi, false)?;
    match a.process(&c) {
        Err(_) => Ok(()),
        Ok(()) => Err("an external commit without the PSK was accepted".into()),
    }
}
