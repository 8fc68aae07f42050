//! MQTT publishing (rumqttc) from the history database, which is the outbox: every result row
//! not yet acknowledged by the broker is sent, oldest first, as one JSON message on
//! `<prefix>/<station>/result` (QoS 1), and marked when the broker's PUBACK comes. A broker that
//! is down delays messages and never loses them; at most [`WINDOW`] messages are in memory.
//! After a reconnection the unacknowledged ones are sent again, byte for byte the same (a
//! consumer drops duplicates by `inspection_id`).
//!
//! Also a retained `<prefix>/<station>/status` (online / paused / no signal, and offline as the
//! last will) and `<prefix>/<station>/alarm`. Runs on its own thread with a one-thread tokio
//! runtime; callers only read [`MqttStatus`] and send through bounded channels.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};

use crate::records::history::Store;

/// Messages in flight at most (unacknowledged by the broker).
pub const WINDOW: usize = 200;

/// Where to publish.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS (rustls, the system's root certificates).
    pub tls: bool,
    /// Topic prefix (may be empty).
    pub prefix: String,
    /// Station name, the topic's second level.
    pub station: String,
    /// User name.
    pub username: Option<String>,
    /// Password (never logged, never stored in the history).
    pub password: Option<String>,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("prefix", &self.prefix)
            .field("station", &self.station)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl MqttConfig {
    /// Parses `mqtt://HOST:PORT/PREFIX` or `mqtts://…` (TLS); the port defaults to 1883 / 8883.
    pub fn parse(url: &str, station: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--mqtt {url:?}: {why}; expected mqtt://HOST:PORT/PREFIX");
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad("the scheme must be mqtt:// or mqtts://"));
        };
        let (hostport, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if hostport.contains('@') {
            return Err(bad(
                "put credentials in Settings or DI_MQTT_USER / DI_MQTT_PASSWORD, not in the URL",
            ));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad(&format!("port {p:?} is not a number")))?,
            ),
            None => (hostport, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.contains(['+', '#']) || station.contains(['+', '#', '/']) || station.is_empty() {
            return Err(bad(
                "topic prefix and station name may not contain + or # (nor / in the station)",
            ));
        }
        Ok(Self {
            host: host.into(),
            port,
            tls,
            prefix: prefix.into(),
            station: station.into(),
            username: None,
            password: None,
        })
    }

    /// `<prefix>/<station>/<leaf>`.
    pub fn topic(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            format!("{}/{leaf}", self.station)
        } else {
            format!("{}/{}/{leaf}", self.prefix, self.station)
        }
    }

    fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(
            format!("defect-inspector-{}", self.station),
            self.host.clone(),
            self.port,
        );
        o.set_keep_alive(Duration::from_secs(5));
        o.set_clean_session(true);
        o.set_inflight(WINDOW as u16);
        o.set_last_will(LastWill::new(
            self.topic("status"),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(u) = &self.username {
            o.set_credentials(u.clone(), self.password.clone().unwrap_or_default());
        }
        if self.tls {
            o.set_transport(rumqttc::Transport::tls_with_default_config());
        }
        o
    }
}

/// What the publisher is doing, for the Inspect tab and the exit message.
#[derive(Clone, Debug, Default)]
pub struct MqttStatus {
    /// Connected to the broker now.
    pub connected: bool,
    /// Why it is not (the last connection error), in words.
    pub error: Option<String>,
    /// Results acknowledged by the broker since start.
    pub acked: u64,
    /// Messages in flight.
    pub in_flight: usize,
    /// The last acknowledgement.
    pub last_ack: Option<Instant>,
}

enum Control {
    State(String),
    Alarm(String),
}

/// The publisher thread. [`Self::finish`] waits (bounded) for the broker's acknowledgements.
pub struct MqttPublisher {
    control: tokio::sync::mpsc::Sender<Control>,
    stop: Option<tokio::sync::oneshot::Sender<Duration>>,
    status: Arc<Mutex<MqttStatus>>,
    thread: Option<JoinHandle<()>>,
    db: PathBuf,
}

impl MqttPublisher {
    /// Starts publishing the outbox of the database at `db`. Never fails on the broker (it is
    /// retried, and its state is in [`Self::status`]); fails only when the database cannot be
    /// opened.
    pub fn start(config: MqttConfig, db: &Path) -> Result<Self, String> {
        let store = Store::open(db).map_err(|e| e.to_string())?;
        let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(64);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let status = Arc::new(Mutex::new(MqttStatus::default()));
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run(config, store, ctl_rx, stop_rx, st)),
                    Err(e) => tracing::error!("MQTT: no runtime: {e}"),
                }
            })
            .map_err(|e| format!("MQTT: {e}"))?;
        Ok(Self {
            control: ctl_tx,
            stop: Some(stop_tx),
            status,
            thread: Some(thread),
            db: db.to_path_buf(),
        })
    }

    /// A snapshot of the connection.
    pub fn status(&self) -> MqttStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The retained status: "online", "paused", "no signal" (never blocks; a full queue drops
    /// the oldest-but-one change, the latest state always wins on the next change).
    pub fn set_state(&self, state: &str) {
        let _ = self.control.try_send(Control::State(state.into()));
    }

    /// One alarm message (QoS 1, not retained; not kept while the broker is down).
    pub fn alarm(&self, text: &str) {
        let _ = self.control.try_send(Control::Alarm(text.into()));
    }

    /// Waits up to `wait` for the broker to acknowledge what is in the outbox, marks the
    /// station offline, and returns how many results are left for the next start.
    pub fn finish(mut self, wait: Duration) -> u64 {
        if let Some(s) = self.stop.take() {
            let _ = s.send(wait);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Store::open(&self.db)
            .and_then(|s| s.outbox_left())
            .unwrap_or(0)
    }
}

impl Drop for MqttPublisher {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(Duration::ZERO);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Settings' "Test connection": connects once (under another client id than the station's
/// publisher, which stays connected), waits up to `timeout` for the broker's answer, and says
/// what happened in words. Blocks: call it off the UI thread.
pub fn test_connection(config: &MqttConfig, timeout: Duration) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("MQTT: no runtime: {e}"))?;
    let mut options = config.options();
    options.set_client_id(format!("defect-inspector-{}-test", config.station));
    options.set_clean_session(true);
    let (host, port) = (config.host.clone(), config.port);
    rt.block_on(async move {
        let (client, mut el) = AsyncClient::new(options, 4);
        let answer = tokio::time::timeout(timeout, async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await;
        let _ = client.try_disconnect();
        match answer {
            Ok(Ok(())) => Ok(format!("connected to the broker {host}:{port}")),
            Ok(Err(e)) => Err(format!("broker {host}:{port}: {e}")),
            Err(_) => Err(format!(
                "broker {host}:{port}: no answer within {:.0} s",
                timeout.as_secs_f64()
            )),
        }
    })
}

/// One connection: the rumqttc event loop runs in its own task (its `poll` is never cancelled)
/// and hands events over; it ends at the first error.
fn connect(
    config: &MqttConfig,
) -> (
    AsyncClient,
    tokio::sync::mpsc::Receiver<Result<Event, String>>,
) {
    let (client, mut el): (AsyncClient, EventLoop) =
        AsyncClient::new(config.options(), WINDOW + 16);
    let (tx, rx) = tokio::sync::mpsc::channel(4 * WINDOW);
    tokio::spawn(async move {
        loop {
            let ev = el.poll().await;
            let err = ev.is_err();
            if tx.send(ev.map_err(|e| e.to_string())).await.is_err() || err {
                return;
            }
        }
    });
    (client, rx)
}

async fn run(
    config: MqttConfig,
    mut store: Store,
    mut control: tokio::sync::mpsc::Receiver<Control>,
    mut stop: tokio::sync::oneshot::Receiver<Duration>,
    status: Arc<Mutex<MqttStatus>>,
) {
    let mut state = "online".to_string();
    let mut backoff = Duration::from_millis(200);
    let mut stopping: Option<Instant> = None;
    let set = |f: &dyn Fn(&mut MqttStatus)| {
        if let Ok(mut s) = status.lock() {
            f(&mut s);
        }
    };
    'connection: loop {
        let (client, mut events) = connect(&config);
        let mut connected = false;
        // What was handed to the client, in order: Some(inspection id) or None (status/alarm).
        let mut sent: VecDeque<Option<i64>> = VecDeque::new();
        let mut by_pkid: HashMap<u16, i64> = HashMap::new();
        let mut last_sent = 0i64;
        let mut acked: Vec<i64> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        connected = true;
                        backoff = Duration::from_millis(200);
                        set(&|s| { s.connected = true; s.error = None; });
                        tracing::info!("MQTT: connected to {}:{}", config.host, config.port);
                        if client.try_publish(config.topic("status"), QoS::AtLeastOnce, true, state.clone()).is_ok() {
                            sent.push_back(None);
                        }
                    }
                    Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        if let Some(Some(id)) = sent.pop_front() {
                            by_pkid.insert(pkid, id);
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                        if let Some(id) = by_pkid.remove(&a.pkid) {
                            acked.push(id);
                        }
                    }
                    Some(Ok(_)) => {}
                    other => {
                        let e = match other {
                            Some(Err(e)) => e,
                            _ => "connection closed".to_string(),
                        };
                        set(&|s| { s.connected = false; s.in_flight = 0; s.error = Some(format!("broker {}:{}: {e}", config.host, config.port)); });
                        if connected {
                            tracing::warn!("MQTT: lost the broker {}:{}: {e}; results wait in the history", config.host, config.port);
                        }
                        break;
                    }
                },
                c = control.recv() => match c {
                    Some(Control::State(s)) => {
                        state = s;
                        if connected && client.try_publish(config.topic("status"), QoS::AtLeastOnce, true, state.clone()).is_ok() {
                            sent.push_back(None);
                        }
                    }
                    Some(Control::Alarm(a)) => {
                        if connected && client.try_publish(config.topic("alarm"), QoS::AtLeastOnce, false, a).is_ok() {
                            sent.push_back(None);
                        }
                    }
                    None => {}
                },
                w = &mut stop, if stopping.is_none() => {
                    stopping = Some(Instant::now() + w.unwrap_or(Duration::ZERO));
                }
                _ = tick.tick() => {
                    if !acked.is_empty() {
                        match store.outbox_acknowledged(&acked) {
                            Ok(()) => {
                                let n = acked.len() as u64;
                                set(&|s| { s.acked += n; s.last_ack = Some(Instant::now()); });
                                acked.clear();
                            }
                            Err(e) => tracing::error!("MQTT outbox: {e}"),
                        }
                    }
                    let in_flight = by_pkid.len() + sent.iter().filter(|s| s.is_some()).count();
                    set(&|s| s.in_flight = in_flight);
                    if connected && in_flight < WINDOW {
                        match store.outbox_pending(last_sent, WINDOW - in_flight) {
                            Ok(msgs) => {
                                for m in msgs {
                                    let payload = serde_json::to_vec(&m).unwrap_or_default();
                                    if client.try_publish(config.topic("result"), QoS::AtLeastOnce, false, payload).is_err() {
                                        break;
                                    }
                                    sent.push_back(Some(m.inspection_id));
                                    last_sent = m.inspection_id;
                                }
                            }
                            Err(e) => tracing::error!("MQTT outbox: {e}"),
                        }
                    }
                    if let Some(deadline) = stopping {
                        let done = in_flight == 0
                            && store.outbox_left().map(|n| n == 0).unwrap_or(true);
                        if done || Instant::now() >= deadline {
                            if connected {
                                let _ = client.try_publish(config.topic("status"), QoS::AtLeastOnce, true, "offline");
                                // Let the event loop write the last packets.
                                let end = Instant::now() + Duration::from_millis(300);
                                while Instant::now() < end {
                                    match tokio::time::timeout(end - Instant::now(), events.recv()).await {
                                        Ok(Some(Ok(Event::Incoming(Packet::PubAck(_))))) => break,
                                        Ok(Some(Ok(_))) => {}
                                        _ => break,
                                    }
                                }
                                let _ = client.try_disconnect();
                            }
                            return;
                        }
                    }
                }
            }
        }
        drop(client);
        if let Some(deadline) = stopping
            && Instant::now() >= deadline
        {
            return;
        }
        let sleep_until = Instant::now() + backoff;
        while Instant::now() < sleep_until {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                w = &mut stop, if stopping.is_none() => {
                    stopping = Some(Instant::now() + w.unwrap_or(Duration::ZERO));
                }
            }
            if stopping.is_some_and(|d| Instant::now() >= d) {
                return;
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
        continue 'connection;
    }
}
