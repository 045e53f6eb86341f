//! The operating system's UDP with broadcasting allowed: IP Messenger's transport.

use std::io;
use std::net::{IpAddr, SocketAddr};

use duet_core::time::Instant;
use embedded_nal::{UdpClientStack, UdpFullStack, nb};

use super::Transport;
use super::udp::{self, HostSocket, HostStack};
use crate::platform::wait::WaitHandle;

/// The operating system's UDP, with broadcasting allowed on the socket.
pub struct LanStack(HostStack);

impl LanStack {
    /// A stack that binds `bind_ip` (use the unspecified address: a socket bound to one
    /// interface's address does not receive broadcasts).
    pub fn new(bind_ip: IpAddr) -> Self {
        LanStack(HostStack::new(bind_ip))
    }
}

impl UdpClientStack for LanStack {
    type UdpSocket = HostSocket;
    type Error = io::Error;

    fn socket(&mut self) -> io::Result<HostSocket> {
        self.0.socket()
    }
    fn connect(&mut self, socket: &mut HostSocket, remote: SocketAddr) -> io::Result<()> {
        self.0.connect(socket, remote)
    }
    fn send(&mut self, socket: &mut HostSocket, buffer: &[u8]) -> nb::Result<(), io::Error> {
        self.0.send(socket, buffer)
    }
    fn receive(
        &mut self,
        socket: &mut HostSocket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), io::Error> {
        self.0.receive(socket, buffer)
    }
    fn close(&mut self, socket: HostSocket) -> io::Result<()> {
        self.0.close(socket)
    }
}

impl UdpFullStack for LanStack {
    fn bind(&mut self, socket: &mut HostSocket, port: u16) -> io::Result<()> {
        self.0.bind(socket, port)?;
        let fd = udp::socket_fd(socket)?;
        socket2::SockRef::from(&fd).set_broadcast(true)
    }
    fn send_to(
        &mut self,
        socket: &mut HostSocket,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), io::Error> {
        self.0.send_to(socket, remote, buffer)
    }
}

impl Transport for LanStack {
    fn wait_fd<'a>(&'a self, socket: &'a HostSocket) -> io::Result<WaitHandle<'a>> {
        udp::socket_fd(socket)
    }
    fn local_addr(&self, socket: &HostSocket) -> io::Result<SocketAddr> {
        self.0.local_addr(socket)
    }
    fn flush(&mut self, socket: &HostSocket) -> Result<(), (SocketAddr, io::Error)> {
        self.0.flush(socket)
    }
    fn holds_received(&self) -> bool {
        self.0.holds_received()
    }
    fn poll_stack(&mut self) -> io::Result<Option<Instant>> {
        self.0.poll_stack()
    }
}
