//! The comparison baselines of `bench/peers/` (in-nginx Lua HS256 checks and
//! PHP-FPM behind auth_request), started beside the real stack. Their files are
//! compiled in and written to a temporary prefix, so the bench runs from anywhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;

use softphone_testkit::free_port;

use crate::stack::spawn;

const NGINX_CONF: &str = include_str!("../peers/nginx.conf.in");
const PHP_FPM_CONF: &str = include_str!("../peers/php/php-fpm.conf.in");
const FILES: [(&str, &str); 5] = [
    ("lua/common.lua", include_str!("../peers/lua/common.lua")),
    (
        "lua/hs256_ffi.lua",
        include_str!("../peers/lua/hs256_ffi.lua"),
    ),
    (
        "lua/hs256_luaossl.lua",
        include_str!("../peers/lua/hs256_luaossl.lua"),
    ),
    ("php/check.php", include_str!("../peers/php/check.php")),
    ("README.md", include_str!("../peers/README.md")),
];

const PACKAGES: &str = "libnginx-mod-http-lua lua-resty-core lua-luaossl lua-cjson php8.2-fpm";

pub struct Peers {
    pub addr: SocketAddr,
    nginx: Child,
    php: Child,
}

impl Drop for Peers {
    fn drop(&mut self) {
        // SIGQUIT lets nginx's master take its worker with it.
        let _ = std::process::Command::new("kill")
            .args(["-QUIT", &self.nginx.id().to_string()])
            .status();
        let _ = self.nginx.wait();
        // SIGTERM, not SIGKILL: PHP-FPM's master stops its pool workers first; a
        // killed master would leave them running, orphaned.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.php.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while matches!(self.php.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.php.kill();
        let _ = self.php.wait();
    }
}

/// Starts PHP-FPM and the peer nginx (`workers` worker processes) under
/// `prefix`, serving `recordings/a.mp3` and checking tokens against `key_file`. `Err` names what is missing.
pub fn start(
    prefix: &Path,
    recordings: &Path,
    key_file: &Path,
    pin: Option<&str>,
    workers: &str,
) -> Result<Peers, String> {
    for needed in [
        "/usr/lib/nginx/modules/ngx_http_lua_module.so",
        "/usr/share/lua/5.1/resty/core.lua",
        "/usr/sbin/php-fpm8.2",
    ] {
        if !Path::new(needed).exists() {
            return Err(format!("{needed} is missing (apt-get install {PACKAGES})"));
        }
    }
    let peers = prefix.join("peers");
    for (name, text) in FILES {
        let path = peers.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let fill = |template: &str| {
        template
            .replace("{{prefix}}", &prefix.display().to_string())
            .replace("{{peers}}", &peers.display().to_string())
            .replace("{{listen}}", &addr.to_string())
            .replace("{{recordings}}", &recordings.display().to_string())
            .replace("{{key_file}}", &key_file.display().to_string())
            .replace("{{workers}}", workers)
    };
    let php_conf = prefix.join("php-fpm.conf");
    std::fs::write(&php_conf, fill(PHP_FPM_CONF)).map_err(|e| e.to_string())?;
    let nginx_conf = prefix.join("nginx.conf");
    std::fs::write(&nginx_conf, fill(NGINX_CONF)).map_err(|e| e.to_string())?;

    let php = spawn(
        pin,
        Path::new("/usr/sbin/php-fpm8.2"),
        &["-F", "-R", "-y", &php_conf.display().to_string()],
    )?;
    let nginx_args = [
        "-p".to_owned(),
        prefix.display().to_string(),
        "-c".to_owned(),
        nginx_conf.display().to_string(),
        "-e".to_owned(),
        prefix.join("error.log").display().to_string(),
    ];
    let nginx_bin = PathBuf::from("/usr/sbin/nginx");
    let args: Vec<&str> = nginx_args.iter().map(String::as_str).collect();
    let nginx = spawn(pin, &nginx_bin, &args)?;
    let peers = Peers { addr, nginx, php };
    wait_ready(&peers, prefix)?;
    Ok(peers)
}

fn wait_ready(peers: &Peers, prefix: &Path) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let static_ok =
            softphone_testkit::http::try_request(peers.addr, "GET", "/static.mp3", &[], b"")
                .is_ok_and(|r| r.status == 200);
        if static_ok && prefix.join("php-fpm.sock").exists() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
            return Err(format!("the comparison peers did not start:\n{log}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
