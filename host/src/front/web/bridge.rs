//! Between the web server's thread and the chat's loop: commands from the pages go over a
//! channel, with the platform's wake-up (a pipe on Unix, loopback sockets on Windows) that
//! the loop polls next to its socket (as the terminal's input does, `front::input`); events for the pages go over a broadcast
//! channel every open page's WebSocket task listens to.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::platform::wait::{self, AsWaitHandle as _, WaitHandle, Wake, WakeReceiver};

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
    /// Send this file to the peer: one dropped onto a page, uploaded to `path`.
    SendFile {
        /// Where the upload is.
        path: PathBuf,
    },
    /// Pair with someone by code: invite (no code) or join (a code, maybe an address).
    Pair {
        /// What to call them.
        name: String,
        /// The code they read out (join), or `None` (invite).
        code: Option<String>,
        /// The inviter's address, `HOST:PORT` (join).
        addr: Option<String>,
    },
    /// A pairing started from a page ended: the name now paired, or why not.
    Paired(Result<String, String>),
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
    wake: Arc<Mutex<Wake>>,
    events: broadcast::Sender<Arc<ToPage>>,
}

/// The chat loop's end.
pub struct Inbox {
    commands: mpsc::Receiver<Command>,
    wake: WakeReceiver,
    events: broadcast::Sender<Arc<ToPage>>,
}

/// A connected pair of ends.
pub fn bridge() -> io::Result<(Bridge, Inbox)> {
    let (tx, rx) = mpsc::channel();
    let (wake_tx, wake_rx) = wait::wake_pair()?;
    let (events, _) = broadcast::channel(PAGE_BACKLOG);
    Ok((
        Bridge {
            commands: tx,
            wake: Arc::new(Mutex::new(wake_tx)),
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
        if self.commands.send(command).is_ok()
            && let Ok(mut wake) = self.wake.lock()
        {
            wake.wake();
        }
    }

    /// Send `json` to every page, from outside the chat loop.
    pub fn show(&self, json: String) {
        let _ = self.events.send(Arc::new(ToPage { to: None, json }));
    }

    /// Events for the pages, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ToPage>> {
        self.events.subscribe()
    }
}

impl Inbox {
    /// The descriptor that becomes readable when a command is waiting.
    pub fn fd(&self) -> WaitHandle<'_> {
        self.wake.wait_handle()
    }

    /// Every command waiting. The wake-up is drained first: a command sent after this call
    /// wakes it again after the drain, so the next poll wakes for it.
    pub fn take(&mut self) -> Vec<Command> {
        self.wake.drain();
        self.commands.try_iter().collect()
    }

    /// Send `json` to one page, or to every page.
    pub fn show(&self, to: Option<u64>, json: String) {
        // No page open: nobody to tell (what matters is in the history).
        let _ = self.events.send(Arc::new(ToPage { to, json }));
    }
}

/// A file the pages may fetch (`/files/ID`): a received one, or one dropped onto a page.
#[derive(Clone, Debug)]
pub struct Shelved {
    /// Where it is.
    pub path: PathBuf,
    /// Its name, for the download.
    pub name: String,
}

/// The files the pages may fetch, by an unguessable id; only what the chat loop put here
/// (a page never names a path).
#[derive(Clone, Default)]
pub struct Shelf(Arc<Mutex<HashMap<String, Shelved>>>);

impl Shelf {
    /// Put the file at `path` on the shelf: the address a page fetches it from.
    pub fn put(&self, path: &Path, name: &str) -> Option<String> {
        let id = format!(
            "{:016x}{:016x}",
            getrandom::u64().ok()?,
            getrandom::u64().ok()?
        );
        let shelved = Shelved {
            path: path.to_owned(),
            name: name.to_owned(),
        };
        self.0.lock().ok()?.insert(id.clone(), shelved);
        Some(format!("/files/{id}"))
    }

    /// The file shelved as `id`.
    pub fn get(&self, id: &str) -> Option<Shelved> {
        self.0.lock().ok()?.get(id).cloned()
    }
}

/// Whether a page shows a file of this name as a picture: the raster formats browsers
/// show (not SVG, which may carry script).
pub fn is_picture(name: &str) -> bool {
    picture_type(name).is_some()
}

/// The media type a picture of this name is served as.
pub fn picture_type(name: &str) -> Option<&'static str> {
    let ext = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "bmp" => "image/bmp",
        _ => return None,
    })
}
