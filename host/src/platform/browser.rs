//! Opening an address in the user's default browser: each system has its own opener.

use std::io;
use std::process::{Command, Stdio};

/// The program that opens an address with the desktop's default browser.
#[cfg(target_os = "macos")]
const OPENER: (&str, &[&str]) = ("open", &[]);
/// The program that opens an address with the desktop's default browser.
#[cfg(windows)]
const OPENER: (&str, &[&str]) = ("rundll32", &["url.dll,FileProtocolHandler"]);
/// The program that opens an address with the desktop's default browser.
#[cfg(not(any(target_os = "macos", windows)))]
const OPENER: (&str, &[&str]) = ("xdg-open", &[]);

/// Ask the desktop to open `url`; returns once the opener started (it may still fail to
/// find a browser, which it reports on its own).
pub fn open(url: &str) -> io::Result<()> {
    let (program, args) = OPENER;
    Command::new(program)
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        // Reaped when it ends, so it does not linger as a zombie while duet runs.
        .map(|mut child| {
            std::thread::spawn(move || child.wait());
        })
}
