//! The model file: one `.safetensors` file holding the weights plus the [`ModelSpec`] as JSON
//! in the metadata key `model_spec`.
//!
//! Tensor names are stable: `layers.{i}.weight` and `layers.{i}.bias` for every layer `i` with
//! parameters, f32, little-endian, PyTorch layouts (`[out, in, k, k]` for conv, `[out, in]` for
//! linear). Python's `safetensors` opens these files.
//!
//! Loading trusts nothing: the container is parsed by the `safetensors` crate (which bounds the
//! header by the file length), the spec is validated, and every tensor is checked for presence,
//! dtype, shape and finiteness before anything is allocated from the spec's numbers.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::ModelError;
use crate::spec::{Layer, ModelSpec, Plan};

/// The metadata key that holds the spec JSON.
pub const SPEC_METADATA_KEY: &str = "model_spec";
/// The largest model file accepted (1 GiB + header room); matches `limits::MAX_PARAMETERS`.
pub const MAX_FILE_BYTES: u64 = (1 << 30) + (1 << 24);

/// Weights of one layer with parameters, in the file's (PyTorch) layout.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// `[out, in, k, k]` for conv, `[out, in]` for linear, row-major.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

/// A validated model: spec, plan and weights.
#[derive(Clone, Debug)]
pub struct Model {
    /// The description.
    pub spec: ModelSpec,
    /// Shapes derived from the spec.
    pub plan: Plan,
    /// One entry per layer; `Some` for layers with parameters.
    pub weights: Vec<Option<LayerWeights>>,
}

impl Model {
    /// Builds a model from a spec and weights, validating both.
    pub fn new(spec: ModelSpec, weights: Vec<Option<LayerWeights>>) -> Result<Self, ModelError> {
        let plan = spec.validate()?;
        if weights.len() != spec.layers.len() {
            return Err(ModelError::SpecJson(format!(
                "{} weight entries for {} layers",
                weights.len(),
                spec.layers.len()
            )));
        }
        for (i, (layer, w)) in spec.layers.iter().zip(&weights).enumerate() {
            let kind = layer.kind();
            match (layer.parameter_shapes(), w) {
                (None, None) => {}
                (None, Some(_)) => {
                    return Err(ModelError::UnexpectedTensor(format!("layers.{i}.weight")));
                }
                (Some(_), None) => {
                    return Err(ModelError::MissingTensor {
                        layer: i,
                        kind,
                        name: format!("layers.{i}.weight"),
                    });
                }
                (Some((ws, bs)), Some(lw)) => {
                    let wn: usize = ws.iter().product();
                    for (name, got, want) in
                        [("weight", lw.weight.len(), wn), ("bias", lw.bias.len(), bs)]
                    {
                        if got != want {
                            return Err(ModelError::BadTensor {
                                layer: i,
                                kind,
                                name: format!("layers.{i}.{name}"),
                                expected: format!("{want} values"),
                                found: format!("{got} values"),
                            });
                        }
                    }
                    if lw.weight.iter().chain(&lw.bias).any(|v| !v.is_finite()) {
                        return Err(ModelError::NonFinite {
                            layer: i,
                            kind,
                            name: format!("layers.{i}"),
                        });
                    }
                    if matches!(layer, Layer::MemoryBank { .. }) && lw.bias[1] <= 0.0 {
                        return Err(ModelError::BadTensor {
                            layer: i,
                            kind,
                            name: format!("layers.{i}.bias"),
                            expected: "a score scale > 0 in [center, scale]".into(),
                            found: format!("scale {}", lw.bias[1]),
                        });
                    }
                }
            }
        }
        Ok(Self {
            spec,
            plan,
            weights,
        })
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let spec_json =
            serde_json::to_string(&self.spec).map_err(|e| ModelError::SpecJson(e.to_string()))?;
        let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, (layer, w)) in self.spec.layers.iter().zip(&self.weights).enumerate() {
            let (Some(shape), Some(w)) = (layer.weight_file_shape(), w) else {
                continue;
            };
            raw.push((format!("layers.{i}.weight"), shape, f32_to_le(&w.weight)));
            raw.push((
                format!("layers.{i}.bias"),
                vec![w.bias.len()],
                f32_to_le(&w.bias),
            ));
        }
        let views = raw
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| ModelError::Container(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let meta = HashMap::from([(SPEC_METADATA_KEY.to_owned(), spec_json)]);
        safetensors::serialize(views, Some(meta)).map_err(|e| ModelError::Container(e.to_string()))
    }

    /// Writes the model atomically (temporary file in the same folder, then rename).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_bytes()?;
        let io = |source| ModelError::Io {
            action: "write",
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let io = |source| ModelError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_FILE_BYTES {
            return Err(ModelError::TooLarge {
                size,
                limit: MAX_FILE_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_bytes(&bytes)
    }

    /// Parses and validates safetensors bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(ModelError::TooLarge {
                size: bytes.len() as u64,
                limit: MAX_FILE_BYTES,
            });
        }
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| ModelError::Container(e.to_string()))?;
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| ModelError::Container(e.to_string()))?;
        let spec_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(SPEC_METADATA_KEY))
            .ok_or(ModelError::MissingSpec)?;
        let spec: ModelSpec =
            serde_json::from_str(spec_json).map_err(|e| newer_or_bad(spec_json, e))?;
        spec.validate()?;

        let mut expected_names = Vec::new();
        let mut weights = Vec::with_capacity(spec.layers.len());
        for (i, layer) in spec.layers.iter().enumerate() {
            let (Some(wshape), Some((_, bias_len))) =
                (layer.weight_file_shape(), layer.parameter_shapes())
            else {
                weights.push(None);
                continue;
            };
            let weight = read_tensor(&st, i, layer, "weight", &wshape)?;
            let bias = read_tensor(&st, i, layer, "bias", &[bias_len])?;
            expected_names.push(format!("layers.{i}.weight"));
            expected_names.push(format!("layers.{i}.bias"));
            weights.push(Some(LayerWeights { weight, bias }));
        }
        if let Some(extra) = st
            .names()
            .into_iter()
            .find(|n| !expected_names.iter().any(|e| e == n))
        {
            return Err(ModelError::UnexpectedTensor(extra.to_owned()));
        }
        Self::new(spec, weights)
    }

    /// A model with He-uniform random weights and small random biases, for tests and benchmarks.
    pub fn random(spec: ModelSpec, seed: u64) -> Result<Self, ModelError> {
        spec.validate()?;
        let mut rng = crate::rng::SplitMix64::new(seed);
        let weights = spec
            .layers
            .iter()
            .map(|layer| {
                let (wshape, bias_len) = layer.parameter_shapes()?;
                if matches!(layer, Layer::MemoryBank { .. }) {
                    let n: usize = wshape.iter().product();
                    return Some(LayerWeights {
                        weight: (0..n).map(|_| rng.uniform(0.0, 2.0)).collect(),
                        bias: vec![rng.uniform(0.5, 1.5), rng.uniform(0.5, 2.0)],
                    });
                }
                let fan_in = (wshape[1] * wshape[2] * wshape[3]) as f32;
                let bound = (6.0 / fan_in).sqrt();
                let n: usize = wshape.iter().product();
                Some(LayerWeights {
                    weight: (0..n).map(|_| rng.uniform(-bound, bound)).collect(),
                    bias: (0..bias_len).map(|_| rng.uniform(-0.1, 0.1)).collect(),
                })
            })
            .collect();
        Self::new(spec, weights)
    }

    /// Total number of parameters.
    pub fn parameter_count(&self) -> u64 {
        self.plan.parameters
    }
}

fn read_tensor(
    st: &SafeTensors<'_>,
    layer_index: usize,
    layer: &Layer,
    part: &str,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    let name = format!("layers.{layer_index}.{part}");
    let kind = layer.kind();
    let view = st.tensor(&name).map_err(|_| ModelError::MissingTensor {
        layer: layer_index,
        kind,
        name: name.clone(),
    })?;
    if view.dtype() != Dtype::F32 || view.shape() != shape {
        return Err(ModelError::BadTensor {
            layer: layer_index,
            kind,
            name,
            expected: format!("F32 {shape:?}"),
            found: format!("{:?} {:?}", view.dtype(), view.shape()),
        });
    }
    let data = view.data();
    let n: usize = shape.iter().product();
    if data.len() != n * 4 {
        return Err(ModelError::BadTensor {
            layer: layer_index,
            kind,
            name,
            expected: format!("{} bytes", n * 4),
            found: format!("{} bytes", data.len()),
        });
    }
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::NonFinite {
            layer: layer_index,
            kind,
            name,
        });
    }
    Ok(values)
}

/// The error for spec JSON that does not parse: a clear "newer app" message when the file says
/// it is a newer format version or names a layer kind this build does not know.
fn newer_or_bad(json: &str, e: serde_json::Error) -> ModelError {
    let raw: Option<serde_json::Value> = serde_json::from_str(json).ok();
    let version = raw
        .as_ref()
        .and_then(|v| v.get("version"))
        .and_then(|v| v.as_u64());
    if let Some(v) = version.filter(|&v| v > crate::FORMAT_VERSION as u64) {
        return ModelError::SpecJson(format!(
            "model format version {v} is newer than this build reads (1 to {}): a newer Defect \
             Inspector wrote it — update the app to open it ({e})",
            crate::FORMAT_VERSION
        ));
    }
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let kind = rest.split('`').next().unwrap_or(rest);
        return ModelError::SpecJson(format!(
            "the model uses a layer kind this build does not know ({kind:?}): a newer Defect \
             Inspector wrote it — update the app to open it"
        ));
    }
    ModelError::SpecJson(msg)
}

fn f32_to_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
