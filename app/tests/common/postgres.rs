//! A real PostgreSQL server for the tests: Debian's `postgresql` (scripts/test installs it), a
//! throw-away cluster made by initdb in a temp dir, on a free loopback port, password
//! authentication over TCP. Run as the unprivileged `postgres` user when the tests run as root
//! (initdb refuses root). Stopped and removed when dropped; [`Postgres::stop`] and
//! [`Postgres::start`] stop and start the same cluster for the fault tests.

#![allow(dead_code)] // each test binary uses what it needs
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The plant user's password in the test clusters.
pub const PASSWORD: &str = "pl@nt secret";

/// A throw-away PostgreSQL cluster.
pub struct Postgres {
    /// Its loopback port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    bin: PathBuf,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server in /usr/lib/postgresql: scripts/test installs it (apt-get install postgresql)")
    })
}

fn is_root() -> bool {
    // SAFETY-free: `id -u` instead of libc.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when we are root.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// initdb + start.
    pub fn start_new() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if is_root() {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown the cluster folder to postgres");
        }
        let out = as_pg_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "plant",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            port: free_port(),
            dir,
            child: None,
            bin,
        };
        pg.start();
        pg
    }

    /// The URL of database `db` as the plant user (password included).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://plant:pl%40nt%20secret@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        if is_root() {
            let _ = Command::new("chown")
                .arg("postgres:postgres")
                .arg(self.dir.path().join("server.log"))
                .status();
        }
        let child = as_pg_user(&self.bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=40"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Accepting TCP is not yet accepting logins: ask pg_isready.
                let ready = Command::new(self.bin.join("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ready {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "postgres did not start: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server: `fast` (SIGINT: aborts transactions, disconnects clients) or at once
    /// (SIGQUIT: like a crash; it recovers from its WAL on the next start).
    pub fn stop_mode(&mut self, fast: bool) {
        if let Some(mut c) = self.child.take() {
            // The child is runuser (as root) or postgres itself; signal the postmaster by its
            // pid file.
            let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string))
                .unwrap_or_else(|| c.id().to_string());
            let sig = if fast { "-INT" } else { "-QUIT" };
            let _ = Command::new("kill").args([sig, &pid]).status();
            let _ = c.wait();
            let end = Instant::now() + Duration::from_secs(20);
            while self.dir.path().join("data/postmaster.pid").exists() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !fast {
                let _ = std::fs::remove_file(self.dir.path().join("data/postmaster.pid"));
            }
        }
    }

    /// Fast shutdown.
    pub fn stop(&mut self) {
        self.stop_mode(true);
    }

    /// Runs SQL through psql as the plant user (for the tests' own checks and set-up).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .env("PGPASSWORD", PASSWORD)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "plant",
            ])
            .args(["-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_mode(false);
    }
}

/// A TCP proxy on loopback in front of a server, whose connections the test can cut (a
/// network that drops). New connections are accepted again after the cut.
pub struct Proxy {
    /// Its port.
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Forwards 127.0.0.1:`port` to 127.0.0.1:`to`.
    pub fn start(to: u16) -> Self {
        use std::io::{Read as _, Write as _};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicU64::new(0));
        let c = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let generation = c.load(Ordering::SeqCst);
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        let mut buf = [0u8; 16384];
                        loop {
                            if c.load(Ordering::SeqCst) != generation {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = into.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = into.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                Ok(n) => {
                                    if into.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => {
                                    let _ = into.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                            }
                        }
                    });
                }
            }
        });
        Self { port, cut }
    }

    /// Cuts every open connection (clients see a reset or EOF mid-whatever).
    pub fn cut(&self) {
        self.cut.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
