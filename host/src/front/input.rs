//! What the user types, delivered to the event loop through a channel and a wake-up.
//!
//! A thread reads input — lines from a pipe or file in line mode, or a line editor
//! (rustyline) on a terminal — and hands each line over a bounded channel, then
//! wakes the event loop, which waits on the wake-up next to the socket (a pipe on Unix,
//! loopback sockets on Windows: [`crate::platform::wait::wake_pair`]). The channel's capacity
//! is the backpressure: while the loop takes no lines (the outbox is full), the thread
//! blocks and stops reading, so piped input is paced by the peer's acknowledgements and
//! nothing is dropped.

use std::io::{self, BufRead};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::platform::wait::{self, AsWaitHandle, WaitHandle, Wake, WakeReceiver};

/// One thing the user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its line ending.
    Line(String),
    /// End of input (ctrl-d, or the end of a piped file).
    Eof,
    /// Ctrl-c on the terminal.
    Interrupt,
}

/// Whether a typed line is the command to leave.
pub fn is_quit(line: &str) -> bool {
    matches!(line.trim(), "/quit" | "/exit" | "/q")
}

/// The receiving end of the input thread.
pub struct InputPipe {
    lines: Receiver<Input>,
    wake: WakeReceiver,
    /// Lines handed over and not yet taken (may dip below zero for a moment).
    queued: Arc<AtomicIsize>,
    ended: bool,
}

/// Lines the input thread may read ahead of the loop: enough that the loop takes a whole
/// window of lines in one turn (one transaction, one burst of datagrams) instead of one
/// line per thread hand-over; few enough that piped input stays paced by the peer.
const INPUT_LINES: usize = 256;

fn channel() -> io::Result<(SyncSender<Input>, Receiver<Input>, WakeReceiver, Wake)> {
    let (tx, rx) = mpsc::sync_channel(INPUT_LINES);
    let (wake_tx, wake_rx) = wait::wake_pair()?;
    Ok((tx, rx, wake_rx, wake_tx))
}

fn hand_over(tx: &SyncSender<Input>, queued: &AtomicIsize, wake: &mut Wake, input: Input) -> bool {
    let ok = tx.send(input).is_ok();
    // The loop may be asleep in poll(2): one wake-up wakes it, sent only when the channel
    // was empty (the loop drains the channel before it sleeps, so a non-empty one means it
    // is awake or already has a wake-up waiting).
    if queued.fetch_add(1, Ordering::AcqRel) <= 0 {
        wake.wake();
    }
    ok
}

impl InputPipe {
    /// Read lines from standard input (line mode).
    pub fn lines() -> io::Result<Self> {
        let (tx, lines, wake, mut wake_tx) = channel()?;
        let queued = Arc::new(AtomicIsize::new(0));
        let queued_in = Arc::clone(&queued);
        thread::Builder::new()
            .name("duet-input".into())
            .spawn(move || {
                let stdin = io::stdin();
                let mut stdin = stdin.lock();
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    let input = match stdin.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => Input::Eof,
                        Ok(_) => {
                            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                buf.pop();
                            }
                            Input::Line(String::from_utf8_lossy(&buf).into_owned())
                        }
                    };
                    let end = input == Input::Eof;
                    if !hand_over(&tx, &queued_in, &mut wake_tx, input) || end {
                        return;
                    }
                }
            })?;
        Ok(InputPipe {
            lines,
            wake,
            queued,
            ended: false,
        })
    }

    /// Run a line editor on the terminal; `prompt` may be changed while it runs.
    pub fn terminal(mut editor: DefaultEditor, prompt: Arc<Mutex<String>>) -> io::Result<Self> {
        let (tx, lines, wake, mut wake_tx) = channel()?;
        let queued = Arc::new(AtomicIsize::new(0));
        let queued_in = Arc::clone(&queued);
        thread::Builder::new()
            .name("duet-editor".into())
            .spawn(move || {
                loop {
                    let shown = prompt.lock().map(|p| p.clone()).unwrap_or_default();
                    let input = match editor.readline(&shown) {
                        Ok(line) => {
                            if !line.trim().is_empty() {
                                let _ = editor.add_history_entry(line.as_str());
                            }
                            Input::Line(line)
                        }
                        Err(ReadlineError::Interrupted) => Input::Interrupt,
                        Err(_) => Input::Eof,
                    };
                    // After /quit the editor must not take the terminal again: the program is
                    // leaving, and an editor still reading would leave the terminal raw.
                    let end = match &input {
                        Input::Line(line) => is_quit(line),
                        _ => true,
                    };
                    if !hand_over(&tx, &queued_in, &mut wake_tx, input) || end {
                        return;
                    }
                }
            })?;
        Ok(InputPipe {
            lines,
            wake,
            queued,
            ended: false,
        })
    }

    /// What becomes readable when input is waiting.
    pub fn fd(&self) -> Option<WaitHandle<'_>> {
        (!self.ended).then(|| self.wake.wait_handle())
    }

    /// The next input, if one is waiting.
    pub fn try_next(&mut self) -> Option<Input> {
        let mut received = self.lines.try_recv();
        if matches!(received, Err(TryRecvError::Empty)) {
            // About to sleep: empty the wake-up, then look once more (a line handed over
            // meanwhile woke it after the drain, or is taken now).
            self.wake.drain();
            received = self.lines.try_recv();
        }
        if received.is_ok() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        match received {
            Ok(input) => {
                if !matches!(input, Input::Line(_)) {
                    self.ended = true;
                }
                Some(input)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                if self.ended {
                    None
                } else {
                    self.ended = true;
                    Some(Input::Eof)
                }
            }
        }
    }
}
