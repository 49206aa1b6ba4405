//! Man pages and shell completions from a binary's own clap definition, for packages
//! (`scripts/dist`): both binaries' hidden `generate-assets DIR` call `write`.

use std::path::Path;

use clap_complete::Shell;

/// Writes `DIR/man/*.1` (one page per command and subcommand) and
/// `DIR/completions/` for bash, zsh and fish.
pub fn write(cmd: clap::Command, dir: &Path) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("cannot write the {what} into {}: {e}", dir.display());
    let man = dir.join("man");
    let completions = dir.join("completions");
    for sub in [&man, &completions] {
        std::fs::create_dir_all(sub).map_err(|e| fail("directories", e))?;
    }
    clap_mangen::generate_to(cmd.clone(), &man).map_err(|e| fail("man pages", e))?;
    // clap_complete would offer hidden subcommands (this one) for completion.
    let mut cmd = without_hidden(&cmd);
    let name = cmd.get_name().to_owned();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, &name, &completions)
            .map_err(|e| fail("completions", e))?;
    }
    Ok(())
}

/// The command with its hidden subcommands and arguments left out; `cmd` must not be built yet
/// (so its arguments are only the declared ones, without the generated help and version).
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    let mut clean = clap::Command::new(cmd.get_name().to_owned());
    if let Some(about) = cmd.get_about() {
        clean = clean.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        clean = clean.version(version.to_owned());
    }
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        clean = clean.arg(arg.clone());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        clean = clean.subcommand(without_hidden(sub));
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_subcommands_are_left_out_and_the_rest_kept() {
        let cmd = clap::Command::new("t")
            .arg(clap::Arg::new("x").long("x"))
            .subcommand(clap::Command::new("shown").arg(clap::Arg::new("y").long("y")))
            .subcommand(clap::Command::new("secret").hide(true));
        let clean = without_hidden(&cmd);
        let subs: Vec<&str> = clean.get_subcommands().map(|s| s.get_name()).collect();
        assert_eq!(subs, ["shown"]);
        assert!(clean.get_arguments().any(|a| a.get_id() == "x"));
        clean.debug_assert();
    }
}
