//! The console's output without `core::fmt`: text, decimal and hexadecimal numbers, IP
//! socket addresses, written straight to an `embedded-io` stream.
//!
//! Why not `write!`: on a Cortex-M, `core::fmt`'s machinery (padding, integer and address
//! `Display`, the `Debug` impls it drags along) took about 5.5 KB of the firmware's flash
//! for a console that prints a few numbers and addresses. These few functions do the same
//! for a few hundred bytes. Output errors are ignored, as a console's must be: there is no
//! one to tell.
//!
//! The core's error enums give their words through `as_str`.

use core::net::{IpAddr, SocketAddr};

use embedded_io::Write;

/// Writing text and numbers to a byte stream; every method returns the stream, so a line
/// reads as a chain: `out.text("queued #").decimal(id)`.
pub trait Print: Write + Sized {
    /// `text` as it is.
    fn text(&mut self, text: &str) -> &mut Self {
        self.bytes(text.as_bytes())
    }

    /// Raw bytes (ASCII or UTF-8 already).
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let _ = self.write_all(bytes);
        self
    }

    /// `n` in decimal (`{}`).
    fn decimal(&mut self, n: impl Into<u64>) -> &mut Self {
        // One copy of the digit loop for every integer type: only this line is generic.
        self.decimal_padded(n.into(), 1)
    }

    /// `n` in decimal, at least `width` digits with leading zeros (`{:0width$}`).
    fn decimal_padded(&mut self, mut n: u64, width: usize) -> &mut Self {
        // u64::MAX has 20 digits.
        let mut digits = [b'0'; 20];
        let mut start = digits.len();
        while n > 0 || start > digits.len().saturating_sub(width.max(1)) {
            start -= 1;
            let (quotient, digit) = div_rem(n, 10);
            digits[start] = b'0' + digit as u8;
            n = quotient;
        }
        self.bytes(&digits[start..])
    }

    /// `n` in lowercase hexadecimal, at least `width` digits with leading zeros
    /// (`{:0width$x}`).
    fn hex(&mut self, n: u32, width: usize) -> &mut Self {
        let mut n = n;
        let mut digits = [b'0'; 8];
        let mut start = digits.len();
        while n > 0 || start > digits.len().saturating_sub(width.max(1)) {
            start -= 1;
            digits[start] = b"0123456789abcdef"[(n & 0xf) as usize];
            n >>= 4;
        }
        self.bytes(&digits[start..])
    }

    /// An IP address and port as `Display` prints it (`10.0.2.2:7788`), except that an
    /// IPv6 address keeps its zero groups (`[0:0:0:0:0:0:0:1]:7788`, not `[::1]:7788`): the
    /// board's stack is IPv4 only, so none reaches it.
    fn socket_addr(&mut self, addr: SocketAddr) -> &mut Self {
        match addr.ip() {
            IpAddr::V4(ip) => self.ipv4(ip.octets()),
            IpAddr::V6(ip) => {
                self.text("[");
                for (i, group) in ip.segments().into_iter().enumerate() {
                    if i > 0 {
                        self.text(":");
                    }
                    self.hex(u32::from(group), 1);
                }
                self.text("]")
            }
        };
        self.text(":").decimal(addr.port())
    }

    /// An IPv4 address in dotted decimal.
    fn ipv4(&mut self, octets: [u8; 4]) -> &mut Self {
        for (i, octet) in octets.into_iter().enumerate() {
            if i > 0 {
                self.text(".");
            }
            self.decimal(octet);
        }
        self
    }
}

impl<W: Write> Print for W {}

/// `n / d` and `n % d` with 32-bit divisions only, for a divisor below 2^16.
///
/// Why not `/` and `%`: a 64-bit division on a Cortex-M is a call to compiler-builtins'
/// `u64_div_rem`, about 900 bytes of flash that only the console's few numbers needed.
/// Long division by 16-bit digits keeps every step's dividend below `d * 2^16` (fits u32).
pub fn div_rem(n: u64, d: u32) -> (u64, u32) {
    debug_assert!(d > 0 && d < 1 << 16);
    let d = d.max(1);
    let mut quotient = 0u64;
    let mut rest = 0u32;
    for shift in [48u32, 32, 16, 0] {
        let part = (rest << 16) | ((n >> shift) as u32 & 0xffff);
        quotient |= u64::from(part / d) << shift;
        rest = part % d;
    }
    (quotient, rest)
}

#[cfg(test)]
mod tests {
    #[test]
    fn div_rem_matches_the_64_bit_division() {
        let numbers = [
            0,
            1,
            9,
            10,
            999,
            1000,
            65_535,
            1 << 32,
            u64::from(u32::MAX) * 7 + 3,
            u64::MAX,
        ];
        for n in numbers {
            for d in [1, 3, 10, 1000, 65_535] {
                let expected = (n / u64::from(d), (n % u64::from(d)) as u32);
                assert_eq!(super::div_rem(n, d), expected, "{n} / {d}");
            }
        }
    }
}
