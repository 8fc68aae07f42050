//! A real MQTT broker for the tests: Debian's mosquitto (scripts/test installs it) on a free
//! loopback port, with its own config and persistence folder; stopped when dropped.

#![allow(dead_code)] // each test binary uses what it needs
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A mosquitto broker on a free loopback port, with its own config and persistence folder.
pub struct Broker {
    /// Its loopback port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Starts one.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut b = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        b.restart();
        b
    }

    /// Starts the broker (again) and waits until it accepts connections.
    pub fn restart(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        // Persistence keeps the test subscriber's session (its subscription and the messages
        // queued for it) across the restart, as a plant broker would.
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nautosave_interval 1\n",
                self.port,
                self.dir.path().display()
            ),
        )
        .unwrap();
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| Path::new(b).exists() || *b == "mosquitto")
            .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start mosquitto ({e}): scripts/test installs it (apt-get install mosquitto)")
            });
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGTERM: it saves its persistence, as a restarted plant broker would have).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
