//! The terminal's settings, restored however duet leaves.

use std::io;

/// Puts the terminal back as it was when duet started, however duet leaves: the line editor
/// switches it to raw mode while it reads, and may still be reading when duet exits.
pub struct TerminalRestore(Option<rustix::termios::Termios>);

impl TerminalRestore {
    /// Remember the terminal's settings now.
    pub fn save() -> Self {
        TerminalRestore(rustix::termios::tcgetattr(io::stdin()).ok())
    }
}

impl Drop for TerminalRestore {
    fn drop(&mut self) {
        if let Some(settings) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                io::stdin(),
                rustix::termios::OptionalActions::Now,
                settings,
            );
        }
    }
}
