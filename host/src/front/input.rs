//! What the user types, delivered to the event loop through a channel and a wake-up.
//!
//! A thread reads input — lines from a pipe or file in line mode, or a line editor
//! (rustyline) on a terminal — and hands lines over a bounded channel (in line mode, every
//! complete line already read in one batch: one hand-over, not one per line), then
//! wakes the event loop, which waits on the wake-up next to the socket (a pipe on Unix,
//! loopback sockets on Windows: [`crate::platform::wait::wake_pair`]). The channel's capacity
//! is the backpressure: while the loop takes no lines (the outbox is full), the thread
//! blocks and stops reading, so piped input is paced by the peer's acknowledgements and
//! nothing is dropped.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
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
    lines: Receiver<Batch>,
    /// Inputs of a batch taken from the channel and not yet handed out.
    ready: VecDeque<Input>,
    wake: WakeReceiver,
    /// Batches handed over and not yet taken (may dip below zero for a moment).
    queued: Arc<AtomicIsize>,
    ended: bool,
}

/// Lines the input thread may read ahead of the loop: enough that the loop takes a whole
/// window of lines in one turn (one transaction, one burst of datagrams) instead of one
/// line per thread hand-over; few enough that piped input stays paced by the peer.
const INPUT_LINES: usize = 256;
/// Lines one hand-over carries at most (line mode).
const BATCH_LINES: usize = 64;
/// Line mode's read buffer: many short lines per read(2).
const READ_BUFFER: usize = 64 * 1024;

/// A batch of inputs, as one hand-over carries it.
type Batch = Vec<Input>;

fn channel() -> io::Result<(SyncSender<Batch>, Receiver<Batch>, WakeReceiver, Wake)> {
    let (tx, rx) = mpsc::sync_channel(INPUT_LINES / BATCH_LINES);
    let (wake_tx, wake_rx) = wait::wake_pair()?;
    Ok((tx, rx, wake_rx, wake_tx))
}

fn hand_over(tx: &SyncSender<Batch>, queued: &AtomicIsize, wake: &mut Wake, input: Batch) -> bool {
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
                let mut stdin = BufReader::with_capacity(READ_BUFFER, io::stdin().lock());
                let mut buf = Vec::new();
                let mut batch = Vec::with_capacity(BATCH_LINES);
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
                    batch.push(input);
                    // Another whole line already read: take it too, without waiting.
                    if !end && batch.len() < BATCH_LINES && stdin.buffer().contains(&b'\n') {
                        continue;
                    }
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_LINES));
                    if !hand_over(&tx, &queued_in, &mut wake_tx, full) || end {
                        return;
                    }
                }
            })?;
        Ok(InputPipe {
            lines,
            ready: VecDeque::new(),
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
                    if !hand_over(&tx, &queued_in, &mut wake_tx, vec![input]) || end {
                        return;
                    }
                }
            })?;
        Ok(InputPipe {
            lines,
            ready: VecDeque::new(),
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
        if let Some(input) = self.ready.pop_front() {
            return Some(self.taken(input));
        }
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
            Ok(batch) => {
                self.ready.extend(batch);
                let input = self.ready.pop_front()?;
                Some(self.taken(input))
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

    /// Hand out `input`; after the end or an interrupt nothing more comes.
    fn taken(&mut self, input: Input) -> Input {
        if !matches!(input, Input::Line(_)) {
            self.ended = true;
        }
        input
    }
}
