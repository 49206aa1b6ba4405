//! The join exchange. A member proves two things in its first transport message: that it holds
//! its identity key, by signing the Noise handshake hash (so a captured join is useless on any
//! other connection), and that it knows the room password, by showing the join secret derived
//! from it. Only `SignedJoin::admit`, the constant-time check of the join secret against a
//! stored verifier, produces a `VerifiedJoin`, and the relay's room state accepts members only
//! as `VerifiedJoin`s. Creating a room is no exception: the founder is admitted against the
//! verifier that storage reports it inserted (`SignedJoin::new_room_verifier`), so a backend
//! that mistakes an existing room for a new one still checks the password of the room it has.

use crate::codec::put_bytes8;
use crate::error::JoinError;
use crate::identity::{Identity, PublicIdentity};
use crate::kdf::{JoinSecret, JoinVerifier};
use crate::names::{Nick, RoomName};

/// A request to join (or create) a room, as carried by `ClientMessage::Join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The protocol version the join is for (1 or 2); it must be the connection's, which the
    /// handshake's prologue bound. It chooses the join verifier's label.
    pub version: u8,
    /// Create the room if it does not exist.
    pub create: bool,
    /// Which room.
    pub room: RoomName,
    /// The nickname to use.
    pub nick: Nick,
    /// The member's identity key.
    pub identity: PublicIdentity,
    /// The room's join secret.
    pub join_secret: JoinSecret,
    /// Ed25519 signature by `identity` over the join transcript.
    pub signature: [u8; 64],
    /// Replay retained envelopes with a sequence number above this (0: all retained) before
    /// any live delivery. Not signed: it only shapes what the relay sends back.
    pub history_after: u64,
}

fn signed_bytes(
    handshake_hash: &[u8; 32],
    create: bool,
    room: &RoomName,
    nick: &Nick,
    identity: &PublicIdentity,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + 32 + 1 + 66 + 32);
    m.extend_from_slice(b"chatroom/1 join");
    m.extend_from_slice(handshake_hash);
    m.push(u8::from(create));
    put_bytes8(&mut m, room.as_str().as_bytes());
    put_bytes8(&mut m, nick.as_str().as_bytes());
    m.extend_from_slice(&identity.0);
    m
}

impl JoinRequest {
    /// Builds and signs a join request for the session with `handshake_hash`.
    pub fn new(
        identity: &Identity,
        handshake_hash: &[u8; 32],
        room: RoomName,
        nick: Nick,
        join_secret: JoinSecret,
        create: bool,
        history_after: u64,
    ) -> Self {
        let public = identity.public();
        let signature = identity.sign(&signed_bytes(handshake_hash, create, &room, &nick, &public));
        Self { version: 1, create, room, nick, identity: public, join_secret, signature, history_after }
    }

    /// The same request for protocol version 2 (the signature covers the handshake hash,
    /// which the version-2 prologue already binds).
    pub fn for_version_2(mut self) -> Self {
        self.version = 2;
        self
    }

    /// Checks the identity signature against this session's handshake hash.
    pub fn verify(self, handshake_hash: &[u8; 32]) -> Result<SignedJoin, JoinError> {
        let msg = signed_bytes(handshake_hash, self.create, &self.room, &self.nick, &self.identity);
        if self.identity.verify(&msg, &self.signature) {
            Ok(SignedJoin { request: self })
        } else {
            Err(JoinError::BadSignature)
        }
    }
}

/// A join whose identity signature verified; the room password is not yet checked.
#[derive(Debug)]
pub struct SignedJoin {
    request: JoinRequest,
}

impl SignedJoin {
    /// The request.
    pub fn request(&self) -> &JoinRequest {
        &self.request
    }

    /// Admits the member to an existing room if the join secret matches its verifier
    /// (compared in constant time).
    pub fn admit(self, verifier: &JoinVerifier) -> Result<VerifiedJoin, JoinError> {
        if verifier.ct_equals(&self.new_room_verifier()) {
            Ok(self.into_verified())
        } else {
            Err(JoinError::WrongSecret)
        }
    }

    /// The verifier to store for a room this join creates. It admits nobody by itself: the
    /// founder becomes a member through `admit` against the verifier storage holds once it
    /// reported inserting the new room, so a room that existed already asks for its own
    /// password.
    pub fn new_room_verifier(&self) -> JoinVerifier {
        match self.request.version {
            2 => crate::kdf_v2::join_verifier_v2(&self.request.join_secret),
            _ => self.request.join_secret.verifier(),
        }
    }

    fn into_verified(self) -> VerifiedJoin {
        let JoinRequest { room, nick, identity, version, .. } = self.request;
        VerifiedJoin { room, nick, identity, version }
    }
}

/// Proof that a member passed both join checks. No public constructor exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJoin {
    room: RoomName,
    nick: Nick,
    identity: PublicIdentity,
    version: u8,
}

impl VerifiedJoin {
    /// The protocol version the member joined with (1 or 2).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The room joined.
    pub fn room(&self) -> &RoomName {
        &self.room
    }
    /// The member's nickname.
    pub fn nick(&self) -> &Nick {
        &self.nick
    }
    /// The member's identity.
    pub fn identity(&self) -> &PublicIdentity {
        &self.identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::split_master;

    fn request(hh: &[u8; 32], secret: JoinSecret) -> (Identity, JoinRequest) {
        let id = Identity::from_seed(&[3; 32]);
        let req = JoinRequest::new(
            &id,
            hh,
            RoomName::new("general").unwrap(),
            Nick::new("alice").unwrap(),
            secret,
            false,
            0,
        );
        (id, req)
    }

    #[test]
    fn join_with_right_secret_is_admitted() {
        let keys = split_master(&[1; 32]);
        let (id, req) = request(&[5; 32], keys.join_secret.clone());
        let verified = req.verify(&[5; 32]).unwrap().admit(&keys.join_secret.verifier()).unwrap();
        assert_eq!(verified.identity(), &id.public());
        assert_eq!(verified.nick().as_str(), "alice");
    }

    #[test]
    fn wrong_secret_is_refused() {
        let keys = split_master(&[1; 32]);
        let other = split_master(&[2; 32]);
        let (_, req) = request(&[5; 32], other.join_secret.clone());
        assert_eq!(
            req.verify(&[5; 32]).unwrap().admit(&keys.join_secret.verifier()).err(),
            Some(JoinError::WrongSecret)
        );
    }

    #[test]
    fn join_replayed_on_another_session_is_refused() {
        let keys = split_master(&[1; 32]);
        let (_, req) = request(&[5; 32], keys.join_secret.clone());
        assert_eq!(req.verify(&[6; 32]).err(), Some(JoinError::BadSignature));
    }

    #[test]
    fn altered_nick_or_create_flag_is_refused() {
        let keys = split_master(&[1; 32]);
        let (_, mut req) = request(&[5; 32], keys.join_secret.clone());
        req.nick = Nick::new("mallory").unwrap();
        assert_eq!(req.verify(&[5; 32]).err(), Some(JoinError::BadSignature));
        let (_, mut req) = request(&[5; 32], keys.join_secret.clone());
        req.create = true;
        assert_eq!(req.verify(&[5; 32]).err(), Some(JoinError::BadSignature));
    }

    #[test]
    fn a_new_rooms_verifier_admits_its_founder_and_an_existing_room_asks_its_own_password() {
        let keys = split_master(&[1; 32]);
        let (_, req) = request(&[5; 32], keys.join_secret.clone());
        let signed = req.verify(&[5; 32]).unwrap();
        let verifier = signed.new_room_verifier();
        assert!(verifier.matches(&keys.join_secret));
        assert!(signed.admit(&verifier).is_ok(), "the founder is admitted by the verifier it stored");

        // A join asking to create a room that exists already is checked against that room's
        // verifier, like any other join.
        let existing = split_master(&[2; 32]).join_secret.verifier();
        let (id, req) = request(&[5; 32], keys.join_secret.clone());
        let creating = JoinRequest::new(&id, &[5; 32], req.room, req.nick, keys.join_secret.clone(), true, 0);
        let signed = creating.verify(&[5; 32]).unwrap();
        assert!(signed.request().create);
        assert_eq!(signed.admit(&existing).err(), Some(JoinError::WrongSecret));
    }
}
