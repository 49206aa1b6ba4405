//! `chatroom`: parses arguments and wires the terminal to the protocol core in
//! `chatroom_session`. Only this binary talks to the terminal.
#![forbid(unsafe_code)]

mod advice;
mod app_error;
mod chat;
mod chat_v2;
mod cli;
mod commands;
mod config;
mod event_text;
mod flow;
mod passphrase;
mod plain;
mod prompt;
mod relay_check;
mod setup;
mod subcommands;
mod tui;
mod version;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::app_error::AppError;
use crate::cli::{Cli, Sub};
use crate::setup::Paths;

fn run(cli: Cli) -> Result<(), AppError> {
    let paths = Paths::new(&cli)?;
    match &cli.command {
        Some(Sub::Id) => subcommands::id(&paths),
        Some(Sub::Passphrase) => {
            subcommands::passphrase();
            Ok(())
        }
        Some(Sub::Invite(args)) => subcommands::invite(&paths, args),
        Some(Sub::Relays { command }) => subcommands::relays(&paths, command),
        Some(Sub::GenerateAssets { .. }) => Ok(()), // handled in main, before any file is touched
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| AppError::new(format!("cannot start the async runtime: {e}")))?;
            let result = runtime.block_on(chat::run(cli, paths));
            // A blocking task (a key derivation, a name lookup) must not hold up the exit.
            runtime.shutdown_background();
            result
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::GenerateAssets { dir }) = &cli.command {
        return match chatroom_cli_assets::write(Cli::command(), dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chatroom: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!, which panics when standard error is a closed terminal.
            let _ = writeln!(std::io::stderr(), "chatroom: error: {e}");
            ExitCode::FAILURE
        }
    }
}
