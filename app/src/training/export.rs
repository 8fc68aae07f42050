//! The from-scratch model's weights: export to the `kernels` model file (batch-norm folded
//! into the convolutions) and the checkpoint tensors a run saves and resumes from.

use std::path::Path;

use anyhow::Context as _;
use burn::module::Module;
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use kernels::{Layer, LayerWeights, ModelSpec};

use super::checkpoint::checkpoint_dir;
use super::nn::{Block, BurnModel};
use super::tensor_io::{NamedTensors, tensor_vec};

/// Exports a trained burn model to kernels weights, folding batch-norm into the convolutions.
pub fn export_weights(
    model: &BurnModel,
    spec: &ModelSpec,
) -> anyhow::Result<Vec<Option<LayerWeights>>> {
    let mut out = Vec::new();
    for (block, layer) in model.blocks.iter().zip(&spec.layers) {
        out.push(match (block, layer) {
            (Block::Conv(c), Layer::Conv2d { out_channels, .. }) => {
                let mut weight = tensor_vec(c.conv.weight.val())?;
                let mut bias = match &c.conv.bias {
                    Some(b) => tensor_vec(b.val())?,
                    None => vec![0.0; *out_channels as usize],
                };
                if let Some(bn) = &c.bn {
                    let gamma = tensor_vec(bn.gamma.val())?;
                    let beta = tensor_vec(bn.beta.val())?;
                    let mean = tensor_vec(bn.running_mean.value())?;
                    let var = tensor_vec(bn.running_var.value())?;
                    let per_out = weight.len() / bias.len();
                    for o in 0..bias.len() {
                        let scale = gamma[o] / (var[o] + bn.epsilon as f32).sqrt();
                        for w in &mut weight[o * per_out..(o + 1) * per_out] {
                            *w *= scale;
                        }
                        bias[o] = (bias[o] - mean[o]) * scale + beta[o];
                    }
                }
                Some(LayerWeights { weight, bias })
            }
            (
                Block::Linear(l),
                Layer::Linear {
                    in_features,
                    out_features,
                },
            ) => {
                let t = tensor_vec(l.weight.val())?; // [in, out]
                let (i_f, o_f) = (*in_features as usize, *out_features as usize);
                let mut weight = vec![0.0; i_f * o_f];
                for j in 0..i_f {
                    for o in 0..o_f {
                        weight[o * i_f + j] = t[j * o_f + o];
                    }
                }
                let bias = match &l.bias {
                    Some(b) => tensor_vec(b.val())?,
                    None => vec![0.0; o_f],
                };
                Some(LayerWeights { weight, bias })
            }
            _ => None,
        });
    }
    Ok(out)
}

pub(crate) fn model_tensors(model: &BurnModel) -> anyhow::Result<NamedTensors> {
    let mut v = Vec::new();
    for (i, b) in model.blocks.iter().enumerate() {
        match b {
            Block::Conv(c) => {
                v.push((
                    format!("{i}.conv.weight"),
                    c.conv.weight.shape().dims::<4>().to_vec(),
                    tensor_vec(c.conv.weight.val())?,
                ));
                if let Some(bias) = &c.conv.bias {
                    v.push((
                        format!("{i}.conv.bias"),
                        bias.shape().dims::<1>().to_vec(),
                        tensor_vec(bias.val())?,
                    ));
                }
                if let Some(bn) = &c.bn {
                    let n = vec![bn.gamma.shape().dims::<1>()[0]];
                    v.push((
                        format!("{i}.bn.gamma"),
                        n.clone(),
                        tensor_vec(bn.gamma.val())?,
                    ));
                    v.push((
                        format!("{i}.bn.beta"),
                        n.clone(),
                        tensor_vec(bn.beta.val())?,
                    ));
                    v.push((
                        format!("{i}.bn.mean"),
                        n.clone(),
                        tensor_vec(bn.running_mean.value())?,
                    ));
                    v.push((
                        format!("{i}.bn.var"),
                        n,
                        tensor_vec(bn.running_var.value())?,
                    ));
                }
            }
            Block::Linear(l) => {
                v.push((
                    format!("{i}.linear.weight"),
                    l.weight.shape().dims::<2>().to_vec(),
                    tensor_vec(l.weight.val())?,
                ));
                if let Some(bias) = &l.bias {
                    v.push((
                        format!("{i}.linear.bias"),
                        bias.shape().dims::<1>().to_vec(),
                        tensor_vec(bias.val())?,
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(v)
}

pub(crate) fn load_tensors(
    model: BurnModel,
    path: &Path,
    device: &Device,
) -> anyhow::Result<BurnModel> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("checkpoint {} is damaged", path.display()))?;
    let get = |name: String| -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
        let t = st
            .tensor(&name)
            .with_context(|| format!("checkpoint lacks {name}"))?;
        Ok((
            t.shape().to_vec(),
            t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ))
    };
    fn t4(s: Vec<usize>, d: Vec<f32>, dev: &Device) -> Tensor<4> {
        Tensor::from_data(TensorData::new(d, [s[0], s[1], s[2], s[3]]), dev)
    }
    fn t2(s: Vec<usize>, d: Vec<f32>, dev: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(d, [s[0], s[1]]), dev)
    }
    fn t1(s: Vec<usize>, d: Vec<f32>, dev: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(d, [s[0]]), dev)
    }
    let mut model = model;
    for (i, b) in model.blocks.iter_mut().enumerate() {
        match b {
            Block::Conv(c) => {
                let (s, d) = get(format!("{i}.conv.weight"))?;
                c.conv.weight = Param::from_tensor(t4(s, d, device));
                if c.conv.bias.is_some() {
                    let (s, d) = get(format!("{i}.conv.bias"))?;
                    c.conv.bias = Some(Param::from_tensor(t1(s, d, device)));
                }
                if let Some(bn) = &mut c.bn {
                    let (s, d) = get(format!("{i}.bn.gamma"))?;
                    bn.gamma = Param::from_tensor(t1(s, d, device));
                    let (s, d) = get(format!("{i}.bn.beta"))?;
                    bn.beta = Param::from_tensor(t1(s, d, device));
                    let (s, d) = get(format!("{i}.bn.mean"))?;
                    bn.running_mean = burn::module::RunningState::new(t1(s, d, device));
                    let (s, d) = get(format!("{i}.bn.var"))?;
                    bn.running_var = burn::module::RunningState::new(t1(s, d, device));
                }
            }
            Block::Linear(l) => {
                let (s, d) = get(format!("{i}.linear.weight"))?;
                l.weight = Param::from_tensor(t2(s, d, device));
                if l.bias.is_some() {
                    let (s, d) = get(format!("{i}.linear.bias"))?;
                    l.bias = Some(Param::from_tensor(t1(s, d, device)));
                }
            }
            _ => {}
        }
    }
    Ok(model)
}

/// The best (batch-norm) burn model of a run, from its checkpoint folder, in inference mode.
pub fn load_best(spec: &ModelSpec, out: &Path, device: &Device) -> anyhow::Result<BurnModel> {
    let model = load_tensors(
        BurnModel::init(spec, true, device)?,
        &checkpoint_dir(out).join("best.safetensors"),
        device,
    )?;
    Ok(model.valid())
}
