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
//!
//! Where the system offers segmentation offload ([`offload`], Linux), datagrams the driver
//! sends to one peer in one call wait in [`HostStack`] and leave together in one system call
//! when the link calls [`HostStack::flush`] after the driver (or sooner, when the next
//! datagram cannot join them); datagrams that arrive coalesced are handed to the driver one
//! by one. Nothing else changes: the same datagrams leave and arrive.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6, ToSocketAddrs, UdpSocket};

use embedded_nal::{UdpClientStack, UdpFullStack, nb};

use crate::platform::offload;
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
    /// Datagrams waiting to leave together; `None` where the system can't send them so.
    outgoing: Option<Box<Outgoing>>,
    /// Datagrams that arrived coalesced and are not yet handed out; `None` where the
    /// system can't receive them so.
    incoming: Option<Box<Incoming>>,
}

/// Datagrams for one destination, all of one size but the last, to leave in one send.
struct Outgoing {
    bytes: Vec<u8>,
    to: SocketAddr,
    /// The size of each datagram but the last.
    segment: usize,
    count: usize,
    /// The last datagram was shorter than `segment`: nothing may follow it.
    closed: bool,
    /// The size the socket cuts sends into now (`UDP_SEGMENT`; 0: none).
    socket_segment: u16,
    /// The most datagrams one send may carry: 1 once the system refused a segmented send.
    max_segments: usize,
}

/// A coalesced receive and how far it was handed out.
struct Incoming {
    bytes: Vec<u8>,
    control: Vec<u8>,
    len: usize,
    at: usize,
    segment: usize,
    from: SocketAddr,
    /// Receives that brought more than one datagram.
    coalesced: u64,
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
            outgoing: offload::AVAILABLE.then(|| {
                Box::new(Outgoing {
                    bytes: Vec::with_capacity(offload::MAX_COALESCED),
                    to: SocketAddr::from(([0, 0, 0, 0], 0)),
                    segment: 0,
                    count: 0,
                    closed: false,
                    socket_segment: 0,
                    max_segments: offload::MAX_SEGMENTS,
                })
            }),
            incoming: offload::AVAILABLE.then(|| {
                Box::new(Incoming {
                    bytes: vec![0; offload::MAX_COALESCED],
                    control: offload::control_space(),
                    len: 0,
                    at: 0,
                    segment: 0,
                    from: SocketAddr::from(([0, 0, 0, 0], 0)),
                    coalesced: 0,
                })
            }),
        }
    }

    /// Send the datagrams waiting to leave together. A failure names where they were going;
    /// a full socket buffer is not one (they are lost like datagrams on the wire, and the
    /// protocol retransmits what matters).
    pub fn flush(&mut self, socket: &HostSocket) -> Result<(), (SocketAddr, io::Error)> {
        let Some(out) = self.outgoing.as_mut() else {
            return Ok(());
        };
        if out.count == 0 {
            return Ok(());
        }
        let to = out.to;
        // The wildcard socket is IPv6 (dual-stack), as is Windows' own.
        let map = self.dual_stack || matches!(socket, HostSocket::Wildcard(_));
        let sent = Self::send_queued(out, socket, map);
        out.bytes.clear();
        out.count = 0;
        out.closed = false;
        match sent {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err((to, e)),
            _ => Ok(()),
        }
    }

    /// Whether datagrams that arrived coalesced wait to be handed out: the link must not
    /// sleep on the socket while they do.
    pub fn holds_received(&self) -> bool {
        self.incoming.as_ref().is_some_and(|i| i.at < i.len)
    }

    fn send_queued(out: &mut Outgoing, socket: &HostSocket, map: bool) -> io::Result<()> {
        let fd = socket_fd(socket)?;
        let to = if map { mapped(out.to) } else { out.to };
        let sock = socket2::SockRef::from(&fd);
        // Two datagrams of a size the socket doesn't cut into yet cost two system calls
        // either way: send them one by one rather than change the socket first.
        let segment = u16::try_from(out.segment).unwrap_or(0);
        let whole = out.count > 2 || (out.count == 2 && segment == out.socket_segment);
        if whole && segment > 0 {
            if out.socket_segment != segment {
                match offload::set_segment_size(fd, segment) {
                    Ok(()) => out.socket_segment = segment,
                    // Never again; what the socket cuts into is still known, and a longer
                    // datagram below first stops it.
                    Err(_) => out.max_segments = 1,
                }
            }
            if out.socket_segment == segment {
                match sock.send_to(&out.bytes, &to.into()) {
                    Ok(_) => return Ok(()),
                    // The route can't take segmented sends (an IPsec tunnel, a small MTU):
                    // never again on this socket, and these go one by one.
                    Err(e) if is_offload_refusal(&e) => {
                        out.max_segments = 1;
                        let _ = offload::set_segment_size(fd, 0);
                        out.socket_segment = 0;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if out.bytes.is_empty() {
            return sock.send_to(&[], &to.into()).map(drop);
        }
        let mut result = Ok(());
        for datagram in out.bytes.chunks(out.segment.max(1)) {
            // A datagram longer than what the socket cuts into would leave cut: stop
            // cutting first.
            if out.socket_segment != 0 && datagram.len() > usize::from(out.socket_segment) {
                offload::set_segment_size(fd, 0)?;
                out.socket_segment = 0;
            }
            if let Err(e) = sock.send_to(datagram, &to.into()) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Hand out the next datagram of a coalesced receive, receiving anew when none is left.
    fn receive_coalesced(
        incoming: &mut Incoming,
        socket: &HostSocket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), io::Error> {
        if incoming.at >= incoming.len {
            let fd = socket_fd(socket).map_err(nb::Error::Other)?;
            let (len, from, segment) =
                offload::receive(fd, &mut incoming.bytes, &mut incoming.control).map_err(to_nb)?;
            incoming.len = len;
            incoming.at = 0;
            incoming.segment = segment.unwrap_or(len);
            incoming.from = canonical(from);
            if incoming.segment < len {
                incoming.coalesced = incoming.coalesced.wrapping_add(1);
            }
            if len == 0 {
                return Ok((0, incoming.from));
            }
        }
        let end = incoming
            .at
            .saturating_add(incoming.segment.max(1))
            .min(incoming.len);
        let datagram = incoming.bytes.get(incoming.at..end).unwrap_or_default();
        incoming.at = end;
        // A datagram longer than the caller's buffer is cut short, as recv(2) cuts it.
        let n = datagram.len().min(buffer.len());
        if let (Some(to), Some(from)) = (buffer.get_mut(..n), datagram.get(..n)) {
            to.copy_from_slice(from);
        }
        Ok((n, incoming.from))
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
        if let Some(incoming) = self.incoming.as_mut() {
            return Self::receive_coalesced(incoming, socket, buffer);
        }
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
                Ok(()) => {
                    enlarge_receive_buffer(wildcard_fd(s)?);
                    self.coalesce(wildcard_fd(s)?);
                }
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
                self.coalesce(sock.wait_handle());
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
        let Some(out) = self.outgoing.as_mut() else {
            return self.send_now(socket, remote, buffer);
        };
        // An empty datagram can't be told apart inside a run: it never joins one.
        let joins = out.count > 0
            && !buffer.is_empty()
            && out.to == remote
            && !out.closed
            && buffer.len() <= out.segment
            && out.count < out.max_segments
            && out.bytes.len() + buffer.len() <= offload::MAX_COALESCED;
        if out.count > 0 && !joins {
            self.flush(socket).map_err(|(_, e)| nb::Error::Other(e))?;
        }
        let Some(out) = self.outgoing.as_mut() else {
            return self.send_now(socket, remote, buffer);
        };
        if out.count == 0 {
            out.to = remote;
            out.segment = buffer.len();
        }
        out.bytes.extend_from_slice(buffer);
        out.count += 1;
        // Nor does anything join an empty one.
        out.closed = buffer.len() < out.segment || buffer.is_empty();
        if out.max_segments <= 1 {
            self.flush(socket).map_err(|(_, e)| nb::Error::Other(e))?;
        }
        Ok(())
    }
}

impl HostStack {
    /// Let the socket receive coalesced datagrams where the system can.
    fn coalesce(&mut self, fd: WaitHandle<'_>) {
        if self.incoming.is_some() {
            // Best effort: without it datagrams arrive one by one, through the same call.
            let _ = offload::enable_coalescing(fd);
        }
    }

    /// Send one datagram now.
    fn send_now(
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

/// A segmented send the system or the route does not take (EIO, EINVAL).
fn is_offload_refusal(e: &io::Error) -> bool {
    #[cfg(unix)]
    let refused = [rustix::io::Errno::IO, rustix::io::Errno::INVAL].map(|e| e.raw_os_error());
    #[cfg(windows)]
    let refused: [i32; 0] = [];
    e.raw_os_error().is_some_and(|code| refused.contains(&code))
}

fn to_nb(e: io::Error) -> nb::Error<io::Error> {
    if e.kind() == io::ErrorKind::WouldBlock {
        nb::Error::WouldBlock
    } else {
        nb::Error::Other(e)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    fn bound() -> (HostStack, HostSocket, SocketAddr) {
        let mut stack = HostStack::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut socket = stack.socket().expect("socket");
        stack.bind(&mut socket, 0).expect("bind");
        let addr = stack.local_addr(&socket).expect("local address");
        (stack, socket, addr)
    }

    /// Everything `stack` receives within `limit`, until `count` datagrams arrived.
    fn receive_all(
        stack: &mut HostStack,
        socket: &mut HostSocket,
        count: usize,
    ) -> Vec<(Vec<u8>, SocketAddr)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buffer = [0u8; 1024];
        while got.len() < count && Instant::now() < deadline {
            match stack.receive(socket, &mut buffer) {
                Ok((len, from)) => got.push((buffer[..len].to_vec(), from)),
                Err(nb::Error::WouldBlock) => {
                    let fd = socket_fd(socket).expect("fd");
                    let _ = crate::platform::wait::readable(
                        [Some(fd)],
                        Some(Duration::from_millis(50)),
                    );
                }
                Err(nb::Error::Other(e)) => panic!("receive: {e}"),
            }
        }
        got
    }

    /// Datagrams of one turn of the driver, as a file transfer and a chat make them: runs of
    /// one size, a shorter one ending a run, a longer one, an empty one, a second peer.
    #[test]
    fn datagrams_sent_together_arrive_as_they_were_sent() {
        let (mut tx, mut tx_socket, tx_addr) = bound();
        let (mut rx, mut rx_socket, rx_addr) = bound();
        let (mut other, mut other_socket, other_addr) = bound();
        let mut sent = Vec::new();
        let mut sent_other = Vec::new();
        let datagram = |n: usize, len: usize| -> Vec<u8> {
            (0..len).map(|i| (n * 7 + i) as u8).collect::<Vec<u8>>()
        };
        let mut lens: Vec<usize> = vec![1016; 40];
        lens.extend([
            1016, 1016, 600, 1016, 1024, 1024, 1024, 1016, 1024, 0, 0, 80, 80, 80,
        ]);
        for (n, len) in lens.into_iter().enumerate() {
            let d = datagram(n, len);
            if n == 45 {
                tx.send_to(&mut tx_socket, other_addr, &d).expect("send");
                sent_other.push(d);
            } else {
                tx.send_to(&mut tx_socket, rx_addr, &d).expect("send");
                sent.push(d);
            }
            if n == 20 || n == 50 {
                tx.flush(&tx_socket).expect("flush");
            }
        }
        tx.flush(&tx_socket).expect("flush");
        let got = receive_all(&mut rx, &mut rx_socket, sent.len());
        assert!(!rx.holds_received(), "everything received was handed out");
        if offload::AVAILABLE {
            let coalesced = rx.incoming.as_ref().map_or(0, |i| i.coalesced);
            assert!(coalesced > 0, "no receive brought several datagrams");
        }
        let want: Vec<(Vec<u8>, SocketAddr)> = sent.into_iter().map(|d| (d, tx_addr)).collect();
        assert_eq!(got.len(), want.len(), "datagrams received");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "datagram {i}");
        }
        let got_other = receive_all(&mut other, &mut other_socket, 1);
        assert_eq!(got_other, vec![(sent_other[0].clone(), tx_addr)]);
    }

    /// Nothing waits in the stack without a flush where the system can't send together, and
    /// with one, nothing is left behind by it.
    #[test]
    fn a_flush_leaves_nothing_behind() {
        let (mut tx, mut tx_socket, _) = bound();
        let (mut rx, mut rx_socket, rx_addr) = bound();
        for n in 0..5u8 {
            tx.send_to(&mut tx_socket, rx_addr, &[n; 100])
                .expect("send");
        }
        tx.flush(&tx_socket).expect("flush");
        assert!(tx.outgoing.as_ref().is_none_or(|o| o.count == 0));
        let got = receive_all(&mut rx, &mut rx_socket, 5);
        let lens: Vec<usize> = got.iter().map(|(d, _)| d.len()).collect();
        assert_eq!(lens, vec![100; 5]);
        for (n, (d, _)) in got.iter().enumerate() {
            assert!(d.iter().all(|b| usize::from(*b) == n), "datagram {n}");
        }
    }

    /// A route that refuses segmented sends (here: a socket told not to checksum, which
    /// segmentation requires) gets the datagrams one by one, and no segmented send again.
    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn a_refused_segmented_send_goes_out_datagram_by_datagram() {
        use std::os::fd::AsRawFd;
        let (mut tx, mut tx_socket, tx_addr) = bound();
        let (mut rx, mut rx_socket, rx_addr) = bound();
        let fd = socket_fd(&tx_socket).expect("fd").as_raw_fd();
        let on: nix::libc::c_int = 1;
        // SO_NO_CHECK (11 on Linux, not exported by libc for every architecture): UDP
        // without checksums, which the kernel refuses to segment (EINVAL).
        // SAFETY: a valid socket descriptor and a pointer to an int of the given size.
        let set = unsafe {
            nix::libc::setsockopt(
                fd,
                nix::libc::SOL_SOCKET,
                11,
                (&raw const on).cast(),
                std::mem::size_of_val(&on) as nix::libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_NO_CHECK");
        let sent: Vec<Vec<u8>> = (0..6u8).map(|n| vec![n; 500]).collect();
        for d in &sent {
            tx.send_to(&mut tx_socket, rx_addr, d).expect("send");
        }
        tx.flush(&tx_socket)
            .expect("flush: refused, then one by one");
        assert_eq!(tx.outgoing.as_ref().map(|o| o.max_segments), Some(1));
        assert_eq!(tx.outgoing.as_ref().map(|o| o.socket_segment), Some(0));
        let got = receive_all(&mut rx, &mut rx_socket, sent.len());
        let want: Vec<(Vec<u8>, SocketAddr)> = sent.into_iter().map(|d| (d, tx_addr)).collect();
        assert_eq!(got, want);
        // And later sends go straight out.
        tx.send_to(&mut tx_socket, rx_addr, b"after").expect("send");
        assert_eq!(
            tx.outgoing.as_ref().map(|o| o.count),
            Some(0),
            "not kept back"
        );
        let got = receive_all(&mut rx, &mut rx_socket, 1);
        assert_eq!(got, vec![(b"after".to_vec(), tx_addr)]);
    }
}
