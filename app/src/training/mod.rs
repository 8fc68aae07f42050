//! Training: the one entry point [`train`] that the CLI, the Train tab and the tests call, and
//! the modules behind it, lowest first:
//!
//! - [`types`]: the shared vocabulary (config, progress, summary, cancel error);
//! - [`presets`], [`augment`], [`nn`] (burn modules), [`tensor_io`], [`checkpoint`] (paths),
//!   [`splits`] (dataset rows and decoded images): what the trainers share;
//! - [`features`] (backbone feature extraction and its cache), [`head_checkpoint`];
//! - the trainers: [`scratch`] (whole-image CNNs, with [`export`] and [`mask_supervision`]),
//!   [`head`] (a head on the pretrained backbone), [`anomaly`] (PatchCore memory bank).
//!
//! Dependencies point down this list only: a trainer imports the shared modules, never another
//! trainer (anomaly and head share [`features`]), and no submodule imports from this file. The
//! re-exports below are the public surface for callers outside `training`.

pub mod anomaly;
pub mod augment;
pub mod checkpoint;
pub mod export;
pub mod features;
pub mod head;
pub mod head_checkpoint;
pub mod head_select;
pub mod mask_supervision;
pub mod nn;
pub mod position_head;
pub mod presets;
pub mod scratch;
pub mod splits;
pub mod tensor_io;
pub mod types;

use std::sync::atomic::AtomicBool;

use anyhow::bail;

pub use checkpoint::{checkpoint_dir, checkpoint_epoch};
pub use export::load_best;
pub use presets::{PRESETS, Preset};
pub use scratch::predict;
pub use types::{
    BackendKind, Cancelled, CoresetKind, DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_OPTIMIZER,
    DEFAULT_PRESET, EpochRecord, OptimizerKind, Progress, TrainConfig, TrainMode, TrainSummary,
};

/// Trains `cfg.preset` on `cfg.data` and writes the model: anomaly mode goes to
/// [`anomaly::train`], backbone presets to [`head::train`], the rest to [`scratch::train`].
/// `progress` sees every step and epoch; setting `cancel` stops within one step.
pub fn train(
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> anyhow::Result<TrainSummary> {
    let backbone = PRESETS
        .iter()
        .find(|p| p.name == cfg.preset)
        .and_then(|p| Some((p.side, p.backbone?)));
    if cfg.mode == TrainMode::Anomaly {
        let Some((side, resize)) = backbone else {
            bail!(
                "anomaly mode needs a pretrained-backbone preset ({}); {:?} is not one",
                PRESETS
                    .iter()
                    .filter(|p| p.backbone.is_some())
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                cfg.preset
            );
        };
        return anomaly::train(cfg, side, resize, progress, cancel);
    }
    if let Some((side, resize)) = backbone {
        return head::train(cfg, side, resize, progress, cancel);
    }
    scratch::train(cfg, progress, cancel)
}
