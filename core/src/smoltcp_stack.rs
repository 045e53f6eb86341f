//! An `embedded_nal::UdpFullStack` over smoltcp 0.14, so the one [`crate::Driver`] loop runs
//! on smoltcp: on a board's Ethernet chip and on a host's TAP device alike.
//!
//! [`SmoltcpStack`] owns a smoltcp [`Interface`], the [`Device`] it talks through, a
//! [`SocketSet`] and a [`Clock`]. The caller configures the interface (addresses, routes)
//! and puts UDP sockets, with their buffers, into the set before handing both over; every
//! UDP socket in the set that is not bound yet is a spare that
//! [`UdpClientStack::socket`] hands out, so the adapter itself never allocates.
//!
//! Contract: nothing here panics (socket handles are looked up without smoltcp's panicking
//! accessors) and every call does a bounded amount of work: [`SmoltcpStack::poll`] takes at
//! most [`INGRESS_BUDGET`] frames from the device, so a flood cannot pin the caller.
//! [`UdpClientStack::receive`] polls the interface when the socket has nothing buffered;
//! [`UdpFullStack::send_to`] enqueues the datagram, then polls so it leaves at once. Only
//! IPv4 is spoken (IPv4-mapped IPv6 addresses are accepted as their IPv4 address).
//!
//! This is the adapter `smoltcp-nal` would be, had it not stayed on smoltcp 0.12.

use core::net::SocketAddr;

use embedded_nal::{UdpClientStack, UdpFullStack, nb};
use heapless::Vec;
use smoltcp::iface::{Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::{AnySocket, udp};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use crate::driver::Clock;
use crate::time::Instant;

/// UDP sockets one stack can hand out at once.
pub const MAX_SOCKETS: usize = 8;
/// Frames taken from the device per [`SmoltcpStack::poll`] at most.
pub const INGRESS_BUDGET: usize = 32;
/// Rounds of egress per [`SmoltcpStack::poll`] at most; smoltcp sends about one datagram
/// per socket per round.
pub const EGRESS_BUDGET: usize = 32;
/// First port of the range used when a socket sends before it was bound (RFC 6335).
const EPHEMERAL_FIRST: u16 = 49152;

/// What the smoltcp stack refused. Small and `Copy` so a board can log and count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Every UDP socket in the set is already handed out: add more to the [`SocketSet`].
    NoSocket,
    /// The socket does not name a UDP socket of this stack's set.
    InvalidSocket,
    /// Binding failed: port 0, or the socket is already bound.
    Bind,
    /// The address cannot be sent to: not IPv4, unspecified, port 0, or no route.
    Unaddressable,
    /// `send` on a socket that was never `connect`ed.
    NotConnected,
    /// The datagram is larger than the socket's whole send buffer.
    TooLarge,
}

impl Error {
    /// What went wrong, in words (the `Display` text, for a board without `core::fmt`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::NoSocket => "no spare UDP socket in the smoltcp socket set",
            Error::InvalidSocket => "not a UDP socket of this stack",
            Error::Bind => "cannot bind: port 0 or already bound",
            Error::Unaddressable => "address not reachable over IPv4",
            Error::NotConnected => "socket not connected",
            Error::TooLarge => "datagram larger than the socket's send buffer",
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for Error {}

/// A UDP socket handed out by [`SmoltcpStack`]: a handle into its [`SocketSet`].
///
/// Not `defmt::Format`: smoltcp's handle and endpoint are only that with smoltcp's own
/// `defmt` feature, which the core leaves to the application.
#[derive(Debug, PartialEq, Eq)]
pub struct UdpSocket {
    handle: SocketHandle,
    /// Set by `connect`: where `send` goes, and the only sender `receive` accepts.
    remote: Option<IpEndpoint>,
}

impl UdpSocket {
    /// The smoltcp handle, to inspect the socket through [`SmoltcpStack::sockets`].
    pub fn handle(&self) -> SocketHandle {
        self.handle
    }
}

/// smoltcp's interface, device, sockets and clock behind `embedded_nal::UdpFullStack`.
pub struct SmoltcpStack<'a, D: Device, C: Clock> {
    iface: Interface,
    device: D,
    sockets: SocketSet<'a>,
    clock: C,
    /// Sockets handed out by `socket()` and not closed since.
    taken: Vec<SocketHandle, MAX_SOCKETS>,
    next_ephemeral: u16,
}

impl<'a, D: Device, C: Clock> SmoltcpStack<'a, D, C> {
    /// Wrap a configured interface, its device, a socket set holding the UDP sockets to
    /// hand out, and the clock that timestamps smoltcp's polls.
    pub fn new(iface: Interface, device: D, sockets: SocketSet<'a>, clock: C) -> Self {
        SmoltcpStack {
            iface,
            device,
            sockets,
            clock,
            taken: Vec::new(),
            next_ephemeral: EPHEMERAL_FIRST,
        }
    }

    /// Move frames between the device and the sockets: expire timers, take at most
    /// [`INGRESS_BUDGET`] frames in, send what the sockets queued. Returns whether any
    /// socket may have changed state.
    pub fn poll(&mut self) -> bool {
        let now = smoltcp_now(&self.clock);
        let mut changed = false;
        self.iface.poll_maintenance(now);
        for _ in 0..INGRESS_BUDGET {
            match self
                .iface
                .poll_ingress_single(now, &mut self.device, &mut self.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => changed = true,
            }
        }
        for _ in 0..EGRESS_BUDGET {
            match self
                .iface
                .poll_egress(now, &mut self.device, &mut self.sockets)
            {
                PollResult::None => break,
                PollResult::SocketStateChanged => changed = true,
            }
        }
        changed
    }

    /// When smoltcp next has timed work (an ARP retry, say), if ever; a host waits no
    /// longer than this before polling again.
    pub fn poll_at(&mut self) -> Option<Instant> {
        let now = smoltcp_now(&self.clock);
        self.iface
            .poll_at(now, &self.sockets)
            .map(|at| Instant::from_millis(u64::try_from(at.total_millis()).unwrap_or(0)))
    }

    /// The interface, e.g. to show its addresses.
    pub fn interface(&self) -> &Interface {
        &self.iface
    }

    /// The interface, e.g. to change its addresses or routes.
    pub fn interface_mut(&mut self) -> &mut Interface {
        &mut self.iface
    }

    /// The device, e.g. to read a driver's counters.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The socket set, e.g. to read a socket's queue lengths.
    pub fn sockets(&self) -> &SocketSet<'a> {
        &self.sockets
    }

    /// The clock the stack timestamps smoltcp with.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Give the parts back.
    pub fn into_parts(self) -> (Interface, D, SocketSet<'a>, C) {
        (self.iface, self.device, self.sockets, self.clock)
    }

    /// The UDP socket behind `handle`, without smoltcp's panicking `get_mut`.
    fn udp(&mut self, handle: SocketHandle) -> Result<&mut udp::Socket<'a>, Error> {
        self.sockets
            .iter_mut()
            .find(|(h, _)| *h == handle)
            .and_then(|(_, socket)| udp::Socket::downcast_mut(socket))
            .ok_or(Error::InvalidSocket)
    }

    /// Bind an unbound socket to the next ephemeral port, as an OS does on first send.
    fn ensure_bound(&mut self, handle: SocketHandle) -> Result<(), Error> {
        if self.udp(handle)?.is_open() {
            return Ok(());
        }
        // Skip ports other sockets of the set already hold; the range is far larger than
        // any set, so the loop ends long before it wraps round.
        for _ in 0..MAX_SOCKETS + 1 {
            let port = self.next_ephemeral;
            self.next_ephemeral = self
                .next_ephemeral
                .checked_add(1)
                .unwrap_or(EPHEMERAL_FIRST);
            let in_use = self.sockets.iter().any(
                |(_, s)| matches!(s, smoltcp::socket::Socket::Udp(u) if u.endpoint().port == port),
            );
            if !in_use {
                return self.udp(handle)?.bind(port).map_err(|_| Error::Bind);
            }
        }
        Err(Error::Bind)
    }

    /// Take one buffered datagram for `socket`, dropping those a connected socket must
    /// not see. `Ok(None)`: nothing buffered.
    fn try_receive(
        &mut self,
        socket: &UdpSocket,
        buffer: &mut [u8],
    ) -> Result<Option<(usize, SocketAddr)>, Error> {
        let udp = self.udp(socket.handle)?;
        // Bounded by the buffer's packet count: each round dequeues one datagram.
        for _ in 0..=udp.packet_recv_capacity() {
            let Ok((payload, meta)) = udp.recv() else {
                return Ok(None);
            };
            if socket.remote.is_some_and(|r| r != meta.endpoint) {
                continue;
            }
            // A datagram longer than `buffer` is cut, as recvfrom(2) does; the caller sees
            // a full buffer and, like the Driver with its one spare byte, knows it was long.
            let len = payload.len().min(buffer.len());
            buffer[..len].copy_from_slice(&payload[..len]);
            return Ok(Some((len, SocketAddr::from(meta.endpoint))));
        }
        Ok(None)
    }
}

impl<D: Device, C: Clock> UdpClientStack for SmoltcpStack<'_, D, C> {
    type UdpSocket = UdpSocket;
    type Error = Error;

    fn socket(&mut self) -> Result<UdpSocket, Error> {
        let taken = &self.taken;
        let handle = self
            .sockets
            .iter()
            .find(|(h, s)| {
                matches!(s, smoltcp::socket::Socket::Udp(u) if !u.is_open()) && !taken.contains(h)
            })
            .map(|(h, _)| h)
            .ok_or(Error::NoSocket)?;
        self.taken.push(handle).map_err(|_| Error::NoSocket)?;
        Ok(UdpSocket {
            handle,
            remote: None,
        })
    }

    fn connect(&mut self, socket: &mut UdpSocket, remote: SocketAddr) -> Result<(), Error> {
        let remote = endpoint(remote)?;
        self.ensure_bound(socket.handle)?;
        socket.remote = Some(remote);
        Ok(())
    }

    fn send(&mut self, socket: &mut UdpSocket, buffer: &[u8]) -> nb::Result<(), Error> {
        let remote = socket.remote.ok_or(Error::NotConnected)?;
        self.send_to(socket, SocketAddr::from(remote), buffer)
    }

    fn receive(
        &mut self,
        socket: &mut UdpSocket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), Error> {
        if let Some(datagram) = self.try_receive(socket, buffer)? {
            return Ok(datagram);
        }
        self.poll();
        self.try_receive(socket, buffer)?
            .ok_or(nb::Error::WouldBlock)
    }

    fn close(&mut self, socket: UdpSocket) -> Result<(), Error> {
        self.udp(socket.handle)?.close();
        self.taken.retain(|h| *h != socket.handle);
        Ok(())
    }
}

impl<D: Device, C: Clock> UdpFullStack for SmoltcpStack<'_, D, C> {
    fn bind(&mut self, socket: &mut UdpSocket, local_port: u16) -> Result<(), Error> {
        if local_port == 0 {
            return self.ensure_bound(socket.handle);
        }
        self.udp(socket.handle)?
            .bind(IpListenEndpoint::from(local_port))
            .map_err(|_| Error::Bind)
    }

    fn send_to(
        &mut self,
        socket: &mut UdpSocket,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), Error> {
        let remote = endpoint(remote)?;
        self.ensure_bound(socket.handle)?;
        let udp = self.udp(socket.handle)?;
        if buffer.len() > udp.payload_send_capacity() {
            return Err(nb::Error::Other(Error::TooLarge));
        }
        match udp.send_slice(buffer, remote) {
            Ok(()) => {}
            Err(udp::SendError::Unaddressable) => {
                return Err(nb::Error::Other(Error::Unaddressable));
            }
            Err(udp::SendError::BufferFull) => {
                // Flush what is queued once, then try again before reporting backpressure.
                self.poll();
                match self.udp(socket.handle)?.send_slice(buffer, remote) {
                    Ok(()) => {}
                    Err(udp::SendError::Unaddressable) => {
                        return Err(nb::Error::Other(Error::Unaddressable));
                    }
                    Err(udp::SendError::BufferFull) => return Err(nb::Error::WouldBlock),
                }
            }
        }
        self.poll();
        Ok(())
    }
}

/// smoltcp's endpoint for `addr`, IPv4 only.
fn endpoint(addr: SocketAddr) -> Result<IpEndpoint, Error> {
    let v4 = match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => core::net::SocketAddrV4::new(ip, v6.port()),
            None => return Err(Error::Unaddressable),
        },
    };
    if v4.ip().is_unspecified() || v4.port() == 0 {
        return Err(Error::Unaddressable);
    }
    Ok(IpEndpoint::from(v4))
}

/// The clock's reading as smoltcp's timestamp.
fn smoltcp_now<C: Clock>(clock: &C) -> smoltcp::time::Instant {
    let millis = i64::try_from(clock.now().as_millis()).unwrap_or(i64::MAX);
    smoltcp::time::Instant::from_millis(millis)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::{Config, Driver, Event, Session};
    use smoltcp::iface::{Config as IfaceConfig, SocketStorage};
    use smoltcp::phy::{DeviceCapabilities, Medium};
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// A cable between two test devices: frames each side sent, not yet received.
    #[derive(Default)]
    struct Cable {
        to: [VecDeque<std::vec::Vec<u8>>; 2],
    }

    /// One end of a [`Cable`].
    struct Plug {
        cable: Rc<RefCell<Cable>>,
        side: usize,
    }

    struct Rx(std::vec::Vec<u8>);
    struct Tx<'a>(&'a Plug);

    impl smoltcp::phy::RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl smoltcp::phy::TxToken for Tx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut frame = std::vec![0; len];
            let r = f(&mut frame);
            self.0.cable.borrow_mut().to[1 - self.0.side].push_back(frame);
            r
        }
    }

    impl Device for Plug {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx<'a>;
        fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
            let frame = self.cable.borrow_mut().to[self.side].pop_front()?;
            Some((Rx(frame), Tx(self)))
        }
        fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
            Some(Tx(self))
        }
        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = 1514;
            caps
        }
    }

    /// Simulated time shared by both ends.
    #[derive(Clone, Default)]
    struct TestClock(Rc<Cell<u64>>);

    impl Clock for TestClock {
        fn now(&self) -> Instant {
            Instant::from_millis(self.0.get())
        }
    }

    type Stack = SmoltcpStack<'static, Plug, TestClock>;

    fn leak<T>(value: T) -> &'static mut T {
        Box::leak(Box::new(value))
    }

    fn stack(cable: &Rc<RefCell<Cable>>, side: usize, clock: &TestClock) -> Stack {
        let mac = EthernetAddress([0x02, 0, 0, 0, 0, side as u8 + 1]);
        let mut device = Plug {
            cable: cable.clone(),
            side,
        };
        let config = IfaceConfig::new(HardwareAddress::Ethernet(mac));
        let mut iface = Interface::new(config, &mut device, smoltcp_now(clock));
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(
                Ipv4Address::new(10, 9, 0, side as u8 + 1).into(),
                24,
            ));
        });
        let mut sockets = SocketSet::new(&mut leak([SocketStorage::EMPTY; 2])[..]);
        for _ in 0..2 {
            let rx = udp::PacketBuffer::new(
                &mut leak([udp::PacketMetadata::EMPTY; 4])[..],
                &mut leak([0u8; 4096])[..],
            );
            let tx = udp::PacketBuffer::new(
                &mut leak([udp::PacketMetadata::EMPTY; 4])[..],
                &mut leak([0u8; 4096])[..],
            );
            sockets.add(udp::Socket::new(rx, tx));
        }
        SmoltcpStack::new(iface, device, sockets, clock.clone())
    }

    fn addr(side: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 9, 0, side + 1], port))
    }

    #[test]
    fn two_sessions_chat_through_the_driver_over_smoltcp() {
        let cable = Rc::new(RefCell::new(Cable::default()));
        let clock = TestClock::default();
        let mut a = stack(&cable, 0, &clock);
        let mut b = stack(&cable, 1, &clock);
        let mut drive_a = Driver::bind(&mut a, 7789).expect("bind a");
        let mut drive_b = Driver::bind(&mut b, 7788).expect("bind b");
        let mut alice = Session::new(clock.now(), Config::default(), 11, Some(addr(1, 7788)));
        let mut bob = Session::new(clock.now(), Config::default(), 22, None);
        let sent = alice
            .send_text(clock.now(), "你好 👋 over smoltcp")
            .expect("queued");

        let mut got = None;
        let mut delivered = false;
        for _ in 0..200 {
            drive_a.poll(&mut a, &clock, &mut alice).expect("poll a");
            drive_b.poll(&mut b, &clock, &mut bob).expect("poll b");
            while let Some(event) = bob.poll_event() {
                if let Event::Message(text) = event {
                    got = Some(text.to_owned());
                }
            }
            while let Some(event) = alice.poll_event() {
                delivered |= event == Event::Delivered(sent);
            }
            if delivered && got.is_some() {
                break;
            }
            clock.0.set(clock.0.get() + 10);
        }
        assert_eq!(got.as_deref(), Some("你好 👋 over smoltcp"));
        assert!(delivered, "alice never saw the acknowledgement");
        assert_eq!(bob.peer(), Some(addr(0, 7789)));
    }

    #[test]
    fn oversized_datagram_is_seen_as_longer_than_the_buffer() {
        let cable = Rc::new(RefCell::new(Cable::default()));
        let clock = TestClock::default();
        let mut a = stack(&cable, 0, &clock);
        let mut b = stack(&cable, 1, &clock);
        let mut tx = a.socket().expect("socket");
        let mut rx = b.socket().expect("socket");
        b.bind(&mut rx, 5000).expect("bind");
        let big = [0x55u8; 1400];
        let mut buf = [0u8; 1025];
        let mut received = None;
        for _ in 0..50 {
            match a.send_to(&mut tx, addr(1, 5000), &big) {
                Ok(()) | Err(nb::Error::WouldBlock) => {}
                Err(nb::Error::Other(e)) => panic!("send_to: {e}"),
            }
            if let Ok(r) = b.receive(&mut rx, &mut buf) {
                received = Some(r);
                break;
            }
            clock.0.set(clock.0.get() + 100);
        }
        let (len, from) = received.expect("datagram arrived");
        assert_eq!(len, buf.len(), "a long datagram fills the buffer");
        assert_eq!(from.ip(), addr(0, 0).ip());
    }

    #[test]
    fn errors_instead_of_panics() {
        let cable = Rc::new(RefCell::new(Cable::default()));
        let clock = TestClock::default();
        let mut a = stack(&cable, 0, &clock);
        let mut s1 = a.socket().expect("first socket");
        let s2 = a.socket().expect("second socket");
        assert_eq!(a.socket(), Err(Error::NoSocket));
        a.close(s2).expect("close");
        let mut s2 = a.socket().expect("a closed socket is a spare again");

        let v6: SocketAddr = "[2001:db8::1]:9".parse().expect("v6");
        assert_eq!(
            a.send_to(&mut s1, v6, b"x"),
            Err(nb::Error::Other(Error::Unaddressable))
        );
        assert_eq!(
            a.send(&mut s2, b"x"),
            Err(nb::Error::Other(Error::NotConnected))
        );
        assert_eq!(
            a.send_to(&mut s1, addr(1, 9), &[0; 5000]),
            Err(nb::Error::Other(Error::TooLarge))
        );
        a.bind(&mut s2, 7000).expect("bind");
        assert_eq!(a.bind(&mut s2, 7001), Err(Error::Bind));
        let mut buf = [0; 16];
        assert_eq!(a.receive(&mut s2, &mut buf), Err(nb::Error::WouldBlock));

        let mapped: SocketAddr = "[::ffff:10.9.0.2]:9".parse().expect("mapped");
        assert_eq!(endpoint(mapped), endpoint(addr(1, 9)));
    }
}
