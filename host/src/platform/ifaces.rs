//! What this machine is called and which addresses its interfaces have.

use std::net::{IpAddr, Ipv4Addr};

/// The IPv4 broadcast address of every interface that is up and has one (only the
/// interface of `bind` when it is a specific address); 255.255.255.255 when there is none.
#[cfg(unix)]
pub fn broadcast_addresses(bind: IpAddr) -> Vec<IpAddr> {
    use nix::net::if_::InterfaceFlags;
    let bind = bind.to_canonical();
    let mut found = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if !a
                .flags
                .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_BROADCAST)
            {
                continue;
            }
            let own = a.address.as_ref().and_then(|s| s.as_sockaddr_in());
            let brd = a.broadcast.as_ref().and_then(|s| s.as_sockaddr_in());
            let (Some(own), Some(brd)) = (own, brd) else {
                continue;
            };
            if !bind.is_unspecified() && bind != IpAddr::V4(own.ip()) {
                continue;
            }
            let brd = IpAddr::V4(brd.ip());
            if !found.contains(&brd) {
                found.push(brd);
            }
        }
    }
    if found.is_empty() {
        found.push(IpAddr::V4(Ipv4Addr::BROADCAST));
    }
    found
}

/// The IPv4 broadcast address of every interface that is up and has one (only the
/// interface of `bind` when it is a specific address); 255.255.255.255 when there is none.
#[cfg(windows)]
pub fn broadcast_addresses(bind: IpAddr) -> Vec<IpAddr> {
    let bind = bind.to_canonical();
    let mut found = Vec::new();
    for a in if_addrs::get_if_addrs().unwrap_or_default() {
        let if_addrs::IfAddr::V4(v4) = &a.addr else {
            continue;
        };
        let Some(brd) = v4.broadcast.filter(|_| a.is_oper_up() && !a.is_loopback()) else {
            continue;
        };
        if !bind.is_unspecified() && bind != IpAddr::V4(v4.ip) {
            continue;
        }
        let brd = IpAddr::V4(brd);
        if !found.contains(&brd) {
            found.push(brd);
        }
    }
    if found.is_empty() {
        found.push(IpAddr::V4(Ipv4Addr::BROADCAST));
    }
    found
}

/// Every address of this machine's interfaces, to recognise our own broadcasts coming
/// back.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut found = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    for ip in interface_addresses() {
        if !found.contains(&ip) {
            found.push(ip);
        }
    }
    // Broadcasts leave from IPv4 addresses: keep those first, should the core keep only
    // some.
    found.sort_by_key(|ip| !ip.is_ipv4());
    found
}

#[cfg(unix)]
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let addr = a.address?;
            match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
                (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                _ => None,
            }
        })
        .collect()
}

#[cfg(windows)]
fn interface_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .iter()
        .map(|a| a.ip())
        .collect()
}

/// The variables that hold the login name, first found wins.
#[cfg(unix)]
const LOGIN_VARS: [&str; 2] = ["USER", "LOGNAME"];
#[cfg(windows)]
const LOGIN_VARS: [&str; 1] = ["USERNAME"];

/// The login name other clients see.
pub fn login_name() -> String {
    LOGIN_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "duet".to_owned())
}

/// This machine's name.
#[cfg(unix)]
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "duet".to_owned())
}

/// This machine's name.
#[cfg(windows)]
pub fn host_name() -> String {
    std::env::var("COMPUTERNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "duet".to_owned())
}
