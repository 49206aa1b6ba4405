//! Nickname bindings and bans as every node reads them.
//!
//! A binding is two keys in the nicks bucket, both made with a key-value `create` (so two
//! nodes binding at once cannot both win): `<room id>.n.<nickname hex>` holds the identity,
//! `<room id>.i.<identity hex>` the nickname (one nickname per identity per room). The second
//! `create` failing gives the first key back. Bans are `<room id>.<identity hex>` in the bans
//! bucket (`state.rs` writes them).

use std::collections::{HashMap, HashSet};

use async_nats::jetstream::kv::CreateErrorKind;
use bytes::Bytes;
use chatroom_crypto::PublicIdentity;

use super::listing;
use super::presence::{identity_hex, parse_identity};
use super::rooms::Node;
use super::setup::{BANS_BUCKET, NICKS_BUCKET};
use super::state::{passing_refusal, StateError, IN_PROCESS_BACKOFF, IN_PROCESS_RETRIES};
use crate::rooms::rules::Binding;

/// Most bindings or bans one room's load reads: far above any configured nickname cap.
const MAX_ROOM_KEYS: usize = 65_536;

/// Why a binding was not stored.
#[derive(Debug)]
pub(super) enum BindError {
    /// The nickname is bound to this other identity.
    Taken(PublicIdentity),
    /// The identity is bound to this other nickname.
    Bound(String),
    Storage(StateError),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::Taken(_) => write!(f, "the nickname is bound to another identity"),
            BindError::Bound(nick) => write!(f, "the identity is bound to the nickname {nick}"),
            BindError::Storage(e) => e.fmt(f),
        }
    }
}

fn text_hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn text_from_hex(hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> =
        (0..hex.len() / 2).map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn nick_key(token: &str, canonical: &str) -> String {
    format!("{token}.n.{}", text_hex(canonical))
}

fn identity_key(token: &str, identity: &PublicIdentity) -> String {
    format!("{token}.i.{}", identity_hex(identity))
}

impl Node {
    /// Every binding of the room.
    pub(super) async fn room_nicks(
        &self,
        token: &str,
    ) -> Result<HashMap<String, PublicIdentity>, StateError> {
        let filter = format!("$KV.{NICKS_BUCKET}.{token}.n.*");
        let mut nicks = HashMap::new();
        for message in Box::pin(listing::values(&self.nicks_stream, &filter, MAX_ROOM_KEYS)).await? {
            let nick = text_from_hex(listing::last_token(&message.subject));
            let identity = <[u8; 32]>::try_from(message.payload.as_ref()).ok().map(PublicIdentity);
            if let (Some(nick), Some(identity)) = (nick, identity) {
                nicks.insert(nick, identity);
            }
        }
        Ok(nicks)
    }

    /// Every banned identity of the room.
    pub(super) async fn room_bans(&self, token: &str) -> Result<HashSet<PublicIdentity>, StateError> {
        let filter = format!("$KV.{BANS_BUCKET}.{token}.*");
        let bans = Box::pin(listing::values(&self.bans_stream, &filter, MAX_ROOM_KEYS)).await?;
        Ok(bans.iter().filter_map(|m| parse_identity(listing::last_token(&m.subject))).collect())
    }

    pub(super) async fn is_banned(&self, token: &str, identity: &PublicIdentity) -> Result<bool, StateError> {
        let subject = format!("$KV.{BANS_BUCKET}.{token}.{}", identity_hex(identity));
        Ok(listing::leader_value(&self.bans_stream, &subject).await?.is_some())
    }

    /// The identity bound to a canonical nickname.
    pub(super) async fn nick_holder(
        &self,
        token: &str,
        canonical: &str,
    ) -> Result<Option<PublicIdentity>, StateError> {
        let subject = format!("$KV.{NICKS_BUCKET}.{}", nick_key(token, canonical));
        let value = listing::leader_value(&self.nicks_stream, &subject).await?;
        Ok(value.and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok()).map(PublicIdentity))
    }

    /// The canonical nickname an identity is bound to.
    pub(super) async fn identity_nick(
        &self,
        token: &str,
        identity: &PublicIdentity,
    ) -> Result<Option<String>, StateError> {
        let subject = format!("$KV.{NICKS_BUCKET}.{}", identity_key(token, identity));
        let value = listing::leader_value(&self.nicks_stream, &subject).await?;
        Ok(value.and_then(|v| String::from_utf8(v.to_vec()).ok()))
    }

    /// Stores a binding; binding a nickname to the identity that holds it already succeeds.
    pub(super) async fn bind(&self, token: &str, binding: &Binding) -> Result<(), BindError> {
        let nick_key = nick_key(token, &binding.nick);
        let made = match self.create_key(&nick_key, Bytes::copy_from_slice(&binding.identity.0)).await? {
            Some(revision) => Some(revision),
            None => match self.nick_holder(token, &binding.nick).await.map_err(BindError::Storage)? {
                Some(holder) if holder == binding.identity => None,
                Some(holder) => return Err(BindError::Taken(holder)),
                None => {
                    return Err(BindError::Storage(StateError::new(
                        "written",
                        &"a binding vanished while being made",
                    )))
                }
            },
        };
        let nick = Bytes::from(binding.nick.clone().into_bytes());
        if self.create_key(&identity_key(token, &binding.identity), nick).await?.is_some() {
            return Ok(());
        }
        match self.identity_nick(token, &binding.identity).await.map_err(BindError::Storage)? {
            Some(bound) if bound == binding.nick => Ok(()),
            Some(bound) => {
                if let Some(revision) = made {
                    // Give the nickname back; if this fails the nickname stays reserved for
                    // the identity, which cannot use it: a lost nickname, not a wrong one.
                    let _ = self.nicks.delete_expect_revision(&nick_key, Some(revision)).await;
                }
                Err(BindError::Bound(bound))
            }
            None => {
                Err(BindError::Storage(StateError::new("written", &"a binding vanished while being made")))
            }
        }
    }

    /// A key-value `create`: the new revision, or `None` if the key exists.
    async fn create_key(&self, key: &str, value: Bytes) -> Result<Option<u64>, BindError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.nicks.create(key, value.clone()).await {
                Ok(revision) => return Ok(Some(revision)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => return Ok(None),
                Err(e) if attempts < IN_PROCESS_RETRIES && passing_refusal(&e) => {
                    tokio::time::sleep(IN_PROCESS_BACKOFF).await;
                }
                Err(e) => return Err(BindError::Storage(StateError::new("written", &e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nickname_keys_are_one_hex_token_and_decode_back() {
        let key = nick_key("abcd", "ünïcode.nick");
        let last = key.rsplit('.').next().unwrap();
        assert!(last.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
        assert_eq!(text_from_hex(last).as_deref(), Some("ünïcode.nick"));
        assert_eq!(text_from_hex("zz"), None);
    }
}
