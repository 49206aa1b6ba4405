//! `--onion`: publish the relay as a Tor onion service through a running tor's control port.
//!
//! tor-interface authenticates to the control port (safe-cookie or password) and creates the
//! service (`ADD_ONION`) with a key kept in the data directory (`onion.key`, mode 0600), so the
//! address stays the same across restarts. The service lives as long as this process holds the
//! control connection. tor-interface's service forwards to a loopback listener of its own;
//! each connection accepted there is joined to the relay's listening address, so the relay
//! serves onion members exactly like others (all from 127.0.0.1, as behind any onion service).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use tor_interface::legacy_tor_client::{LegacyTorClient, LegacyTorClientConfig, TorAuth};
use tor_interface::tor_crypto::{Ed25519PrivateKey, V3OnionServiceId};
use tor_interface::tor_provider::{OnionListener, TorProvider};
use zeroize::Zeroizing;

/// File name of the onion service key inside the data directory.
pub(crate) const ONION_KEY_FILE: &str = "onion.key";
/// Largest key file read (a key blob is 100 bytes).
const MAX_KEY_FILE: u64 = 4096;

/// The onion service flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct OnionArgs {
    /// Publish the relay as a Tor onion service through a running tor's control port; the
    /// service key is kept in the data directory, so the address is stable.
    #[arg(long)]
    pub(crate) onion: bool,
    /// The tor control port used by --onion.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9051")]
    pub(crate) tor_control: SocketAddr,
    /// tor's control auth cookie (CookieAuthentication 1), used unless --tor-password-file is given.
    #[arg(long, value_name = "FILE", default_value = "/run/tor/control.authcookie")]
    pub(crate) tor_cookie_file: PathBuf,
    /// A file holding the control port password (HashedControlPassword), instead of the cookie.
    #[arg(long, value_name = "FILE")]
    pub(crate) tor_password_file: Option<PathBuf>,
    /// The onion service's port, the one in invites [default: the --listen port].
    #[arg(long, value_name = "PORT")]
    pub(crate) onion_port: Option<u16>,
}

/// A published onion service; dropping it ends the forwarding and (with the control
/// connection) the service.
pub(crate) struct OnionService {
    /// `<56 base32 characters>.onion`.
    pub(crate) address: String,
    pub(crate) port: u16,
    pub(crate) key_created: bool,
    service_id: V3OnionServiceId,
    client: LegacyTorClient,
    listener: Option<OnionListener>,
}

impl std::fmt::Debug for OnionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionService").field("address", &self.address).finish_non_exhaustive()
    }
}

/// Loads the service key from `data_dir`, or creates it (0600, written atomically).
fn load_or_create_key(data_dir: &Path) -> Result<(Ed25519PrivateKey, bool), String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(ONION_KEY_FILE);
    match std::fs::File::open(&path) {
        Ok(file) => {
            let mut blob = Zeroizing::new(String::new());
            file.take(MAX_KEY_FILE)
                .read_to_string(&mut blob)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let key = Ed25519PrivateKey::from_key_blob(blob.trim()).map_err(|e| {
                format!(
                    "{} is not an onion service key ({e}); move it away to create a new address",
                    path.display()
                )
            })?;
            return Ok((key, false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let key = Ed25519PrivateKey::generate();
    let blob = Zeroizing::new(key.to_key_blob());
    let partial = data_dir.join(format!("{ONION_KEY_FILE}.partial"));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut f| f.write_all(blob.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&partial, &path))
        .and_then(|()| std::fs::File::open(data_dir).and_then(|d| d.sync_all()));
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((key, true))
}

/// Connects to tor, authenticates and publishes the service. Blocking.
pub(crate) fn publish(args: &OnionArgs, data_dir: &Path, listen: SocketAddr) -> Result<OnionService, String> {
    let (key, key_created) = load_or_create_key(data_dir)?;
    let auth = match &args.tor_password_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read --tor-password-file {}: {e}", file.display()))?;
            TorAuth::Password(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        None => TorAuth::CookieFile(args.tor_cookie_file.clone()),
    };
    let config = LegacyTorClientConfig::SystemTor {
        // Only used for outgoing connections, which the relay never makes.
        tor_socks_addr: SocketAddr::from(([127, 0, 0, 1], 9050)),
        tor_control_addr: args.tor_control,
        tor_control_auth: auth,
    };
    let advice = "check that tor runs with ControlPort and CookieAuthentication 1 (or \
                  HashedControlPassword and --tor-password-file), and that this user may read the cookie";
    let mut client = LegacyTorClient::new(config)
        .map_err(|e| format!("cannot use tor's control port {}: {e}; {advice}", args.tor_control))?;
    // A system tor is already running: this only marks it ready (no configuration is changed).
    client.update().map_err(|e| format!("tor's control port {} failed: {e}", args.tor_control))?;
    let port = args.onion_port.unwrap_or(listen.port());
    let listener = client
        .listener(&key, port, None)
        .map_err(|e| format!("tor refused to create the onion service: {e}; {advice}"))?;
    let service_id = V3OnionServiceId::from_private_key(&key);
    let address = format!("{service_id}.onion");
    Ok(OnionService { address, port, key_created, service_id, client, listener: Some(listener) })
}

impl OnionService {
    /// Joins each connection to the service with the relay's address, at most `max` at once
    /// (further ones are closed), until the process ends.
    pub(crate) fn forward(
        mut self,
        relay: SocketAddr,
        max: usize,
        runtime: tokio::runtime::Handle,
    ) -> Result<(), String> {
        let listener = self.listener.take().ok_or("the onion service is not listening")?;
        listener.set_nonblocking(false).map_err(|e| format!("onion listener: {e}"))?;
        let slots = Arc::new(tokio::sync::Semaphore::new(max));
        std::thread::Builder::new()
            .name("onion-accept".into())
            .spawn(move || {
                // Holds the control connection (and so the service) while accepting.
                let mut client = self.client;
                wait_until_published(&mut client, &self.service_id);
                loop {
                    let stream = match listener.accept() {
                        Ok(Some(stream)) => std::net::TcpStream::from(stream),
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "onion service accept failed");
                            std::thread::sleep(std::time::Duration::from_millis(100));
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                    runtime.spawn(async move {
                        let _permit = permit;
                        join(stream, relay).await;
                    });
                }
            })
            .map(drop)
            .map_err(|e| format!("cannot start the onion service thread: {e}"))
    }
}

/// Longest wait for tor to upload the service's descriptor before serving anyway.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Waits (bounded) until tor reports the descriptor uploaded, then says so on stdout: members
/// can reach the address from then on.
fn wait_until_published(client: &mut LegacyTorClient, service_id: &V3OnionServiceId) {
    use std::io::Write;
    use tor_interface::tor_provider::TorEvent;
    let deadline = std::time::Instant::now() + PUBLISH_WAIT;
    while std::time::Instant::now() < deadline {
        match client.update() {
            Ok(events) => {
                let published = events.iter().any(
                    |e| matches!(e, TorEvent::OnionServicePublished { service_id: id } if id == service_id),
                );
                if published {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "onion service published");
                    let _ = out.flush();
                    tracing::info!(service = %service_id, "onion service published");
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "tor's control connection failed; the onion service may be gone");
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tracing::warn!(
        "tor has not published the onion service after 3 minutes; it keeps trying, check tor's log"
    );
}

async fn join(stream: std::net::TcpStream, relay: SocketAddr) {
    let Ok(()) = stream.set_nonblocking(true) else { return };
    let Ok(mut outside) = tokio::net::TcpStream::from_std(stream) else { return };
    let Ok(mut inside) = tokio::net::TcpStream::connect(relay).await else { return };
    let _ = inside.set_nodelay(true);
    let _ = outside.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
}
