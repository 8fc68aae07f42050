//! The History tab: filters, a paged table with thumbnails, details with confirm/override,
//! charts (reject rate per hour with p-chart limits, defect Pareto, yield per shift) and CSV
//! export. Queries run in a worker thread with its own database connection.
//!
//! - `query`: the worker thread, its requests and replies, [`PageResult`], the CSV export;
//! - `view`: the tab's state [`HistoryView`];
//! - `charts`, `details`: the charts and the open row's details;
//! - `tab`: the tab drawn and what its buttons do.
//!
//! Lowest first: `query` ← `view` ← `charts`, `details` ← `tab`; only `tab` names the app
//! (`InspectorApp`), so the app's state can hold a [`HistoryView`] without an import cycle.

mod charts;
mod details;
mod query;
mod tab;
mod view;

pub use charts::yield_per_shift;
pub(in crate::ui) use details::local_time;
pub use query::{PAGE, PageResult, export_file_name, export_target};
pub(in crate::ui) use tab::show;
pub use view::HistoryView;
