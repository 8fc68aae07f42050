//! The rejection history: every verdict in SQLite (WAL, versioned schema), written by one
//! writer thread in batched transactions, with rejected frames archived as PNG files next to the
//! database under a disk budget.
//!
//! Nothing is dropped: the writer's queue is bounded, and a full queue makes the submitter
//! wait (inspection slows rather than forgets). A failed transaction (disk full) is retried
//! until it succeeds, and the failure is reported through [`WriterStatus`]. Archived images are
//! the only thing ever pruned, oldest first; rows are never deleted.
//!
//! - [`schema`]: the file, its migrations, the stored rows, opening a [`Store`];
//! - [`queries`]: filters and everything the History tab and `inspector history` read;
//! - [`writer`]: the [`Recorder`] thread and the pipeline's [`RecorderSink`];
//! - [`archive`]: rejected frames as PNG files under a disk budget;
//! - [`export`]: CSV and control-chart limits;
//! - [`outbox`]: the line I/O's results (inspection number, part number) and the MQTT outbox;
//! - [`plant_outbox`]: what the plant database has not acknowledged (watermarks, the override
//!   log).
//!
//! The submodules import one another downwards only (schema ← queries, archive ← writer,
//! export); this file only re-exports their public items as `history::…`.

mod archive;
mod export;
mod outbox;
mod plant_outbox;
mod queries;
mod schema;
mod writer;

pub use archive::*;
pub use export::*;
pub use outbox::*;
pub use plant_outbox::*;
pub use queries::*;
pub use schema::*;
pub use writer::*;

#[cfg(test)]
mod tests;
