//! The transport layer: how datagrams leave and arrive. The operating system's UDP
//! ([`udp::HostStack`]), duet's own smoltcp stack on a TAP device ([`tap::TapStack`],
//! `--tap`), the broadcast-capable socket of IP Messenger mode ([`broadcast::LanStack`]),
//! and [`Link`], which runs the core's one driver over any of them and waits in poll(2).
//!
//! [`Stack`] is the first two as one type, so every duet mode runs the same
//! `Link<Stack, _>`; [`open`] picks one from [`TapOptions`].
//!
//! Contract: a [`Socket`] is only ever used with the [`Stack`] variant that made it; a
//! mismatch is an `InvalidInput` error, never a panic.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use duet_core::smoltcp_stack;
use duet_core::time::Instant;
use embedded_nal::{UdpClientStack, UdpFullStack, nb};

pub mod broadcast;
mod error;
pub mod link;
pub mod reach;
pub mod tap;
pub mod udp;

pub use error::Error;
pub use link::{HostClock, Link, Transport, Woke, earliest};
use reach::stack::ReachStack;
use tap::{IfaceAddr, MacAddr, TapConfig, TapStack};
use udp::{HostSocket, HostStack};

use crate::platform::wait::WaitHandle;

/// TAP mode's options (`--tap`, `--ip`, `--gateway`, `--mac`); all `None`: the operating
/// system's UDP.
#[derive(Clone, Debug, Default)]
pub struct TapOptions {
    /// The TAP device to run smoltcp on.
    pub tap: Option<String>,
    /// duet's address and prefix on the tap's network.
    pub ip: Option<IfaceAddr>,
    /// Where datagrams to other networks go.
    pub gateway: Option<Ipv4Addr>,
    /// duet's Ethernet address.
    pub mac: Option<MacAddr>,
}

/// Parse `HOST:PORT` as a user typed it, naming the text in the error.
pub fn parse_addr(text: &str) -> Result<SocketAddr, Error> {
    udp::resolve(text).map_err(|source| Error::BadAddress {
        text: text.to_owned(),
        source,
    })
}

/// The transport a mode runs on.
pub enum Stack {
    /// The operating system's UDP.
    Udp(HostStack),
    /// smoltcp on a TAP device.
    Tap(Box<TapStack>),
    /// The operating system's UDP with NAT traversal (STUN, TURN) on the chat socket.
    Reach(Box<ReachStack>),
}

/// A socket of a [`Stack`].
pub enum Socket {
    /// A socket of [`Stack::Udp`] or [`Stack::Reach`].
    Udp(HostSocket),
    /// A socket of [`Stack::Tap`].
    Tap(smoltcp_stack::UdpSocket),
}

/// [`open`], with NAT traversal on the chat socket when `reach` (and not TAP mode).
pub fn open_reaching(bind: SocketAddr, tap: &TapOptions, reach: bool) -> Result<Stack, Error> {
    if reach && tap.tap.is_none() {
        return Ok(Stack::Reach(Box::new(ReachStack::new(bind.ip()))));
    }
    open(bind, tap)
}

/// The stack the command line asks for: std UDP binding `bind`'s address, or, with
/// `--tap`, smoltcp on that device with `--ip` (then `bind`'s address must be that address
/// or unspecified; its port is the port either way).
pub fn open(bind: SocketAddr, tap: &TapOptions) -> Result<Stack, Error> {
    let Some(device) = &tap.tap else {
        return Ok(Stack::Udp(HostStack::new(bind.ip())));
    };
    let refuse = |problem: String| Error::Tap {
        device: device.clone(),
        problem,
    };
    let addr = tap
        .ip
        .ok_or_else(|| refuse("--ip ADDRESS/PREFIX is required with --tap".into()))?;
    let bind_ip = bind.ip().to_canonical();
    if !bind_ip.is_unspecified() && bind_ip != IpAddr::V4(addr.ip) {
        return Err(refuse(format!(
            "--bind {bind} is not duet's address there: with --tap duet is {} (--ip); \
             bind {}:{} or 0.0.0.0:{}",
            addr.ip,
            addr.ip,
            bind.port(),
            bind.port()
        )));
    }
    let config = TapConfig {
        device: device.clone(),
        addr,
        gateway: tap.gateway,
        mac: tap.mac,
    };
    Ok(Stack::Tap(Box::new(TapStack::open(&config)?)))
}

fn mismatch() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "socket of another transport")
}

impl Transport for Stack {
    fn wait_fd<'a>(&'a self, socket: &'a Socket) -> io::Result<WaitHandle<'a>> {
        match (self, socket) {
            (Stack::Udp(s), Socket::Udp(socket)) => s.wait_fd(socket),
            (Stack::Reach(s), Socket::Udp(socket)) => s.wait_fd(socket),
            (Stack::Tap(s), Socket::Tap(socket)) => s.wait_fd(socket),
            _ => Err(mismatch()),
        }
    }

    fn local_addr(&self, socket: &Socket) -> io::Result<SocketAddr> {
        match (self, socket) {
            (Stack::Udp(s), Socket::Udp(socket)) => Transport::local_addr(s, socket),
            (Stack::Reach(s), Socket::Udp(socket)) => Transport::local_addr(s.as_ref(), socket),
            (Stack::Tap(s), Socket::Tap(socket)) => s.local_addr(socket),
            _ => Err(mismatch()),
        }
    }

    fn flush(&mut self, socket: &Socket) -> Result<(), (SocketAddr, io::Error)> {
        match (self, socket) {
            (Stack::Udp(s), Socket::Udp(socket)) => s.flush(socket),
            (Stack::Reach(s), Socket::Udp(socket)) => Transport::flush(s.as_mut(), socket),
            (Stack::Tap(s), Socket::Tap(socket)) => Transport::flush(s.as_mut(), socket),
            _ => Ok(()),
        }
    }

    fn holds_received(&self) -> bool {
        match self {
            Stack::Udp(s) => s.holds_received(),
            Stack::Reach(s) => Transport::holds_received(s.as_ref()),
            Stack::Tap(s) => Transport::holds_received(s.as_ref()),
        }
    }

    fn poll_stack(&mut self) -> io::Result<Option<Instant>> {
        match self {
            Stack::Udp(s) => s.poll_stack(),
            Stack::Reach(s) => s.poll_stack(),
            Stack::Tap(s) => s.poll_stack(),
        }
    }
}

impl UdpClientStack for Stack {
    type UdpSocket = Socket;
    type Error = io::Error;

    fn socket(&mut self) -> io::Result<Socket> {
        match self {
            Stack::Udp(s) => s.socket().map(Socket::Udp),
            Stack::Reach(s) => s.socket().map(Socket::Udp),
            Stack::Tap(s) => s.socket().map(Socket::Tap),
        }
    }

    fn connect(&mut self, socket: &mut Socket, remote: SocketAddr) -> io::Result<()> {
        match (self, socket) {
            (Stack::Udp(s), Socket::Udp(socket)) => s.connect(socket, remote),
            (Stack::Reach(s), Socket::Udp(socket)) => s.connect(socket, remote),
            (Stack::Tap(s), Socket::Tap(socket)) => s.connect(socket, remote),
            _ => Err(mismatch()),
        }
    }

    fn send(&mut self, socket: &mut Socket, buffer: &[u8]) -> nb::Result<(), io::Error> {
        match (self, socket) {
            (Stack::Udp(s), Socket::Udp(socket)) => s.send(socket, buffer),
            (Stack::Reach(s), Socket::Udp(socket)) => s.send(socket, buffer),
            (Stack::Tap(s), Socket::Tap(socket)) => s.send(socket, buffer),
            _ => Err(nb::Error::Other(mismatch())),
        }
    }

    fn receive(
        &mut self,
        socket: &mut Socket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), io::Error> {
        match (self, socket) {
            (Stack::Udp(s), Socket::Udp(socket)) => s.receive(socket, buffer),
            (Stack::Reach(s), Socket::Udp(socket)) => s.receive(socket, buffer),
            (Stack::Tap(s), Socket::Tap(socket)) => s.receive(socket, buffer),
            _ => Err(nb::Error::Other(mismatch())),
        }
    }

    fn close(&mut self, socket: Socket) -> io::Result<()> {
        match (self, socket) {
            (Stack::Udp(s), Socket::Udp(socket)) => s.close(socket),
            (Stack::Reach(s), Socket::Udp(socket)) => s.close(socket),
            (Stack::Tap(s), Socket::Tap(socket)) => s.close(socket),
            _ => Err(mismatch()),
        }
    }
}

impl UdpFullStack for Stack {
    fn bind(&mut self, socket: &mut Socket, local_port: u16) -> io::Result<()> {
        match (self, socket) {
            (Stack::Udp(s), Socket::Udp(socket)) => s.bind(socket, local_port),
            (Stack::Reach(s), Socket::Udp(socket)) => s.bind(socket, local_port),
            (Stack::Tap(s), Socket::Tap(socket)) => s.bind(socket, local_port),
            _ => Err(mismatch()),
        }
    }

    fn send_to(
        &mut self,
        socket: &mut Socket,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), io::Error> {
        match (self, socket) {
            (Stack::Udp(s), Socket::Udp(socket)) => s.send_to(socket, remote, buffer),
            (Stack::Reach(s), Socket::Udp(socket)) => s.send_to(socket, remote, buffer),
            (Stack::Tap(s), Socket::Tap(socket)) => s.send_to(socket, remote, buffer),
            _ => Err(nb::Error::Other(mismatch())),
        }
    }
}
