//! The records: what the station and training leave behind.
//!
//! - [`history`]: the SQLite store of verdicts and events, its writer thread, queries,
//!   archive and export;
//! - [`versions`]: saved model versions with their evaluation reports;
//! - [`settings`]: the station's settings file;
//! - [`mqtt`]: results published over MQTT from the history (the outbox);
//! - [`plant`]: the plant's PostgreSQL database: the forwarder that ships the history there,
//!   and reading it back for the History tab.
//!
//! Imports [`crate::data`], [`crate::station`] (the verdicts and sources it records) and
//! [`crate::evaluation`] (the reports a version keeps); nothing imports it but the top layer.

pub mod history;
pub mod mqtt;
pub mod plant;
pub mod settings;
pub mod versions;
