//! TAP mode: duet's own network stack on a Linux TAP device. The stack is smoltcp behind the
//! core's [`duet_core::smoltcp_stack`] adapter — the one the board runs — so everything above
//! it (the driver, the session, the UI) is the code that runs over std UDP.
//!
//! Contract: [`TapStack::open`] checks the device before it attaches (it exists in this
//! network namespace, it is a tap, it is up, `/dev/net/tun` opens, the user may attach) and
//! says which check failed and how to fix it; it never creates a device, which the kernel
//! would otherwise do for root. After that nothing panics: a frame the device refuses is
//! lost like a frame on a wire (the session retransmits), and a device that fails (deleted
//! under duet) is an error from the next call. Nothing sleeps for ARP either: a datagram
//! waiting for its neighbour stays queued in smoltcp, whose retry time is reported through
//! [`Transport::poll_stack`] so the link wakes for it, and a first exchange that is lost
//! anyway is resent by the session.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use duet_core::MAX_DATAGRAM;
use duet_core::smoltcp_stack::{self, SmoltcpStack, UdpSocket};
use duet_core::time::Instant;
use embedded_nal::{UdpClientStack, UdpFullStack, nb};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{AnySocket, udp};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use super::{Error, HostClock, Transport};
use crate::platform::wait::WaitHandle;

/// Datagrams each way that smoltcp's UDP socket buffers: a window of retransmissions, or
/// datagrams queued while ARP resolves the peer, must fit.
const SOCKET_DATAGRAMS: usize = 64;

/// duet's IPv4 address on the tap's network, with the network's prefix length:
/// `--ip 192.168.77.2/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceAddr {
    /// duet's own address (not the kernel's address on the tap).
    pub ip: Ipv4Addr,
    /// The prefix length, 1 to 32.
    pub prefix: u8,
}

impl IfaceAddr {
    /// Whether `ip` is on this network, so it is reached without a gateway.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let host_bits = 32u32.saturating_sub(u32::from(self.prefix));
        let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.ip) & mask
    }
}

impl FromStr for IfaceAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("expected ADDRESS/PREFIX, e.g. 192.168.77.2/24, not {s:?}"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| format!("the prefix length must be 1 to 32, not {prefix:?}"))?;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(format!("{ip} cannot be an interface's address"));
        }
        Ok(IfaceAddr { ip, prefix })
    }
}

impl fmt::Display for IfaceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// An Ethernet address, `02:00:00:00:00:01`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The default for duet at `ip`: locally administered `02:00:` and the address's four
    /// bytes. The same address gets the same MAC on every run, so a neighbour's ARP cache
    /// from the last run is still right.
    pub fn for_ip(ip: Ipv4Addr) -> MacAddr {
        let [a, b, c, d] = ip.octets();
        MacAddr([0x02, 0x00, a, b, c, d])
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected six hex bytes like 02:00:00:00:00:01, not {s:?}");
        let bytes: Vec<u8> = s
            .split([':', '-'])
            .map(|b| {
                (b.len() == 2)
                    .then(|| u8::from_str_radix(b, 16).ok())
                    .flatten()
            })
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let mac: [u8; 6] = bytes.try_into().map_err(|_| bad())?;
        if mac[0] & 1 != 0 {
            return Err(format!(
                "{s} is a multicast address; a device's must be unicast"
            ));
        }
        if mac == [0; 6] {
            return Err("00:00:00:00:00:00 cannot be a device's address".into());
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// What [`TapStack::open`] needs: the command line's `--tap`, `--ip`, `--gateway`, `--mac`.
#[derive(Clone, Debug)]
pub struct TapConfig {
    /// The TAP device's name, e.g. `tap0`.
    pub device: String,
    /// duet's address on it.
    pub addr: IfaceAddr,
    /// Where datagrams for other networks go, if anywhere.
    pub gateway: Option<Ipv4Addr>,
    /// duet's Ethernet address (default: [`MacAddr::for_ip`]).
    pub mac: Option<MacAddr>,
}

/// duet's network stack on a TAP device: smoltcp's interface and one UDP socket behind the
/// core's adapter, as a host [`Transport`].
pub struct TapStack {
    stack: SmoltcpStack<'static, TapDevice, HostClock>,
    device: String,
    addr: IfaceAddr,
    gateway: Option<Ipv4Addr>,
    /// Set once the device failed; every later call reports it.
    failed: Option<(io::ErrorKind, String)>,
}

impl TapStack {
    /// Check the device, attach to it, and bring up smoltcp on it with duet's address.
    pub fn open(config: &TapConfig) -> Result<TapStack, Error> {
        let refuse = |problem: String| Error::Tap {
            device: config.device.clone(),
            problem,
        };
        if let Some(gateway) = config.gateway
            && (!config.addr.contains(gateway) || gateway == config.addr.ip)
        {
            return Err(refuse(format!(
                "--gateway {gateway} must be another address on duet's network {} (--ip)",
                config.addr
            )));
        }
        let mut device = attach(&config.device).map_err(refuse)?;
        let mac = config.mac.unwrap_or(MacAddr::for_ip(config.addr.ip));
        // The random seed stays 0: smoltcp draws on it only for TCP, DHCP and DNS.
        let iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        let now = smoltcp::time::Instant::from_millis(
            i64::try_from(Instant::now().as_millis()).unwrap_or(i64::MAX),
        );
        let mut iface = Interface::new(iface_config, &mut device, now);
        let cidr = IpCidr::new(IpAddress::Ipv4(config.addr.ip), config.addr.prefix);
        let mut added = Ok(());
        iface.update_ip_addrs(|addrs| added = addrs.push(cidr).map(drop));
        added.map_err(|_| refuse("smoltcp has no room for duet's address".into()))?;
        if let Some(gateway) = config.gateway {
            iface
                .routes_mut()
                .add_default_ipv4_route(gateway)
                .map_err(|_| refuse("smoltcp has no room for the default route".into()))?;
        }
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; SOCKET_DATAGRAMS],
                vec![0u8; SOCKET_DATAGRAMS * MAX_DATAGRAM],
            )
        };
        let mut sockets = SocketSet::new(Vec::new());
        sockets.add(udp::Socket::new(buffer(), buffer()));
        Ok(TapStack {
            stack: SmoltcpStack::new(iface, device, sockets, HostClock),
            device: config.device.clone(),
            addr: config.addr,
            gateway: config.gateway,
            failed: None,
        })
    }

    /// The TAP device's name.
    pub fn device_name(&self) -> &str {
        &self.device
    }

    /// Whether the device has failed; once it has, always the same error.
    fn check_device(&mut self) -> io::Result<()> {
        if let Some(e) = self.stack.device_mut().take_failure() {
            #[cfg(unix)]
            let gone = e.raw_os_error() == Some(rustix::io::Errno::BADFD.raw_os_error());
            #[cfg(not(unix))]
            let gone = false;
            let text = if gone {
                format!("TAP device {} is gone (deleted?): {e}", self.device)
            } else {
                format!("TAP device {} failed: {e}", self.device)
            };
            self.failed.get_or_insert((e.kind(), text));
        }
        match &self.failed {
            Some((kind, text)) => Err(io::Error::new(*kind, text.clone())),
            None => Ok(()),
        }
    }

    /// Refuse at once what smoltcp would queue for ever: an address outside duet's network
    /// when there is no gateway.
    fn check_route(&self, remote: SocketAddr) -> io::Result<()> {
        let IpAddr::V4(ip) = remote.ip().to_canonical() else {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{remote}: TAP mode speaks IPv4 only"),
            ));
        };
        if self.addr.contains(ip) || self.gateway.is_some() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::NetworkUnreachable,
            format!(
                "{ip} is outside duet's network {} on {} and no --gateway was given",
                self.addr, self.device
            ),
        ))
    }
}

impl Transport for TapStack {
    #[cfg(unix)]
    fn wait_fd<'a>(&'a self, _socket: &'a UdpSocket) -> io::Result<WaitHandle<'a>> {
        use std::os::fd::AsFd;
        Ok(self.stack.device().file.as_fd())
    }

    /// Never reached: there is no TAP mode off Linux ([`attach`] refuses).
    #[cfg(not(unix))]
    fn wait_fd<'a>(&'a self, _socket: &'a UdpSocket) -> io::Result<WaitHandle<'a>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TAP mode needs Linux",
        ))
    }

    fn local_addr(&self, socket: &UdpSocket) -> io::Result<SocketAddr> {
        let port = self
            .stack
            .sockets()
            .iter()
            .find(|(handle, _)| *handle == socket.handle())
            .and_then(|(_, s)| udp::Socket::downcast(s))
            .map(|s| s.endpoint().port)
            .filter(|port| *port != 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "socket not bound"))?;
        Ok(SocketAddr::new(IpAddr::V4(self.addr.ip), port))
    }

    /// smoltcp sends what it is given on its own poll: nothing waits here.
    fn flush(&mut self, _socket: &UdpSocket) -> Result<(), (SocketAddr, io::Error)> {
        Ok(())
    }

    fn poll_stack(&mut self) -> io::Result<Option<Instant>> {
        self.stack.poll();
        self.check_device()?;
        // Datagrams smoltcp already took off the device leave the descriptor unreadable: a
        // protocol that paused receiving (a full legacy inbox) must be polled again now, as
        // a readable std socket would wake it.
        let buffered = self
            .stack
            .sockets()
            .iter()
            .any(|(_, socket)| udp::Socket::downcast(socket).is_some_and(|udp| udp.can_recv()));
        if buffered {
            return Ok(Some(Instant::now()));
        }
        Ok(self.stack.poll_at())
    }
}

impl UdpClientStack for TapStack {
    type UdpSocket = UdpSocket;
    type Error = io::Error;

    fn socket(&mut self) -> io::Result<UdpSocket> {
        self.stack.socket().map_err(to_io)
    }

    fn connect(&mut self, socket: &mut UdpSocket, remote: SocketAddr) -> io::Result<()> {
        self.check_route(remote)?;
        self.stack.connect(socket, remote).map_err(to_io)
    }

    fn send(&mut self, socket: &mut UdpSocket, buffer: &[u8]) -> nb::Result<(), io::Error> {
        self.stack.send(socket, buffer).map_err(to_nb)?;
        self.check_device().map_err(nb::Error::Other)
    }

    fn receive(
        &mut self,
        socket: &mut UdpSocket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), io::Error> {
        let received = self.stack.receive(socket, buffer).map_err(to_nb);
        if matches!(received, Err(nb::Error::WouldBlock)) {
            self.check_device().map_err(nb::Error::Other)?;
        }
        received
    }

    fn close(&mut self, socket: UdpSocket) -> io::Result<()> {
        self.stack.close(socket).map_err(to_io)
    }
}

impl UdpFullStack for TapStack {
    fn bind(&mut self, socket: &mut UdpSocket, local_port: u16) -> io::Result<()> {
        self.stack.bind(socket, local_port).map_err(to_io)
    }

    fn send_to(
        &mut self,
        socket: &mut UdpSocket,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), io::Error> {
        self.check_route(remote)?;
        self.stack.send_to(socket, remote, buffer).map_err(to_nb)?;
        self.check_device().map_err(nb::Error::Other)
    }
}

/// The adapter's error as the host transports' error, keeping its words.
fn to_io(e: smoltcp_stack::Error) -> io::Error {
    use smoltcp_stack::Error as E;
    let kind = match e {
        E::NoSocket => io::ErrorKind::OutOfMemory,
        E::InvalidSocket | E::TooLarge => io::ErrorKind::InvalidInput,
        E::Bind => io::ErrorKind::AddrInUse,
        E::Unaddressable => io::ErrorKind::NetworkUnreachable,
        E::NotConnected => io::ErrorKind::NotConnected,
    };
    io::Error::new(kind, e)
}

fn to_nb(e: nb::Error<smoltcp_stack::Error>) -> nb::Error<io::Error> {
    e.map(to_io)
}

/// The tap's frames for smoltcp. smoltcp's own `TunTapInterface` attaches to the device
/// (see [`attach`]), but panics on any read or write error; this device reads and writes a
/// duplicate of its descriptor and keeps the first error for [`TapStack`] to report.
struct TapDevice {
    file: File,
    /// The largest frame, Ethernet header included.
    mtu: usize,
    /// The frame being received; reused, so an idle poll allocates nothing.
    frame: Vec<u8>,
    failure: Cell<Option<io::Error>>,
}

impl TapDevice {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn new(file: File, mtu: usize) -> TapDevice {
        TapDevice {
            file,
            mtu,
            frame: vec![0; mtu],
            failure: Cell::new(None),
        }
    }

    fn take_failure(&mut self) -> Option<io::Error> {
        self.failure.get_mut().take()
    }
}

/// Keep the first failure: later ones are usually its consequences.
fn record(failure: &Cell<Option<io::Error>>, e: io::Error) {
    let first = failure.take().unwrap_or(e);
    failure.set(Some(first));
}

/// Nothing to read, or a full queue to write: not a failure of the device.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// A received frame.
struct Received<'a>(&'a [u8]);

/// Permission to send one frame.
struct Sender<'a> {
    file: &'a File,
    failure: &'a Cell<Option<io::Error>>,
}

impl phy::RxToken for Received<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for Sender<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        let mut file = self.file;
        match file.write(&frame) {
            Ok(_) => {}
            // A full queue drops the frame, as a busy wire would.
            Err(e) if transient(&e) => {}
            Err(e) => record(self.failure, e),
        }
        result
    }
}

impl Device for TapDevice {
    type RxToken<'a> = Received<'a>;
    type TxToken<'a> = Sender<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Received<'_>, Sender<'_>)> {
        let TapDevice {
            file,
            frame,
            failure,
            ..
        } = self;
        match file.read(frame) {
            Ok(len) => Some((
                Received(frame.get(..len).unwrap_or_default()),
                Sender { file, failure },
            )),
            Err(e) => {
                if !transient(&e) {
                    record(failure, e);
                }
                None
            }
        }
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Sender<'_>> {
        Some(Sender {
            file: &self.file,
            failure: &self.failure,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// How to get the rights a tap needs, for error messages.
#[cfg(target_os = "linux")]
fn rights_hint(device: &str) -> String {
    format!(
        "run duet as root, give it the capability (sudo setcap cap_net_admin+ep \"$(command -v duet)\"), \
         or create the tap for your user (sudo ip tuntap add dev {device} mode tap user \"$USER\")"
    )
}

/// How to make a tap, for error messages.
#[cfg(target_os = "linux")]
fn create_hint(device: &str) -> String {
    format!(
        "create it: sudo ip tuntap add dev {device} mode tap user \"$USER\" && sudo ip link set {device} up \
         (README: TAP)"
    )
}

/// Check `device` and attach to it: the problem in words a user can act on, if any.
#[cfg(target_os = "linux")]
fn attach(device: &str) -> Result<TapDevice, String> {
    use rustix::io::Errno;
    use smoltcp::phy::TunTapInterface;
    use std::os::fd::{AsRawFd, BorrowedFd};

    check_device(device)?;
    // Opened here first only to tell "cannot open /dev/net/tun" apart from "may not attach".
    if let Err(e) = File::options().read(true).write(true).open("/dev/net/tun") {
        return Err(match e.kind() {
            io::ErrorKind::NotFound => "/dev/net/tun does not exist: load the tun driver \
                 (sudo modprobe tun), or in a container pass the device in \
                 (--device /dev/net/tun)"
                .to_owned(),
            io::ErrorKind::PermissionDenied => format!(
                "cannot open /dev/net/tun: permission denied; run duet as root, or let users \
                 open it (sudo chmod 0666 /dev/net/tun, its usual mode) and create the tap for \
                 your user (sudo ip tuntap add dev {device} mode tap user \"$USER\")"
            ),
            _ => format!("cannot open /dev/net/tun: {e}"),
        });
    }
    let tap = TunTapInterface::new(device, Medium::Ethernet).map_err(|e| {
        let errno = e.raw_os_error().map(Errno::from_raw_os_error);
        match errno {
            Some(Errno::PERM | Errno::ACCESS) => {
                format!("permission denied attaching to it; {}", rights_hint(device))
            }
            Some(Errno::BUSY) => "another program is attached to it (a tap serves one program \
                 at a time): stop that program, or give duet a tap of its own"
                .to_owned(),
            Some(Errno::INVAL) => "it is not a TAP device".to_owned(),
            _ => format!("cannot attach to it: {e}"),
        }
    })?;
    let mtu = tap.capabilities().max_transmission_unit;
    #[allow(unsafe_code)]
    // SAFETY: `tap` owns this open descriptor for the whole borrow, which only duplicates it.
    let fd = unsafe { BorrowedFd::borrow_raw(tap.as_raw_fd()) }
        .try_clone_to_owned()
        .map_err(|e| format!("cannot duplicate its descriptor: {e}"))?;
    // The duplicate shares the attachment (and O_NONBLOCK); the original can go.
    drop(tap);
    Ok(TapDevice::new(File::from(fd), mtu))
}

/// TAP devices through `/dev/net/tun` are Linux's.
#[cfg(not(target_os = "linux"))]
fn attach(_device: &str) -> Result<TapDevice, String> {
    Err("TAP mode needs Linux (/dev/net/tun)".to_owned())
}

/// Before attaching: attaching by name to a device that does not exist would make the
/// kernel create a fresh, unconfigured one for root, and chatting on it would silently fail.
#[cfg(target_os = "linux")]
fn check_device(device: &str) -> Result<(), String> {
    use rustix::io::Errno;
    use std::path::Path;
    /// The longest name Linux gives an interface (IFNAMSIZ less its NUL).
    const MAX_IFNAME: usize = 15;

    if device.is_empty()
        || device.len() > MAX_IFNAME
        || device.contains(['/', ':'])
        || device.contains(char::is_whitespace)
        || device == "."
        || device == ".."
    {
        return Err(format!(
            "not an interface name (1 to {MAX_IFNAME} characters, no '/', ':' or spaces)"
        ));
    }
    let create = create_hint(device);
    // The index is asked of the kernel, so it is this network namespace's answer.
    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| format!("cannot look it up: {e}"))?;
    let index = match rustix::net::netdevice::name_to_index(&probe, device) {
        Ok(index) => index,
        Err(Errno::NODEV) => {
            return Err(format!(
                "no such network device here (in this network namespace); {create}"
            ));
        }
        Err(e) => return Err(format!("cannot look it up: {e}")),
    };
    // sysfs shows the namespace it was mounted in: trust it only if it shows this device.
    let sys = Path::new("/sys/class/net").join(device);
    let read = |file: &str| std::fs::read_to_string(sys.join(file)).ok();
    let hex = |text: Option<String>| {
        text.and_then(|t| u32::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok())
    };
    if read("ifindex").and_then(|i| i.trim().parse::<u32>().ok()) != Some(index) {
        return Ok(());
    }
    // A name to suggest for a tap to create instead.
    let other = if device == "tap0" { "tap1" } else { "tap0" };
    const IFF_TUN: u32 = 0x0001;
    const IFF_TAP: u32 = 0x0002;
    const IFF_UP: u32 = 0x0001;
    match hex(read("tun_flags")) {
        Some(flags) if flags & IFF_TAP != 0 => {}
        Some(flags) if flags & IFF_TUN != 0 => {
            return Err(format!(
                "it is a TUN device (IP packets), and duet needs a TAP device (Ethernet frames); {}",
                create_hint(other)
            ));
        }
        _ => {
            return Err(format!(
                "it is not a TAP device (duet runs its own network stack on one); {}",
                create_hint(other)
            ));
        }
    }
    if hex(read("flags")).is_some_and(|flags| flags & IFF_UP == 0) {
        return Err(format!("it is down: sudo ip link set {device} up"));
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parse_iface_addr() {
        let a: IfaceAddr = "192.168.77.2/24".parse().expect("valid");
        assert_eq!(a.ip, Ipv4Addr::new(192, 168, 77, 2));
        assert_eq!(a.prefix, 24);
        assert_eq!(a.to_string(), "192.168.77.2/24");
        assert!(a.contains(Ipv4Addr::new(192, 168, 77, 1)));
        assert!(!a.contains(Ipv4Addr::new(192, 168, 78, 1)));
        let host: IfaceAddr = "10.0.0.1/32".parse().expect("valid");
        assert!(!host.contains(Ipv4Addr::new(10, 0, 0, 2)));
        let wide: IfaceAddr = "10.0.0.1/1".parse().expect("valid");
        assert!(wide.contains(Ipv4Addr::new(127, 0, 0, 1)));
        for bad in [
            "192.168.77.2",
            "192.168.77.2/0",
            "192.168.77.2/33",
            "::1/64",
            "0.0.0.0/8",
            "x/24",
        ] {
            assert!(bad.parse::<IfaceAddr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn parse_mac() {
        let m: MacAddr = "02:00:0A:00:00:02".parse().expect("valid");
        assert_eq!(m, MacAddr([2, 0, 10, 0, 0, 2]));
        assert_eq!(m.to_string(), "02:00:0a:00:00:02");
        assert_eq!("02-00-0a-00-00-02".parse::<MacAddr>(), Ok(m));
        assert_eq!(MacAddr::for_ip(Ipv4Addr::new(10, 0, 0, 2)), m);
        for bad in [
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "2:0:0:0:0:1",
            "zz:00:00:00:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn adapter_errors_keep_their_words() {
        let e = to_io(smoltcp_stack::Error::Unaddressable);
        assert_eq!(e.kind(), io::ErrorKind::NetworkUnreachable);
        assert_eq!(e.to_string(), "address not reachable over IPv4");
    }
}
