//! What the app remembers between runs: source and camera, region of interest, model, operator
//! and station, theme, history options. eframe's storage keeps them with the window layout and
//! writes them every 30 s and at a clean exit; a change that alters what the station does
//! (model, threshold, source, ROI) is also written at once to `settings.json` beside it, by
//! [`SettingsSaver`], so a SIGTERM or a power cut right after the change does not undo it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::station::source::SourceSpec;

/// The eframe storage key.
pub const STORAGE_KEY: &str = "defect-inspector-settings";

/// Where a threshold set instead of the model's came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdSet {
    /// How: "set by hand", "kept from the previous model on activating …".
    pub how: String,
    /// Local time, "YYYY-MM-DD HH:MM:SS".
    pub at: String,
    /// The operator.
    pub by: String,
}

impl ThresholdSet {
    /// `how`, now, by `by`.
    pub fn now(how: impl Into<String>, by: impl Into<String>) -> Self {
        Self {
            how: how.into(),
            at: chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string(),
            by: by.into(),
        }
    }

    /// "set by hand at 2026-11-27 14:02:11 by alice".
    pub fn words(&self) -> String {
        format!("{} at {} by {}", self.how, self.at, self.by)
    }
}

/// Saved app settings. Unknown or missing fields fall back to defaults, so old files still load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The frame source; None = the bundled demo images.
    pub source: Option<SourceSpec>,
    /// Replay rate of folder and synthetic sources, frames per second.
    pub replay_fps: f64,
    /// Region of interest in frame pixels: x, y, width, height.
    pub roi: Option<[u32; 4]>,
    /// Model file; None = the bundled default model.
    pub model_path: Option<PathBuf>,
    /// Threshold set by an engineer instead of the model's.
    pub threshold: Option<f32>,
    /// Who set [`Self::threshold`], when and how (None with the model's own, or from a file
    /// written before this was kept).
    pub threshold_set: Option<ThresholdSet>,
    /// Who is at the station (stored with overrides).
    pub operator: String,
    /// Station name (stored with every verdict).
    pub station: String,
    /// Dark theme.
    pub dark: bool,
    /// Show the heatmap.
    pub heatmap: bool,
    /// Heatmap opacity, 0..=1.
    pub heatmap_opacity: f32,
    /// History database; None = the platform data directory.
    pub db_path: Option<PathBuf>,
    /// Share of PASS frames archived as images.
    pub pass_sample: f64,
    /// Alarm after this many consecutive FAILs (0 = off).
    pub alarm_consecutive_fails: u32,
    /// Alarm when the reject rate of the last this-many frames is above the p-chart limit.
    pub alarm_window: u32,
    /// Decide three-way with the model's review band (PASS / REVIEW / FAIL) where the model
    /// has one; off: two-way at the FAIL threshold.
    pub review_band: bool,
    /// Alarm when more than this percentage of the last [`Self::alarm_window`] parts went to
    /// REVIEW (0 = off): the people checking them cannot keep up, or the product changed.
    pub alarm_review_percent: f64,
    /// Disk budget for archived images, MiB.
    pub archive_budget_mib: u64,
    /// The station's minimum for a model being activated: validation AUROC at least this.
    pub min_auroc: f64,
    /// The station's maximum validation miss rate (defective parts passed) at the model's
    /// threshold.
    pub max_miss_rate: f64,
    /// The station's maximum validation false-reject rate (good parts failed) at the model's
    /// threshold.
    pub max_false_reject_rate: f64,
    /// The Train tab's dataset folder; None = the Label tab's dataset, else the demo set.
    pub train_data: Option<PathBuf>,
    /// The line I/O: the PLC's Modbus server and MQTT publishing (Settings › Line I/O).
    pub line: LineSettings,
    /// Forwarding to the plant database (Settings › Plant database).
    pub plant: PlantSettings,
}

/// Settings › Plant database. Off by default (empty URL): a station on a desk has no server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlantSettings {
    /// `postgres://USER@HOST:PORT/DATABASE` without its password; empty = no forwarding.
    pub url: String,
    /// The line this station stands on (a History filter in the plant).
    pub line: String,
    /// Raise an alarm when more than this many records wait for the plant.
    pub backlog_alarm: u64,
    /// The password: typed in Settings for this session, or DI_PLANT_PASSWORD; never written
    /// to disk (a password typed into the URL is moved here, out of the saved URL).
    #[serde(skip)]
    pub password: Secret,
}

impl Default for PlantSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            line: "line-1".into(),
            backlog_alarm: 10_000,
            password: Secret::default(),
        }
    }
}

/// A secret kept in memory only: never written to the settings files, never printed.
#[derive(Clone, Default, PartialEq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

/// Settings › Line I/O. Off by default: a station on a desk has no PLC and no broker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LineSettings {
    /// Serve the register map to the PLC over Modbus TCP.
    pub modbus: bool,
    /// Judge one frame per PLC trigger (else free-run; the registers still show every result).
    pub triggered: bool,
    /// Where the Modbus server listens, `ADDRESS:PORT` (502 needs root on Linux).
    pub listen: String,
    /// The Modbus unit id the station answers to (0 and 255 are always answered too).
    pub unit_id: u8,
    /// A trigger with no verdict within this many ms gets a fail-safe FAIL.
    pub window_ms: u64,
    /// Publish every result to `mqtt://HOST:PORT/PREFIX` (`mqtts://` for TLS); empty = off.
    pub mqtt_url: String,
    /// The broker's user name (empty = none).
    pub mqtt_user: String,
    /// The broker's password: typed in Settings for this session, or DI_MQTT_PASSWORD; never
    /// written to disk.
    #[serde(skip)]
    pub mqtt_password: Secret,
}

impl Default for LineSettings {
    fn default() -> Self {
        Self {
            modbus: false,
            triggered: false,
            listen: "0.0.0.0:1502".into(),
            unit_id: 1,
            window_ms: 200,
            mqtt_url: String::new(),
            mqtt_user: String::new(),
            mqtt_password: Secret::default(),
        }
    }
}

impl LineSettings {
    /// Whether any line I/O is on.
    pub fn enabled(&self) -> bool {
        self.modbus || !self.mqtt_url.trim().is_empty()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            source: None,
            replay_fps: 2.0,
            roi: None,
            model_path: None,
            threshold: None,
            threshold_set: None,
            operator: String::new(),
            station: "station-1".into(),
            dark: true,
            heatmap: true,
            heatmap_opacity: 0.6,
            db_path: None,
            pass_sample: 0.01,
            alarm_consecutive_fails: 5,
            alarm_window: 50,
            review_band: true,
            alarm_review_percent: 30.0,
            archive_budget_mib: 2048,
            min_auroc: 0.95,
            max_miss_rate: 0.01,
            max_false_reject_rate: 0.10,
            train_data: None,
            line: LineSettings::default(),
            plant: PlantSettings::default(),
        }
    }
}

impl Settings {
    /// The region of interest as the engine takes it.
    pub fn roi(&self) -> Option<kernels::Roi> {
        self.roi.map(|[x, y, width, height]| kernels::Roi {
            x,
            y,
            width,
            height,
        })
    }
}

/// `settings.json` in eframe's storage folder (`~/.local/share/defect-inspector/` on Linux).
pub fn default_settings_file() -> Option<PathBuf> {
    eframe::storage_dir("defect-inspector").map(|d| d.join("settings.json"))
}

/// Reads a settings file written by [`SettingsSaver`]; None when missing or unreadable.
pub fn load_file(path: &Path) -> Option<Settings> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            None
        }
    }
}

/// Writes the settings on its own thread (the UI never waits on the disk), newest first:
/// a burst of changes is one write of the last state. Each write is atomic and flushed to
/// disk before it replaces the file.
pub struct SettingsSaver {
    path: PathBuf,
    tx: crossbeam_channel::Sender<Settings>,
    /// The saver's own handle on the queue: drops a stale pending state for a newer one.
    stale: crossbeam_channel::Receiver<Settings>,
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SettingsSaver {
    /// Starts the writer thread for `path`.
    pub fn start(path: PathBuf) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Settings>(1);
        let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (p, rx2, w) = (path.clone(), rx.clone(), written.clone());
        let spawned = std::thread::Builder::new()
            .name("settings-saver".into())
            .spawn(move || {
                while let Ok(s) = rx2.recv() {
                    let r = serde_json::to_vec_pretty(&s)
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| crate::data::labeling::write_atomic(&p, &bytes));
                    match r {
                        Ok(()) => {
                            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(e) => tracing::error!("settings not saved to {}: {e}", p.display()),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the settings saver: {e}");
        }
        Self {
            path,
            tx,
            stale: rx,
            written,
        }
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `s` for writing (never blocks; replaces a state not yet written).
    pub fn save(&self, s: &Settings) {
        let mut s = s.clone();
        for _ in 0..3 {
            match self.tx.try_send(s) {
                Ok(()) => return,
                Err(crossbeam_channel::TrySendError::Full(back)) => {
                    let _ = self.stale.try_recv();
                    s = back;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// How many writes have completed.
    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_or_partial_settings_load() {
        let s: Settings = serde_json::from_str(r#"{"station": "line 4", "unknown": 1}"#).unwrap();
        assert_eq!(s.station, "line 4");
        assert_eq!(s.replay_fps, Settings::default().replay_fps);
    }

    #[test]
    fn saver_writes_the_newest_state_at_once_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/settings.json");
        let saver = SettingsSaver::start(path.clone());
        let mut s = Settings::default();
        for i in 0..20 {
            s.threshold = Some(i as f32 / 100.0);
            saver.save(&s);
        }
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while load_file(&path).and_then(|l| l.threshold) != Some(0.19) {
            assert!(std::time::Instant::now() < end, "not written");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(load_file(&path).unwrap(), s);
        assert!(load_file(&dir.path().join("missing.json")).is_none());
    }

    #[test]
    fn the_mqtt_password_is_never_written_or_printed() {
        let mut s = Settings::default();
        s.line.mqtt_url = "mqtt://broker:1883/plant".into();
        s.line.mqtt_user = "station".into();
        s.line.mqtt_password = Secret("hunter2-secret".into());
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!format!("{s:?}").contains("hunter2"));
        let back: Settings = serde_json::from_str(&json).unwrap();
        assert_eq!(back.line.mqtt_user, "station");
        assert_eq!(back.line.mqtt_password, Secret::default());
    }
}
