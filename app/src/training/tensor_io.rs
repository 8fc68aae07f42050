//! Tensors in and out of burn and safetensors files, for both trainers' checkpoints.

use std::path::Path;

use anyhow::Context as _;
use burn::tensor::Tensor;

pub(crate) fn tensor_vec<const D: usize>(t: Tensor<D>) -> anyhow::Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a tensor: {e:?}"))
}

/// All parameters and batch-norm statistics of `model` by stable name (for checkpoints).
/// Named tensors: (name, shape, values).
pub(crate) type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Writes named tensors as a safetensors file, atomically.
pub(crate) fn save_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> anyhow::Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                s.clone(),
                d.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let data = safetensors::serialize(views, None)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing checkpoint {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("writing checkpoint {}", path.display()))?;
    Ok(())
}

/// Reads the tensor `name` of a safetensors file written by [`save_tensors`]: (shape, values).
pub(crate) fn read_tensor(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .with_context(|| format!("checkpoint lacks {name}"))?;
    Ok((
        t.shape().to_vec(),
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    ))
}
