//! Port mappings on the home router: ask it to forward a public port to the chat socket,
//! with PCP (RFC 6887), falling back to NAT-PMP (RFC 6886), then UPnP-IGD; keep the mapping
//! renewed, and remove it on exit.
//!
//! A mapped port works even where hole punching does not (both sides behind the same kind
//! of strict NAT), so it makes a [`super::CandidateKind::Mapped`] candidate. Routers answer
//! slowly or not at all, so everything runs on a background thread: [`PortMapper::spawn`]
//! returns at once, reports through [`PortMapper::poll_event`], and
//! [`PortMapper::shutdown`] removes the mapping, waiting a bounded time.
//!
//! Crates: `crab_nat` speaks PCP and NAT-PMP (it is tokio-only, so the thread runs a
//! current-thread tokio runtime just for it); `igd-next`'s blocking API speaks UPnP-IGD.
//! Neither finds the router for PCP/NAT-PMP, which is sent to the default gateway: on Linux
//! we read it from `/proc/net/route`; elsewhere PCP/NAT-PMP is tried only when the gateway
//! is given in [`PortMapConfig::gateway`] (UPnP finds the router by SSDP multicast).
//!
//! Contracts: the worker makes a bounded number of requests per [`RETRY_AFTER`] or renewal
//! interval, each with a bounded timeout; no router reply can make it panic (the crates
//! parse, and a panic inside them would end only this thread: the chat sees
//! [`PortMapEvent::Stopped`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::num::NonZeroU16;
use std::sync::mpsc;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, TimeoutConfig};
use igd_next::{PortMappingProtocol, SearchOptions};

use super::{Pending, ReachError};

/// The lifetime asked for a mapping. Routers may grant less; we renew at half of what they
/// grant.
pub const LIFETIME: Duration = Duration::from_secs(3600);
/// Renew no sooner than this after a mapping (a router granting seconds is not obeyed into
/// a request storm).
pub const MIN_RENEW: Duration = Duration::from_secs(30);
/// After every method failed, try again this much later.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);
/// How long one PCP/NAT-PMP request waits for the first answer (doubled per retry).
const PMP_TIMEOUT: Duration = Duration::from_millis(250);
/// PCP/NAT-PMP retries after the first request (RFC 6886 asks for 9; we give up sooner and
/// try again after [`RETRY_AFTER`]).
const PMP_RETRIES: usize = 3;
/// How long a UPnP search or request may take.
const UPNP_TIMEOUT: Duration = Duration::from_secs(3);
/// The UPnP description that shows in the router's table.
const UPNP_DESCRIPTION: &str = "duet chat";
/// SSDP's multicast group.
pub const SSDP: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900));

/// Which protocol made a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapProtocol {
    /// Port Control Protocol.
    Pcp,
    /// NAT Port Mapping Protocol.
    NatPmp,
    /// UPnP Internet Gateway Device.
    Upnp,
}

/// A port the router forwards to the chat socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The public address: publish it as a `Mapped` candidate.
    pub external: SocketAddr,
    /// How it was made.
    pub protocol: MapProtocol,
    /// How long the router keeps it unless renewed (`ZERO`: until removed).
    pub lifetime: Duration,
}

/// What the port mapper reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMapEvent {
    /// A mapping was made, or renewed with a different address.
    Mapped(Mapping),
    /// The mapping is gone (a renewal failed): withdraw its candidate.
    Lost(Mapping),
    /// No method worked this round; the mapper tries again after [`RETRY_AFTER`].
    Unavailable(String),
    /// The worker ended (after a shutdown, or on an internal error).
    Stopped,
}

/// What to map and where to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapConfig {
    /// The chat socket's port.
    pub local_port: u16,
    /// The router for PCP/NAT-PMP; `None`: the default gateway, if it can be found.
    pub gateway: Option<IpAddr>,
    /// Where UPnP's search goes; `None`: no UPnP. Normally [`SSDP`].
    pub ssdp: Option<SocketAddr>,
    /// The lifetime asked for.
    pub lifetime: Duration,
    /// The soonest a renewal may follow a mapping (normally [`MIN_RENEW`]).
    pub min_renew: Duration,
}

impl PortMapConfig {
    /// Map `local_port` by every method, with the default gateway and SSDP.
    pub fn new(local_port: u16) -> PortMapConfig {
        PortMapConfig {
            local_port,
            gateway: None,
            ssdp: Some(SSDP),
            lifetime: LIFETIME,
            min_renew: MIN_RENEW,
        }
    }
}

/// When to renew a mapping granted for `lifetime`: at half of it, not before `min_renew`;
/// `None` for a permanent one.
pub fn renew_after(lifetime: Duration, min_renew: Duration) -> Option<Duration> {
    (!lifetime.is_zero()).then(|| (lifetime / 2).max(min_renew))
}

/// The default IPv4 gateway in the text of Linux's `/proc/net/route`: the first up route
/// (flag `RTF_UP`) with destination 0 and the gateway flag (`RTF_GATEWAY`).
pub fn default_gateway_from_route_table(text: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    text.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_iface, destination, gateway, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let destination = u32::from_str_radix(destination, 16).ok()?;
        let gateway = u32::from_str_radix(gateway, 16).ok()?;
        let flags = u32::from_str_radix(flags, 16).ok()?;
        // The kernel prints the address as the u32 it holds in network byte order, read in
        // the machine's order: its native bytes are the address's bytes.
        (destination == 0 && flags & RTF_UP != 0 && flags & RTF_GATEWAY != 0 && gateway != 0)
            .then(|| Ipv4Addr::from(gateway.to_ne_bytes()))
    })
}

/// The default gateway of this machine, where it can be found (Linux).
pub fn default_gateway() -> Option<Ipv4Addr> {
    std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|text| default_gateway_from_route_table(&text))
}

/// Our address on the way to `gateway` (no datagram is sent: a UDP connect only picks the
/// route).
fn local_ip_towards(gateway: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match gateway {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect((gateway, crab_nat::GATEWAY_PORT)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// The port mapper's handle. Dropping it asks the worker to remove the mapping and stop
/// without waiting; call [`PortMapper::shutdown`] to wait for the removal.
#[derive(Debug)]
pub struct PortMapper {
    stop: mpsc::Sender<()>,
    events: mpsc::Receiver<PortMapEvent>,
    done: Pending<()>,
}

impl PortMapper {
    /// Start mapping `config.local_port` on a background thread.
    pub fn spawn(config: PortMapConfig) -> Result<PortMapper, ReachError> {
        let (stop, stop_rx) = mpsc::channel();
        let (events_tx, events) = mpsc::channel();
        let (done_tx, done) = Pending::new();
        std::thread::Builder::new()
            .name("duet-portmap".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => Worker {
                        config,
                        runtime,
                        events: events_tx.clone(),
                        current: None,
                    }
                    .run(&stop_rx),
                    Err(e) => {
                        let _ = events_tx.send(PortMapEvent::Unavailable(e.to_string()));
                    }
                }
                let _ = events_tx.send(PortMapEvent::Stopped);
                let _ = done_tx.send(());
            })?;
        Ok(PortMapper { stop, events, done })
    }

    /// The next event, if one came.
    pub fn poll_event(&self) -> Option<PortMapEvent> {
        self.events.try_recv().ok()
    }

    /// Remove the mapping and stop, waiting at most `timeout` for the router.
    pub fn shutdown(self, timeout: Duration) -> Result<(), ReachError> {
        let _ = self.stop.send(());
        self.done.wait(timeout)
    }
}

/// A mapping in force, and how to renew or remove it.
enum Held {
    Pmp(PortMapping),
    Upnp {
        gateway: Box<igd_next::Gateway>,
        local: SocketAddr,
    },
}

struct Worker {
    config: PortMapConfig,
    runtime: tokio::runtime::Runtime,
    events: mpsc::Sender<PortMapEvent>,
    current: Option<(Held, Mapping)>,
}

impl Worker {
    fn run(mut self, stop: &mpsc::Receiver<()>) {
        loop {
            let wait = match &self.current {
                Some((_, mapping)) => match renew_after(mapping.lifetime, self.config.min_renew) {
                    Some(after) => after,
                    // Permanent: nothing to do until stopped.
                    None => Duration::MAX,
                },
                None => {
                    if let Err(why) = self.map() {
                        let _ = self.events.send(PortMapEvent::Unavailable(why));
                    }
                    match &self.current {
                        Some((_, mapping)) => renew_after(mapping.lifetime, self.config.min_renew)
                            .unwrap_or(Duration::MAX),
                        None => RETRY_AFTER,
                    }
                }
            };
            match stop.recv_timeout(wait) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.current.is_some() {
                        self.renew();
                    }
                }
            }
        }
        self.remove();
    }

    fn send(&self, event: PortMapEvent) {
        // The handle may be gone; the worker still removes the mapping.
        let _ = self.events.send(event);
    }

    /// Try PCP/NAT-PMP, then UPnP.
    fn map(&mut self) -> Result<(), String> {
        let mut why = Vec::new();
        match self.map_pmp() {
            Ok(()) => return Ok(()),
            Err(e) => why.push(e),
        }
        match self.map_upnp() {
            Ok(()) => return Ok(()),
            Err(e) => why.push(e),
        }
        Err(why.join("; "))
    }

    fn timeouts() -> TimeoutConfig {
        TimeoutConfig {
            initial_timeout: PMP_TIMEOUT,
            max_retries: PMP_RETRIES,
            max_retry_timeout: Some(Duration::from_secs(2)),
        }
    }

    fn map_pmp(&mut self) -> Result<(), String> {
        let gateway = self
            .config
            .gateway
            .or_else(|| default_gateway().map(IpAddr::V4))
            .ok_or("PCP/NAT-PMP: no default gateway known")?;
        let client = local_ip_towards(gateway).ok_or("PCP/NAT-PMP: no route to the gateway")?;
        let port = NonZeroU16::new(self.config.local_port).ok_or("the chat port is 0")?;
        let options = PortMappingOptions {
            external_port: Some(port),
            lifetime_seconds: Some(
                u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX),
            ),
            timeout_config: Some(Self::timeouts()),
        };
        let mapping = self
            .runtime
            .block_on(PortMapping::new(
                gateway.into(),
                client,
                InternetProtocol::Udp,
                port,
                options,
            ))
            .map_err(|e| format!("PCP/NAT-PMP: {e:?}"))?;
        let mapped = self.describe_pmp(&mapping)?;
        self.send(PortMapEvent::Mapped(mapped));
        self.current = Some((Held::Pmp(mapping), mapped));
        Ok(())
    }

    fn describe_pmp(&self, mapping: &PortMapping) -> Result<Mapping, String> {
        let (ip, protocol) = match mapping.mapping_type() {
            crab_nat::PortMappingType::Pcp { external_ip, .. } => (external_ip, MapProtocol::Pcp),
            crab_nat::PortMappingType::NatPmp => {
                let ip = self
                    .runtime
                    .block_on(crab_nat::natpmp::external_address(
                        mapping.gateway(),
                        Some(Self::timeouts()),
                    ))
                    .map_err(|e| format!("NAT-PMP external address: {e:?}"))?;
                (IpAddr::V4(ip), MapProtocol::NatPmp)
            }
        };
        Ok(Mapping {
            external: SocketAddr::new(ip, mapping.external_port().get()),
            protocol,
            lifetime: Duration::from_secs(u64::from(mapping.lifetime())),
        })
    }

    fn map_upnp(&mut self) -> Result<(), String> {
        let ssdp = self.config.ssdp.ok_or("UPnP: off")?;
        let mut options = SearchOptions::default();
        options.broadcast_address = ssdp;
        options.timeout = Some(UPNP_TIMEOUT);
        options.single_search_timeout = Some(UPNP_TIMEOUT);
        if ssdp.ip().is_loopback() {
            // A router on loopback (tests, a local IGD): igd-next distrusts loopback
            // descriptions unless the address is named, and here the configuration named it.
            options.bind_addr = SocketAddr::new(ssdp.ip(), 0);
            options.allowed_gateway_ips = vec![ssdp.ip()];
        }
        let gateway = igd_next::search_gateway(options).map_err(|e| format!("UPnP: {e}"))?;
        let local_ip = local_ip_towards(gateway.addr.ip()).ok_or("UPnP: no route to the router")?;
        let local = SocketAddr::new(local_ip, self.config.local_port);
        let lease = u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX);
        let (port, lease) = upnp_add(&gateway, local, self.config.local_port, lease)?;
        let ip = gateway
            .get_external_ip()
            .map_err(|e| format!("UPnP external address: {e}"))?;
        let mapped = Mapping {
            external: SocketAddr::new(ip, port),
            protocol: MapProtocol::Upnp,
            lifetime: Duration::from_secs(u64::from(lease)),
        };
        self.send(PortMapEvent::Mapped(mapped));
        self.current = Some((
            Held::Upnp {
                gateway: Box::new(gateway),
                local,
            },
            mapped,
        ));
        Ok(())
    }

    fn renew(&mut self) {
        let Some((held, old)) = self.current.take() else {
            return;
        };
        let renewed = match held {
            Held::Pmp(mut mapping) => match self.runtime.block_on(mapping.renew()) {
                Ok(()) => self
                    .describe_pmp(&mapping)
                    .ok()
                    .map(|m| (Held::Pmp(mapping), m)),
                Err(_) => None,
            },
            Held::Upnp { gateway, local } => {
                let lease = u32::try_from(old.lifetime.as_secs()).unwrap_or(u32::MAX);
                match gateway.add_port(
                    PortMappingProtocol::UDP,
                    old.external.port(),
                    local,
                    lease,
                    UPNP_DESCRIPTION,
                ) {
                    Ok(()) => Some((Held::Upnp { gateway, local }, old)),
                    Err(_) => None,
                }
            }
        };
        match renewed {
            Some((held, new)) => {
                if new.external != old.external {
                    self.send(PortMapEvent::Lost(old));
                    self.send(PortMapEvent::Mapped(new));
                }
                self.current = Some((held, new));
            }
            // Map afresh at once (the run loop does it when nothing is held).
            None => self.send(PortMapEvent::Lost(old)),
        }
    }

    fn remove(&mut self) {
        let Some((held, mapping)) = self.current.take() else {
            return;
        };
        let removed = match held {
            Held::Pmp(pmp) => self
                .runtime
                .block_on(pmp.try_drop())
                .map_err(|(e, _)| format!("{e:?}")),
            Held::Upnp { gateway, .. } => gateway
                .remove_port(PortMappingProtocol::UDP, mapping.external.port())
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = removed {
            log::warn!(
                "could not remove the port mapping {}: {e}",
                mapping.external
            );
        }
        self.send(PortMapEvent::Lost(mapping));
    }
}

/// Add a UPnP mapping: the same external port as the chat port if free, any port if not;
/// a permanent lease where the router takes no other. Returns the port and the lease.
fn upnp_add(
    gateway: &igd_next::Gateway,
    local: SocketAddr,
    port: u16,
    lease: u32,
) -> Result<(u16, u32), String> {
    use igd_next::AddPortError;
    match gateway.add_port(
        PortMappingProtocol::UDP,
        port,
        local,
        lease,
        UPNP_DESCRIPTION,
    ) {
        Ok(()) => return Ok((port, lease)),
        Err(AddPortError::OnlyPermanentLeasesSupported) => {
            return gateway
                .add_port(PortMappingProtocol::UDP, port, local, 0, UPNP_DESCRIPTION)
                .map(|()| (port, 0))
                .map_err(|e| format!("UPnP: {e}"));
        }
        Err(_) => {}
    }
    gateway
        .add_any_port(PortMappingProtocol::UDP, local, lease, UPNP_DESCRIPTION)
        .map(|port| (port, lease))
        .map_err(|e| format!("UPnP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn default_gateway_is_read_from_the_route_table() {
        let table = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
wlan0\t00000000\t0100000A\t0003\t0\t0\t600\t00000000\t0\t0\t0
";
        assert_eq!(
            default_gateway_from_route_table(table),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
        // No default route, a down one, or nonsense: none.
        let no_default = "Iface\tDestination\tGateway\tFlags\neth0\t0000A8C0\t00000000\t0001\n";
        assert_eq!(default_gateway_from_route_table(no_default), None);
        let down = "Iface\tDestination\tGateway\tFlags\neth0\t00000000\t0101A8C0\t0002\n";
        assert_eq!(default_gateway_from_route_table(down), None);
        assert_eq!(default_gateway_from_route_table("garbage\nx y z\n\n"), None);
        assert_eq!(default_gateway_from_route_table(""), None);
    }

    #[test]
    fn renewal_at_half_the_lifetime() {
        let renew = |secs| renew_after(Duration::from_secs(secs), MIN_RENEW);
        assert_eq!(renew(7200), Some(Duration::from_secs(3600)));
        assert_eq!(renew(10), Some(MIN_RENEW));
        assert_eq!(renew(0), None, "permanent");
    }

    /// A NAT-PMP gateway on a loopback address that speaks only NAT-PMP, as many routers
    /// do: it answers PCP with "unsupported version", maps UDP ports, and tells its external
    /// address. Returns the requests it saw (opcode, internal port, lifetime).
    fn fake_natpmp_gateway(
        ip: Ipv4Addr,
        external: Ipv4Addr,
        requests: mpsc::Sender<(u8, u16, u32)>,
    ) -> std::thread::JoinHandle<()> {
        let socket = UdpSocket::bind((ip, crab_nat::GATEWAY_PORT)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1100];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let request = &buf[..len];
                let epoch = 1000u32.to_be_bytes();
                let reply: Vec<u8> = match request {
                    // PCP (version 2): NAT-PMP's "unsupported version".
                    [2, op, ..] => vec![0, 0x80 | (op & 0x7f), 0, 1],
                    [0, 0] => {
                        let mut r = vec![0, 128, 0, 0];
                        r.extend_from_slice(&epoch);
                        r.extend_from_slice(&external.octets());
                        r
                    }
                    [0, 1, _, _, ip0, ip1, _, _, l0, l1, l2, l3] => {
                        let internal = u16::from_be_bytes([*ip0, *ip1]);
                        let lifetime = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
                        let _ = requests.send((1, internal, lifetime));
                        let mut r = vec![0, 129, 0, 0];
                        r.extend_from_slice(&epoch);
                        r.extend_from_slice(&internal.to_be_bytes());
                        // The router picks another public port.
                        let public = if lifetime == 0 { 0 } else { internal + 1000 };
                        r.extend_from_slice(&public.to_be_bytes());
                        // It grants 2 s at most: the mapper must renew soon.
                        r.extend_from_slice(&lifetime.min(2).to_be_bytes());
                        r
                    }
                    _ => continue,
                };
                let _ = socket.send_to(&reply, from);
            }
        })
    }

    #[test]
    fn maps_renews_and_removes_through_natpmp() {
        // A loopback address of its own, so the gateway port cannot clash with anything.
        let gateway_ip = Ipv4Addr::new(127, 77, 0, 1);
        let (requests_tx, requests) = mpsc::channel();
        let server = fake_natpmp_gateway(gateway_ip, Ipv4Addr::new(203, 0, 113, 7), requests_tx);

        let mapper = PortMapper::spawn(PortMapConfig {
            local_port: 7789,
            gateway: Some(gateway_ip.into()),
            ssdp: None,
            lifetime: Duration::from_secs(3600),
            min_renew: Duration::from_millis(500),
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let event = loop {
            if let Some(event) = mapper.poll_event() {
                break event;
            }
            assert!(Instant::now() < deadline, "no mapping in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            event,
            PortMapEvent::Mapped(Mapping {
                external: "203.0.113.7:8789".parse().unwrap(),
                protocol: MapProtocol::NatPmp,
                lifetime: Duration::from_secs(2),
            })
        );
        assert_eq!(requests.recv().unwrap(), (1, 7789, 3600));
        // Renewed at half the granted lifetime, for what was granted.
        let asked = Instant::now();
        assert_eq!(
            requests.recv_timeout(Duration::from_secs(5)).unwrap(),
            (1, 7789, 2)
        );
        assert!(asked.elapsed() > Duration::from_millis(500));
        assert_eq!(mapper.poll_event(), None, "same address: nothing to report");

        mapper.shutdown(Duration::from_secs(10)).unwrap();
        // The removal: lifetime 0 for the chat port.
        assert_eq!(
            requests.recv_timeout(Duration::from_secs(1)).unwrap(),
            (1, 7789, 0)
        );
        drop(server);
    }

    #[test]
    fn nothing_to_map_with_is_reported_not_hidden() {
        // A gateway address where nobody answers, and no UPnP.
        let mapper = PortMapper::spawn(PortMapConfig {
            local_port: 7789,
            gateway: Some(Ipv4Addr::new(127, 77, 0, 2).into()),
            ssdp: None,
            lifetime: LIFETIME,
            min_renew: MIN_RENEW,
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let event = loop {
            if let Some(event) = mapper.poll_event() {
                break event;
            }
            assert!(Instant::now() < deadline, "no report in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(matches!(event, PortMapEvent::Unavailable(_)), "{event:?}");
        mapper.shutdown(Duration::from_secs(5)).unwrap();
    }
    /// A UPnP-IGD router on loopback: SSDP on UDP, its description, action list and SOAP
    /// control on HTTP. Reports the SOAP actions it was asked for.
    struct FakeIgd {
        ssdp: SocketAddr,
        actions: mpsc::Receiver<String>,
    }

    const ROOT_DESC: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl</controlURL><eventSubURL>/evt</eventSubURL><SCPDURL>/scpd.xml</SCPDURL>
</service></serviceList></device></deviceList></device></deviceList></device></root>"#;

    fn scpd() -> String {
        let action = |name: &str, args: &[&str]| {
            let args: String = args
                .iter()
                .map(|a| format!("<argument><name>{a}</name></argument>"))
                .collect();
            format!("<action><name>{name}</name><argumentList>{args}</argumentList></action>")
        };
        format!(
            r#"<?xml version="1.0"?><scpd xmlns="urn:schemas-upnp-org:service-1-0"><actionList>{}{}{}</actionList></scpd>"#,
            action(
                "AddPortMapping",
                &[
                    "NewRemoteHost",
                    "NewExternalPort",
                    "NewProtocol",
                    "NewInternalPort",
                    "NewInternalClient",
                    "NewEnabled",
                    "NewPortMappingDescription",
                    "NewLeaseDuration",
                ]
            ),
            action(
                "DeletePortMapping",
                &["NewRemoteHost", "NewExternalPort", "NewProtocol"]
            ),
            action("GetExternalIPAddress", &["NewExternalIPAddress"]),
        )
    }

    fn soap_response(action: &str) -> String {
        let body = match action {
            "GetExternalIPAddress" => "<NewExternalIPAddress>203.0.113.9</NewExternalIPAddress>",
            _ => "",
        };
        format!(
            r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:{action}Response xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">{body}</u:{action}Response></s:Body></s:Envelope>"#
        )
    }

    fn fake_igd() -> FakeIgd {
        use std::io::{BufRead, BufReader, Read, Write};
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http_port = http.local_addr().unwrap().port();
        let ssdp = UdpSocket::bind("127.0.0.1:0").unwrap();
        ssdp.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let ssdp_addr = ssdp.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((len, from)) = ssdp.recv_from(&mut buf) {
                if buf[..len].starts_with(b"M-SEARCH") {
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
                         ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
                         LOCATION: http://127.0.0.1:{http_port}/rootDesc.xml\r\n\r\n"
                    );
                    let _ = ssdp.send_to(reply.as_bytes(), from);
                }
            }
        });
        let (actions_tx, actions) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in http.incoming().take(16) {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let (mut length, mut action) = (0usize, String::new());
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("soapaction:") {
                        action = line
                            .rsplit('#')
                            .next()
                            .unwrap()
                            .trim_matches('"')
                            .to_owned();
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let content = if request_line.contains("/rootDesc.xml") {
                    ROOT_DESC.to_owned()
                } else if request_line.contains("/scpd.xml") {
                    scpd()
                } else {
                    let _ = actions_tx.send(action.clone());
                    soap_response(&action)
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{content}",
                    content.len()
                );
            }
        });
        FakeIgd {
            ssdp: ssdp_addr,
            actions,
        }
    }

    #[test]
    fn maps_and_removes_through_upnp_when_pcp_and_natpmp_fail() {
        let igd = fake_igd();
        let mapper = PortMapper::spawn(PortMapConfig {
            local_port: 7790,
            // Nobody answers PCP/NAT-PMP here.
            gateway: Some(Ipv4Addr::new(127, 77, 0, 3).into()),
            ssdp: Some(igd.ssdp),
            lifetime: Duration::from_secs(3600),
            min_renew: MIN_RENEW,
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let event = loop {
            if let Some(event) = mapper.poll_event() {
                break event;
            }
            assert!(Instant::now() < deadline, "no mapping in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            event,
            PortMapEvent::Mapped(Mapping {
                external: "203.0.113.9:7790".parse().unwrap(),
                protocol: MapProtocol::Upnp,
                lifetime: Duration::from_secs(3600),
            })
        );
        mapper.shutdown(Duration::from_secs(10)).unwrap();
        let asked: Vec<String> = igd.actions.try_iter().collect();
        assert_eq!(
            asked,
            [
                "AddPortMapping",
                "GetExternalIPAddress",
                "DeletePortMapping"
            ]
        );
    }
}
