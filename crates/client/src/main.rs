//! `chatroom`: parses arguments and wires the terminal to the protocol core in
//! `chatroom_client`. Only this binary talks to the terminal.
#![forbid(unsafe_code)]

mod app_error;
mod chat;
mod cli;
mod plain;
mod prompt;
mod relay_check;
mod setup;
mod subcommands;
mod tui;

use std::process::ExitCode;

use clap::Parser;

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
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| AppError::new(format!("cannot start the async runtime: {e}")))?;
            runtime.block_on(chat::run(cli, paths))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatroom: error: {e}");
            ExitCode::FAILURE
        }
    }
}
