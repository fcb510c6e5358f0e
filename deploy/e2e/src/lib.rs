//! End-to-end tests through nginx live in `tests/e2e/`; this crate has no code of
//! its own. They need the workspace's binaries, nginx and libnginx-mod-nchan:
//! `deploy/test.sh` provides all three.
