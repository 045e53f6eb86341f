//! Waiting on sockets and the input's wake-up: the one blocking call of duet's loop.
//!
//! Unix waits with poll(2) on file descriptors; the input's wake-up is a pipe. Windows
//! waits with `WSAPoll`, which takes sockets only, so there the wake-up is a pair of
//! loopback UDP sockets. Either way a [`WaitHandle`] is something [`readable`] can wait
//! on, borrowed from the socket, listener or wake-up that owns it.

use std::time::Duration;

#[cfg(unix)]
pub use unix::{AsWaitHandle, WaitHandle, Wake, WakeReceiver, readable, wake_pair};
#[cfg(windows)]
pub use windows::{AsWaitHandle, WaitHandle, Wake, WakeReceiver, readable, wake_pair};

/// The timeout in whole milliseconds, rounded up so a wait never returns just before a
/// deadline and spins.
fn millis(timeout: Duration) -> u64 {
    let ms = timeout.as_millis();
    let up = u128::from(!timeout.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms + up).unwrap_or(u64::MAX)
}

#[cfg(unix)]
mod unix {
    use std::io::{self, Read, Write};
    use std::os::fd::{AsFd, BorrowedFd};
    use std::time::Duration;

    use rustix::event::{PollFd, PollFlags, Timespec};

    /// What [`readable`] waits on: a file descriptor.
    pub type WaitHandle<'a> = BorrowedFd<'a>;

    /// Anything with a descriptor to wait on.
    pub trait AsWaitHandle {
        /// The descriptor, borrowed.
        fn wait_handle(&self) -> WaitHandle<'_>;
    }

    impl<T: AsFd> AsWaitHandle for T {
        fn wait_handle(&self) -> WaitHandle<'_> {
            self.as_fd()
        }
    }

    /// Sleep until one of `handles` is readable or `timeout` passes (`None`: no limit); which
    /// ones are readable. An interrupted wait returns none readable.
    pub fn readable<const N: usize>(
        handles: [Option<WaitHandle<'_>>; N],
        timeout: Option<Duration>,
    ) -> io::Result<[bool; N]> {
        let mut ready = [false; N];
        let Some(first) = handles.iter().flatten().next().copied() else {
            if let Some(t) = timeout {
                std::thread::sleep(t);
            }
            return Ok(ready);
        };
        // A fixed array, not a Vec: the wait runs once per datagram on the hot path. Absent
        // handles poll the first one again and are not reported.
        let mut fds = handles.map(|h| PollFd::from_borrowed_fd(h.unwrap_or(first), PollFlags::IN));
        let timeout = timeout.map(|t| {
            Timespec::try_from(Duration::from_millis(super::millis(t))).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            })
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(ready),
            Err(e) => return Err(e.into()),
        }
        for (i, fd) in fds.iter().enumerate() {
            ready[i] = handles[i].is_some() && !fd.revents().is_empty();
        }
        Ok(ready)
    }

    /// The end that wakes a sleeping [`readable`].
    pub struct Wake(io::PipeWriter);

    /// The end [`readable`] waits on.
    pub struct WakeReceiver(io::PipeReader);

    /// A connected wake-up: a pipe neither end of which ever blocks (a full pipe already
    /// wakes the receiver; an empty one is drained).
    pub fn wake_pair() -> io::Result<(Wake, WakeReceiver)> {
        let (rx, tx) = io::pipe()?;
        rustix::io::ioctl_fionbio(rx.as_fd(), true)?;
        rustix::io::ioctl_fionbio(tx.as_fd(), true)?;
        Ok((Wake(tx), WakeReceiver(rx)))
    }

    impl Wake {
        /// Make the receiver readable (a full pipe already is).
        pub fn wake(&mut self) {
            let _ = self.0.write(&[1]);
        }
    }

    impl WakeReceiver {
        /// Take every wake-up waiting, without blocking.
        pub fn drain(&self) {
            let mut sink = [0u8; 64];
            while matches!((&self.0).read(&mut sink), Ok(n) if n > 0) {}
        }
    }

    impl AsFd for WakeReceiver {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
    }
}

#[cfg(windows)]
mod windows {
    use std::io;
    use std::net::{Ipv4Addr, UdpSocket};
    use std::os::windows::io::{AsRawSocket, AsSocket, BorrowedSocket};
    use std::time::Duration;

    use windows_sys::Win32::Networking::WinSock::{
        POLLRDNORM, SOCKET, SOCKET_ERROR, WSAGetLastError, WSAPOLLFD, WSAPoll,
    };

    /// What [`readable`] waits on: a socket.
    pub type WaitHandle<'a> = BorrowedSocket<'a>;

    /// Anything with a socket to wait on.
    pub trait AsWaitHandle {
        /// The socket, borrowed.
        fn wait_handle(&self) -> WaitHandle<'_>;
    }

    impl<T: AsSocket> AsWaitHandle for T {
        fn wait_handle(&self) -> WaitHandle<'_> {
            self.as_socket()
        }
    }

    /// Sleep until one of `handles` is readable or `timeout` passes (`None`: no limit); which
    /// ones are readable.
    #[allow(unsafe_code)]
    pub fn readable<const N: usize>(
        handles: [Option<WaitHandle<'_>>; N],
        timeout: Option<Duration>,
    ) -> io::Result<[bool; N]> {
        let mut ready = [false; N];
        let mut fds = [WSAPOLLFD {
            fd: 0,
            events: 0,
            revents: 0,
        }; N];
        let mut used = 0;
        let mut slot = [0usize; N];
        for (i, h) in handles.iter().enumerate() {
            if let Some(h) = h {
                fds[used] = WSAPOLLFD {
                    fd: h.as_raw_socket() as SOCKET,
                    events: POLLRDNORM,
                    revents: 0,
                };
                slot[used] = i;
                used += 1;
            }
        }
        if used == 0 {
            if let Some(t) = timeout {
                std::thread::sleep(t);
            }
            return Ok(ready);
        }
        let ms = timeout.map_or(-1, |t| i32::try_from(super::millis(t)).unwrap_or(i32::MAX));
        // SAFETY: `fds[..used]` are initialised WSAPOLLFDs of sockets borrowed for this call.
        let n = unsafe { WSAPoll(fds.as_mut_ptr(), used as u32, ms) };
        if n == SOCKET_ERROR {
            // SAFETY: reads this thread's last Winsock error; no arguments.
            return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
        }
        for (fd, i) in fds[..used].iter().zip(slot) {
            ready[i] = fd.revents != 0;
        }
        Ok(ready)
    }

    /// The end that wakes a sleeping [`readable`].
    pub struct Wake(UdpSocket);

    /// The end [`readable`] waits on.
    pub struct WakeReceiver(UdpSocket);

    /// A connected wake-up: two loopback UDP sockets, since `WSAPoll` waits on sockets
    /// only. The receiver only takes datagrams from the waking socket.
    pub fn wake_pair() -> io::Result<(Wake, WakeReceiver)> {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        tx.connect(rx.local_addr()?)?;
        rx.connect(tx.local_addr()?)?;
        rx.set_nonblocking(true)?;
        Ok((Wake(tx), WakeReceiver(rx)))
    }

    impl Wake {
        /// Make the receiver readable.
        pub fn wake(&mut self) {
            let _ = self.0.send(&[1]);
        }
    }

    impl WakeReceiver {
        /// Take every wake-up waiting, without blocking.
        pub fn drain(&self) {
            let mut sink = [0u8; 64];
            for _ in 0..1024 {
                if self.0.recv(&mut sink).is_err() {
                    break;
                }
            }
        }
    }

    impl AsSocket for WakeReceiver {
        fn as_socket(&self) -> BorrowedSocket<'_> {
            self.0.as_socket()
        }
    }
}
