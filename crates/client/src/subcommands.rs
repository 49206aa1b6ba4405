//! `chatroom id`, `passphrase`, `invite` and `relays`.

use crate::config::Config;
use crate::passphrase;
use chatroom_session::crypto::load_or_create_identity;
use chatroom_session::invite::Invite;
use chatroom_session::state::{room_state_path, RoomState};

use crate::app_error::AppError;
use crate::cli::{RelaysCommand, TargetArgs};
use crate::setup::{resolve, Paths};

pub(crate) fn id(paths: &Paths) -> Result<(), AppError> {
    let (identity, created) = load_or_create_identity(&paths.identity())?;
    if created {
        eprintln!("-!- created a new identity in {}", paths.identity().display());
    }
    println!("{}", identity.public().fingerprint());
    Ok(())
}

pub(crate) fn passphrase() {
    let p = passphrase::generate();
    println!("{}", p.as_str());
    eprintln!(
        "-!- {} random bits from the system's random number generator; share it only with the room's members",
        passphrase::BITS
    );
}

pub(crate) fn invite(paths: &Paths, args: &TargetArgs) -> Result<(), AppError> {
    let config = Config::load(&paths.config)?;
    let target = resolve(args, &config, &paths.config)?;
    let version = crate::version::choose(&target, paths).version;
    let relay = target
        .relay
        .ok_or_else(|| AppError::new("which relay? give a saved room name or --relay HOST:PORT"))?;
    let room =
        target.room.ok_or_else(|| AppError::new("which room? give a saved room name or --room ROOM"))?;
    let fingerprint = match target.fingerprint {
        Some((key, _)) => key,
        None => paths.known_relays().lookup(&relay.first().to_string())?.ok_or_else(|| {
            AppError::new(format!(
                "the key of relay {relay} is not known yet: connect to it once, or give --fingerprint HEX \
                 (the relay prints its fingerprint when it starts)"
            ))
        })?,
    };
    // The parameters this member joined the room with win over the default, so an invite from
    // the room's creator names the parameters it was created with even without --kdf.
    let saved = RoomState::load(&room_state_path(&paths.data_dir, &fingerprint, &room))?.kdf;
    let kdf = match (&args.kdf, saved) {
        (None, Some(saved)) => saved,
        _ => target.kdf,
    };
    println!("{}", Invite { fingerprint, relay, room, kdf, version: Some(version) });
    Ok(())
}

pub(crate) fn relays(paths: &Paths, command: &RelaysCommand) -> Result<(), AppError> {
    let known = paths.known_relays();
    match command {
        RelaysCommand::List => {
            for (addr, key) in known.list()? {
                println!("{addr} {}", hex::encode(key));
            }
        }
        RelaysCommand::Forget { relay } => {
            let removed = known.forget(relay)?;
            if removed == 0 {
                return Err(AppError::new(format!(
                    "no pinned key for {} in {}; `chatroom relays list` shows the pinned relays",
                    chatroom_session::display::neutralize_short(relay),
                    known.path().display()
                )));
            }
            eprintln!(
                "-!- forgot {removed} pinned key(s) for {}",
                chatroom_session::display::neutralize_short(relay)
            );
        }
    }
    Ok(())
}
