//! Line I/O: the PLC's trigger and the verdict handed back over a Modbus TCP server with a
//! fixed register map, triggered mode and the fail-safe FAIL.
//!
//! - [`registers`]: the register map and its rules (handshake, results buffer, flags);
//! - [`core`]: [`LineIo`], shared by the server, the capture thread, the pipeline's sink and the
//!   fail-safe watchdog; results are numbered, recorded, then shown;
//! - [`modbus`]: the tokio-modbus server thread.
//!
//! MQTT publishing reads the history database (the outbox), so it lives in the records layer
//! (`crate::records::mqtt`).

pub mod core;
pub mod modbus;
pub mod registers;

pub use self::core::{Failure, LineConfig, LineIo, LineSink, LineStatus, ResultStore};
pub use self::modbus::{ModbusConfig, ModbusServer, parse_trigger};
pub use self::registers::{ErrorCode, PlcResult};
