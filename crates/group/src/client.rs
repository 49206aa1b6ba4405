//! An mls-rs client for one room member: our Ed25519 identity as the basic credential and
//! signing key, the room's PSK, the room's rules and the one-blob storage.

use std::sync::{Arc, Mutex};

use chatroom_crypto::{Identity, RoomPsk};
use mls_rs::client_builder::{
    BaseConfig, WithCryptoProvider, WithGroupStateStorage, WithIdentityProvider, WithMlsRules, WithPskStore,
};
use mls_rs::crypto::{SignaturePublicKey, SignatureSecretKey};
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::identity::SigningIdentity;
use mls_rs::psk::PreSharedKey;
use mls_rs::storage_provider::in_memory::InMemoryPreSharedKeyStorage;
use mls_rs::Client;
use mls_rs_crypto_rustcrypto::RustCryptoProvider;
use zeroize::Zeroizing;

use crate::ids::{RoomRef, CIPHER_SUITE};
use crate::rules::{Expected, RoomRules};
use crate::storage::BlobStorage;

/// The concrete mls-rs configuration of a room member.
pub(crate) type RoomConfig = WithGroupStateStorage<
    BlobStorage,
    WithPskStore<
        InMemoryPreSharedKeyStorage,
        WithMlsRules<
            RoomRules,
            WithCryptoProvider<RustCryptoProvider, WithIdentityProvider<BasicIdentityProvider, BaseConfig>>,
        >,
    >,
>;

/// The handles a room keeps beside its mls-rs client.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    pub(crate) storage: BlobStorage,
    pub(crate) expected: Arc<Mutex<Expected>>,
}

/// Builds the member's client. mls-rs takes the private key as bytes (`SignatureSecretKey`,
/// seed || public, zeroized on drop), so its copy lives exactly as long as the client.
pub(crate) fn build(
    identity: &Identity,
    room: &RoomRef,
    psk: &RoomPsk,
    storage: BlobStorage,
) -> (Client<RoomConfig>, Handles) {
    let public = identity.public().0.to_vec();
    let mut keypair = Zeroizing::new(Vec::with_capacity(64));
    keypair.extend_from_slice(identity.seed().as_ref());
    keypair.extend_from_slice(&public);
    let signer = SignatureSecretKey::new(keypair.to_vec());
    let signing_identity = SigningIdentity::new(
        BasicCredential::new(public.clone()).into_credential(),
        SignaturePublicKey::new(public),
    );
    let mut psks = InMemoryPreSharedKeyStorage::default();
    psks.insert(room.psk_id(), PreSharedKey::new(psk.as_bytes().to_vec()));
    let expected = Arc::new(Mutex::new(Expected::default()));
    let rules = RoomRules { psk_id: room.psk_id(), expected: expected.clone() };
    let client = Client::builder()
        .identity_provider(BasicIdentityProvider)
        // Every leaf declares the room extension, which MLS requires before a group context
        // may carry it.
        .extension_type(crate::settings::ROOM_EXTENSION)
        .crypto_provider(RustCryptoProvider::with_enabled_cipher_suites(vec![CIPHER_SUITE]))
        .mls_rules(rules)
        .psk_store(psks)
        .group_state_storage(storage.clone())
        .signing_identity(signing_identity, signer, CIPHER_SUITE)
        .build();
    (client, Handles { storage, expected })
}
