//! Loading rooms, joining them and creating them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chatroom_crypto::{ErrorCode, PresenceEvent, RoomName, VerifiedJoin};
use tokio::time::Instant;
use tracing::info;

use super::room::{Connected, Room, RoomState};
use super::{LocalMember, LocalRooms};
use crate::rooms::rules::{Occupancy, RoomRules};
use crate::rooms::{Admission, ConnectionId, CreateGate, JoinArgs, JoinedInfo, Link, Refusal};

pub(super) enum Lookup {
    Found(Arc<Room>),
    Missing,
}

/// A join attempt's result: admitted, or to try again (the room appeared or was evicted
/// between two steps), or refused.
type Attempt = Result<Result<Admission<LocalMember>, JoinArgs>, Refusal>;

impl LocalRooms {
    pub(super) async fn join_room(
        &self,
        mut args: JoinArgs,
        may_create: CreateGate<'_>,
    ) -> Result<Admission<LocalMember>, Refusal> {
        let name = args.join.request().room.clone();
        // Retries only when a room appeared or was evicted between two steps.
        for _ in 0..8 {
            let attempt = match self.lookup(&name).await? {
                Lookup::Found(room) => self.join_existing(room, args).await?,
                Lookup::Missing if args.join.request().create => self.create(args, may_create).await?,
                Lookup::Missing => {
                    return Err(Refusal::new(
                        ErrorCode::NoSuchRoom,
                        format!("there is no room {name} on this relay; check the name, or create it"),
                    ))
                }
            };
            match attempt {
                Ok(admission) => {
                    self.touch(&admission.member.room);
                    return Ok(admission);
                }
                Err(again) => args = again,
            }
        }
        Err(Refusal::new(ErrorCode::Internal, "the room is busy; try again"))
    }

    /// Finds a room in memory, or loads it. Must be called inside `loading` for `name`.
    pub(super) async fn load(&self, name: &RoomName) -> Result<Lookup, Refusal> {
        if let Some(room) = self.map().get(name) {
            return Ok(Lookup::Found(room.clone()));
        }
        // Storage runs operations in order, so this read sees every write queued before it,
        // including those of a room evicted a moment ago.
        match self.store.load_room(name.as_str()).await {
            Ok(Some(record)) => {
                let room = Room::from_record(name.clone(), record, self.limits.history, self.limits.rules);
                self.map().insert(name.clone(), room.clone());
                Ok(Lookup::Found(room))
            }
            Ok(None) => Ok(Lookup::Missing),
            Err(e) => Err(Refusal::internal(&e)),
        }
    }

    pub(super) async fn lookup(&self, name: &RoomName) -> Result<Lookup, Refusal> {
        if let Some(room) = self.map().get(name) {
            return Ok(Lookup::Found(room.clone()));
        }
        self.loading(name, self.load(name)).await
    }

    /// Registers a verified member; the caller holds the room lock. The member receives live
    /// items from here on, behind what the admission says to send first.
    fn register(
        room: &Arc<Room>,
        st: &mut RoomState,
        verified: VerifiedJoin,
        created: bool,
        history_after: u64,
        connection: ConnectionId,
        link: Link,
    ) -> Admission<LocalMember> {
        let identity = *verified.identity();
        let nick = verified.nick().clone();
        // A replacement is announced too: the others' lists then carry the nickname as this
        // connection spells it.
        st.presence(PresenceEvent::Joined, &nick, identity, Some(&identity));
        let entry = Connected { connection, nick: nick.clone(), link };
        if let Some(old) = st.members.insert(identity, entry) {
            old.link.close(ErrorCode::AlreadyConnected, "replaced by a new connection");
        }
        let joined = JoinedInfo {
            created,
            owner: st.rules.owner(),
            latest_seq: st.rules.stored_seq(),
            oldest_seq: st.history.front().map_or(0, |e| e.seq),
        };
        Admission {
            member: LocalMember { room: room.clone(), identity, nick, connection, acks: Arc::default() },
            joined,
            members: st.member_list(),
            history: Box::new(st.replay(room, history_after)),
        }
    }

    async fn create(&self, args: JoinArgs, may_create: CreateGate<'_>) -> Attempt {
        let name = args.join.request().room.clone();
        self.loading(&name, self.create_locked(args, may_create)).await
    }

    /// `create`, inside the room's loading lock.
    async fn create_locked(&self, args: JoinArgs, may_create: CreateGate<'_>) -> Attempt {
        let name = args.join.request().room.clone();
        if let Lookup::Found(_) = self.load(&name).await? {
            // Created by someone else meanwhile: join it like any existing room.
            return Ok(Err(args));
        }
        may_create()?;
        let max_rooms = self.limits.max_rooms;
        if self.stored.load(Ordering::Relaxed) >= max_rooms {
            return Err(Refusal::new(
                ErrorCode::ServerFull,
                format!("the relay holds its maximum of {max_rooms} rooms; try again later"),
            ));
        }
        let JoinArgs { join, history_after, connection, link, .. } = args;
        let nick = join.request().nick.canonical();
        let verifier = join.new_room_verifier();
        let owner = join.request().identity;
        // Fails if the room exists: storage reports that this join inserted it.
        self.store
            .create_room(name.as_str(), verifier.0, owner.0, &nick)
            .await
            .map_err(|e| Refusal::internal(&e))?;
        self.stored.fetch_add(1, Ordering::Relaxed);
        // The founder, like anyone, is admitted by the stored verifier.
        let verified = join
            .admit(&verifier)
            .map_err(|_| Refusal::new(ErrorCode::Internal, "the new room refused its founder; try again"))?;
        let rules = RoomRules::founded(verifier, owner, nick, self.limits.rules);
        // `create_room` recorded the creation as the room's first use.
        let room = Room::new(name.clone(), rules, Some(Instant::now()));
        let admission = {
            let mut st = room.lock();
            Self::register(&room, &mut st, verified, true, history_after, connection, link)
        };
        self.map().insert(name.clone(), room);
        info!(room = %name, "room created");
        Ok(Ok(admission))
    }

    async fn join_existing(&self, room: Arc<Room>, args: JoinArgs) -> Attempt {
        let result = self.join_existing_checked(room.clone(), args).await;
        if result.is_err() {
            // A refused join must not leave the room (and its history) loaded in memory.
            self.evict_if_idle(&room);
        }
        result
    }

    /// The rules' checks under the room lock; a new nickname binding made durable before the
    /// member is registered (and given back if storage fails).
    async fn join_existing_checked(&self, room: Arc<Room>, args: JoinArgs) -> Attempt {
        let identity = args.join.request().identity;
        let (verified, binding, rest) = {
            let mut st = room.lock();
            if st.evicted {
                return Ok(Err(args));
            }
            let JoinArgs { join, history_after, connection, link, policy } = args;
            let occupancy = Occupancy {
                present: st.members.len() + st.joining,
                connected: st.members.contains_key(&identity),
            };
            let admitted = st.rules.join(join, policy, occupancy)?;
            st.joining += 1;
            (admitted.verified, admitted.binding, (history_after, connection, link))
        };
        if let Some(binding) = &binding {
            if let Err(e) = self.store.bind_nick(room.name.as_str(), &binding.nick, identity.0).await {
                let mut st = room.lock();
                st.joining -= 1;
                st.rules.binding_failed(binding);
                return Err(Refusal::internal(&e));
            }
        }
        let mut st = room.lock();
        st.joining -= 1;
        // Banned while the binding was being stored.
        if st.rules.is_banned(&identity) {
            return Err(Refusal::new(ErrorCode::Banned, "you are banned from this room"));
        }
        let (history_after, connection, link) = rest;
        Ok(Ok(Self::register(&room, &mut st, verified, false, history_after, connection, link)))
    }
}
