//! `embedded-io` reads and writes over a serial port polled a byte at a time, as every
//! board's console does: the boards give how to take one received byte and how to put one
//! byte to send; the waiting rules `Read` and `Write` ask for live here, once.

/// Wait for the first byte (as `Read` requires), then take what else is ready. The bytes
/// come from `take`, which answers `None` while nothing has arrived.
pub fn read(buf: &mut [u8], mut take: impl FnMut() -> Option<u8>) -> usize {
    let Some((first, rest)) = buf.split_first_mut() else {
        return 0;
    };
    *first = loop {
        if let Some(byte) = take() {
            break byte;
        }
    };
    let mut n = 1;
    for slot in rest {
        let Some(byte) = take() else { break };
        *slot = byte;
        n += 1;
    }
    n
}

/// Wait until the first byte fits (as `Write` requires), then write while the port has
/// room. `put` sends one byte, or answers `false` if the port has no room for it now.
pub fn write(buf: &[u8], mut put: impl FnMut(u8) -> bool) -> usize {
    let Some((&first, rest)) = buf.split_first() else {
        return 0;
    };
    while !put(first) {}
    1 + rest.iter().take_while(|&&byte| put(byte)).count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_takes_what_is_ready_after_waiting_for_one() {
        let mut arriving = [None, None, Some(1), Some(2), None, Some(3)].into_iter();
        let mut buf = [0u8; 8];
        let n = super::read(&mut buf, || arriving.next().flatten());
        assert_eq!(&buf[..n], [1, 2]);
        assert_eq!(super::read(&mut [], || Some(9)), 0);
    }

    #[test]
    fn write_waits_for_the_first_byte_then_stops_when_full() {
        let mut room = [false, true, true, false, true].into_iter();
        let mut sent = Vec::new();
        let n = super::write(b"abcd", |b| {
            let fits = room.next().unwrap_or(false);
            if fits {
                sent.push(b);
            }
            fits
        });
        assert_eq!((n, sent.as_slice()), (2, b"ab".as_slice()));
    }
}
