//! Which recording files an app may be sent a link to: [`Recordings::link`] is
//! the one place that decides whether a path a call record names lies inside
//! the recordings directory nginx serves, and turns it into that file's URL.
//!
//! The call records are not ours: whatever `recordingfile` says (`..`, a
//! symlink out, another directory, a NUL byte, a relative path), a link is made
//! only for a regular file (not a symlink) whose directory's real path lies
//! under the real path of the recordings directory, at the same relative path
//! nginx's `alias` resolves. A day's recordings share a few directories, so
//! each directory's real path is resolved once per [`Recordings`], and each
//! file costs one `lstat`.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::paths::RECORDINGS;

/// Made for one answer (its directory cache is not shared between threads).
#[derive(Debug)]
pub struct Recordings {
    /// As configured: nginx's `alias`, and what stored paths start with.
    root: PathBuf,
    /// Its real path (symlinks resolved) when it exists, to judge where a
    /// file really is.
    real_root: Option<PathBuf>,
    /// Directories already judged: inside the real root or not.
    judged: RefCell<Vec<(PathBuf, bool)>>,
}

impl Recordings {
    pub fn new(root: &Path) -> Recordings {
        Recordings {
            root: root.to_path_buf(),
            real_root: std::fs::canonicalize(root).ok(),
            judged: RefCell::new(Vec::new()),
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
        // Then on disk: the file itself a regular file, not a symlink (which
        // may point anywhere), in a directory that really is inside.
        if !std::fs::symlink_metadata(stored).ok()?.is_file()
            || !self.inside(stored.parent()?, real_root)
        {
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

impl Recordings {
    /// Whether `dir`'s real path lies under `real_root`, resolved once.
    fn inside(&self, dir: &Path, real_root: &Path) -> bool {
        let mut judged = self.judged.borrow_mut();
        if let Some((_, inside)) = judged.iter().find(|(d, _)| d == dir) {
            return *inside;
        }
        let inside = std::fs::canonicalize(dir).is_ok_and(|real| real.starts_with(real_root));
        judged.push((dir.to_path_buf(), inside));
        inside
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
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::fs::write(dir.path().join("elsewhere/x.mp3"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(day.join("call-1.mp3"), day.join("same.mp3")).unwrap();
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
            at("out/x.mp3"),
            // A symlink as the file itself, even to a file inside.
            at("2024/01/15/10/same.mp3"),
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
