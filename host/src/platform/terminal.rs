//! The terminal's settings, restored however duet leaves.

/// Puts the terminal back as it was when duet started, however duet leaves: the line editor
/// switches it to raw mode while it reads, and may still be reading when duet exits.
pub struct TerminalRestore(Option<Saved>);

#[cfg(unix)]
type Saved = rustix::termios::Termios;

/// The console's input handle and the mode it had.
#[cfg(windows)]
type Saved = (windows_sys::Win32::Foundation::HANDLE, u32);

impl TerminalRestore {
    /// Remember the terminal's settings now.
    #[cfg(unix)]
    pub fn save() -> Self {
        TerminalRestore(rustix::termios::tcgetattr(std::io::stdin()).ok())
    }

    /// Remember the console's input mode now (nothing when input is not a console).
    #[cfg(windows)]
    #[allow(unsafe_code)]
    pub fn save() -> Self {
        use windows_sys::Win32::System::Console::{GetConsoleMode, GetStdHandle, STD_INPUT_HANDLE};
        // SAFETY: plain Win32 calls on this process's own standard input handle.
        unsafe {
            let handle = GetStdHandle(STD_INPUT_HANDLE);
            let mut mode = 0;
            if handle.is_null() || GetConsoleMode(handle, &mut mode) == 0 {
                return TerminalRestore(None);
            }
            TerminalRestore(Some((handle, mode)))
        }
    }
}

impl Drop for TerminalRestore {
    #[cfg(unix)]
    fn drop(&mut self) {
        if let Some(settings) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                settings,
            );
        }
    }

    #[cfg(windows)]
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if let Some((handle, mode)) = self.0 {
            // SAFETY: the handle is this process's standard input, which stays open.
            unsafe {
                windows_sys::Win32::System::Console::SetConsoleMode(handle, mode);
            }
        }
    }
}

/// Whether a failed write to stdout means its reader has gone (`duet id | head -1`): EPIPE
/// on Unix; on Windows also `ERROR_PIPE_NOT_CONNECTED`, which Rust does not count as a
/// broken pipe but a pipe whose reader closed reports.
pub fn reader_gone(e: &std::io::Error) -> bool {
    #[cfg(windows)]
    if e.raw_os_error() == Some(windows_sys::Win32::Foundation::ERROR_PIPE_NOT_CONNECTED as i32) {
        return true;
    }
    e.kind() == std::io::ErrorKind::BrokenPipe
}
