//! One bound socket, the core's driver and a protocol, plus the host's way of waiting.
//!
//! The host's event loop step: [`Link::poll`] runs the shared [`duet_core::Driver`] once,
//! [`Link::transmit`] sends what the application's turn made due, and [`Link::wait`]
//! sleeps in poll(2) on the transport's descriptor (and, when the caller can take input,
//! the input pipe) until the protocol's next deadline.
//! Every mode (chat, send, listen; duet or legacy) and every host transport uses it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use super::Error;
use super::udp::{self, HostStack};
use crate::platform::wait::{self, WaitHandle};
use duet_core::driver::{Clock, DriveError, Driver, Protocol};
use duet_core::time::Instant;
use embedded_nal::UdpFullStack;

/// The host clock: milliseconds since the process started.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostClock;

impl Clock for HostClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A host transport: a `UdpFullStack` with a descriptor to wait on.
pub trait Transport: UdpFullStack<Error = io::Error> {
    /// Readable when the socket may have a datagram.
    fn wait_fd<'a>(&'a self, socket: &'a Self::UdpSocket) -> io::Result<WaitHandle<'a>>;
    /// The local address of a bound socket.
    fn local_addr(&self, socket: &Self::UdpSocket) -> io::Result<SocketAddr>;
    /// Send what the stack kept back to send together (the link calls this after every
    /// driver call). A failure names where it was going.
    fn flush(&mut self, socket: &Self::UdpSocket) -> Result<(), (SocketAddr, io::Error)>;
    /// Whether datagrams already taken off the socket wait in the stack for the driver
    /// (the socket may not be readable while they do).
    fn holds_received(&self) -> bool {
        false
    }
    /// Do the stack's own timed work (a user-space stack's ARP retries, say) and return when
    /// it next has some; the link wakes by then. The operating system's UDP has none.
    fn poll_stack(&mut self) -> io::Result<Option<Instant>> {
        Ok(None)
    }
}

impl Transport for HostStack {
    fn wait_fd<'a>(&'a self, socket: &'a Self::UdpSocket) -> io::Result<WaitHandle<'a>> {
        udp::socket_fd(socket)
    }
    fn local_addr(&self, socket: &Self::UdpSocket) -> io::Result<SocketAddr> {
        HostStack::local_addr(self, socket)
    }
    fn flush(&mut self, socket: &Self::UdpSocket) -> Result<(), (SocketAddr, io::Error)> {
        HostStack::flush(self, socket)
    }
    fn holds_received(&self) -> bool {
        HostStack::holds_received(self)
    }
    fn poll_stack(&mut self) -> io::Result<Option<Instant>> {
        // Datagrams that arrived together and are not handed out yet: a turn now.
        Ok(self.holds_received().then(Instant::now))
    }
}

/// What woke [`Link::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Woke {
    /// The input pipe is readable.
    pub input: bool,
    /// The other handle given to [`Link::wait_also`] is readable.
    pub other: bool,
}

/// A protocol running over one transport.
pub struct Link<S: Transport, P: Protocol> {
    stack: S,
    driver: Driver<S>,
    /// The protocol (duet session or legacy plain datagrams).
    pub protocol: P,
    local: SocketAddr,
    /// The last send error, reported once until the next one differs.
    last_send_error: Option<io::ErrorKind>,
}

impl<P: Protocol> Link<HostStack, P> {
    /// Bind std UDP at `bind` and run `protocol` over it.
    pub fn bind_udp(bind: SocketAddr, protocol: P) -> Result<Self, Error> {
        Link::bind(HostStack::new(bind.ip()), bind, protocol)
    }
}

impl<P: Protocol> Link<super::Stack, P> {
    /// Let the socket send to broadcast addresses (SO_BROADCAST), for discovery. smoltcp on
    /// a TAP device needs no permission.
    pub fn allow_broadcast(&self) -> Result<(), Error> {
        use super::{Socket, Stack};
        if let (Stack::Udp(_) | Stack::Reach(_), Socket::Udp(socket)) =
            (&self.stack, self.driver.socket())
        {
            let fd = udp::socket_fd(socket).map_err(|source| Error::Io {
                doing: "finding the socket",
                source,
            })?;
            socket2::SockRef::from(&fd)
                .set_broadcast(true)
                .map_err(|source| Error::Io {
                    doing: "allowing broadcasts (SO_BROADCAST)",
                    source,
                })?;
        }
        Ok(())
    }
}

impl<S: Transport, P: Protocol> Link<S, P> {
    /// Bind `stack` at `bind`'s port and run `protocol` over it.
    pub fn bind(mut stack: S, bind: SocketAddr, protocol: P) -> Result<Self, Error> {
        let driver = Driver::bind(&mut stack, bind.port())
            .map_err(|source| Error::Bind { addr: bind, source })?;
        let local = stack
            .local_addr(driver.socket())
            .map_err(|source| Error::Bind { addr: bind, source })?;
        Ok(Link {
            stack,
            driver,
            protocol,
            local,
            last_send_error: None,
        })
    }

    /// The transport, e.g. to ask a NAT-traversing stack what it learned.
    pub fn stack(&self) -> &S {
        &self.stack
    }

    /// The transport, to change it.
    pub fn stack_mut(&mut self) -> &mut S {
        &mut self.stack
    }

    /// Where the socket is bound, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Run the driver once, then the stack's own timers; the earlier of their deadlines. A
    /// send that fails at once is returned as `Unreachable` the first time it happens (the
    /// protocol retransmits; the caller decides whether to go on); a receive failure is
    /// fatal.
    pub fn poll(&mut self) -> Result<Option<Instant>, Error> {
        let done = self
            .driver
            .poll(&mut self.stack, &HostClock, &mut self.protocol);
        self.after(done)
    }

    /// Send what is due now without receiving ([`Driver::transmit`]): after the application
    /// let the protocol acknowledge what it stored, the acknowledgement goes out at once.
    /// Errors as [`Link::poll`].
    pub fn transmit(&mut self) -> Result<Option<Instant>, Error> {
        let done = self
            .driver
            .transmit(&mut self.stack, &HostClock, &mut self.protocol);
        self.after(done)
    }

    /// A driver call's outcome, then the stack's own timers.
    fn after(
        &mut self,
        done: Result<Option<Instant>, DriveError<io::Error>>,
    ) -> Result<Option<Instant>, Error> {
        // What the driver sent may wait in the stack to leave together: it leaves now.
        let done = match (done, self.stack.flush(self.driver.socket())) {
            (Ok(_), Err((dst, error))) => Err(DriveError::Send { dst, error }),
            (done, _) => done,
        };
        let deadline = match done {
            Ok(deadline) => deadline,
            Err(DriveError::Send { dst, error }) => {
                let kind = error.kind();
                if self.last_send_error.replace(kind) != Some(kind) {
                    return Err(Error::Unreachable {
                        peer: dst,
                        source: error,
                    });
                }
                // Already reported; poll again soon rather than spin.
                Some(Instant::now() + duet_core::Duration::from_millis(100))
            }
            Err(DriveError::Receive(source)) => {
                return Err(Error::Io {
                    doing: "receiving",
                    source,
                });
            }
        };
        let stack = self.stack.poll_stack().map_err(|source| Error::Io {
            doing: "the network stack",
            source,
        })?;
        Ok(earliest(deadline, stack))
    }

    /// Wait until a datagram may have arrived, `deadline` passed, or (with `input`) the
    /// input pipe became readable. `limit` caps the wait (e.g. a command's own timeout).
    pub fn wait(
        &self,
        deadline: Option<Instant>,
        input: Option<WaitHandle<'_>>,
        limit: Option<Instant>,
    ) -> Result<Woke, Error> {
        self.wait_also(deadline, input, None, limit)
    }

    /// Whether a datagram is waiting on the socket right now (a poll that does not sleep).
    pub fn readable_now(&self) -> bool {
        if self.stack.holds_received() {
            return true;
        }
        let Ok(socket) = self.stack.wait_fd(self.driver.socket()) else {
            return false;
        };
        matches!(
            wait::readable([Some(socket)], Some(StdDuration::ZERO)),
            Ok([true])
        )
    }

    /// [`Link::wait`], also waking when `other` (say, a listening local socket) is readable.
    pub fn wait_also(
        &self,
        deadline: Option<Instant>,
        input: Option<WaitHandle<'_>>,
        other: Option<WaitHandle<'_>>,
        limit: Option<Instant>,
    ) -> Result<Woke, Error> {
        // The caller showed events since `deadline` was computed, and taking a message is
        // what makes its acknowledgement due: ask the protocol again, or the acknowledgement
        // would wait out the sleep (and the sender retransmit meanwhile).
        let deadline = earliest(earliest(deadline, self.protocol.poll_timeout()), limit);
        let now = Instant::now();
        let timeout = deadline
            .map(|d| StdDuration::from_millis(d.saturating_duration_since(now).as_millis()));
        if timeout.is_some_and(|t| t.is_zero()) {
            return Ok(Woke {
                input: false,
                other: false,
            });
        }
        let socket = self
            .stack
            .wait_fd(self.driver.socket())
            .map_err(|source| Error::Io {
                doing: "finding the socket",
                source,
            })?;
        let [_, input, other] =
            wait::readable([Some(socket), input, other], timeout).map_err(|source| Error::Io {
                doing: "waiting (poll)",
                source,
            })?;
        Ok(Woke { input, other })
    }
}

/// The earlier of two optional deadlines (`None`: never).
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use duet_core::{Duration, MAX_DATAGRAM, Transmit};
    use embedded_nal::{UdpClientStack, nb};

    /// A transport with nothing to receive, whose own timers are due at `due`.
    struct Timed {
        due: Option<Instant>,
    }

    impl UdpClientStack for Timed {
        type UdpSocket = ();
        type Error = io::Error;
        fn socket(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn connect(&mut self, _: &mut (), _: SocketAddr) -> io::Result<()> {
            Ok(())
        }
        fn send(&mut self, _: &mut (), _: &[u8]) -> nb::Result<(), io::Error> {
            Ok(())
        }
        fn receive(
            &mut self,
            _: &mut (),
            _: &mut [u8],
        ) -> nb::Result<(usize, SocketAddr), io::Error> {
            Err(nb::Error::WouldBlock)
        }
        fn close(&mut self, _: ()) -> io::Result<()> {
            Ok(())
        }
    }

    impl UdpFullStack for Timed {
        fn bind(&mut self, _: &mut (), _: u16) -> io::Result<()> {
            Ok(())
        }
        fn send_to(&mut self, _: &mut (), _: SocketAddr, _: &[u8]) -> nb::Result<(), io::Error> {
            Ok(())
        }
    }

    impl Transport for Timed {
        fn wait_fd<'a>(&'a self, _: &'a ()) -> io::Result<WaitHandle<'a>> {
            Err(io::Error::other("not waited on in this test"))
        }
        fn local_addr(&self, _: &()) -> io::Result<SocketAddr> {
            Ok(SocketAddr::from(([10, 0, 0, 2], 7789)))
        }
        fn flush(&mut self, _: &()) -> Result<(), (SocketAddr, io::Error)> {
            Ok(())
        }
        fn poll_stack(&mut self) -> io::Result<Option<Instant>> {
            Ok(self.due)
        }
    }

    /// A protocol with its own deadline and nothing to send.
    struct Idle(Option<Instant>);

    impl Protocol for Idle {
        fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: &[u8]) {}
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self, _: Instant, _: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.0
        }
    }

    #[test]
    fn the_link_wakes_for_the_stacks_own_timers() {
        let bind = SocketAddr::from(([0, 0, 0, 0], 7789));
        let soon = Instant::now() + Duration::from_millis(1000);
        let later = soon + Duration::from_secs(30);
        for (stack, protocol, wake) in [
            (Some(soon), Some(later), Some(soon)),
            (Some(later), Some(soon), Some(soon)),
            (Some(soon), None, Some(soon)),
            (None, Some(later), Some(later)),
            (None, None, None),
        ] {
            let mut link = Link::bind(Timed { due: stack }, bind, Idle(protocol)).expect("bind");
            assert_eq!(
                link.poll().expect("poll"),
                wake,
                "stack {stack:?}, protocol {protocol:?}"
            );
        }
    }
}
