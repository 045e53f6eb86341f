//! Files only their owner can read (the process's file creation mask, the repair of a file
//! that others can read), why a file cannot be written (a read-only file system, no
//! permission, no space left), where the config directory is by default, and where
//! received files go by default (the user's download directory).
//!
//! On Unix privacy is the mode bits: everything is created 0600/0700 and a file others can
//! read is repaired. Windows has no mode bits: duet's files live in the user's profile
//! (`%APPDATA%`), whose ACL admits only the user, SYSTEM and administrators, and every file
//! duet creates there inherits that ACL; [`mode`] reports such files as 0600.

#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
pub use windows::*;

/// Permission bits for the group and for others.
pub const OTHERS: u32 = 0o077;

#[cfg(unix)]
mod unix {
    use std::fs;
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    use rustix::fs::Mode;

    use super::OTHERS;

    /// From now on, create every file and directory for the owner alone: a umask of 0o077
    /// takes the group's and others' bits off whatever mode a creator asks for (SQLite asks
    /// 0644 for its database, journal and shared-memory files). Call before any thread
    /// starts: the mask is the whole process's.
    pub fn create_private() {
        rustix::process::umask(Mode::from_raw_mode(OTHERS));
    }

    /// If the file at `path` gives the group or others any permission, take it away
    /// (leaving the owner's bits) and return the mode it had; `Ok(None)` if it was private
    /// or does not exist.
    pub fn make_private(path: &Path) -> io::Result<Option<u32>> {
        let mode = match fs::metadata(path) {
            Ok(meta) => mode(&meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if mode & OTHERS == 0 {
            return Ok(None);
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))?;
        Ok(Some(mode))
    }

    /// The file's permission bits.
    pub fn mode(meta: &fs::Metadata) -> u32 {
        meta.permissions().mode() & 0o7777
    }

    /// Options that create a file for its owner alone (mode 0600).
    pub fn private(options: &mut fs::OpenOptions) -> &mut fs::OpenOptions {
        options.mode(0o600)
    }

    /// Options that refuse to open the path if it is a symbolic link (`O_NOFOLLOW`): a
    /// file duet writes into a directory others may write to (received files' partial
    /// files) is never written through a link planted there.
    pub fn no_follow(options: &mut fs::OpenOptions) -> &mut fs::OpenOptions {
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
    }

    /// Create `dir` and its parents, for the owner alone (mode 0700).
    pub fn create_dir_private(dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }

    /// `Ok` if this process may write to `path` (a file, or a directory to create files
    /// in): `access(2)`, which also reports a read-only file system
    /// (`ReadOnlyFilesystem`) to root.
    pub fn check_writable(path: &Path) -> io::Result<()> {
        rustix::fs::access(path, rustix::fs::Access::WRITE_OK).map_err(io::Error::from)
    }

    /// Bytes an unprivileged user can still write on the file system that holds `path`.
    pub fn available_bytes(path: &Path) -> io::Result<u64> {
        let stats = rustix::fs::statvfs(path).map_err(io::Error::from)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    /// The user's download directory: `$XDG_DOWNLOAD_DIR`, else the one named in
    /// `user-dirs.dirs` (where desktops record it, `$XDG_CONFIG_HOME` or `~/.config`), else
    /// `~/Downloads`; `None` without a home. (The `dirs` crate reads the same file; for one
    /// line of it, it is not worth a dependency.)
    pub fn download_dir() -> Option<PathBuf> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        if let Some(dir) = std::env::var_os("XDG_DOWNLOAD_DIR").map(PathBuf::from)
            && dir.is_absolute()
        {
            return Some(dir);
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| home.as_ref().map(|h| h.join(".config")));
        if let (Some(config), Some(home)) = (config, &home)
            && let Ok(text) = fs::read_to_string(config.join("user-dirs.dirs"))
            && let Some(dir) = user_dirs_download(&text, home)
        {
            return Some(dir);
        }
        home.map(|h| h.join("Downloads"))
    }

    /// `XDG_DOWNLOAD_DIR="$HOME/Downloads"` in a `user-dirs.dirs`, with `$HOME` replaced.
    pub fn user_dirs_download(text: &str, home: &Path) -> Option<PathBuf> {
        let value = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("XDG_DOWNLOAD_DIR="))
            .next_back()?
            .trim()
            .trim_matches('"');
        let dir = match value.strip_prefix("$HOME") {
            Some(rest) => home.join(rest.trim_start_matches('/')),
            None => PathBuf::from(value),
        };
        // The file's rules: an absolute path or one under $HOME; `$HOME/` alone means none.
        (dir.is_absolute() && dir != home).then_some(dir)
    }

    /// The config directory when none is given: `$XDG_CONFIG_HOME/duet`, else
    /// `$HOME/.config/duet`; else how to name it and why it cannot be found.
    pub fn default_config_dir() -> Result<PathBuf, (PathBuf, &'static str)> {
        // The XDG spec says a relative $XDG_CONFIG_HOME is invalid and must be ignored.
        let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
        if let Some(xdg) = xdg.filter(|p| p.is_absolute()) {
            return Ok(xdg.join("duet"));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        match home.filter(|p| !p.as_os_str().is_empty()) {
            Some(home) => Ok(home.join(".config").join("duet")),
            None => Err((
                PathBuf::from("$HOME/.config/duet"),
                "neither $XDG_CONFIG_HOME nor $HOME is set; pass --config-dir DIR",
            )),
        }
    }
}

#[cfg(windows)]
mod windows {
    use std::fs;
    use std::io;
    use std::os::windows::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    /// Nothing to do: files created in the user's profile inherit its private ACL.
    pub fn create_private() {}

    /// Nothing to repair: Windows has no mode bits (see the module's docs).
    pub fn make_private(_path: &Path) -> io::Result<Option<u32>> {
        Ok(None)
    }

    /// 0600 for a writable file, 0400 for a read-only one: the only bits Windows has.
    pub fn mode(meta: &fs::Metadata) -> u32 {
        if meta.permissions().readonly() {
            0o400
        } else {
            0o600
        }
    }

    /// The options as given: the file inherits the directory's ACL.
    pub fn private(options: &mut fs::OpenOptions) -> &mut fs::OpenOptions {
        options
    }

    /// The options as given: creating a symbolic link takes a privilege on Windows, so a
    /// planted one is not the risk it is on Unix.
    pub fn no_follow(options: &mut fs::OpenOptions) -> &mut fs::OpenOptions {
        options
    }

    /// Create `dir` and its parents; they inherit the profile's ACL.
    pub fn create_dir_private(dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    /// `Ok` if this process may write to `path`: a directory by creating (and removing) a
    /// file in it, a file by opening it for writing.
    pub fn check_writable(path: &Path) -> io::Result<()> {
        if fs::metadata(path)?.is_dir() {
            let probe = path.join(format!(".duet-write-check.{}", std::process::id()));
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)?;
            let _ = fs::remove_file(&probe);
            Ok(())
        } else {
            fs::OpenOptions::new().write(true).open(path).map(drop)
        }
    }

    /// Bytes this user can still write on the volume that holds `path`.
    #[allow(unsafe_code)]
    pub fn available_bytes(path: &Path) -> io::Result<u64> {
        use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(path)
        };
        let wide: Vec<u16> = dir.as_os_str().encode_wide().chain([0]).collect();
        let mut available = 0u64;
        // SAFETY: `wide` is a NUL-terminated UTF-16 path; the out pointer is a live u64,
        // the others may be null.
        let ok = unsafe {
            GetDiskFreeSpaceExW(
                wide.as_ptr(),
                &mut available,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(available)
    }

    /// The user's download directory: `%USERPROFILE%\Downloads` (where Windows puts it
    /// unless the user moved it); `None` without a profile.
    pub fn download_dir() -> Option<PathBuf> {
        std::env::var_os("USERPROFILE")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|p| p.join("Downloads"))
    }

    /// The config directory when none is given: `%APPDATA%\duet`; else how to name it and
    /// why it cannot be found.
    pub fn default_config_dir() -> Result<PathBuf, (PathBuf, &'static str)> {
        let appdata = std::env::var_os("APPDATA").map(PathBuf::from);
        match appdata.filter(|p| p.is_absolute()) {
            Some(dir) => Ok(dir.join("duet")),
            None => Err((
                PathBuf::from(r"%APPDATA%\duet"),
                "%APPDATA% is not set; pass --config-dir DIR",
            )),
        }
    }
}

#[cfg(all(test, unix))]
mod test {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    #[test]
    fn the_download_directory_is_read_from_user_dirs() {
        let home = Path::new("/home/ann");
        let text = "# written by xdg-user-dirs-update\nXDG_DESKTOP_DIR=\"$HOME/Desktop\"\n\
                    XDG_DOWNLOAD_DIR=\"$HOME/Téléchargements\"\n";
        assert_eq!(
            user_dirs_download(text, home),
            Some(PathBuf::from("/home/ann/Téléchargements"))
        );
        assert_eq!(
            user_dirs_download("XDG_DOWNLOAD_DIR=\"/srv/in\"", home),
            Some(PathBuf::from("/srv/in"))
        );
        // `$HOME/` alone means "none", and a relative path is not allowed.
        assert_eq!(
            user_dirs_download("XDG_DOWNLOAD_DIR=\"$HOME/\"", home),
            None
        );
        assert_eq!(user_dirs_download("XDG_DOWNLOAD_DIR=\"dl\"", home), None);
        assert_eq!(user_dirs_download("", home), None);
    }

    #[test]
    fn a_file_others_can_read_is_made_private_and_a_private_one_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("duet-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(make_private(&path).unwrap(), Some(0o644));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(make_private(&path).unwrap(), None);
        assert_eq!(make_private(&dir.join("missing")).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
