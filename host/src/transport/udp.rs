//! The host's UDP transport: `std-embedded-nal`'s `UdpFullStack`, extended to bind a
//! specific address.
//!
//! std-embedded-nal binds every socket to `[::]:port`. That is right for a wildcard bind
//! (`0.0.0.0` or `::`: it listens on IPv4 and IPv6 alike), so wildcard binds use it as is.
//! A specific address (`127.0.0.1:7001`, one interface of a multi-homed machine) cannot be
//! expressed through it, so [`HostStack`] binds those itself with `socket2` rather than
//! silently listening everywhere. Either way the socket gets a large receive buffer, and
//! addresses are normalised: a dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`,
//! which the rest of duet sees as plain `a.b.c.d`.
//!
//! On Windows std-embedded-nal cannot lend its socket to wait on, so every bind goes
//! through `socket2` there: a wildcard IPv4 or IPv6 address binds a dual-stack `[::]`
//! socket itself (IPv4 only where the machine has no IPv6).

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6, ToSocketAddrs, UdpSocket};

use embedded_nal::{UdpClientStack, UdpFullStack, nb};

use crate::platform::wait::{AsWaitHandle, WaitHandle};

/// Bytes asked for the socket's receive buffer: a burst of retransmissions must not be lost
/// to a small default buffer (the kernel caps the request at `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 << 20;

/// std-embedded-nal's socket type (its module is private; the trait names it).
type NalSocket = <std_embedded_nal::Stack as UdpClientStack>::UdpSocket;

/// The operating system's UDP, bound to one address of the caller's choice.
pub struct HostStack {
    nal: std_embedded_nal::Stack,
    bind_ip: IpAddr,
    /// A wildcard bind made a dual-stack `[::]` socket itself (Windows): IPv4 peers are
    /// addressed as IPv4-mapped.
    dual_stack: bool,
}

/// A socket of [`HostStack`].
pub enum HostSocket {
    /// A wildcard bind through std-embedded-nal (dual-stack `[::]`).
    Wildcard(NalSocket),
    /// A socket bound to one specific address.
    Specific(Option<UdpSocket>),
}

impl HostStack {
    /// A stack whose `bind(port)` binds `bind_ip:port`.
    pub fn new(bind_ip: IpAddr) -> Self {
        HostStack {
            nal: std_embedded_nal::Stack,
            bind_ip,
            dual_stack: false,
        }
    }

    /// The address a socket is bound to, with the real port.
    pub fn local_addr(&self, socket: &HostSocket) -> io::Result<SocketAddr> {
        match socket {
            HostSocket::Wildcard(s) => {
                let fd = wildcard_fd(s)?;
                let addr = socket2::SockRef::from(&fd).local_addr()?;
                let addr = addr
                    .as_socket()
                    .ok_or_else(|| io::Error::other("not an IP socket"))?;
                Ok(SocketAddr::new(self.bind_ip, addr.port()))
            }
            HostSocket::Specific(Some(s)) if self.dual_stack => {
                Ok(SocketAddr::new(self.bind_ip, s.local_addr()?.port()))
            }
            HostSocket::Specific(Some(s)) => s.local_addr(),
            HostSocket::Specific(None) => Err(not_bound()),
        }
    }
}

/// The socket to wait on, once bound.
pub fn socket_fd(socket: &HostSocket) -> io::Result<WaitHandle<'_>> {
    match socket {
        HostSocket::Wildcard(s) => wildcard_fd(s),
        HostSocket::Specific(Some(s)) => Ok(s.wait_handle()),
        HostSocket::Specific(None) => Err(not_bound()),
    }
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn wildcard_fd(socket: &NalSocket) -> io::Result<WaitHandle<'_>> {
    let raw = socket.as_raw_fd().ok_or_else(not_bound)?;
    // SAFETY: std-embedded-nal returns the descriptor of the std socket it owns inside
    // `socket`; the BorrowedFd borrows `socket`, so the descriptor outlives it.
    Ok(unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) })
}

/// Never reached: Windows makes no std-embedded-nal sockets (see the module's docs).
#[cfg(windows)]
fn wildcard_fd(_socket: &NalSocket) -> io::Result<WaitHandle<'_>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no handle for a std-embedded-nal socket on Windows",
    ))
}

fn no_ipv6(e: &io::Error) -> bool {
    #[cfg(unix)]
    let no_family = rustix::io::Errno::AFNOSUPPORT.raw_os_error();
    #[cfg(windows)]
    let no_family = windows_sys::Win32::Networking::WinSock::WSAEAFNOSUPPORT;
    e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(no_family)
}

/// A socket bound to `[::]:port` that also takes IPv4 (mapped).
#[cfg(windows)]
fn bind_dual_stack(port: u16) -> io::Result<socket2::Socket> {
    let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
    sock.set_only_v6(false)?;
    let addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    sock.bind(&addr.into())?;
    Ok(sock)
}

fn not_bound() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "socket not bound")
}

fn enlarge_receive_buffer(fd: WaitHandle<'_>) {
    // Best effort: a smaller buffer only means more retransmissions under load.
    let _ = socket2::SockRef::from(&fd).set_recv_buffer_size(RECV_BUFFER);
}

/// `::ffff:a.b.c.d` → `a.b.c.d`, so a peer has one spelling whatever socket heard it.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Parse `HOST:PORT` (names are resolved; IPv4 preferred, as the tutorial's users expect).
pub fn resolve(text: &str) -> io::Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = text.to_socket_addrs()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "name has no address"))
}

impl UdpClientStack for HostStack {
    type UdpSocket = HostSocket;
    type Error = io::Error;

    fn socket(&mut self) -> io::Result<HostSocket> {
        Ok(if self.bind_ip.is_unspecified() && cfg!(unix) {
            HostSocket::Wildcard(self.nal.socket()?)
        } else {
            HostSocket::Specific(None)
        })
    }

    fn connect(&mut self, socket: &mut HostSocket, remote: SocketAddr) -> io::Result<()> {
        match socket {
            HostSocket::Wildcard(s) => self.nal.connect(s, remote),
            HostSocket::Specific(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "duet never connects its socket",
            )),
        }
    }

    fn send(&mut self, socket: &mut HostSocket, buffer: &[u8]) -> nb::Result<(), io::Error> {
        match socket {
            HostSocket::Wildcard(s) => self.nal.send(s, buffer),
            HostSocket::Specific(_) => Err(nb::Error::Other(not_bound())),
        }
    }

    fn receive(
        &mut self,
        socket: &mut HostSocket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), io::Error> {
        let (len, from) = match socket {
            HostSocket::Wildcard(s) => self.nal.receive(s, buffer)?,
            HostSocket::Specific(Some(s)) => loop {
                match s.recv_from(buffer) {
                    // Windows reports an earlier datagram's ICMP port unreachable on the
                    // next receive; it says nothing about what waits: read on.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                    received => break received.map_err(to_nb)?,
                }
            },
            HostSocket::Specific(None) => return Err(nb::Error::Other(not_bound())),
        };
        Ok((len, canonical(from)))
    }

    fn close(&mut self, socket: HostSocket) -> io::Result<()> {
        match socket {
            HostSocket::Wildcard(s) => self.nal.close(s),
            HostSocket::Specific(_) => Ok(()),
        }
    }
}

impl UdpFullStack for HostStack {
    fn bind(&mut self, socket: &mut HostSocket, port: u16) -> io::Result<()> {
        match socket {
            HostSocket::Wildcard(s) => match self.nal.bind(s, port) {
                Ok(()) => enlarge_receive_buffer(wildcard_fd(s)?),
                // No IPv6 on this machine: an IPv4 wildcard still works on its own.
                Err(e) if self.bind_ip.is_ipv4() && no_ipv6(&e) => {
                    *socket = HostSocket::Specific(None);
                    return self.bind(socket, port);
                }
                Err(e) => return Err(e),
            },
            HostSocket::Specific(slot) => {
                #[cfg(windows)]
                let dual = if self.bind_ip.is_unspecified() {
                    bind_dual_stack(port).ok()
                } else {
                    None
                };
                #[cfg(unix)]
                let dual: Option<socket2::Socket> = None;
                self.dual_stack = dual.is_some();
                let sock = match dual {
                    Some(sock) => sock,
                    None => {
                        let addr = SocketAddr::new(self.bind_ip, port);
                        let domain = socket2::Domain::for_address(addr);
                        let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
                        sock.bind(&addr.into())?;
                        sock
                    }
                };
                sock.set_nonblocking(true)?;
                enlarge_receive_buffer(sock.wait_handle());
                *slot = Some(sock.into());
            }
        }
        Ok(())
    }

    fn send_to(
        &mut self,
        socket: &mut HostSocket,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), io::Error> {
        match socket {
            // The wildcard socket is IPv6 (dual-stack): address IPv4 peers as mapped.
            HostSocket::Wildcard(s) => self.nal.send_to(s, mapped(remote), buffer),
            HostSocket::Specific(Some(s)) if self.dual_stack => {
                s.send_to(buffer, mapped(remote)).map(drop).map_err(to_nb)
            }
            HostSocket::Specific(Some(s)) => s.send_to(buffer, remote).map(drop).map_err(to_nb),
            HostSocket::Specific(None) => Err(nb::Error::Other(not_bound())),
        }
    }
}

/// `a.b.c.d` → `::ffff:a.b.c.d`, for a dual-stack socket.
fn mapped(remote: SocketAddr) -> SocketAddr {
    match remote {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        v6 => v6,
    }
}

fn to_nb(e: io::Error) -> nb::Error<io::Error> {
    if e.kind() == io::ErrorKind::WouldBlock {
        nb::Error::WouldBlock
    } else {
        nb::Error::Other(e)
    }
}
