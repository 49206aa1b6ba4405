//! The relay is checked before the room password is asked for: an invite that gives a relay
//! another key than the one pinned for it asks the user to accept the new key (naming both),
//! and when the password is to be typed, a handshake first proves the relay holds the pinned
//! key, so nobody types a password for a relay that will be refused.

use chatroom_session::error::SessionError;
use chatroom_session::session::{handshake, Limits};
use chatroom_session::transport::{self, HostPort, Proxy, RelayAddrs};
use chatroom_session::trust::{RelayCheck, RelayPin};

use crate::app_error::AppError;
use crate::prompt::Input;
use crate::setup::{Paths, Target};

/// Offers to replace the pinned key of `relay` with the key `target` pins (from an invite or
/// the config), if they differ. Refusing ends the program, changing nothing.
pub(crate) fn accept_new_key(
    target: &Target,
    relay: &HostPort,
    paths: &Paths,
    input: &mut Input,
) -> Result<(), AppError> {
    let Some((new, source)) = &target.fingerprint else { return Ok(()) };
    let known = paths.known_relays();
    let addr = relay.to_string();
    let Some(old) = known.lookup(&addr)? else { return Ok(()) };
    if old == *new {
        return Ok(());
    }
    let (old, new_hex) = (hex::encode(old), hex::encode(new));
    eprintln!(
        "-!- WARNING: {source} gives relay {addr} the key {new_hex}, but this client pinned the key {old} for it \
         earlier. Accept the new key only if the relay's operator told you it changed; otherwise someone may be \
         intercepting the connection."
    );
    if !input.confirm(&format!("Pin relay {addr} to the new key {new_hex}? [y/N] "))? {
        return Err(AppError::new(format!(
            "nothing changed: relay {addr} stays pinned to {old}. Ask the relay's operator for its fingerprint"
        )));
    }
    known.record(&addr, new)?;
    eprintln!("-!- relay {addr} is now pinned to {new_hex}");
    Ok(())
}

/// Connects and completes the handshake with the relay's key checked against `pin`, then
/// closes: a relay that would be refused is refused before any password is typed. Of several
/// addresses (the nodes of a relay cluster), the first that can be reached is checked.
pub(crate) async fn check_before_password(
    relay: &RelayAddrs,
    proxy: Option<&Proxy>,
    pin: &RelayPin,
    limits: &Limits,
) -> Result<(), AppError> {
    let addrs = relay.as_slice();
    for (i, addr) in addrs.iter().enumerate() {
        match check_address(addr, proxy, pin, limits).await {
            Ok(()) => return Ok(()),
            Err(e) => match addrs.get(i + 1) {
                // Another node of the relay serves the same rooms under the same key.
                Some(next) if e.is_retryable() => {
                    eprintln!("-!- warning: {e}; trying the next address, {next}")
                }
                _ => return Err(e.into()),
            },
        }
    }
    Ok(())
}

async fn check_address(
    relay: &HostPort,
    proxy: Option<&Proxy>,
    pin: &RelayPin,
    limits: &Limits,
) -> Result<(), SessionError> {
    let addr = relay.to_string();
    let stream = transport::connect(relay, proxy, limits.connect_timeout).await?;
    let checked = tokio::time::timeout(limits.handshake_timeout, handshake(stream, &addr, pin))
        .await
        .map_err(|_| SessionError::Timeout {
            what: "in the handshake with",
            addr: addr.clone(),
            secs: limits.handshake_timeout.as_secs(),
        })??;
    if checked.check == RelayCheck::FirstUse {
        eprintln!(
            "-!- first connection to {addr}: pinned its key {} (trust on first use)",
            hex::encode(checked.relay_key)
        );
    }
    Ok(())
}
