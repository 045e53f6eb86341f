//! Between the web server's thread and the chat's loop: commands from the pages go over a
//! channel, with a byte on a pipe the loop polls next to its socket to wake it (as the
//! terminal's input does, `front::input`); events for the pages go over a broadcast
//! channel every open page's WebSocket task listens to.

use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::broadcast;

/// Events a page may fall behind by before it is disconnected (it reconnects and loads
/// the history again, so it misses nothing).
const PAGE_BACKLOG: usize = 1024;

/// What a page asks of the chat.
#[derive(Debug)]
pub enum Command {
    /// A page connected: send it the history (to it alone).
    Hello {
        /// The page's connection.
        client: u64,
    },
    /// Send this text to the peer.
    Send {
        /// As typed.
        text: String,
    },
    /// The user pressed ctrl-c: say goodbye to the peer and leave.
    Leave,
    /// The web server stopped, and with it every page: why.
    Stopped(String),
}

/// An event for the pages, as JSON.
#[derive(Debug)]
pub struct ToPage {
    /// For one page only (its history), or for every page.
    pub to: Option<u64>,
    /// The event.
    pub json: String,
}

/// The server's end.
#[derive(Clone)]
pub struct Bridge {
    commands: mpsc::Sender<Command>,
    wake: Arc<io::PipeWriter>,
    events: broadcast::Sender<Arc<ToPage>>,
}

/// The chat loop's end.
pub struct Inbox {
    commands: mpsc::Receiver<Command>,
    wake: io::PipeReader,
    events: broadcast::Sender<Arc<ToPage>>,
}

/// A connected pair of ends.
pub fn bridge() -> io::Result<(Bridge, Inbox)> {
    let (tx, rx) = mpsc::channel();
    let (wake_rx, wake_tx) = io::pipe()?;
    // Neither end ever blocks: a full pipe already wakes the loop, an empty one is drained.
    rustix::io::ioctl_fionbio(wake_rx.as_fd(), true)?;
    rustix::io::ioctl_fionbio(wake_tx.as_fd(), true)?;
    let (events, _) = broadcast::channel(PAGE_BACKLOG);
    Ok((
        Bridge {
            commands: tx,
            wake: Arc::new(wake_tx),
            events: events.clone(),
        },
        Inbox {
            commands: rx,
            wake: wake_rx,
            events,
        },
    ))
}

impl Bridge {
    /// Hand `command` to the chat loop and wake it.
    pub fn tell(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }

    /// Events for the pages, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ToPage>> {
        self.events.subscribe()
    }
}

impl Inbox {
    /// The descriptor that becomes readable when a command is waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Every command waiting. The pipe is emptied first: a command sent after this call
    /// writes its byte after the drain, so the next poll wakes for it.
    pub fn take(&mut self) -> Vec<Command> {
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        self.commands.try_iter().collect()
    }

    /// Send `json` to one page, or to every page.
    pub fn show(&self, to: Option<u64>, json: String) {
        // No page open: nobody to tell (what matters is in the history).
        let _ = self.events.send(Arc::new(ToPage { to, json }));
    }
}
