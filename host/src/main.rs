//! `duet`: parse the command line, run it, map the error to an exit code.

use clap::Parser;
use duet_host::cli;

fn main() -> std::process::ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duet: error: {e}");
            std::process::ExitCode::from(cli::exit::exit_code(&e) as u8)
        }
    }
}
