//! UDP segmentation offload: many datagrams through one system call each way.
//!
//! On Linux a socket can send one buffer holding several datagrams of one size (the last may
//! be shorter), which the kernel cuts into datagrams (GSO, `UDP_SEGMENT`), and receive
//! datagrams of one sender coalesced into one buffer with their size beside it (GRO,
//! `UDP_GRO`). A file's chunks then cost a system call per window instead of one per
//! datagram on both sides. The peer sees ordinary datagrams either way: GSO is cut before
//! anything leaves the machine (by the network card or the kernel), and a socket without
//! GRO gets them one by one.
//!
//! Other systems have no such calls here ([`AVAILABLE`] is false): the transport then sends
//! and receives one datagram per call, as before.
//!
//! Why not `quinn-udp`, which does this for QUIC: it also switches the socket to path-MTU
//! probing with fragmentation forbidden, which would drop duet's 1024-byte datagrams on a
//! path with a smaller MTU (a tunnel, a relay) instead of letting the kernel fragment them;
//! these two socket options through `nix` (already in the tree) are all duet needs.

use std::io;
use std::net::SocketAddr;

use super::wait::WaitHandle;

/// Whether this system can send and receive coalesced datagrams.
pub const AVAILABLE: bool = cfg!(target_os = "linux");

/// The most datagrams one send carries (the kernel takes up to 64).
pub const MAX_SEGMENTS: usize = 32;

/// The most bytes one coalesced buffer holds (one UDP payload's limit, rounded up).
pub const MAX_COALESCED: usize = 1 << 16;

/// Ask the kernel to coalesce arriving datagrams ([`receive`] says their size); false
/// where it can't.
pub fn enable_coalescing(fd: WaitHandle<'_>) -> bool {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        setsockopt(&fd, sockopt::UdpGroSegment, &true).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        false
    }
}

/// Let every send of more than `size` bytes on this socket be cut into datagrams of `size`
/// (0: never cut).
pub fn set_segment_size(fd: WaitHandle<'_>, size: u16) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        setsockopt(&fd, sockopt::UdpGsoSegment, &i32::from(size)).map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, size);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Space for the control message [`receive`] reads (allocated once, by the caller).
pub fn control_space() -> Vec<u8> {
    #[cfg(target_os = "linux")]
    {
        nix::cmsg_space!(i32)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

/// Receive what waits into `buffer` without blocking: its length, the sender and, when
/// the kernel coalesced several datagrams, their size (all but the last are that long).
pub fn receive(
    fd: WaitHandle<'_>,
    buffer: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<usize>)> {
    #[cfg(target_os = "linux")]
    {
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};

        let mut iov = [IoSliceMut::new(buffer)];
        let message = loop {
            match recvmsg::<SockaddrStorage>(
                fd.as_raw_fd(),
                &mut iov,
                Some(&mut *control),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                received => break received.map_err(io::Error::from)?,
            }
        };
        let segment = message.cmsgs().ok().and_then(|mut all| {
            all.find_map(|c| match c {
                ControlMessageOwned::UdpGroSegments(size) => usize::try_from(size).ok(),
                _ => None,
            })
        });
        let from = message
            .address
            .as_ref()
            .and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                    .or_else(|| {
                        a.as_sockaddr_in6()
                            .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                    })
            })
            .ok_or_else(|| io::Error::other("a datagram without an IP sender"))?;
        Ok((message.bytes, from, segment.filter(|s| *s > 0)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, buffer, control);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}
