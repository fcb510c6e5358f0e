//! The verifier's work per request, without sockets, threads or upkeep: serves
//! a connection held in memory (N pipelined requests with a valid token, one
//! per read, as nginx sends them) with the real [`conn::serve`], so that
//! `valgrind --tool=callgrind` counts the same instructions on every run.
//! Run it at two sizes; the difference over the difference in requests is the
//! cost of one request, set-up cancelled out:
//!
//! ```sh
//! cargo build --release --example instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions 20000   # then 40000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{self, Read, Write};
use std::time::Duration;

use softphone_shared::live_keys::LiveKeys;
use softphone_shared::store::Store;
use softphone_shared::unix_now;
use softphone_testkit::{CHECK, TestDir};
use softphone_verifier::conn::{self, Stream};
use softphone_verifier::revocations::Revocations;
use softphone_verifier::state::Verifier;

/// A connection whose client has sent `left` copies of one request.
struct Pipelined {
    request: Vec<u8>,
    left: usize,
    answered: usize,
}

impl Read for Pipelined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        self.left -= 1;
        buf[..self.request.len()].copy_from_slice(&self.request);
        Ok(self.request.len())
    }
}

impl Write for Pipelined {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // One request per read, so one answer per write.
        self.answered += usize::from(buf.starts_with(b"HTTP/1.1 200 "));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for &mut Pipelined {
    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn wait_readable(&self) {}
}

fn main() {
    let requests: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("usage: instructions <requests>");
    let dir = TestDir::new("instructions");
    let config = softphone_testkit::config(dir.path());
    let keys = LiveKeys::open(&config.key_file(), "instructions").unwrap();
    let now = unix_now();
    let mut store = Store::open(&config.database()).unwrap();
    softphone_testkit::insert_session(&mut store, "live-session", now);
    let token = softphone_testkit::access_token(keys.ring().current(), "live-session", now);
    let revocations = Revocations::open(&config.database(), now, 30).unwrap();
    let verifier = Verifier::new(keys, 30, revocations, None);
    let mut connection = Pipelined {
        request: format!(
            "GET {CHECK} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .into_bytes(),
        left: requests,
        answered: 0,
    };
    conn::serve(&mut connection, &verifier).unwrap();
    assert_eq!(connection.answered, requests, "every request allowed");
    println!("{requests} requests allowed");
}
