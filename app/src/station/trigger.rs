//! Triggered capture: with a [`Trigger`] the capture thread judges one frame per trigger instead
//! of a free-running stream. A stored source (folder, synthetic) gives its next image when a
//! trigger is pending; a live camera keeps being read and the first frame captured after the
//! trigger's edge is the one judged (the others are not inspected and not counted as dropped).
//!
//! The trigger itself (the PLC's coil, over Modbus) lives in [`crate::station::line_io`]; this
//! module only knows the trait, so the pipeline does not depend on the line I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::station::source::{FrameSource, Pull};

/// Why a trigger got no frame to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoFrame {
    /// The source was lost (camera unplugged) or ended (replay finished).
    SourceLost,
    /// The image could not be read.
    Unreadable,
}

/// Where the capture thread takes its triggers from.
pub trait Trigger: Send + Sync {
    /// A stored source: waits up to `timeout` for a pending trigger and takes it.
    fn wait_take(&self, timeout: Duration) -> Option<u64>;
    /// A live source: takes the pending trigger when its edge came at or before `captured`.
    fn take_if_before(&self, captured: Instant) -> Option<u64>;
    /// The frame taken for `ticket` (its wall-clock capture time identifies its verdict).
    fn bind(&self, ticket: u64, timestamp: chrono::DateTime<chrono::Utc>);
    /// `ticket` will get no verdict: answered at once with an error result.
    fn no_frame(&self, ticket: u64, why: NoFrame, detail: &str);
    /// Whether the source delivers frames (`false`: lost, ended or failed).
    fn set_source_live(&self, live: bool, detail: &str);
}

/// A [`FrameSource`] that pulls only for triggers. Never blocks longer than a few ms, so the
/// capture loop's stop flag takes effect at once.
pub struct TriggeredSource {
    inner: Box<dyn FrameSource>,
    trigger: Arc<dyn Trigger>,
    live: bool,
    stop: Arc<AtomicBool>,
}

impl TriggeredSource {
    /// Wraps `inner`; `live` = a camera (read continuously), else a stored source.
    pub fn new(
        inner: Box<dyn FrameSource>,
        trigger: Arc<dyn Trigger>,
        live: bool,
        stop: Arc<AtomicBool>,
    ) -> Self {
        trigger.set_source_live(true, "");
        Self {
            inner,
            trigger,
            live,
            stop,
        }
    }

    fn stopped() -> Pull {
        // The capture loop checks its stop flag after every pull and sends nothing then.
        Pull::Idle
    }

    fn pull_for(&mut self, ticket: u64) -> Pull {
        let p = self.inner.pull();
        match &p {
            Pull::Frame(f) => {
                self.trigger.set_source_live(true, "");
                self.trigger.bind(ticket, f.timestamp);
            }
            Pull::Unreadable { origin, error } => {
                self.trigger
                    .no_frame(ticket, NoFrame::Unreadable, &format!("{origin}: {error}"));
            }
            Pull::Lost(why) => {
                self.trigger.set_source_live(false, why);
                self.trigger.no_frame(ticket, NoFrame::SourceLost, why);
            }
            Pull::End => {
                self.trigger.set_source_live(false, "the replay has ended");
                self.trigger
                    .no_frame(ticket, NoFrame::SourceLost, "the replay has ended");
            }
            Pull::Idle => {
                self.trigger
                    .no_frame(ticket, NoFrame::SourceLost, "the source gave no frame");
            }
        }
        p
    }
}

impl FrameSource for TriggeredSource {
    fn self_paced(&self) -> bool {
        // Triggers pace a triggered source, not the replay rate.
        true
    }

    fn pull(&mut self) -> Pull {
        if self.stop.load(Ordering::SeqCst) {
            return Self::stopped();
        }
        if self.live {
            return match self.inner.pull() {
                Pull::Frame(f) => {
                    self.trigger.set_source_live(true, "");
                    match self.trigger.take_if_before(f.captured) {
                        Some(ticket) => {
                            self.trigger.bind(ticket, f.timestamp);
                            Pull::Frame(f)
                        }
                        // A frame no trigger asked for: the capture loop looks at its pause
                        // and stop flags before the next one.
                        None => Pull::Idle,
                    }
                }
                Pull::Lost(why) => {
                    self.trigger.set_source_live(false, &why);
                    if let Some(t) = self.trigger.take_if_before(Instant::now()) {
                        self.trigger.no_frame(t, NoFrame::SourceLost, &why);
                    }
                    Pull::Lost(why)
                }
                Pull::End => {
                    self.trigger.set_source_live(false, "the camera stopped");
                    Pull::End
                }
                other @ (Pull::Unreadable { .. } | Pull::Idle) => other,
            };
        }
        match self.trigger.wait_take(Duration::from_millis(20)) {
            Some(ticket) => self.pull_for(ticket),
            None => Pull::Idle,
        }
    }
}
