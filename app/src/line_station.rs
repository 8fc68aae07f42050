//! The line I/O of a running station, put together for the front ends (`inspector inspect`
//! and the app): the [`LineIo`] state and its fail-safe, the Modbus server the PLC polls, the
//! MQTT publisher sending from the history, and the results recorded in the history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::records::history::{self, HistoryResults, RecorderSink};
use crate::records::mqtt::{MqttConfig, MqttPublisher};
use crate::records::settings::LineSettings;
use crate::station::line_io::{LineConfig, LineIo, ModbusConfig, ModbusServer};
use crate::station::pipeline::{ModelInfo, VerdictSink};
use crate::station::trigger::Trigger;

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct LineOptions {
    /// Serve Modbus here.
    pub modbus: Option<ModbusConfig>,
    /// Triggered mode (else free-run; the registers still show every result).
    pub triggered: bool,
    /// The fail-safe window.
    pub window: Duration,
    /// Publish over MQTT.
    pub mqtt: Option<MqttConfig>,
}

impl LineOptions {
    /// The line I/O that `line` asks for (None: none is on): Settings › Line I/O, and the
    /// `inspect` command's flags put into the same form. Errors name the setting.
    pub fn from_settings(line: &LineSettings, station: &str) -> Result<Option<Self>, String> {
        if !line.enabled() {
            return Ok(None);
        }
        if !(1..=60_000).contains(&line.window_ms) {
            return Err(format!(
                "response window {} ms: must be between 1 and 60000",
                line.window_ms
            ));
        }
        let modbus = if line.modbus {
            let listen = line.listen.trim().parse().map_err(|_| {
                format!(
                    "Modbus address {:?} is not ADDRESS:PORT, e.g. 0.0.0.0:1502",
                    line.listen
                )
            })?;
            Some(ModbusConfig {
                listen,
                unit: line.unit_id,
            })
        } else {
            None
        };
        Ok(Some(Self {
            triggered: modbus.is_some() && line.triggered,
            modbus,
            window: Duration::from_millis(line.window_ms),
            mqtt: mqtt_config(line, station)?,
        }))
    }
}

/// The broker `line` names (None: no MQTT), with its credentials: the user and password typed
/// in Settings, else `DI_MQTT_USER` / `DI_MQTT_PASSWORD`. The station's publisher and Settings'
/// "Test connection" both take it from here, so the test connects as the station does.
pub fn mqtt_config(line: &LineSettings, station: &str) -> Result<Option<MqttConfig>, String> {
    let url = line.mqtt_url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    let mut c = MqttConfig::parse(url, station)?;
    let user = line.mqtt_user.trim();
    c.username = if user.is_empty() {
        std::env::var("DI_MQTT_USER").ok()
    } else {
        Some(user.to_string())
    };
    c.password = if line.mqtt_password.0.is_empty() {
        std::env::var("DI_MQTT_PASSWORD").ok()
    } else {
        Some(line.mqtt_password.0.clone())
    };
    Ok(Some(c))
}

/// The running line I/O.
pub struct LineStation {
    /// The shared state.
    pub io: LineIo,
    /// The Modbus server.
    pub server: Option<ModbusServer>,
    /// The MQTT publisher.
    pub mqtt: Option<MqttPublisher>,
    /// Triggered mode.
    pub triggered: bool,
}

impl LineStation {
    /// Starts the line I/O. `sink`: the history's sink (None: results are not recorded; MQTT
    /// then cannot run, as the history is its outbox). Returns the station and the sink the
    /// pipeline must use. Errors are whole sentences (port in use, MQTT without a database).
    pub fn start(
        options: &LineOptions,
        sink: Option<RecorderSink>,
        model: &ModelInfo,
        source: &str,
    ) -> Result<(Self, Box<dyn VerdictSink>), String> {
        if options.mqtt.is_some() && sink.is_none() {
            return Err(
                "MQTT sends results from the history database (it is the outbox): give --db FILE"
                    .into(),
            );
        }
        let db = sink.as_ref().map(|s| s.recorder.db_path().to_path_buf());
        let first_id = match &db {
            Some(db) => history::next_inspection_id(db).map_err(|e| e.to_string())?,
            None => 1,
        };
        let store = sink.map(|s| {
            Box::new(HistoryResults::new(
                s,
                options.mqtt.is_some(),
                model,
                source,
            )) as Box<dyn crate::station::line_io::ResultStore>
        });
        let io = LineIo::new(
            &LineConfig {
                triggered: options.triggered,
                window: options.window,
                first_id,
            },
            store,
        );
        let server = match &options.modbus {
            Some(c) => Some(ModbusServer::start(&io, c).inspect_err(|_| io.stop())?),
            None => None,
        };
        let mqtt = match (&options.mqtt, &db) {
            (Some(c), Some(db)) => Some(MqttPublisher::start(c.clone(), db)?),
            _ => None,
        };
        let sink = Box::new(io.sink());
        Ok((
            Self {
                io,
                server,
                mqtt,
                triggered: options.triggered,
            },
            sink,
        ))
    }

    /// The capture thread's trigger in triggered mode.
    pub fn trigger(&self) -> Option<Arc<dyn Trigger>> {
        self.triggered.then(|| self.io.trigger())
    }

    /// Stops the server and the fail-safe, waits up to `wait` for the broker to acknowledge
    /// what was sent, and says what is left for the next start.
    /// `commit` runs in between: it finishes the history writer, so that every result is in
    /// the outbox before the last wait.
    pub fn finish(self, wait: Duration, commit: impl FnOnce()) -> Option<String> {
        drop(self.server);
        self.io.stop();
        self.io.close_store();
        commit();
        let mqtt = self.mqtt?;
        let error = mqtt.status().error;
        let left = mqtt.finish(wait);
        Some(match (left, error) {
            (0, _) => "MQTT: every result was acknowledged by the broker".into(),
            (_, e) => format!(
                "MQTT: {left} results not yet acknowledged by the broker stay in the history and \
                 are sent at the next start{}",
                e.map(|e| format!(" (last error: {e})")).unwrap_or_default()
            ),
        })
    }
}

/// Set by Ctrl-C or SIGTERM (a thread waits for either).
pub fn stop_requested() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                f.store(true, Ordering::SeqCst);
            });
        });
    flag
}
