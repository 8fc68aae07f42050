//! [`LineIo`]: the register state shared by the Modbus server, the capture thread (as its
//! [`Trigger`]), the inference worker (through [`LineSink`]) and the fail-safe watchdog thread.
//!
//! Every result (a verdict, or a fail-safe FAIL with an error code) goes the same way: it gets
//! the next inspection number, is recorded by the [`ResultStore`] (the history database, the
//! MQTT outbox), and only then appears in the registers. One lock serialises results, so
//! numbers are consecutive and in trigger order; the register lock is held only for
//! microseconds, so a PLC poll never waits on the database.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::registers::{ErrorCode, LineState, PlcResult, class_index, score_register, verdict};
use crate::station::pipeline::{Verdict, VerdictSink};
use crate::station::source::CapturedFrame;
use crate::station::trigger::{NoFrame, Trigger};

/// A result without a verdict (fail-safe).
#[derive(Clone, Debug)]
pub struct Failure {
    /// Why.
    pub code: ErrorCode,
    /// Details for the history (file, reason).
    pub detail: String,
    /// When.
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

/// Records results (the history database, which is also the MQTT outbox).
pub trait ResultStore: Send {
    /// A verdict with the number and part number the PLC sees.
    fn verdict(&mut self, v: &Verdict, r: &PlcResult) -> Result<(), String>;
    /// A fail-safe FAIL.
    fn failure(&mut self, f: &Failure, r: &PlcResult) -> Result<(), String>;
    /// A verdict that came after its trigger was already answered by the fail-safe: not a
    /// second result (the part was counted once), only noted.
    fn late(&mut self, v: &Verdict) -> Result<(), String>;
}

/// What the line I/O is set to.
#[derive(Clone, Debug)]
pub struct LineConfig {
    /// Take triggers from the PLC (false: free-run; the registers still show every result).
    pub triggered: bool,
    /// A trigger with no verdict within this window gets a fail-safe FAIL.
    pub window: Duration,
    /// The first inspection number (continue after the history's last one).
    pub first_id: u64,
}

impl Default for LineConfig {
    fn default() -> Self {
        Self {
            triggered: false,
            window: Duration::from_millis(200),
            first_id: 1,
        }
    }
}

/// A snapshot for the Inspect tab and the headless summary.
#[derive(Clone, Debug, Default)]
pub struct LineStatus {
    /// PLC connections open now.
    pub clients: usize,
    /// The last request from a PLC.
    pub last_poll: Option<Instant>,
    /// Triggers refused since start.
    pub missed: u64,
    /// Results since start.
    pub results: u64,
    /// Unacknowledged results in the buffer.
    pub waiting: usize,
    /// Results the full buffer could not show (recorded all the same).
    pub overruns: u64,
    /// Fail-safe results since start.
    pub fail_safe: u64,
    /// The last recording error.
    pub store_error: Option<String>,
}

pub(super) struct Inner {
    pub(super) state: Mutex<LineState>,
    cv: Condvar,
    store: Mutex<Option<Box<dyn ResultStore>>>,
    pub(super) status: Mutex<LineStatus>,
    stop: AtomicBool,
}

/// The shared line I/O state; clone freely.
#[derive(Clone)]
pub struct LineIo {
    pub(super) inner: Arc<Inner>,
    watchdog: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl LineIo {
    /// Starts the state and the fail-safe watchdog thread.
    pub fn new(config: &LineConfig, store: Option<Box<dyn ResultStore>>) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(LineState::new(
                config.triggered,
                config.window,
                config.first_id,
            )),
            cv: Condvar::new(),
            store: Mutex::new(store),
            status: Mutex::new(LineStatus::default()),
            stop: AtomicBool::new(false),
        });
        let w = inner.clone();
        let watchdog = std::thread::Builder::new()
            .name("line-io-failsafe".into())
            .spawn(move || watchdog_loop(&w))
            .ok();
        Self {
            inner,
            watchdog: Arc::new(Mutex::new(watchdog)),
        }
    }

    /// The register state (held briefly).
    pub fn state(&self) -> MutexGuard<'_, LineState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a register change made outside the server (tests, the UI) and wakes waiters.
    pub fn notify(&self) {
        self.inner.cv.notify_all();
    }

    pub(super) fn notify_inner(inner: &Inner) {
        inner.cv.notify_all();
    }

    /// A snapshot for display.
    pub fn status(&self) -> LineStatus {
        let mut s = self
            .inner
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let st = self.state();
        s.missed = st.missed_total;
        s.results = st.results_total;
        s.waiting = st.waiting();
        s.overruns = st.overrun_total;
        s
    }

    /// Changes the response window (for the next trigger).
    pub fn set_window(&self, window: Duration) {
        self.state().window = window;
    }

    /// The pipeline's sink: each verdict becomes a result.
    pub fn sink(&self) -> LineSink {
        LineSink { io: self.clone() }
    }

    /// This as the capture thread's trigger.
    pub fn trigger(&self) -> Arc<dyn Trigger> {
        Arc::new(self.clone())
    }

    /// Drops the result store (the history writer can then finish); later results are shown
    /// to the PLC only.
    pub fn close_store(&self) {
        let old = self
            .inner
            .store
            .lock()
            .map(|mut s| s.take())
            .unwrap_or_default();
        drop(old);
    }

    /// Stops the watchdog (results in flight are finished first).
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.cv.notify_all();
        if let Some(t) = self.watchdog.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }

    /// Produces one result: number, record, then registers. `ticket`: the trigger it answers
    /// (None: free-run). Returns false when the ticket was already answered (a late verdict).
    fn finish(&self, ticket: Option<u64>, outcome: Outcome<'_>) -> bool {
        let mut store = self
            .inner
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (id, part) = {
            let mut st = self.state();
            let part = match ticket {
                Some(t) => match st.pending_ticket(t) {
                    Some(p) => p.part,
                    None => return false,
                },
                None => st.current_part(),
            };
            (st.allocate_id(), part)
        };
        let r = match &outcome {
            Outcome::Verdict(v) => PlcResult {
                id,
                verdict: match v.decision {
                    kernels::Decision::Pass => verdict::PASS,
                    kernels::Decision::Review => verdict::REVIEW,
                    kernels::Decision::Fail => verdict::FAIL,
                },
                class: class_index(&v.probabilities, v.confidence),
                score: score_register(v.score),
                error: ErrorCode::None,
                part,
            },
            Outcome::Failure(f) => PlcResult {
                id,
                verdict: verdict::FAIL,
                class: 0,
                score: 1000,
                error: f.code,
                part,
            },
        };
        let recorded = match (store.as_mut(), &outcome) {
            (Some(s), Outcome::Verdict(v)) => s.verdict(v, &r),
            (Some(s), Outcome::Failure(f)) => s.failure(f, &r),
            (None, _) => Ok(()),
        };
        if let Ok(mut s) = self.inner.status.lock() {
            if matches!(outcome, Outcome::Failure(_)) {
                s.fail_safe += 1;
            }
            match &recorded {
                Ok(()) => s.store_error = None,
                Err(e) => s.store_error = Some(e.clone()),
            }
        }
        self.state().push_result(r, ticket);
        self.inner.cv.notify_all();
        true
    }

    fn fail(&self, ticket: u64, code: ErrorCode, detail: String) {
        self.finish(
            Some(ticket),
            Outcome::Failure(Failure {
                code,
                detail,
                timestamp: chrono::Utc::now(),
            }),
        );
    }
}

enum Outcome<'a> {
    Verdict(&'a Verdict),
    Failure(Failure),
}

fn watchdog_loop(inner: &Arc<Inner>) {
    let io = LineIo {
        inner: inner.clone(),
        watchdog: Arc::default(),
    };
    loop {
        let due = {
            let st = io.state();
            if inner.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            let pending = st.pending;
            match pending {
                Some(p) if p.deadline <= now => Some(p.ticket),
                Some(p) => {
                    let _ = inner.cv.wait_timeout(st, p.deadline - now);
                    None
                }
                None => {
                    let _ = inner.cv.wait_timeout(st, Duration::from_millis(100));
                    None
                }
            }
        };
        if let Some(t) = due {
            let window = io.state().window;
            io.fail(
                t,
                ErrorCode::NoVerdictInTime,
                format!("no verdict within {} ms", window.as_millis()),
            );
        }
    }
}

impl Trigger for LineIo {
    fn wait_take(&self, timeout: Duration) -> Option<u64> {
        let st = self.state();
        let (mut st, _) = self
            .inner
            .cv
            .wait_timeout_while(st, timeout, |s| !s.pending.is_some_and(|p| !p.taken))
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let p = st.pending.as_mut().filter(|p| !p.taken)?;
        p.taken = true;
        Some(p.ticket)
    }

    fn take_if_before(&self, captured: Instant) -> Option<u64> {
        let mut st = self.state();
        let p = st
            .pending
            .as_mut()
            .filter(|p| !p.taken && p.at <= captured)?;
        p.taken = true;
        Some(p.ticket)
    }

    fn bind(&self, ticket: u64, timestamp: chrono::DateTime<chrono::Utc>) {
        let mut st = self.state();
        if let Some(p) = st.pending.as_mut().filter(|p| p.ticket == ticket) {
            p.frame = Some(timestamp);
        }
    }

    fn no_frame(&self, ticket: u64, why: NoFrame, detail: &str) {
        let code = match why {
            NoFrame::SourceLost => ErrorCode::SourceLost,
            NoFrame::Unreadable => ErrorCode::UnreadableImage,
        };
        self.fail(ticket, code, detail.to_string());
    }

    fn set_source_live(&self, live: bool, _detail: &str) {
        let mut st = self.state();
        if st.source_live != live {
            st.source_live = live;
            drop(st);
            self.inner.cv.notify_all();
        }
    }
}

/// The pipeline's [`VerdictSink`]: each verdict becomes a result (free-run), or the result of
/// the trigger whose frame it judged (triggered mode).
pub struct LineSink {
    io: LineIo,
}

impl VerdictSink for LineSink {
    fn record(&mut self, v: &Verdict) -> Result<(), String> {
        let (triggered, ticket) = {
            let st = self.io.state();
            let ticket = st
                .pending
                .filter(|p| p.frame == Some(v.timestamp))
                .map(|p| p.ticket);
            (st.triggered, ticket)
        };
        let answered = match (triggered, ticket) {
            (_, Some(t)) => self.io.finish(Some(t), Outcome::Verdict(v)),
            (false, None) => self.io.finish(None, Outcome::Verdict(v)),
            (true, None) => false,
        };
        if answered {
            return match self.io.status().store_error {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        let mut store = self
            .io
            .inner
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match store.as_mut() {
            Some(s) => s.late(v),
            None => Ok(()),
        }
    }

    fn not_judged(&mut self, frame: &CapturedFrame, error: &str) {
        let ticket = self
            .io
            .state()
            .pending
            .filter(|p| p.frame == Some(frame.timestamp))
            .map(|p| p.ticket);
        if let Some(t) = ticket {
            self.io.fail(
                t,
                ErrorCode::ModelError,
                format!("{}: {error}", frame.origin),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::DecodedImage;
    use crate::station::line_io::registers::COIL_TRIGGER;

    #[test]
    fn a_model_error_answers_the_trigger_at_once_with_code_3() {
        let io = LineIo::new(
            &LineConfig {
                triggered: true,
                window: Duration::from_secs(30),
                first_id: 1,
            },
            None,
        );
        let now = Instant::now();
        io.set_source_live(true, "");
        assert_eq!(io.state().write_coils(0, &[true], now), Ok(false));
        assert_eq!(io.state().write_coils(COIL_TRIGGER, &[true], now), Ok(true));
        let ticket = io.wait_take(Duration::from_secs(1));
        let timestamp = chrono::Utc::now();
        io.bind(ticket.unwrap_or_default(), timestamp);
        let frame = CapturedFrame {
            image: std::sync::Arc::new(DecodedImage {
                data: vec![0; 4],
                width: 2,
                height: 2,
                format: kernels::PixelFormat::Gray8,
            }),
            origin: "a.png".into(),
            captured: now,
            timestamp,
        };
        // Another frame's failure answers nothing.
        let mut sink = io.sink();
        let other = CapturedFrame {
            timestamp: timestamp - chrono::Duration::seconds(1),
            ..frame.clone()
        };
        sink.not_judged(&other, "device lost");
        assert!(io.state().pending.is_some());
        sink.not_judged(&frame, "device lost");
        assert!(io.state().pending.is_none());
        assert_eq!(
            io.state().read_input_registers(0, 6),
            Ok(vec![
                1,
                verdict::FAIL,
                0,
                1000,
                ErrorCode::ModelError as u16,
                1
            ])
        );
        assert_eq!(io.status().fail_safe, 1);
        io.stop();
    }
}
