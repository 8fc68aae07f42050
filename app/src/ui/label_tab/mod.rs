//! The Label tab: open or create a dataset, filter a thumbnail grid (unlabelled, class, split,
//! mispredicted by the active model), label with number keys or clicks, paint defect masks with
//! brush and eraser, undo. Decoding runs in a loader thread; every change is saved at once by a
//! saver thread, atomically.
//!
//! - `worker`: the loader and saver threads, their messages, [`Prediction`];
//! - `view`: the tab's state [`LabelView`] and what it does (label, move, undo, save);
//! - `editor`: the selected image, its part, mask painting;
//! - `tab`: the tab drawn (chooser, keys, classes, filters, grid) beside the editor.
//!
//! Lowest first: `worker` ← `view` ← `editor` ← `tab`; only `tab` names the app
//! (`InspectorApp`), so the app's state can hold a [`LabelView`] without an import cycle.

mod editor;
mod tab;
mod view;
mod worker;

pub(in crate::ui) use tab::show;
pub use view::LabelView;
pub use worker::Prediction;
pub(in crate::ui) use worker::Save;
