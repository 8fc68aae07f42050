//! The inspection pipeline: a capture thread (owns the [`crate::station::source`]) → an inference worker
//! (owns the `kernels` engine on the shared wgpu device) → whoever consumes [`Event`]s (the app,
//! or `inspector inspect`). Every hop is a bounded channel; nothing here runs on the UI thread.
//!
//! - Stored sources (folder, synthetic) wait when inference is behind: every frame is inspected.
//!   A live camera never waits: the newest frame wins and the frames inference could not take are
//!   counted as dropped.
//! - The consumer either takes every event (`lossless_events`, the headless command) or only
//!   what it has room for (the app: display is newest-wins, counters live in [`Counters`], kept
//!   by the worker, so the UI can never slow inspection down).
//! - Verdicts go to an optional [`VerdictSink`] (the history database) before they are reported.
//!
//! What it reports and keeps (the verdict, events, counters, the loaded model) lives in
//! [`crate::station::verdict`] and is re-exported here. The capture loop, the inference worker
//! and the [`Pipeline`] handle stay one piece: they share the private channel protocol
//! (`Command`, `Captured`) and the counters' updates, and are read together.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};
use kernels::{Decision, Engine, Model, ModelSpec, Roi};

use crate::data::dataset::DecodedImage;
use crate::station::source::{CapturedFrame, Pull, SourceSpec};
use crate::station::trigger::{Trigger, TriggeredSource};
pub use crate::station::verdict::{
    Counters, Event, ModelInfo, Prepared, SourceStatus, Verdict, VerdictSink, load_model,
    percentile, roi_fits,
};

/// How the pipeline runs.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Frames per second for stored sources (0 = as fast as inference goes); a camera runs at
    /// its own rate.
    pub fps: f64,
    /// Stop after this many frames (readable or not).
    pub limit: Option<u64>,
    /// Deliver every event (blocking the worker when the consumer is slow) instead of only those
    /// the consumer has room for.
    pub lossless_events: bool,
    /// Region of interest in frame pixels (None = the whole frame).
    pub roi: Option<Roi>,
    /// Threshold to use instead of the model's.
    pub threshold: Option<f32>,
    /// Decide three-way with the model's review band (PASS / REVIEW / FAIL) where the model
    /// has one; false: two-way at the FAIL threshold.
    pub review_band: bool,
    /// Prepare screen pixels with each verdict (the app).
    pub display: bool,
    /// Stop inspecting when the region of interest does not fit a frame (the headless command
    /// exits with an error); otherwise the previous region is used again.
    pub stop_on_roi_refused: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            fps: 0.0,
            limit: None,
            lossless_events: true,
            roi: None,
            threshold: None,
            review_band: true,
            display: false,
            stop_on_roi_refused: false,
        }
    }
}

enum Command {
    /// The file, and the threshold to use with it (None = the model's own).
    LoadModel(PathBuf, Option<f32>),
    SetRoi(Option<Roi>),
    SetThreshold(Option<f32>),
    SetReviewBand(bool),
    Stop,
}

enum Captured {
    Frame(CapturedFrame, Arc<str>),
    Unreadable { origin: String, error: String },
    Status(SourceStatus),
    End(String),
}

struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A camera blocked in `frame()` returns within a frame time; don't wait for it on the
        // caller's thread.
        self.thread.take();
    }
}

/// A running pipeline. Dropping it stops the threads.
pub struct Pipeline {
    commands: Sender<Command>,
    events: Receiver<Event>,
    frames: Sender<Captured>,
    capture: Capture,
    paused: Arc<AtomicBool>,
    fps: Arc<Mutex<f64>>,
    counters: Arc<Mutex<Counters>>,
    worker: Option<JoinHandle<()>>,
    limit: Option<u64>,
    trigger: Option<Arc<dyn Trigger>>,
}

impl Pipeline {
    /// Starts capture from `source` and inference with `model` on `device`/`queue`.
    /// `wake` is called after each event (the app requests a repaint).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter_label: String,
        model: (Model, ModelInfo),
        source: SourceSpec,
        options: PipelineOptions,
        sink: Option<Box<dyn VerdictSink>>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, String> {
        Self::start_triggered(
            device,
            queue,
            adapter_label,
            model,
            source,
            options,
            sink,
            wake,
            None,
        )
    }

    /// [`Self::start`] with a [`Trigger`]: one frame judged per trigger (see
    /// [`crate::station::trigger`]); None = free-run.
    #[allow(clippy::too_many_arguments)]
    pub fn start_triggered(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter_label: String,
        model: (Model, ModelInfo),
        source: SourceSpec,
        options: PipelineOptions,
        sink: Option<Box<dyn VerdictSink>>,
        wake: Arc<dyn Fn() + Send + Sync>,
        trigger: Option<Arc<dyn Trigger>>,
    ) -> Result<Self, String> {
        let engine =
            Engine::new(&device, &queue, &model.0, 1, adapter_label.clone()).map_err(|e| {
                format!(
                    "cannot load model {} on the GPU: {e}",
                    model.1.path.display()
                )
            })?;
        let (cmd_tx, cmd_rx) = bounded(16);
        let (ev_tx, ev_rx) = bounded(if options.lossless_events { 64 } else { 256 });
        let (frame_tx, frame_rx) = bounded(2);
        let counters = Arc::new(Mutex::new(Counters {
            since: Some(chrono::Utc::now()),
            ..Counters::default()
        }));
        let mut worker = Worker {
            device,
            queue,
            adapter_label,
            engine,
            info: model.1.clone(),
            threshold_override: options.threshold,
            review_band: options.review_band,
            roi: options.roi,
            events: ev_tx,
            lossless: options.lossless_events,
            counters: counters.clone(),
            sink,
            wake,
            seq: 0,
            roi_previous: None,
            roi_clip_told: None,
            stop_on_roi_refused: options.stop_on_roi_refused,
            display: options.display,
        };
        let _ = worker.emit(Event::ModelLoaded(model.1));
        let thread = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || worker.run(cmd_rx, frame_rx))
            .map_err(|e| format!("cannot start the inference thread: {e}"))?;
        let paused = Arc::new(AtomicBool::new(false));
        let fps = Arc::new(Mutex::new(options.fps));
        let capture = spawn_capture(
            source,
            frame_tx.clone(),
            paused.clone(),
            fps.clone(),
            options.limit,
            counters.clone(),
            trigger.clone(),
        );
        Ok(Self {
            commands: cmd_tx,
            events: ev_rx,
            frames: frame_tx,
            capture,
            paused,
            fps,
            counters,
            worker: Some(thread),
            limit: options.limit,
            trigger,
        })
    }

    /// Events so far, without waiting.
    pub fn try_events(&self) -> impl Iterator<Item = Event> + '_ {
        self.events.try_iter()
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Starts the counters again (new shift).
    pub fn reset_counters(&self) {
        if let Ok(mut c) = self.counters.lock() {
            c.reset();
        }
    }

    /// Pauses or resumes capture (a folder replay keeps its place).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Whether capture is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Changes the replay rate.
    pub fn set_fps(&self, fps: f64) {
        if let Ok(mut f) = self.fps.lock() {
            *f = fps;
        }
    }

    /// Loads a model file in the worker and swaps it in between two frames; a bad file is
    /// answered with [`Event::ModelRejected`] and the current model stays.
    pub fn load_model(&self, path: PathBuf) {
        let _ = self.commands.send(Command::LoadModel(path, None));
    }

    /// Like [`Self::load_model`], with `threshold` instead of the model's own from the first
    /// frame the new model inspects (None = the model's own).
    pub fn load_model_with_threshold(&self, path: PathBuf, threshold: Option<f32>) {
        let _ = self.commands.send(Command::LoadModel(path, threshold));
    }

    /// Sets the region of interest (frame pixels).
    pub fn set_roi(&self, roi: Option<Roi>) {
        let _ = self.commands.send(Command::SetRoi(roi));
    }

    /// Switches the review band on (three-way, where the model has one) or off (two-way).
    pub fn set_review_band(&self, on: bool) {
        let _ = self.commands.send(Command::SetReviewBand(on));
    }

    /// Overrides the model's threshold (None = the model's own).
    pub fn set_threshold(&self, threshold: Option<f32>) {
        let _ = self.commands.send(Command::SetThreshold(threshold));
    }

    /// Switches to another source; the old one is stopped.
    pub fn set_source(&mut self, source: SourceSpec) {
        self.capture.stop();
        self.capture = spawn_capture(
            source,
            self.frames.clone(),
            self.paused.clone(),
            self.fps.clone(),
            self.limit,
            self.counters.clone(),
            self.trigger.clone(),
        );
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.capture.stop();
        let _ = self.commands.try_send(Command::Stop);
        // Unblock a worker waiting on a full event channel, then let it finish.
        while self.events.try_recv().is_ok() {}
        if let Some(t) = self.worker.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && Instant::now() < deadline {
                while self.events.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn spawn_capture(
    source: SourceSpec,
    frames: Sender<Captured>,
    paused: Arc<AtomicBool>,
    fps: Arc<Mutex<f64>>,
    limit: Option<u64>,
    counters: Arc<Mutex<Counters>>,
    trigger: Option<Arc<dyn Trigger>>,
) -> Capture {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || capture_loop(source, frames, paused, fps, limit, counters, stop2, trigger))
        .ok();
    Capture { stop, thread }
}

#[allow(clippy::too_many_arguments)]
fn capture_loop(
    spec: SourceSpec,
    frames: Sender<Captured>,
    paused: Arc<AtomicBool>,
    fps: Arc<Mutex<f64>>,
    limit: Option<u64>,
    counters: Arc<Mutex<Counters>>,
    stop: Arc<AtomicBool>,
    trigger: Option<Arc<dyn Trigger>>,
) {
    let name = spec.uri();
    let source_name: Arc<str> = name.clone().into();
    let live = spec.is_live();
    let mut source = match spec.open() {
        Ok(s) => s,
        Err(e) => {
            if let Some(t) = &trigger {
                t.set_source_live(false, &e);
            }
            let _ = frames.send(Captured::Status(SourceStatus::Failed(e)));
            return;
        }
    };
    if let Some(t) = trigger {
        source = Box::new(TriggeredSource::new(source, t, live, stop.clone()));
    }
    let _ = frames.send(Captured::Status(SourceStatus::Running(spec.describe())));
    let mut lost = false;
    let mut pulled = 0u64;
    let mut next_due = Instant::now();
    // Failures to read in a row make a stored source lost, as an unplugged camera.
    let mut watch = crate::station::source::ReadWatch::default();
    while !stop.load(Ordering::SeqCst) {
        if paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            next_due = Instant::now();
            continue;
        }
        if limit.is_some_and(|l| pulled >= l) {
            let _ = frames.send(Captured::End(name));
            return;
        }
        if !source.self_paced() {
            let rate = fps.lock().map(|f| *f).unwrap_or(0.0);
            if rate > 0.0 {
                let now = Instant::now();
                if next_due > now {
                    // Sleep in short steps so pause and stop take effect at once.
                    std::thread::sleep((next_due - now).min(Duration::from_millis(20)));
                    continue;
                }
                next_due = next_due.max(now - Duration::from_secs(1))
                    + Duration::from_secs_f64(1.0 / rate.max(0.01));
            }
        }
        // Count the frame in flight before pulling it, under the lock a pause is read under:
        // a pause set before a snapshot of the counters either stops this pull or shows it.
        match counters.lock() {
            Ok(_) if paused.load(Ordering::SeqCst) => continue,
            Ok(mut c) => c.in_flight += 1,
            Err(_) => {}
        }
        let msg = match source.pull() {
            Pull::Frame(f) => {
                pulled += 1;
                watch.read();
                if lost {
                    lost = false;
                    let _ = frames.send(Captured::Status(SourceStatus::Running(spec.describe())));
                }
                Captured::Frame(f, source_name.clone())
            }
            Pull::Unreadable { origin, error } => {
                pulled += 1;
                if let Some(why) = watch.failed(&spec, &origin, &error)
                    && !lost
                {
                    lost = true;
                    let _ = frames.send(Captured::Status(SourceStatus::Lost(why)));
                }
                Captured::Unreadable { origin, error }
            }
            Pull::End => {
                release_in_flight(&counters);
                let _ = frames.send(Captured::End(name));
                return;
            }
            Pull::Idle => {
                release_in_flight(&counters);
                continue;
            }
            Pull::Lost(why) => {
                release_in_flight(&counters);
                if !lost {
                    lost = true;
                    let _ = frames.send(Captured::Status(SourceStatus::Lost(why)));
                }
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            release_in_flight(&counters);
            return;
        }
        if live {
            if let Err(crossbeam_channel::TrySendError::Full(_)) = frames.try_send(msg)
                && let Ok(mut c) = counters.lock()
            {
                c.dropped += 1;
                c.in_flight = c.in_flight.saturating_sub(1);
            }
        } else if frames.send(msg).is_err() {
            release_in_flight(&counters);
            return;
        }
    }
}

/// One frame counted in [`Counters::in_flight`] was judged or let go.
fn release_in_flight(counters: &Mutex<Counters>) {
    if let Ok(mut c) = counters.lock() {
        c.in_flight = c.in_flight.saturating_sub(1);
    }
}

struct Worker {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter_label: String,
    engine: Engine,
    info: ModelInfo,
    threshold_override: Option<f32>,
    review_band: bool,
    roi: Option<Roi>,
    events: Sender<Event>,
    lossless: bool,
    counters: Arc<Mutex<Counters>>,
    sink: Option<Box<dyn VerdictSink>>,
    wake: Arc<dyn Fn() + Send + Sync>,
    seq: u64,
    /// The region in use before the last [`Command::SetRoi`]: what a refused region falls back to.
    roi_previous: Option<Roi>,
    /// The region last said to be clipped to a frame (said once, not on every frame).
    roi_clip_told: Option<Roi>,
    stop_on_roi_refused: bool,
    display: bool,
}

impl Worker {
    /// Sends an event; false when the consumer is gone.
    fn emit(&mut self, ev: Event) -> bool {
        let ok = if self.lossless {
            self.events.send(ev).is_ok()
        } else {
            match self.events.try_send(ev) {
                Ok(()) | Err(crossbeam_channel::TrySendError::Full(_)) => true,
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
            }
        };
        (self.wake)();
        ok
    }

    fn run(mut self, commands: Receiver<Command>, frames: Receiver<Captured>) {
        loop {
            let alive = select! {
                recv(commands) -> c => match c {
                    Ok(Command::Stop) | Err(_) => false,
                    Ok(c) => self.command(c),
                },
                recv(frames) -> f => match f {
                    Ok(f) => {
                        let judged = matches!(f, Captured::Frame(..) | Captured::Unreadable { .. });
                        let alive = self.captured(f);
                        if judged {
                            release_in_flight(&self.counters);
                        }
                        alive
                    }
                    Err(_) => false,
                },
            };
            if !alive {
                return;
            }
        }
    }

    fn command(&mut self, c: Command) -> bool {
        match c {
            Command::LoadModel(path, threshold) => {
                let loaded = load_model(&path).and_then(|(model, info)| {
                    Engine::new(
                        &self.device,
                        &self.queue,
                        &model,
                        1,
                        self.adapter_label.clone(),
                    )
                    .map(|e| (e, info))
                    .map_err(|e| format!("model {} cannot run on the GPU: {e}", path.display()))
                });
                match loaded {
                    Ok((engine, info)) => {
                        self.engine = engine;
                        self.info = info.clone();
                        self.threshold_override = threshold;
                        self.emit(Event::ModelLoaded(info))
                    }
                    Err(e) => self.emit(Event::ModelRejected(e)),
                }
            }
            Command::SetRoi(roi) => {
                self.roi_previous = self.roi;
                self.roi = roi;
                true
            }
            Command::SetThreshold(t) => {
                self.threshold_override = t;
                true
            }
            Command::SetReviewBand(on) => {
                self.review_band = on;
                true
            }
            Command::Stop => false,
        }
    }

    fn captured(&mut self, c: Captured) -> bool {
        match c {
            Captured::Status(s) => self.emit(Event::Source(s)),
            Captured::End(name) => self.emit(Event::Source(SourceStatus::Ended(name))),
            Captured::Unreadable { origin, error } => {
                if let Ok(mut c) = self.counters.lock() {
                    c.unreadable += 1;
                }
                self.emit(Event::Unreadable { origin, error })
            }
            Captured::Frame(f, source) => {
                let (w, h) = (f.image.width, f.image.height);
                if let Some(roi) = self.roi
                    && !roi_fits(roi, w, h)
                {
                    // Never inspect something else than what was asked for without saying so:
                    // the region is refused, and the one in use before it comes back.
                    let kept = self.roi_previous.filter(|k| roi_fits(*k, w, h));
                    self.roi = kept;
                    self.roi_previous = kept;
                    let alive = self.emit(Event::RoiRefused {
                        roi,
                        origin: f.origin.clone(),
                        width: w,
                        height: h,
                        kept,
                    });
                    if !alive || self.stop_on_roi_refused {
                        return false;
                    }
                }
                if let Some(roi) = self.roi
                    && self.roi_clip_told != Some(roi)
                    && (roi.x.saturating_add(roi.width) > w || roi.y.saturating_add(roi.height) > h)
                {
                    // Reaching past the edge: clipped, and said so once.
                    self.roi_clip_told = Some(roi);
                    let (cw, ch) = (roi.width.min(w - roi.x), roi.height.min(h - roi.y));
                    let text = format!(
                        "region of interest x {}, y {}, {} × {} reaches past the {w}×{h} frame {}: \
                         clipped to x {}, y {}, {cw} × {ch}",
                        roi.x, roi.y, roi.width, roi.height, f.origin, roi.x, roi.y
                    );
                    if !self.emit(Event::Warning(text)) {
                        return false;
                    }
                }
                self.inspect_captured(f, &source)
            }
        }
    }

    fn inspect_captured(&mut self, f: CapturedFrame, source: &str) -> bool {
        match self.inspect(&f, source) {
            Ok(v) => {
                if let Some(sink) = self.sink.as_mut()
                    && let Err(e) = sink.record(&v)
                {
                    let _ = self.emit(Event::SinkError(e));
                }
                let v = Arc::new(v);
                if let Ok(mut c) = self.counters.lock() {
                    c.add(&v);
                }
                self.emit(Event::Verdict(Box::new(Arc::unwrap_or_clone(v))))
            }
            Err(error) => {
                if let Some(sink) = self.sink.as_mut() {
                    sink.not_judged(&f, &error);
                }
                if let Ok(mut c) = self.counters.lock() {
                    c.unreadable += 1;
                }
                self.emit(Event::Unreadable {
                    origin: f.origin,
                    error,
                })
            }
        }
    }

    fn inspect(&mut self, f: &CapturedFrame, source: &str) -> Result<Verdict, String> {
        let mut frame = f.image.frame();
        frame.roi = self.roi;
        let roi = frame.effective_roi()?;
        let t = Instant::now();
        let out = self
            .engine
            .infer(&[frame])
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or("the engine returned no result")?;
        let engine_ms = t.elapsed().as_secs_f64() * 1e3;
        let spec = self.engine.spec();
        let score = spec.fail_score(&out.probabilities);
        let threshold = self.threshold_override.unwrap_or(spec.threshold);
        // A FAIL threshold set by hand below the band's edge narrows the band to nothing there.
        let pass_threshold = spec
            .pass_threshold
            .filter(|_| self.review_band)
            .map(|t| t.min(threshold));
        let decision = ModelSpec::decide(score, pass_threshold, threshold);
        let flagged = decision != Decision::Pass;
        let best = spec
            .classes
            .iter()
            .zip(&out.probabilities)
            .filter(|(c, _)| spec.pass_classes.contains(c) != flagged)
            .max_by(|a, b| a.1.total_cmp(b.1));
        let (class, confidence) = best
            .map(|(c, p)| (c.clone(), *p))
            .unwrap_or_else(|| (String::new(), 0.0));
        self.seq += 1;
        let display = self.display.then(|| {
            let thumb = flagged.then(|| {
                let crop = crop(&f.image, roi);
                crate::station::display::frame_image(&crop, Prepared::THUMB_SIDE)
            });
            Arc::new(Prepared {
                frame: crate::station::display::frame_image(&f.image, Prepared::MAX_SIDE),
                heat: crate::station::display::heatmap_image(&out.heatmap, flagged),
                thumb,
            })
        });
        Ok(Verdict {
            seq: self.seq,
            origin: f.origin.clone(),
            source: source.to_string(),
            timestamp: f.timestamp,
            decision,
            class,
            confidence,
            score,
            threshold,
            pass_threshold,
            latency_ms: f.captured.elapsed().as_secs_f64() * 1e3,
            engine_ms,
            probabilities: out.probabilities,
            heatmap: out.heatmap,
            roi,
            model_id: self.info.id.clone(),
            model_hash: self.info.hash.clone(),
            image: f.image.clone(),
            display,
        })
    }
}

/// The `roi` part of `img` (already clipped to it).
pub fn crop(img: &DecodedImage, roi: Roi) -> DecodedImage {
    let bpp = img.format.bytes_per_pixel() as usize;
    let mut data = Vec::with_capacity(roi.width as usize * roi.height as usize * bpp);
    for y in roi.y..roi.y + roi.height {
        let start = (y as usize * img.width as usize + roi.x as usize) * bpp;
        data.extend_from_slice(&img.data[start..start + roi.width as usize * bpp]);
    }
    DecodedImage {
        data,
        width: roi.width,
        height: roi.height,
        format: img.format,
    }
}
