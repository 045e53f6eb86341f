//! How events look: one line each, `HH:MM:SS who: text`, with anything that could break the
//! line or the terminal (newlines, escape sequences, undecodable bytes) shown escaped.

use std::fmt::{self, Write as _};
use std::io::{self, Write as _};

pub use crate::app::display::{escaped, legacy_text, push_escaped};
use crate::platform::terminal;

/// The local time as `HH:MM:SS`.
pub fn clock() -> String {
    with_clock(str::to_owned)
}

/// `f` of the local time as `HH:MM:SS`.
fn with_clock<R>(f: impl FnOnce(&str) -> R) -> R {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    // A burst of messages arrives within one second: formatting the local time (time
    // zone lookup, strftime) once per second instead of once per line saves a few per
    // cent of a receiver's CPU.
    thread_local!(static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) });
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(u64::MAX - 1, |d| d.as_secs());
    LAST.with_borrow_mut(|(last, shown)| {
        if *last != second {
            *shown = chrono::DateTime::<chrono::Local>::from(now)
                .format("%H:%M:%S")
                .to_string();
            *last = second;
        }
        f(shown)
    })
}

/// Where event lines go: stdout in line mode, above the prompt in the terminal UI.
pub enum Output {
    /// One line per event on stdout, flushed at once (`send`, IP Messenger mode).
    Lines,
    /// Lines on stdout gathered over one turn of the loop and written together by
    /// [`Output::flush`] before the loop sleeps (chat line mode, `listen`): one system call
    /// for a burst of messages instead of one each.
    Batched(String),
    /// Printed above the line being edited, which stays intact.
    Terminal(Box<dyn rustyline::ExternalPrinter + Send>),
}

impl Output {
    /// Print one line, prefixed with the time.
    pub fn line(&mut self, text: &str) {
        self.line_fmt(format_args!("{text}"));
    }

    /// [`Output::line`] of `format_args!(…)`: in line mode written straight into the lines
    /// held for the turn, without a `String` for each line on the way (a burst of 20,000
    /// lines made three each).
    pub fn line_fmt(&mut self, text: fmt::Arguments<'_>) {
        if let Output::Batched(held) = self {
            with_clock(|clock| held.push_str(clock));
            held.push(' ');
            let _ = held.write_fmt(text);
            held.push('\n');
            return;
        }
        let line = format!("{} {}", clock(), text);
        match self {
            Output::Lines => print(&line),
            Output::Batched(_) => {}
            Output::Terminal(printer) => {
                // With the newline the line stays above the prompt even when the editor is
                // not reading at that moment (it would otherwise be drawn over).
                let _ = printer.print(format!("{line}\n"));
            }
        }
    }
}

impl Output {
    /// Write what [`Output::Batched`] gathered (the loop calls this before it sleeps).
    pub fn flush(&mut self) {
        if let Output::Batched(held) = self
            && !held.is_empty()
        {
            print(held.trim_end_matches('\n'));
            held.clear();
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Print `line` on stdout, flushed at once; if whoever read stdout has gone (`duet listen
/// | head -1` once `head` has its line), end duet now, with success.
///
/// This is what SIGPIPE does to `cat`, with exit status 0 (a reader that has all it
/// wanted is not a failure) and without unsafe signal code: Rust ignores SIGPIPE, so a
/// write to a closed pipe fails with EPIPE instead. Leaving at once loses nothing: a
/// received message is stored before it is shown (one whose line could not be written
/// is in `duet history`; its sender sends it again later, and it is not shown twice), and
/// a typed message is stored in the outbox before it is sent. Staying would only run a
/// chat or a `listen` that nobody can read.
pub fn print(line: &str) {
    let mut out = io::stdout().lock();
    let written = writeln!(out, "{line}").and_then(|()| out.flush());
    if written.is_err_and(|e| terminal::reader_gone(&e)) {
        std::process::exit(0);
    }
    // Other errors (a full disk under `> file`) are not the reader leaving: the chat goes
    // on, as a terminal's would.
}
