//! Who may use the chat page: the checks every request passes before it reaches the chat.
//!
//! - The secret token: in the address duet prints (`?token=`), then in a cookie
//!   (`HttpOnly`, `SameSite=Strict`) the first answer sets. Without it: 401 and nothing else.
//! - The `Host` header must name this server by an IP address or `localhost`, with its
//!   port: a page from another site whose name was made to resolve to 127.0.0.1 (DNS
//!   rebinding) sends its own name, and is refused.
//! - An `Origin`, when sent (always, for a WebSocket), must be this server's own: another
//!   site's page cannot talk to the chat through the user's browser.
//!
//! Pure functions over header values, so they are tested without a server.

use std::net::IpAddr;

/// The token's length in random bytes (256 bits).
const TOKEN_BYTES: usize = 32;

/// The secret that opens the page.
#[derive(Clone)]
pub struct Access {
    token: String,
    port: u16,
}

/// What a request carries that opens the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// The token in the address: the answer sets the cookie.
    InAddress,
    /// The cookie.
    Cookie,
    /// Neither.
    Missing,
}

impl Access {
    /// A fresh random token for the server on `port`.
    pub fn new(port: u16) -> std::io::Result<Access> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        // Hex: safe in a URL, a cookie and a terminal without any escaping.
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Access { token, port })
    }

    /// The token, for the printed address.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The cookie's name: one per port, since browsers share cookies between the ports of
    /// one host (two duets on one computer must not overwrite each other's).
    pub fn cookie_name(&self) -> String {
        format!("duet_{}", self.port)
    }

    /// The `Set-Cookie` value that keeps the page open once the address was used.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie_name(),
            self.token
        )
    }

    /// Whether the query string (`a=b&token=...`) or the `Cookie` header holds the token.
    pub fn key(&self, query: Option<&str>, cookie: Option<&str>) -> Key {
        let in_query = query.is_some_and(|q| {
            q.split('&')
                .filter_map(|pair| pair.strip_prefix("token="))
                .any(|t| same(t, &self.token))
        });
        if in_query {
            return Key::InAddress;
        }
        let name = self.cookie_name();
        let in_cookie = cookie.is_some_and(|c| {
            c.split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .any(|(n, v)| n == name && same(v, &self.token))
        });
        if in_cookie { Key::Cookie } else { Key::Missing }
    }

    /// Whether `host` (the `Host` header) names this server: an IP address or
    /// `localhost`, and this server's port.
    pub fn host_ok(&self, host: &str) -> bool {
        let Some((name, port)) = host.rsplit_once(':') else {
            return false;
        };
        if port.parse::<u16>() != Ok(self.port) {
            return false;
        }
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
    }

    /// Whether `origin` (the `Origin` header) is this server's own page, reached as `host`.
    pub fn origin_ok(&self, origin: &str, host: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|o| o.eq_ignore_ascii_case(host))
    }
}

/// Compare without stopping at the first difference, so the time taken does not tell how
/// much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn only_the_token_opens_the_page() {
        let a = Access::new(7790).unwrap();
        let t = a.token().to_owned();
        assert_eq!(t.len(), 2 * TOKEN_BYTES);
        assert_eq!(a.key(Some(&format!("token={t}")), None), Key::InAddress);
        assert_eq!(a.key(Some(&format!("x=1&token={t}")), None), Key::InAddress);
        assert_eq!(
            a.key(None, Some(&format!("other=1; duet_7790={t}"))),
            Key::Cookie
        );
        assert_eq!(a.key(None, None), Key::Missing);
        assert_eq!(a.key(Some("token="), None), Key::Missing);
        assert_eq!(
            a.key(Some(&format!("token={}", &t[1..])), None),
            Key::Missing
        );
        // Another duet's cookie (another port) does not open this one.
        assert_eq!(a.key(None, Some(&format!("duet_7791={t}"))), Key::Missing);
        assert_ne!(Access::new(7790).unwrap().token(), t, "tokens are random");
        assert!(a.set_cookie().contains("HttpOnly; SameSite=Strict"));
    }

    #[test]
    fn foreign_hosts_and_origins_are_refused() {
        let a = Access::new(7790).unwrap();
        for ok in [
            "127.0.0.1:7790",
            "localhost:7790",
            "[::1]:7790",
            "192.168.1.5:7790",
        ] {
            assert!(a.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example:7790",
            "127.0.0.1",
            "127.0.0.1:7791",
            "localhost.evil.example:7790",
            "",
        ] {
            assert!(!a.host_ok(bad), "{bad}");
        }
        assert!(a.origin_ok("http://127.0.0.1:7790", "127.0.0.1:7790"));
        assert!(!a.origin_ok("http://evil.example:7790", "127.0.0.1:7790"));
        assert!(!a.origin_ok("null", "127.0.0.1:7790"));
        assert!(!a.origin_ok("http://localhost:7790", "127.0.0.1:7790"));
    }
}
