//! The fixed Modbus register map and the state behind it: trigger handshake, the results buffer
//! the PLC acknowledges, the flags. Pure logic (no sockets, no threads), so every rule here is
//! tested directly; [`super::core`] shares it between the server, the capture thread, the
//! inference worker's sink and the fail-safe watchdog.
//!
//! The map never moves (a plant programs its PLC from the README); extensions go above it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Coil 0: Trigger Enable (PLC writes).
pub const COIL_TRIGGER_ENABLE: u16 = 0;
/// Coil 1: Trigger (a rising edge requests one inspection).
pub const COIL_TRIGGER: u16 = 1;
/// Coil 2: Results Ack (a rising edge acknowledges the oldest unacknowledged result).
pub const COIL_RESULTS_ACK: u16 = 2;
/// Number of coils.
pub const COILS: u16 = 3;

/// Discrete input 0: Ready (a trigger would be accepted now).
pub const DI_READY: u16 = 0;
/// Discrete input 1: Trigger Ack (set when a trigger is taken, cleared when Trigger goes low).
pub const DI_TRIGGER_ACK: u16 = 1;
/// Discrete input 2: Busy.
pub const DI_BUSY: u16 = 2;
/// Discrete input 3: Results Valid (the input registers hold an unacknowledged result).
pub const DI_RESULTS_VALID: u16 = 3;
/// Discrete input 4: Missed Trigger (cleared by the next accepted trigger).
pub const DI_MISSED_TRIGGER: u16 = 4;
/// Discrete input 5: Results Buffer Overrun (more than [`RESULTS_BUFFER`] unacknowledged).
pub const DI_OVERRUN: u16 = 5;
/// Discrete input 6: Error (the last result carries an error code).
pub const DI_ERROR: u16 = 6;
/// Discrete input 7: Source live.
pub const DI_SOURCE_LIVE: u16 = 7;
/// Number of discrete inputs.
pub const DISCRETE_INPUTS: u16 = 8;

/// Input register 0: Inspection ID (u16, +1 for every result, wraps).
pub const IR_INSPECTION_ID: u16 = 0;
/// Input register 1: verdict (0 none, 1 PASS, 2 FAIL, 3 REVIEW).
pub const IR_VERDICT: u16 = 1;
/// Input register 2: class index in the model's class order.
pub const IR_CLASS: u16 = 2;
/// Input register 3: score × 1000.
pub const IR_SCORE: u16 = 3;
/// Input register 4: error code ([`ErrorCode`]).
pub const IR_ERROR: u16 = 4;
/// Input register 5: results waiting (unacknowledged).
pub const IR_WAITING: u16 = 5;
/// Number of input registers.
pub const INPUT_REGISTERS: u16 = 6;

/// Holding registers 0–1: part number (u32, high word first), stored with the next result.
pub const HR_PART_NUMBER: u16 = 0;
/// Number of holding registers.
pub const HOLDING_REGISTERS: u16 = 2;

/// Results the PLC may leave unacknowledged before Overrun is raised.
pub const RESULTS_BUFFER: usize = 8;

/// The verdict register's values.
pub mod verdict {
    /// No result.
    pub const NONE: u16 = 0;
    /// PASS.
    pub const PASS: u16 = 1;
    /// FAIL.
    pub const FAIL: u16 = 2;
    /// REVIEW (a person checks the part).
    pub const REVIEW: u16 = 3;
}

/// The error register's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// A verdict.
    None = 0,
    /// No verdict within the response window: fail-safe FAIL.
    NoVerdictInTime = 1,
    /// The camera was lost or the replay ended.
    SourceLost = 2,
    /// The model could not judge the frame.
    ModelError = 3,
    /// The image could not be read.
    UnreadableImage = 4,
}

impl ErrorCode {
    /// The words stored in the history and sent over MQTT.
    pub fn text(self) -> &'static str {
        match self {
            Self::None => "",
            Self::NoVerdictInTime => "no verdict in time",
            Self::SourceLost => "source lost",
            Self::ModelError => "model error",
            Self::UnreadableImage => "unreadable image",
        }
    }

    /// From the stored number.
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::NoVerdictInTime,
            2 => Self::SourceLost,
            3 => Self::ModelError,
            4 => Self::UnreadableImage,
            _ => Self::None,
        }
    }
}

/// A Modbus exception the server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 0x02: outside the map, or a table the PLC may not write.
    IllegalDataAddress,
    /// 0x03: a quantity of 0 or above the protocol's limit.
    IllegalDataValue,
}

/// One result as the PLC sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlcResult {
    /// The station-wide inspection number (the register shows its low 16 bits).
    pub id: u64,
    /// [`verdict`] value.
    pub verdict: u16,
    /// Class index.
    pub class: u16,
    /// Score × 1000.
    pub score: u16,
    /// Error code.
    pub error: ErrorCode,
    /// The PLC's part number stored with it.
    pub part: Option<u32>,
}

/// The trigger being served.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    /// Its ticket.
    pub ticket: u64,
    /// When its edge came.
    pub at: Instant,
    /// When the fail-safe answers for it.
    pub deadline: Instant,
    /// Whether the capture thread took it.
    pub taken: bool,
    /// The frame judged for it (wall-clock capture time).
    pub frame: Option<chrono::DateTime<chrono::Utc>>,
    /// The part number latched at the edge.
    pub part: Option<u32>,
}

/// Everything behind the register map.
#[derive(Debug)]
pub struct LineState {
    /// Triggered mode (Modbus trigger) or free-run.
    pub triggered: bool,
    /// The response window.
    pub window: Duration,
    coils: [bool; COILS as usize],
    holding: [u16; HOLDING_REGISTERS as usize],
    part_written: bool,
    trigger_ack: bool,
    missed: bool,
    overrun: bool,
    error: bool,
    /// Whether the source delivers frames.
    pub source_live: bool,
    results: VecDeque<PlcResult>,
    last_id: u64,
    /// The next inspection number to hand out.
    pub next_id: u64,
    /// The trigger being served.
    pub pending: Option<Pending>,
    next_ticket: u64,
    /// Triggers refused (busy, disabled, source down), since start.
    pub missed_total: u64,
    /// Results since start.
    pub results_total: u64,
    /// Results not shown to the PLC because its buffer was full (still recorded).
    pub overrun_total: u64,
}

impl LineState {
    /// Idle state; inspection numbers continue from `next_id`.
    pub fn new(triggered: bool, window: Duration, next_id: u64) -> Self {
        Self {
            triggered,
            window,
            coils: [false; COILS as usize],
            holding: [0; HOLDING_REGISTERS as usize],
            part_written: false,
            trigger_ack: false,
            missed: false,
            overrun: false,
            error: false,
            source_live: !triggered,
            results: VecDeque::new(),
            last_id: next_id.saturating_sub(1),
            next_id: next_id.max(1),
            pending: None,
            next_ticket: 1,
            missed_total: 0,
            results_total: 0,
            overrun_total: 0,
        }
    }

    /// Whether a trigger would be accepted now.
    pub fn ready(&self) -> bool {
        self.triggered && self.coils[0] && self.pending.is_none() && self.source_live
    }

    /// Unacknowledged results.
    pub fn waiting(&self) -> usize {
        self.results.len()
    }

    fn part_number(&self) -> Option<u32> {
        self.part_written
            .then(|| (u32::from(self.holding[0]) << 16) | u32::from(self.holding[1]))
    }

    /// The part number to store with a free-run result.
    pub fn current_part(&self) -> Option<u32> {
        self.part_number()
    }

    fn check(addr: u16, cnt: u16, size: u16, max: u16) -> Result<(), Refusal> {
        if cnt == 0 || cnt > max {
            return Err(Refusal::IllegalDataValue);
        }
        if u32::from(addr) + u32::from(cnt) > u32::from(size) {
            return Err(Refusal::IllegalDataAddress);
        }
        Ok(())
    }

    /// Function 1.
    pub fn read_coils(&self, addr: u16, cnt: u16) -> Result<Vec<bool>, Refusal> {
        Self::check(addr, cnt, COILS, 2000)?;
        Ok(self.coils[addr as usize..(addr + cnt) as usize].to_vec())
    }

    /// Function 2.
    pub fn read_discrete_inputs(&self, addr: u16, cnt: u16) -> Result<Vec<bool>, Refusal> {
        Self::check(addr, cnt, DISCRETE_INPUTS, 2000)?;
        let all = [
            self.ready(),
            self.trigger_ack,
            self.pending.is_some(),
            !self.results.is_empty(),
            self.missed,
            self.overrun,
            self.error,
            self.source_live,
        ];
        Ok(all[addr as usize..(addr + cnt) as usize].to_vec())
    }

    /// Function 4.
    pub fn read_input_registers(&self, addr: u16, cnt: u16) -> Result<Vec<u16>, Refusal> {
        Self::check(addr, cnt, INPUT_REGISTERS, 125)?;
        let all = match self.results.front() {
            Some(r) => [
                r.id as u16,
                r.verdict,
                r.class,
                r.score,
                r.error as u16,
                self.results.len().min(u16::MAX as usize) as u16,
            ],
            None => [self.last_id as u16, verdict::NONE, 0, 0, 0, 0],
        };
        Ok(all[addr as usize..(addr + cnt) as usize].to_vec())
    }

    /// Function 3.
    pub fn read_holding(&self, addr: u16, cnt: u16) -> Result<Vec<u16>, Refusal> {
        Self::check(addr, cnt, HOLDING_REGISTERS, 125)?;
        Ok(self.holding[addr as usize..(addr + cnt) as usize].to_vec())
    }

    /// Functions 6 and 16.
    pub fn write_holding(&mut self, addr: u16, values: &[u16]) -> Result<(), Refusal> {
        Self::check(addr, values.len() as u16, HOLDING_REGISTERS, 123)?;
        for (i, v) in values.iter().enumerate() {
            self.holding[addr as usize + i] = *v;
        }
        self.part_written = true;
        Ok(())
    }

    /// Functions 5 and 15; edges act at once. Returns whether a trigger was accepted.
    pub fn write_coils(
        &mut self,
        addr: u16,
        values: &[bool],
        now: Instant,
    ) -> Result<bool, Refusal> {
        Self::check(addr, values.len() as u16, COILS, 1968)?;
        let mut accepted = false;
        for (i, v) in values.iter().enumerate() {
            let a = addr as usize + i;
            let was = std::mem::replace(&mut self.coils[a], *v);
            match (a as u16, was, *v) {
                (COIL_TRIGGER, false, true) => accepted |= self.trigger_edge(now),
                (COIL_TRIGGER, true, false) => self.trigger_ack = false,
                (COIL_RESULTS_ACK, false, true) => self.acknowledge(),
                _ => {}
            }
        }
        Ok(accepted)
    }

    fn trigger_edge(&mut self, now: Instant) -> bool {
        if !self.ready() {
            self.missed = true;
            self.missed_total += 1;
            return false;
        }
        self.missed = false;
        self.trigger_ack = true;
        self.pending = Some(Pending {
            ticket: self.next_ticket,
            at: now,
            deadline: now + self.window,
            taken: false,
            frame: None,
            part: self.part_number(),
        });
        self.next_ticket += 1;
        true
    }

    fn acknowledge(&mut self) {
        self.results.pop_front();
        if self.results.is_empty() {
            self.overrun = false;
        }
    }

    /// Hands out the next inspection number.
    pub fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A finished result: shown to the PLC (unless its buffer is full: Overrun), and the
    /// trigger `ticket` (if any) is done.
    pub fn push_result(&mut self, r: PlcResult, ticket: Option<u64>) {
        self.results_total += 1;
        self.error = r.error != ErrorCode::None;
        if self.results.len() >= RESULTS_BUFFER {
            self.overrun = true;
            self.overrun_total += 1;
        } else {
            self.results.push_back(r);
        }
        self.last_id = self.results.back().map(|r| r.id).unwrap_or(r.id);
        if ticket.is_some() && self.pending.is_some_and(|p| Some(p.ticket) == ticket) {
            self.pending = None;
        }
    }

    /// The pending trigger when it is `ticket` (still unanswered).
    pub fn pending_ticket(&self, ticket: u64) -> Option<Pending> {
        self.pending.filter(|p| p.ticket == ticket)
    }

    /// Switches between triggered and free-run; a pending trigger stays pending.
    pub fn set_triggered(&mut self, triggered: bool) {
        self.triggered = triggered;
    }
}

/// The class index and PLC verdict of a judged frame: the class is the one whose probability
/// the verdict reports (first on a tie).
pub fn class_index(probabilities: &[f32], confidence: f32) -> u16 {
    probabilities
        .iter()
        .position(|p| *p == confidence)
        .unwrap_or(0)
        .min(u16::MAX as usize) as u16
}

/// Score × 1000 as a register value.
pub fn score_register(score: f32) -> u16 {
    (score.clamp(0.0, 65.535) * 1000.0).round() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: u64) -> PlcResult {
        PlcResult {
            id,
            verdict: verdict::PASS,
            class: 0,
            score: 10,
            error: ErrorCode::None,
            part: None,
        }
    }

    #[test]
    fn trigger_handshake_busy_missed_and_ack() {
        let now = Instant::now();
        let mut s = LineState::new(true, Duration::from_millis(200), 1);
        s.source_live = true;
        // Disabled: missed.
        assert!(!s.write_coils(COIL_TRIGGER, &[true], now).unwrap_or(true));
        assert_eq!(s.read_discrete_inputs(DI_MISSED_TRIGGER, 1), Ok(vec![true]));
        s.write_coils(0, &[true, false], now).unwrap_or_default();
        assert_eq!(s.read_discrete_inputs(DI_READY, 1), Ok(vec![true]));
        assert_eq!(s.write_coils(COIL_TRIGGER, &[true], now), Ok(true));
        assert_eq!(
            s.read_discrete_inputs(0, 5),
            Ok(vec![false, true, true, false, false])
        );
        s.write_coils(COIL_TRIGGER, &[false], now)
            .unwrap_or_default();
        // A trigger while busy: missed, the pending one stays.
        assert_eq!(s.write_coils(COIL_TRIGGER, &[true], now), Ok(false));
        assert_eq!(s.read_discrete_inputs(DI_MISSED_TRIGGER, 1), Ok(vec![true]));
        let t = s.pending.map(|p| p.ticket);
        let id = s.allocate_id();
        s.push_result(result(id), t);
        assert_eq!(s.read_input_registers(0, 6), Ok(vec![1, 1, 0, 10, 0, 1]));
        s.write_coils(COIL_RESULTS_ACK, &[true], now)
            .unwrap_or_default();
        assert_eq!(s.read_input_registers(0, 2), Ok(vec![1, 0]));
        assert_eq!(s.read_discrete_inputs(DI_RESULTS_VALID, 1), Ok(vec![false]));
    }

    #[test]
    fn overrun_beyond_eight_and_refusals() {
        let mut s = LineState::new(false, Duration::from_millis(200), 65535);
        for _ in 0..10 {
            let id = s.allocate_id();
            s.push_result(result(id), None);
        }
        assert_eq!(s.read_discrete_inputs(DI_OVERRUN, 1), Ok(vec![true]));
        // The register wraps; the oldest unacknowledged is shown.
        assert_eq!(s.read_input_registers(IR_INSPECTION_ID, 1), Ok(vec![65535]));
        assert_eq!(s.read_input_registers(IR_WAITING, 1), Ok(vec![8]));
        assert_eq!(
            s.read_input_registers(5, 2),
            Err(Refusal::IllegalDataAddress)
        );
        assert_eq!(s.read_coils(0, 0), Err(Refusal::IllegalDataValue));
        assert_eq!(
            s.write_holding(1, &[1, 2]),
            Err(Refusal::IllegalDataAddress)
        );
        assert_eq!(s.write_holding(0, &[0x0001, 0x0002]), Ok(()));
        assert_eq!(s.current_part(), Some(0x0001_0002));
    }
}
