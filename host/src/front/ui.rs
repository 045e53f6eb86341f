//! How events look: one line each, `HH:MM:SS who: text`, with anything that could break the
//! line or the terminal (newlines, escape sequences, undecodable bytes) shown escaped.

use std::io::Write as _;

pub use crate::app::display::{escaped, legacy_text, push_escaped};

/// The local time as `HH:MM:SS`.
pub fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// Where event lines go: stdout in line mode, above the prompt in the terminal UI.
pub enum Output {
    /// One line per event on stdout, flushed at once (line mode, `listen`, `send`).
    Lines,
    /// Printed above the line being edited, which stays intact.
    Terminal(Box<dyn rustyline::ExternalPrinter + Send>),
}

impl Output {
    /// Print one line, prefixed with the time.
    pub fn line(&mut self, text: &str) {
        let line = format!("{} {}", clock(), text);
        match self {
            Output::Lines => {
                let mut out = std::io::stdout().lock();
                // A closed stdout (`duet listen | head -1`) must not kill the chat.
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Output::Terminal(printer) => {
                // With the newline the line stays above the prompt even when the editor is
                // not reading at that moment (it would otherwise be drawn over).
                let _ = printer.print(format!("{line}\n"));
            }
        }
    }
}
