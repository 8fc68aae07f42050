//! What the inspection pipeline reports and keeps: the loaded model ([`ModelInfo`],
//! [`load_model`]), one frame's [`Verdict`], where verdicts are recorded ([`VerdictSink`]), the
//! [`Event`]s a consumer receives, the station's [`Counters`] (with their latency
//! [`percentile`]s). Cut from `pipeline.rs`, which runs the threads and re-exports these.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kernels::{Decision, Heatmap, Model, Roi};

use crate::data::dataset::DecodedImage;
use crate::station::source::CapturedFrame;

/// A loaded model and where it came from.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The file.
    pub path: PathBuf,
    /// The spec's name.
    pub name: String,
    /// `name@hash`: the content hash identifies the exact weights.
    pub id: String,
    /// FNV-1a 64 of the file bytes, hex.
    pub hash: String,
    /// Class names.
    pub classes: Vec<String>,
    /// PASS classes.
    pub pass_classes: Vec<String>,
    /// The model's own threshold (FAIL at or above).
    pub threshold: f32,
    /// The model's own review band's lower edge (PASS below), None for a two-way model.
    pub pass_threshold: Option<f32>,
    /// Input size, "W×H×C".
    pub input: String,
}

/// Reads and validates a model file, off the UI thread.
pub fn load_model(path: &Path) -> Result<(Model, ModelInfo), String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read model {}: {e}", path.display()))?;
    let model =
        Model::from_bytes(&bytes).map_err(|e| format!("model {} refused: {e}", path.display()))?;
    let hash = format!("{:016x}", crate::data::files::fnv1a(&bytes));
    let spec = &model.spec;
    let name = if spec.name.is_empty() {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    } else {
        spec.name.clone()
    };
    let info = ModelInfo {
        path: path.to_path_buf(),
        id: format!("{name}@{}", &hash[..8]),
        name,
        hash,
        classes: spec.classes.clone(),
        pass_classes: spec.pass_classes.clone(),
        threshold: spec.threshold,
        pass_threshold: spec.pass_threshold,
        input: format!(
            "{}×{}×{}",
            spec.input.width, spec.input.height, spec.input.channels
        ),
    };
    Ok((model, info))
}

/// What the model decided about one frame.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// Frame number in this run, from 1.
    pub seq: u64,
    /// Where the frame came from (file, "camera 0 frame 9").
    pub origin: String,
    /// The source (`folder:…`, `camera:0`, `synthetic`).
    pub source: String,
    /// Capture time.
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// FAIL when the fail score is at least the threshold; REVIEW when it is at least the
    /// review band's lower edge ([`Self::pass_threshold`]); PASS below.
    pub decision: Decision,
    /// The most probable FAIL class when failed or sent to review (the suspected defect), the
    /// most probable PASS class when passed.
    pub class: String,
    /// The probability of `class`.
    pub confidence: f32,
    /// `1 − Σ P(pass classes)`.
    pub score: f32,
    /// The threshold the verdict used (FAIL at or above).
    pub threshold: f32,
    /// The review band's lower edge the verdict used; None when the station decides two-way.
    pub pass_threshold: Option<f32>,
    /// Capture to verdict, ms.
    pub latency_ms: f64,
    /// Engine call alone, ms.
    pub engine_ms: f64,
    /// All class probabilities, in the model's class order.
    pub probabilities: Vec<f32>,
    /// The defect heatmap over the region of interest.
    pub heatmap: Heatmap,
    /// The region the model saw (clipped to the frame).
    pub roi: Roi,
    /// The model.
    pub model_id: String,
    /// FNV hash of the model file.
    pub model_hash: String,
    /// The frame itself (shared, not copied).
    pub image: Arc<DecodedImage>,
    /// Screen-ready pixels, prepared by the worker when [`PipelineOptions::display`] is set.
    pub display: Option<Arc<Prepared>>,
}

/// A verdict's pixels, ready to upload as textures.
#[derive(Debug)]
pub struct Prepared {
    /// The frame, at most [`Prepared::MAX_SIDE`] pixels on a side.
    pub frame: egui::ColorImage,
    /// The heatmap at its own resolution.
    pub heat: egui::ColorImage,
    /// A small thumbnail of the region of interest (rejects only).
    pub thumb: Option<egui::ColorImage>,
}

impl Prepared {
    /// Largest side of the displayed frame.
    pub const MAX_SIDE: u32 = 1280;
    /// Largest side of a thumbnail.
    pub const THUMB_SIDE: u32 = 96;
}

impl Verdict {
    /// "pass", "review" or "fail".
    pub fn word(&self) -> &'static str {
        self.decision.as_str()
    }

    /// The gate rejects it.
    pub fn fail(&self) -> bool {
        self.decision == Decision::Fail
    }

    /// Not a PASS: kept with the rejects (thumbnail, archive), shown where it is.
    pub fn flagged(&self) -> bool {
        self.decision != Decision::Pass
    }
}

/// Takes each verdict before it is reported (the history database). An error is reported as
/// [`Event::SinkError`] and inspection goes on.
pub trait VerdictSink: Send {
    /// Records one verdict; blocks when the recorder is behind (inspection slows, nothing is lost).
    fn record(&mut self, verdict: &Verdict) -> Result<(), String>;
    /// A frame the model could not judge (the engine failed on it). A sink that owes someone a
    /// result for that frame (the PLC's trigger) answers now; by default nothing happens.
    fn not_judged(&mut self, _frame: &CapturedFrame, _error: &str) {}
}

/// The state of the frame source.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceStatus {
    /// Delivering frames.
    Running(String),
    /// Could not be opened (folder missing, no camera): nothing will come until another source.
    Failed(String),
    /// The device was lost; retrying.
    Lost(String),
    /// A replay-once source reached its end and every frame was inspected.
    Ended(String),
}

/// What the pipeline reports.
#[derive(Debug)]
pub enum Event {
    /// A verdict.
    Verdict(Box<Verdict>),
    /// A frame that could not be read or inspected.
    Unreadable {
        /// File or frame.
        origin: String,
        /// Why.
        error: String,
    },
    /// The source changed state.
    Source(SourceStatus),
    /// A model is now in use.
    ModelLoaded(ModelInfo),
    /// A model file was refused; the previous model stays in use.
    ModelRejected(String),
    /// The verdict sink failed (the verdict was still reported).
    SinkError(String),
    /// Something worth telling the operator.
    Warning(String),
    /// The region of interest lies outside a frame: refused. Nothing was inspected with it;
    /// the previous region (`kept`, when it fits; None = the whole frame) is in use again,
    /// unless [`PipelineOptions::stop_on_roi_refused`] stopped inspection.
    RoiRefused {
        /// The refused region.
        roi: Roi,
        /// The frame it did not fit.
        origin: String,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// The region in use instead.
        kept: Option<Roi>,
    },
}

/// Whether `roi` starts inside a `width`×`height` frame (a region reaching past the frame's
/// edge is clipped to it; one starting outside has nothing to inspect).
pub fn roi_fits(roi: Roi, width: u32, height: u32) -> bool {
    roi.width > 0 && roi.height > 0 && roi.x < width && roi.y < height
}

impl Event {
    /// The refusal of a region of interest, in words.
    pub fn roi_refused_text(roi: Roi, origin: &str, width: u32, height: u32) -> String {
        format!(
            "region of interest x {}, y {}, {} × {} lies outside the {width}×{height} frame {origin}: refused",
            roi.x, roi.y, roi.width, roi.height
        )
    }
}

/// Running totals, kept by the worker so that nothing depends on the consumer keeping up.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Frames inspected.
    pub inspected: u64,
    /// PASS verdicts.
    pub pass: u64,
    /// FAIL verdicts.
    pub fail: u64,
    /// REVIEW verdicts (set aside for a person).
    pub review: u64,
    /// Frames that could not be read.
    pub unreadable: u64,
    /// Live frames dropped because inference was busy.
    pub dropped: u64,
    /// Recent capture-to-verdict latencies, ms (newest last).
    pub latencies_ms: VecDeque<f64>,
    /// Recent verdict times (for the frame rate).
    pub verdict_times: VecDeque<Instant>,
    /// The last rejects and REVIEW parts, newest last (frame shared, not copied).
    pub last_rejects: VecDeque<Arc<Verdict>>,
    /// When counting started (start or shift change).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// FAILs in a row, up to the last verdict (a REVIEW neither counts nor breaks the run).
    pub consecutive_fails: u64,
    /// The last [`Counters::RECENT`] decisions, newest last: the drift windows (FAIL and
    /// REVIEW counted apart).
    pub recent: VecDeque<Decision>,
    /// Frames taken from the source and not judged yet (queued or being judged): after a pause
    /// they still land, and the station says so until this is 0. Not reset with the counters.
    pub in_flight: u64,
}

impl Counters {
    /// How many rejects [`Self::last_rejects`] keeps.
    pub const REJECTS_KEPT: usize = 12;
    /// How many outcomes [`Self::recent`] keeps.
    pub const RECENT: usize = 1000;
    const WINDOW: usize = 120;

    /// PASS share of the inspected frames, percent.
    pub fn yield_percent(&self) -> Option<f64> {
        (self.inspected > 0).then(|| 100.0 * self.pass as f64 / self.inspected as f64)
    }

    /// Verdicts per second over the recent window.
    pub fn fps(&self) -> f64 {
        match (self.verdict_times.front(), self.verdict_times.back()) {
            (Some(a), Some(b)) if self.verdict_times.len() > 1 => {
                let s = b.duration_since(*a).as_secs_f64();
                if s > 0.0 {
                    (self.verdict_times.len() - 1) as f64 / s
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }

    /// Median recent capture-to-verdict latency, ms.
    pub fn latency_p50(&self) -> Option<f64> {
        percentile(self.latencies_ms.iter().copied().collect(), 0.5)
    }

    pub(crate) fn add(&mut self, v: &Arc<Verdict>) {
        self.inspected += 1;
        self.recent.push_back(v.decision);
        if self.recent.len() > Self::RECENT {
            self.recent.pop_front();
        }
        match v.decision {
            Decision::Fail => {
                self.consecutive_fails += 1;
                self.fail += 1;
            }
            Decision::Review => self.review += 1,
            Decision::Pass => {
                self.consecutive_fails = 0;
                self.pass += 1;
            }
        }
        if v.flagged() {
            self.last_rejects.push_back(v.clone());
            if self.last_rejects.len() > Self::REJECTS_KEPT {
                self.last_rejects.pop_front();
            }
        }
        self.latencies_ms.push_back(v.latency_ms);
        self.verdict_times.push_back(Instant::now());
        while self.latencies_ms.len() > Self::WINDOW {
            self.latencies_ms.pop_front();
        }
        while self.verdict_times.len() > Self::WINDOW {
            self.verdict_times.pop_front();
        }
    }

    /// Starts counting again (new shift), keeping nothing.
    pub fn reset(&mut self) {
        *self = Self {
            since: Some(chrono::Utc::now()),
            in_flight: self.in_flight,
            ..Self::default()
        };
    }
}

/// The `q` quantile of `v` (nearest rank), None when empty.
pub fn percentile(mut v: Vec<f64>, q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[i])
}
