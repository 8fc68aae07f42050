//! Checkpoints of the backbone presets' head (`train_head`), so a cancelled run resumes from
//! its last finished epoch instead of starting over.
//!
//! After each epoch of the main head, `<out>.ckpt/` gets the head's four tensors
//! (`head.safetensors`) and `head.json`: the preset, dataset and classes it belongs to, the
//! finished epochs and their records. A resumed run (`TrainConfig::resume`) loads both, replays
//! the finished epochs' shuffles so the rest sees the data in the same order, and goes on; only
//! Adam's moment estimates start afresh. The features themselves are in the feature cache, so
//! a resume pays no extraction either.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use super::checkpoint::HEAD_CHECKPOINT;
use super::nn::{HIDDEN, PositionHead};
use super::tensor_io::{read_tensor, save_tensors, tensor_vec};
use super::types::{EpochRecord, TrainConfig};

/// The weights file beside it.
const HEAD_WEIGHTS: &str = "head.safetensors";
/// The head's tensors in checkpoint order.
const NAMES: [&str; 4] = ["hidden.weight", "hidden.bias", "out.weight", "out.bias"];

/// The head after `epochs` finished epochs, to continue from.
pub(crate) struct HeadStart {
    /// Finished epochs.
    pub epochs: usize,
    /// [`NAMES`] in order: (shape, values).
    weights: Vec<(Vec<usize>, Vec<f32>)>,
}

impl HeadStart {
    /// Puts the saved weights into `head` (on `device`); `features` × `classes` must fit.
    pub fn apply(&self, head: &mut PositionHead, device: &Device) -> anyhow::Result<()> {
        let w = &self.weights;
        let (features, classes) = (
            head.hidden.weight.shape().dims::<2>()[0],
            head.out.weight.shape().dims::<2>()[1],
        );
        let hidden = HIDDEN as usize;
        if w.len() != 4
            || w[0].0 != [features, hidden]
            || w[1].0 != [hidden]
            || w[2].0 != [hidden, classes]
            || w[3].0 != [classes]
        {
            bail!("the checkpoint's head does not fit these features and classes");
        }
        let t2 = |(s, d): &(Vec<usize>, Vec<f32>)| {
            Param::from_tensor(Tensor::<2>::from_data(
                TensorData::new(d.clone(), [s[0], s[1]]),
                device,
            ))
        };
        let t1 = |(s, d): &(Vec<usize>, Vec<f32>)| {
            Param::from_tensor(Tensor::<1>::from_data(
                TensorData::new(d.clone(), [s[0]]),
                device,
            ))
        };
        head.hidden.weight = t2(&w[0]);
        head.hidden.bias = Some(t1(&w[1]));
        head.out.weight = t2(&w[2]);
        head.out.bias = Some(t1(&w[3]));
        Ok(())
    }
}

/// What [`HEAD_CHECKPOINT`] records besides the weights.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct HeadCheckpoint {
    /// Preset.
    pub preset: String,
    /// Dataset folder.
    pub data: PathBuf,
    /// Classes.
    pub classes: Vec<String>,
    /// Finished epochs.
    pub epoch: usize,
    /// Their records.
    pub history: Vec<EpochRecord>,
}

/// The head's parameters by name.
fn head_tensors(head: &PositionHead) -> anyhow::Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    let bias = |b: &Option<Param<Tensor<1>>>| b.as_ref().map(|b| b.val()).context("no bias");
    let (hb, ob) = (bias(&head.hidden.bias)?, bias(&head.out.bias)?);
    let tensors = [
        (
            head.hidden.weight.shape().dims::<2>().to_vec(),
            tensor_vec(head.hidden.weight.val())?,
        ),
        (hb.shape().dims::<1>().to_vec(), tensor_vec(hb)?),
        (
            head.out.weight.shape().dims::<2>().to_vec(),
            tensor_vec(head.out.weight.val())?,
        ),
        (ob.shape().dims::<1>().to_vec(), tensor_vec(ob)?),
    ];
    Ok(NAMES
        .iter()
        .zip(tensors)
        .map(|(n, (s, d))| (n.to_string(), s, d))
        .collect())
}

/// Writes `head` after `state.epoch` finished epochs into the checkpoint folder `dir`
/// (weights first, then the state file, each atomically).
pub(crate) fn save(dir: &Path, head: &PositionHead, state: &HeadCheckpoint) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating checkpoint folder {}", dir.display()))?;
    save_tensors(&dir.join(HEAD_WEIGHTS), &head_tensors(head)?)?;
    let tmp = dir.join("head.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing checkpoint {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(HEAD_CHECKPOINT))
        .with_context(|| format!("writing checkpoint {}", dir.display()))?;
    Ok(())
}

/// The head checkpoint in `dir` for a run of `cfg` on `classes`: None when there is none, an
/// error when it is damaged or belongs to another dataset or preset.
pub(crate) fn load(
    dir: &Path,
    cfg: &TrainConfig,
    classes: &[String],
) -> anyhow::Result<Option<(HeadCheckpoint, HeadStart)>> {
    let Ok(bytes) = std::fs::read(dir.join(HEAD_CHECKPOINT)) else {
        return Ok(None);
    };
    let damaged = || {
        format!(
            "checkpoint {} is damaged; delete it to start over",
            dir.display()
        )
    };
    let state: HeadCheckpoint = serde_json::from_slice(&bytes).with_context(damaged)?;
    if state.preset != cfg.preset || state.data != cfg.data || state.classes != classes {
        bail!(
            "checkpoint {} is for another dataset or preset; delete it or train without --resume",
            dir.display()
        );
    }
    let file = std::fs::read(dir.join(HEAD_WEIGHTS)).with_context(damaged)?;
    let st = safetensors::SafeTensors::deserialize(&file).with_context(damaged)?;
    let weights = NAMES
        .iter()
        .map(|n| read_tensor(&st, n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let epochs = state.epoch;
    Ok(Some((state, HeadStart { epochs, weights })))
}
