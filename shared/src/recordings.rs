//! Which recording files an app may be sent a link to: [`Recordings::link`] is
//! the one place that decides whether a path a call record names lies inside
//! the recordings directory nginx serves, and turns it into that file's URL.
//!
//! The call records are not ours: whatever `recordingfile` says (`..`, a
//! symlink out, another directory, a NUL byte, a relative path), a link is made
//! only for a regular file whose real path lies under the real path of the
//! directory, at the same relative path nginx's `alias` resolves.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::paths::RECORDINGS;

#[derive(Debug, Clone)]
pub struct Recordings {
    /// As configured: nginx's `alias`, and what stored paths start with.
    root: PathBuf,
    /// Its real path (symlinks resolved) when it exists, to judge where a
    /// file really is.
    real_root: Option<PathBuf>,
}

impl Recordings {
    pub fn new(root: &Path) -> Recordings {
        Recordings {
            root: root.to_path_buf(),
            real_root: std::fs::canonicalize(root).ok(),
        }
    }

    /// The URL path of `stored` under [`RECORDINGS`], when it names an existing
    /// regular file inside the directory; `None` for anything else.
    pub fn link(&self, stored: &str) -> Option<String> {
        let real_root = self.real_root.as_deref()?;
        let stored = Path::new(stored);
        // Lexically first: absolute, under the configured directory, and made
        // of plain names only, so the URL nginx maps back is this very path.
        let relative = stored.strip_prefix(&self.root).ok()?;
        if !stored.is_absolute()
            || stored.as_os_str().as_bytes().contains(&0)
            || relative.as_os_str().is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return None;
        }
        // Then on disk: where it really is (a symlink may point anywhere).
        let real = std::fs::canonicalize(stored).ok()?;
        if !real.starts_with(real_root) || !std::fs::metadata(&real).ok()?.is_file() {
            return None;
        }
        let mut url = String::with_capacity(RECORDINGS.len() + relative.as_os_str().len());
        url.push_str(RECORDINGS);
        for (i, part) in relative.components().enumerate() {
            if i > 0 {
                url.push('/');
            }
            encode(part.as_os_str(), &mut url);
        }
        Some(url)
    }
}

/// Percent-encodes one path segment: unreserved characters (RFC 3986) stay,
/// everything else (spaces, `?`, `#`, `%`, non-ASCII bytes) is escaped.
fn encode(segment: &OsStr, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in segment.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use softphone_testkit::TestDir;

    use super::*;

    #[test]
    fn only_files_really_inside_the_directory_get_a_link() {
        let dir = TestDir::new("recordings");
        let root = dir.path().join("monitor");
        let day = root.join("2024/01/15/10");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("call-1.mp3"), b"a").unwrap();
        std::fs::write(day.join("with space#?.mp3"), b"a").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), day.join("out.mp3")).unwrap();
        std::os::unix::fs::symlink(&day, root.join("alias")).unwrap();
        let r = Recordings::new(&root);
        let at = |rel: &str| format!("{}/{rel}", root.display());

        assert_eq!(
            r.link(&at("2024/01/15/10/call-1.mp3")).as_deref(),
            Some("/pbxcore/softphone/recordings/2024/01/15/10/call-1.mp3")
        );
        assert_eq!(
            r.link(&at("2024/01/15/10/with space#?.mp3")).as_deref(),
            Some("/pbxcore/softphone/recordings/2024/01/15/10/with%20space%23%3F.mp3")
        );
        // A symlinked directory inside the root stays inside: nginx follows it too.
        assert!(r.link(&at("alias/call-1.mp3")).is_some());
        for outside in [
            at("../secret.txt"),
            at("2024/../../secret.txt"),
            at("2024/01/15/10/out.mp3"),
            at("2024/01/15/10/missing.mp3"),
            at("2024/01/15/10"),
            at(""),
            format!("{}", dir.path().join("secret.txt").display()),
            "2024/01/15/10/call-1.mp3".to_owned(),
            "/etc/passwd".to_owned(),
            format!("{}-other/x.mp3", root.display()),
            at("2024/01/15/10/call-1.mp3\0.txt"),
            String::new(),
        ] {
            assert_eq!(r.link(&outside), None, "{outside:?}");
        }
        // No directory, no links.
        assert_eq!(
            Recordings::new(&dir.path().join("none")).link(&at("2024/01/15/10/call-1.mp3")),
            None
        );
    }
}
