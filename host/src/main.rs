//! `duet`: parse the command line, run it, map the error to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = duet_host::cli::Cli::parse();
    match duet_host::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duet: error: {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}
