//! Loading rooms on a node, joining, creating and leaving them.
//!
//! A join reads what the other nodes may have stored since the room was loaded here (the
//! room's record with its verifier and owner, a ban of the joiner, the holders of its nickname
//! and of its identity, who is present) and tells the rules before they check it; a new nickname binding is then made with a key-value `create`,
//! which settles a race between two nodes. Creation is one key-value `create` of the room's
//! record: of two founders on two nodes one creates the room, the other joins it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chatroom_crypto::{
    ErrorCode, JoinVerifier, Member, PresenceEvent, PublicIdentity, RoomName, VerifiedJoin,
};
use tracing::info;

use super::fanout::RoomFeed;
use super::log::{RoomLog, Tip};
use super::nicks::BindError;
use super::presence::{Control, PresenceValue};
use super::room::{follow, write, Connected, Held, NodeRoom};
use super::rooms::{unavailable, ClusterMember, Node};
use super::state::{room_token, Created};
use crate::rooms::rules::{Binding, Occupancy, Restored, RoomRules};
use crate::rooms::{Admission, ConnectionId, CreateGate, JoinArgs, JoinedInfo, Link, Refusal};

/// A join attempt: admitted, or to try again (the room appeared or went between two steps).
type Attempt = Result<Result<Admission<ClusterMember>, JoinArgs>, Refusal>;

/// A room record: its join verifier, then its owner.
pub(super) fn record(verifier: &JoinVerifier, owner: &PublicIdentity) -> Bytes {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&verifier.0);
    bytes.extend_from_slice(&owner.0);
    Bytes::from(bytes)
}

pub(super) fn parse_record(bytes: &[u8]) -> Option<(JoinVerifier, PublicIdentity)> {
    let (verifier, owner) = bytes.split_at_checked(32)?;
    Some((JoinVerifier(verifier.try_into().ok()?), PublicIdentity(owner.try_into().ok()?)))
}

/// What the cluster holds about a joiner, read before the rules check it.
struct Shared {
    /// The room's verifier and owner; `None` when the room was deleted.
    record: Option<(JoinVerifier, PublicIdentity)>,
    banned: bool,
    nick_holder: Option<PublicIdentity>,
    identity_nick: Option<String>,
    present: Vec<(PublicIdentity, PresenceValue)>,
}

impl Node {
    pub(super) async fn join_room(
        self: &Arc<Self>,
        mut args: JoinArgs,
        may_create: CreateGate<'_>,
    ) -> Result<Admission<ClusterMember>, Refusal> {
        let name = args.join.request().room.clone();
        for _ in 0..8 {
            let attempt = match self.lookup(&name).await? {
                Some(room) => {
                    let result = self.join_existing(&room, args).await;
                    // A refused join must not leave the room loaded here.
                    self.evict_if_idle(&room);
                    result?
                }
                None if args.join.request().create => self.create(args, may_create).await?,
                None => {
                    return Err(Refusal::new(
                        ErrorCode::NoSuchRoom,
                        format!("there is no room {name} on this relay; check the name, or create it"),
                    ))
                }
            };
            match attempt {
                Ok(admission) => return Ok(admission),
                Err(again) => args = again,
            }
        }
        Err(Refusal::new(ErrorCode::Internal, "the room is busy; try again"))
    }

    async fn lookup(self: &Arc<Self>, name: &RoomName) -> Result<Option<Arc<NodeRoom>>, Refusal> {
        if let Some(room) = self.map().get(name) {
            return Ok(Some(room.clone()));
        }
        self.loading(name, self.load(name)).await
    }

    /// The room loaded here, or read from the cluster; inside `loading` for `name`.
    async fn load(self: &Arc<Self>, name: &RoomName) -> Result<Option<Arc<NodeRoom>>, Refusal> {
        if let Some(room) = self.map().get(name) {
            return Ok(Some(room.clone()));
        }
        let record = self.state.room(name.as_str()).await.map_err(|e| unavailable("reading a room", &e))?;
        let Some(record) = record else { return Ok(None) };
        let room = self.open_room(name, &record).await?;
        self.map().insert(name.clone(), room.clone());
        Ok(Some(room))
    }

    /// Subscribes to the room's feed and control subject, then reads where its log ends, its
    /// retained history, bindings and bans: nothing stored after the read is missed.
    async fn open_room(self: &Arc<Self>, name: &RoomName, record: &[u8]) -> Result<Arc<NodeRoom>, Refusal> {
        let fail = |e: &dyn std::fmt::Display| unavailable("loading a room from the cluster", e);
        let (verifier, owner) = parse_record(record).ok_or_else(|| fail(&"a room record is malformed"))?;
        let token = room_token(name.as_str());
        let control = self.client.subscribe(format!("ctl.{token}")).await.map_err(|e| fail(&e))?;
        let mut feed = RoomFeed::subscribe(&self.client, self.log_stream.clone(), &token, Tip::default())
            .await
            .map_err(|e| fail(&e))?;
        self.client.flush().await.map_err(|e| fail(&e))?;
        let subject = format!("chat.{token}");
        let log = RoomLog::new(self.js.clone(), self.log_stream.clone(), subject.clone());
        let tip = log.tip().await.map_err(|e| fail(&e))?;
        let history = super::history::read(&self.log_stream, &subject, tip, self.limits.history)
            .await
            .map_err(|e| fail(&e))?;
        let mut counters: HashMap<PublicIdentity, u64> = HashMap::new();
        for sent in &history {
            if let Some(sender) = sent.sender {
                let highest = counters.entry(sender).or_insert(sent.counter);
                *highest = (*highest).max(sent.counter);
            }
        }
        let group_info_seq = self.group_info_seq(&token).await.map_err(|e| fail(&e))?;
        let restored = Restored {
            latest_seq: tip.chat_seq,
            counters,
            nicks: self.room_nicks(&token).await.map_err(|e| fail(&e))?,
            bans: self.room_bans(&token).await.map_err(|e| fail(&e))?,
        };
        let rules = RoomRules::restored(verifier, owner, restored, self.limits.rules);
        feed.start_after(tip);
        let (room, jobs) =
            NodeRoom::new(name.clone(), token, rules, tip, history, self.limits.history, group_info_seq);
        let feed = feed.with_hints(room.overdue.subscribe());
        let weak = Arc::downgrade(&room);
        room.keep(tokio::spawn(follow(weak.clone(), self.client.clone(), feed)).abort_handle());
        room.keep(
            tokio::spawn(super::presence::control(weak.clone(), Arc::downgrade(self), control))
                .abort_handle(),
        );
        room.keep(tokio::spawn(write(weak, Arc::downgrade(self), log, tip, jobs)).abort_handle());
        Ok(room)
    }

    /// What the cluster holds about the joiner (see `Shared`).
    async fn shared_view(
        &self,
        room: &NodeRoom,
        identity: &PublicIdentity,
        canonical: &str,
    ) -> Result<Shared, Refusal> {
        let fail = |e: &dyn std::fmt::Display| unavailable("reading a room's state", e);
        let token = room.token.as_str();
        let (record, banned, nick_holder, identity_nick, present) = tokio::join!(
            self.state.room(room.name.as_str()),
            self.is_banned(token, identity),
            self.nick_holder(token, canonical),
            self.identity_nick(token, identity),
            self.present(token),
        );
        let record = match record.map_err(|e| fail(&e))? {
            Some(bytes) => Some(parse_record(&bytes).ok_or_else(|| fail(&"a room record is malformed"))?),
            None => None,
        };
        Ok(Shared {
            record,
            banned: banned.map_err(|e| fail(&e))?,
            nick_holder: nick_holder.map_err(|e| fail(&e))?,
            identity_nick: identity_nick.map_err(|e| fail(&e))?,
            present: present.map_err(|e| fail(&e))?,
        })
    }

    async fn join_existing(self: &Arc<Self>, room: &Arc<NodeRoom>, args: JoinArgs) -> Attempt {
        let identity = args.join.request().identity;
        let canonical = args.join.request().nick.canonical();
        let shared = self.shared_view(room, &identity, &canonical).await?;
        let Some((verifier, owner)) = shared.record else {
            // Deleted through a node whose notice did not reach this one.
            self.deleted_here(room, "the room was deleted on the relay; create it again or join another");
            return Ok(Err(args));
        };
        let (verified, binding, rest) = {
            let mut held = room.lock();
            if held.evicted {
                return Ok(Err(args));
            }
            // The owner's password rotation or the operator's new owner, through any node.
            held.rules.set_owner(owner);
            held.rules.set_verifier(&owner, verifier)?;
            held.rules.learn_ban(identity, shared.banned);
            if let Some(holder) = shared.nick_holder {
                held.rules.learn_binding(Binding { nick: canonical.clone(), identity: holder });
            }
            if let Some(nick) = shared.identity_nick.clone() {
                held.rules.learn_binding(Binding { nick, identity });
            }
            let JoinArgs { join, history_after, connection, link, policy } = args;
            let mut present: Vec<PublicIdentity> = shared.present.iter().map(|(id, _)| *id).collect();
            present.extend(held.members.keys().copied());
            present.sort_unstable_by_key(|id| id.0);
            present.dedup();
            let occupancy = Occupancy {
                present: present.len() + held.joining,
                connected: present.binary_search_by_key(&identity.0, |id| id.0).is_ok(),
            };
            let admitted = held.rules.join(join, policy, occupancy)?;
            held.joining += 1;
            (admitted.verified, admitted.binding, (history_after, connection, link))
        };
        if let Some(binding) = &binding {
            if let Err(refusal) = self.bind_for(room, binding).await {
                room.lock().joining -= 1;
                return Err(refusal);
            }
        }
        let remote = self.remote(&shared.present);
        let admission = {
            let mut held = room.lock();
            held.joining -= 1;
            // Banned while the binding was being stored.
            if held.rules.is_banned(&identity) {
                return Err(Refusal::new(ErrorCode::Banned, "you are banned from this room"));
            }
            let (history_after, connection, link) = rest;
            register(room, &mut held, verified, false, history_after, connection, link, remote)
        };
        self.announce(room, &admission.member).await;
        Ok(Ok(admission))
    }

    /// Stores a binding the rules reserved; a conflict with one another node just made is
    /// learned and refused as the rules would.
    async fn bind_for(&self, room: &Arc<NodeRoom>, binding: &Binding) -> Result<(), Refusal> {
        let outcome = self.bind(&room.token, binding).await;
        let mut held = room.lock();
        match outcome {
            Ok(()) => Ok(()),
            Err(BindError::Taken(holder)) => {
                held.rules.binding_failed(binding);
                held.rules.learn_binding(Binding { nick: binding.nick.clone(), identity: holder });
                Err(Refusal::new(
                    ErrorCode::NickTaken,
                    format!(
                        "the nickname {} belongs to another identity in this room; choose another nickname",
                        binding.nick
                    ),
                ))
            }
            Err(BindError::Bound(nick)) => {
                held.rules.binding_failed(binding);
                let refusal = Refusal::new(
                    ErrorCode::NickBound,
                    format!(
                        "this identity is known in this room as {nick}; join with that nickname, \
                         or use another identity for another nickname"
                    ),
                );
                held.rules.learn_binding(Binding { nick, identity: binding.identity });
                Err(refusal)
            }
            Err(BindError::Storage(e)) => {
                held.rules.binding_failed(binding);
                Err(unavailable("storing a nickname binding", &e))
            }
        }
    }

    /// Members present through other nodes.
    fn remote(&self, present: &[(PublicIdentity, PresenceValue)]) -> Vec<Member> {
        present
            .iter()
            .filter(|(_, value)| value.node != self.id)
            .filter_map(|(identity, value)| Some(Member { nick: value.nick()?, identity: *identity }))
            .collect()
    }

    async fn create(self: &Arc<Self>, args: JoinArgs, may_create: CreateGate<'_>) -> Attempt {
        let name = args.join.request().room.clone();
        self.loading(&name, self.create_locked(args, may_create)).await
    }

    async fn create_locked(self: &Arc<Self>, args: JoinArgs, may_create: CreateGate<'_>) -> Attempt {
        let name = args.join.request().room.clone();
        if self.load(&name).await?.is_some() {
            return Ok(Err(args));
        }
        may_create()?;
        let max_rooms = self.limits.max_rooms;
        let fail = |e: &dyn std::fmt::Display| unavailable("creating a room", e);
        if self.room_count(max_rooms).await.map_err(|e| fail(&e))? >= max_rooms {
            return Err(Refusal::new(
                ErrorCode::ServerFull,
                format!("the relay holds its maximum of {max_rooms} rooms; try again later"),
            ));
        }
        let verifier = args.join.new_room_verifier();
        let owner = args.join.request().identity;
        let founder = Binding { nick: args.join.request().nick.canonical(), identity: owner };
        let record = record(&verifier, &owner);
        match self.state.create_room(name.as_str(), record.clone()).await.map_err(|e| fail(&e))? {
            Created::Now => {}
            // Another node created it a moment ago: join it like any existing room.
            Created::Existing(_) => return Ok(Err(args)),
        }
        let JoinArgs { join, history_after, connection, link, .. } = args;
        self.bind(&room_token(name.as_str()), &founder).await.map_err(|e| fail(&e))?;
        let verified = join
            .admit(&verifier)
            .map_err(|_| Refusal::new(ErrorCode::Internal, "the new room refused its founder; try again"))?;
        let room = self.open_room(&name, &record).await?;
        let admission = {
            let mut held = room.lock();
            register(&room, &mut held, verified, true, history_after, connection, link, Vec::new())
        };
        self.map().insert(name.clone(), room.clone());
        self.announce(&room, &admission.member).await;
        info!(room = %name, "room created");
        Ok(Ok(admission))
    }

    /// Tells the cluster a member joined here: its presence key, and the other nodes.
    async fn announce(&self, room: &NodeRoom, member: &ClusterMember) {
        let value = PresenceValue::new(&member.nick, member.connection, self.id);
        self.put_presence(&room.token, &member.identity, &value).await;
        let control = Control::Joined { identity: super::presence::identity_hex(&member.identity), value };
        self.signal(&room.token, control).await;
    }

    pub(super) async fn leave(&self, member: &ClusterMember) {
        let room = &member.room;
        let removed = {
            let mut held = room.lock();
            let current = held.is_current(&member.identity, member.connection);
            if current {
                held.members.remove(&member.identity);
                held.presence(PresenceEvent::Left, &member.nick, member.identity);
            }
            current
        };
        if removed {
            self.remove_presence(&room.token, &member.identity, member.connection).await;
            let identity = super::presence::identity_hex(&member.identity);
            self.signal(&room.token, Control::Left { identity, nick: member.nick.to_string() }).await;
        }
        self.touch(room).await;
        self.evict_if_idle(room);
    }
}

/// Registers a verified member with the room on this node (the caller holds its lock): from
/// here on the feed delivers to it, behind the replay that ends where the feed is now.
#[allow(clippy::too_many_arguments)] // the parts of one join, as the local backend's
fn register(
    room: &Arc<NodeRoom>,
    held: &mut Held,
    verified: VerifiedJoin,
    created: bool,
    history_after: u64,
    connection: ConnectionId,
    link: Link,
    remote: Vec<Member>,
) -> Admission<ClusterMember> {
    let identity = *verified.identity();
    let nick = verified.nick().clone();
    let verified_version = verified.version();
    held.presence(PresenceEvent::Joined, &nick, identity);
    let entry = Connected { connection, nick: nick.clone(), link };
    if let Some(old) = held.members.insert(identity, entry) {
        old.link.close(ErrorCode::AlreadyConnected, "replaced by a new connection");
    }
    let mut members = held.local_members();
    members.extend(remote.into_iter().filter(|m| !held.members.contains_key(&m.identity)));
    members.sort_by(|a, b| a.nick.cmp_canonical(&b.nick));
    let joined = JoinedInfo {
        created,
        owner: held.rules.owner(),
        latest_seq: held.delivered.chat_seq,
        oldest_seq: held.history.front().map_or(0, |e| e.seq),
        group_info_seq: (verified_version == 2).then(|| held.group_info_seq.unwrap_or(0)),
    };
    Admission {
        member: ClusterMember { room: room.clone(), identity, nick, connection },
        joined,
        members,
        history: Box::new(held.replay(room, history_after)),
    }
}
