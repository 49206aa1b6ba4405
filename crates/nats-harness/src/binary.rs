//! Where the nats-server binary is.

use std::path::{Path, PathBuf};

/// The environment variable naming the nats-server binary (scripts/test sets it).
pub const ENV: &str = "CHATROOM_NATS_SERVER";
/// The version scripts/install-nats-server installs and the tests are written against.
pub const VERSION: &str = "2.15.1";
/// The one command that installs it (from the workspace root).
pub const INSTALL_COMMAND: &str = "./scripts/install-nats-server";

/// The nats-server to run: [`ENV`] if set, else the one scripts/install-nats-server installed.
pub fn server_binary() -> Result<PathBuf, crate::Error> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tools")
        .join(format!("nats-server-{VERSION}"))
        .join("nats-server");
    server_binary_from(std::env::var_os(ENV).map(PathBuf::from), &installed)
}

/// [`server_binary`] with the environment's value and the install location given.
pub fn server_binary_from(from_env: Option<PathBuf>, installed: &Path) -> Result<PathBuf, crate::Error> {
    let (path, source) = match from_env {
        Some(path) => (path, format!("{ENV} names")),
        None => (installed.to_path_buf(), format!("{ENV} is not set and the install location has")),
    };
    if path.is_file() {
        return Ok(path);
    }
    Err(format!(
        "nats-server {VERSION} is missing ({source} no file {}): install it with `{INSTALL_COMMAND}` \
         from the workspace root (.ci/run does), then run the tests again",
        path.display()
    )
    .into())
}
