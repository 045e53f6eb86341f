//! The one driver loop, shared by every transport: std UDP on a host, smoltcp on a TAP
//! device, smoltcp on the board.
//!
//! [`Driver::poll`] does everything that can be done now and never blocks:
//! receive every datagram available → [`Protocol::handle_datagram`]; expire timers →
//! [`Protocol::handle_timeout`]; drain [`Protocol::poll_transmit`] → `send_to`. It returns
//! the next deadline; the platform then waits its own way (poll(2) on the socket and the
//! terminal, WFI on a board) until that deadline or new input, and calls `poll` again.
//! Work per call is bounded; when a bound is hit the returned deadline is "now".

use core::net::SocketAddr;

use embedded_nal::{UdpFullStack, nb};

use crate::MAX_DATAGRAM;
use crate::time::Instant;

/// Datagrams received per [`Driver::poll`] at most, so a flood cannot starve sending. Small
/// on purpose: an application acknowledges what it received only after it stored it,
/// between two polls, so half the session's window per poll keeps a peer's window moving
/// instead of stopping it until a whole window was read, while each store commit and
/// acknowledgement still covers many datagrams. Measured through the binaries (docs/
/// PERFORMANCE.md): a quarter of the window made twice as many commits and acknowledgements
/// (chat line mode and a file both slower by a fifth to a third), the whole window stalled a
/// file's sender (40% slower).
pub const RX_BUDGET: usize = crate::session::WINDOW / 2;
/// Datagrams sent per [`Driver::poll`] at most.
pub const TX_BUDGET: usize = 64;

/// A source of the current time for the driver.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Instant;
}

/// A datagram a protocol wrote into the driver's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transmit {
    /// Where it goes.
    pub dst: SocketAddr,
    /// Its length at the start of the buffer.
    pub len: usize,
}

/// A sans-IO datagram protocol the driver can run: the duet [`crate::Session`] or the legacy
/// [`crate::legacy::Plain`].
pub trait Protocol {
    /// Whether it can take another datagram now; if not, datagrams wait in the socket.
    fn wants_datagram(&self) -> bool {
        true
    }
    /// Feed one received datagram (possibly longer than [`MAX_DATAGRAM`]: then reject it).
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]);
    /// Expire what is due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// Write the next datagram to send, if one is due.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit>;
    /// When there is next work to do, if ever.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// What stopped a [`Driver::poll`].
#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DriveError<E> {
    /// The stack failed to receive.
    Receive(E),
    /// The stack refused to send to `dst`; the datagram is lost and will be resent by the
    /// protocol's own retransmission if it needs to be.
    Send {
        /// Where the datagram was going.
        dst: SocketAddr,
        /// The stack's error.
        error: E,
    },
}

/// Driver counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DriverStats {
    /// Datagrams dropped because the stack's send buffer was full.
    pub send_would_block: u32,
}

/// One bound UDP socket and the buffers to move datagrams through it.
pub struct Driver<S: UdpFullStack> {
    socket: S::UdpSocket,
    /// One byte more than any datagram duet accepts, so a longer one is seen as longer
    /// instead of silently cut to [`MAX_DATAGRAM`].
    rx: [u8; MAX_DATAGRAM + 1],
    tx: [u8; MAX_DATAGRAM],
    stats: DriverStats,
}

impl<S: UdpFullStack> Driver<S> {
    /// Open a socket on `stack` and bind it to `port`.
    pub fn bind(stack: &mut S, port: u16) -> Result<Self, S::Error> {
        let mut socket = stack.socket()?;
        stack.bind(&mut socket, port)?;
        Ok(Self::new(socket))
    }

    /// Drive an already bound socket.
    pub fn new(socket: S::UdpSocket) -> Self {
        Driver {
            socket,
            rx: [0; MAX_DATAGRAM + 1],
            tx: [0; MAX_DATAGRAM],
            stats: DriverStats::default(),
        }
    }

    /// The socket, e.g. to wait on its file descriptor.
    pub fn socket(&self) -> &S::UdpSocket {
        &self.socket
    }

    /// Driver counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Do all the work that can be done now; return when to call again (`None`: only when a
    /// datagram arrives or the application acts).
    pub fn poll<P, C>(
        &mut self,
        stack: &mut S,
        clock: &C,
        protocol: &mut P,
    ) -> Result<Option<Instant>, DriveError<S::Error>>
    where
        P: Protocol + ?Sized,
        C: Clock + ?Sized,
    {
        let mut again = false;
        for round in 0..RX_BUDGET {
            if !protocol.wants_datagram() {
                break;
            }
            match stack.receive(&mut self.socket, &mut self.rx) {
                Ok((len, from)) => {
                    let datagram = self.rx.get(..len).unwrap_or(&self.rx);
                    protocol.handle_datagram(clock.now(), from, datagram);
                    again |= round + 1 == RX_BUDGET;
                }
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(e)) => return Err(DriveError::Receive(e)),
            }
        }
        let deadline = self.transmit(stack, clock, protocol)?;
        Ok(if again { Some(clock.now()) } else { deadline })
    }

    /// The second half of [`Driver::poll`] alone: expire timers and send what is due, without
    /// receiving. An application that acts on what [`Driver::poll`] received (stores it,
    /// then lets the protocol acknowledge it) calls this to send the acknowledgement and
    /// its own answers at once, instead of after the next batch of datagrams.
    pub fn transmit<P, C>(
        &mut self,
        stack: &mut S,
        clock: &C,
        protocol: &mut P,
    ) -> Result<Option<Instant>, DriveError<S::Error>>
    where
        P: Protocol + ?Sized,
        C: Clock + ?Sized,
    {
        let mut again = false;
        let now = clock.now();
        protocol.handle_timeout(now);
        for round in 0..TX_BUDGET {
            let Some(transmit) = protocol.poll_transmit(now, &mut self.tx) else {
                break;
            };
            let datagram = self.tx.get(..transmit.len).unwrap_or(&self.tx);
            match stack.send_to(&mut self.socket, transmit.dst, datagram) {
                Ok(()) => again |= round + 1 == TX_BUDGET,
                Err(nb::Error::WouldBlock) => {
                    // Lost like a datagram on the wire; the protocol retransmits what matters.
                    self.stats.send_would_block = self.stats.send_would_block.wrapping_add(1);
                    break;
                }
                Err(nb::Error::Other(error)) => {
                    return Err(DriveError::Send {
                        dst: transmit.dst,
                        error,
                    });
                }
            }
        }
        Ok(if again {
            Some(now)
        } else {
            protocol.poll_timeout()
        })
    }
}
