//! What the app remembers between runs (eframe's storage, in the platform config directory):
//! source and camera, region of interest, model, operator and station, theme, history options.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::source::SourceSpec;

/// The eframe storage key.
pub const STORAGE_KEY: &str = "defect-inspector-settings";

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
    /// Disk budget for archived images, MiB.
    pub archive_budget_mib: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            source: None,
            replay_fps: 2.0,
            roi: None,
            model_path: None,
            threshold: None,
            operator: String::new(),
            station: "station-1".into(),
            dark: true,
            heatmap: true,
            heatmap_opacity: 0.6,
            db_path: None,
            pass_sample: 0.01,
            alarm_consecutive_fails: 5,
            alarm_window: 50,
            archive_budget_mib: 2048,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_or_partial_settings_load() {
        let s: Settings = serde_json::from_str(r#"{"station": "line 4", "unknown": 1}"#).unwrap();
        assert_eq!(s.station, "line 4");
        assert_eq!(s.replay_fps, Settings::default().replay_fps);
    }
}
