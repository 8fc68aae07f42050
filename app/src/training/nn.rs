//! burn modules built from a `kernels::ModelSpec`, so no architecture is written twice.
//!
//! [`BurnModel`] mirrors the spec layer for layer. Training adds a batch-norm after each conv
//! (folded back into the conv at export); inference from a `kernels::Model` has none.
//!
//! # Shapes
//! Input `[batch, channels, height, width]` (normalised as `kernels::reference::preprocess`
//! defines), logits `[batch, classes]`.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor, TensorData, activation};
use kernels::{GpuContext, Layer, ModelSpec};

/// A convolution, optionally followed by batch-norm (training only; folded at export).
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// The convolution.
    pub conv: Conv2d,
    /// Batch-norm after it, if the preset trains with one.
    pub bn: Option<BatchNorm>,
}

/// Global average pool: `[n, c, h, w]` → `[n, c, 1, 1]`.
#[derive(Module, Debug, Default)]
pub struct GlobalAvgPool;

/// Global max pool: `[n, c, h, w]` → `[n, c, 1, 1]`.
#[derive(Module, Debug, Default)]
pub struct GlobalMaxPool;

/// `Layer::Relu6`.
#[derive(Module, Debug, Default)]
pub struct Relu6;

/// `Layer::Add`: adds the output of an earlier layer.
#[derive(Module, Debug)]
pub struct Add {
    /// The earlier layer's index.
    #[module(skip)]
    pub from: usize,
}

/// `Layer::LocalFeatures`: per source layer, a padded k×k average at its stride; concatenated.
#[derive(Module, Debug)]
pub struct LocalFeatures {
    /// Source layer indices.
    #[module(skip)]
    pub from: Vec<usize>,
    /// One average pool per source.
    pub pools: Vec<AvgPool2d>,
}

/// `Layer::DefectMaxPool`: the class scores at the most defect-like position.
#[derive(Module, Debug)]
pub struct DefectMaxPool {
    /// Which classes are PASS.
    #[module(skip)]
    pub is_pass: Vec<bool>,
}

impl DefectMaxPool {
    /// Per-position margins `[n, h·w]` (largest FAIL score − largest PASS score) of a score map
    /// `[n, classes, h, w]`.
    pub fn margins(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, k, h, w] = x.dims();
        let flat = x.reshape([n, k, h * w]);
        let pick = |pass: bool| {
            let idx: Vec<i64> = (0..k)
                .filter(|&j| self.is_pass[j] == pass)
                .map(|j| j as i64)
                .collect();
            let len = idx.len();
            let idx = Tensor::<1, burn::tensor::Int>::from_data(
                TensorData::new(idx, [len]),
                &flat.device(),
            );
            flat.clone().select(1, idx).max_dim(1).reshape([n, h * w])
        };
        pick(false) - pick(true)
    }

    /// `[n, classes]`: the scores at each image's largest-margin position; `penalty` (`[n, h·w]`,
    /// 0 on valid positions, a large negative number on letterbox padding) keeps padding out.
    pub fn forward(&self, x: Tensor<4>, penalty: Option<Tensor<2>>) -> Tensor<2> {
        let [n, k, h, w] = x.dims();
        let mut margins = self.margins(x.clone());
        if let Some(p) = penalty {
            margins = margins + p;
        }
        let best = margins.argmax(1); // [n, 1]
        let flat = x.reshape([n, k, h * w]);
        let idx = best.reshape([n, 1, 1]).expand([n, k, 1]);
        flat.gather(2, idx).reshape([n, k])
    }
}

/// One layer of a [`BurnModel`], matching one `kernels::Layer`.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Block {
    /// `Layer::Conv2d`.
    Conv(ConvBlock),
    /// `Layer::Relu`.
    Relu(Relu),
    /// `Layer::Relu6`.
    Relu6(Relu6),
    /// `Layer::Add`.
    Add(Add),
    /// `Layer::LocalFeatures`.
    LocalFeatures(LocalFeatures),
    /// `Layer::DefectMaxPool`.
    DefectMaxPool(DefectMaxPool),
    /// `Layer::MaxPool2d`.
    MaxPool(MaxPool2d),
    /// `Layer::GlobalAvgPool`.
    GlobalAvgPool(GlobalAvgPool),
    /// `Layer::GlobalMaxPool`.
    GlobalMaxPool(GlobalMaxPool),
    /// `Layer::Linear`.
    Linear(Linear),
}

/// A CNN built from a [`ModelSpec`].
#[derive(Module, Debug)]
pub struct BurnModel {
    /// The layers, in spec order.
    pub blocks: Vec<Block>,
}

impl BurnModel {
    /// Freshly initialised layers for `spec`; `batch_norm` adds a batch-norm after every conv
    /// that a relu follows (a conv without one scores positions and keeps its raw scale).
    pub fn init(spec: &ModelSpec, batch_norm: bool, device: &Device) -> anyhow::Result<Self> {
        let plan = spec.validate()?;
        anyhow::ensure!(
            !spec.is_anomaly(),
            "{:?} is an anomaly model: its memory bank is built from features (train_anomaly), \
             not a burn network",
            spec.name
        );
        let blocks = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| match *l {
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    groups,
                    ..
                } => {
                    let [t, le, b, r] = l.conv_pads().map(|p| p as usize);
                    Block::Conv(ConvBlock {
                        conv: Conv2dConfig::new(
                            [in_channels as usize, out_channels as usize],
                            [kernel as usize; 2],
                        )
                        .with_stride([stride as usize; 2])
                        .with_groups(groups as usize)
                        .with_padding(PaddingConfig2d::Explicit(t, le, b, r))
                        .with_bias(true)
                        .init(device),
                        bn: (batch_norm
                            && matches!(spec.layers.get(i + 1), Some(Layer::Relu | Layer::Relu6)))
                        .then(|| BatchNormConfig::new(out_channels as usize).init(device)),
                    })
                }
                Layer::Relu => Block::Relu(Relu::new()),
                Layer::Relu6 => Block::Relu6(Relu6),
                Layer::Add { from } => Block::Add(Add { from }),
                Layer::LocalFeatures { ref from, kernel } => {
                    let target = plan.shapes[i + 1];
                    let r = (kernel / 2) as usize;
                    Block::LocalFeatures(LocalFeatures {
                        from: from.clone(),
                        pools: from
                            .iter()
                            .map(|&f| {
                                let st = kernels::local_stride(plan.shapes[f + 1], target) as usize;
                                AvgPool2dConfig::new([kernel as usize; 2])
                                    .with_strides([st; 2])
                                    .with_padding(PaddingConfig2d::Explicit(r, r, r, r))
                                    .with_count_include_pad(true)
                                    .init()
                            })
                            .collect(),
                    })
                }
                Layer::DefectMaxPool => Block::DefectMaxPool(DefectMaxPool {
                    is_pass: plan.is_pass.clone(),
                }),
                Layer::MaxPool2d { kernel, stride } => Block::MaxPool(
                    MaxPool2dConfig::new([kernel as usize; 2])
                        .with_strides([stride as usize; 2])
                        .init(),
                ),
                Layer::GlobalAvgPool => Block::GlobalAvgPool(GlobalAvgPool),
                Layer::GlobalMaxPool => Block::GlobalMaxPool(GlobalMaxPool),
                Layer::Linear {
                    in_features,
                    out_features,
                } => Block::Linear(
                    LinearConfig::new(in_features as usize, out_features as usize).init(device),
                ),
                Layer::MemoryBank { .. } => unreachable!("anomaly models are refused above"),
            })
            .collect();
        Ok(Self { blocks })
    }

    /// [`Self::init`] with weights drawn from a generator seeded by `seed` (He-uniform for
    /// convolutions, ±1/√fan-in for the classifier, zero biases), so the same seed gives the same
    /// network whatever else uses burn's global generator at the same time.
    pub fn init_seeded(
        spec: &ModelSpec,
        batch_norm: bool,
        device: &Device,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut m = Self::init(spec, batch_norm, device)?;
        let mut rng = kernels::rng::SplitMix64::new(seed ^ 0x005E_ED0F_1A7E);
        let mut uniform = |n: usize, bound: f32| -> Vec<f32> {
            (0..n).map(|_| rng.uniform(-bound, bound)).collect()
        };
        for block in &mut m.blocks {
            match block {
                Block::Conv(c) => {
                    let [o, i, kh, kw] = c.conv.weight.shape().dims();
                    let w = uniform(o * i * kh * kw, (6.0 / (i * kh * kw) as f32).sqrt());
                    c.conv.weight = Param::from_tensor(Tensor::from_data(
                        TensorData::new(w, [o, i, kh, kw]),
                        device,
                    ));
                    c.conv.bias = Some(Param::from_tensor(Tensor::zeros([o], device)));
                }
                Block::Linear(l) => {
                    let [i, o] = l.weight.shape().dims();
                    let w = uniform(i * o, 1.0 / (i as f32).sqrt());
                    l.weight =
                        Param::from_tensor(Tensor::from_data(TensorData::new(w, [i, o]), device));
                    l.bias = Some(Param::from_tensor(Tensor::zeros([o], device)));
                }
                _ => {}
            }
        }
        Ok(m)
    }

    /// The same network with the weights of a `kernels::Model` (no batch-norm).
    pub fn from_model(model: &kernels::Model, device: &Device) -> anyhow::Result<Self> {
        let mut m = Self::init(&model.spec, false, device)?;
        for (i, (block, w)) in m.blocks.iter_mut().zip(&model.weights).enumerate() {
            let layer = &model.spec.layers[i];
            match (block, w, layer) {
                (
                    Block::Conv(c),
                    Some(w),
                    Layer::Conv2d {
                        in_channels,
                        out_channels,
                        kernel,
                        groups,
                        ..
                    },
                ) => {
                    let shape = [
                        *out_channels as usize,
                        (*in_channels / *groups) as usize,
                        *kernel as usize,
                        *kernel as usize,
                    ];
                    c.conv.weight = Param::from_tensor(Tensor::from_data(
                        TensorData::new(w.weight.clone(), shape),
                        device,
                    ));
                    c.conv.bias = Some(Param::from_tensor(Tensor::from_data(
                        TensorData::new(w.bias.clone(), [w.bias.len()]),
                        device,
                    )));
                }
                (
                    Block::Linear(l),
                    Some(w),
                    Layer::Linear {
                        in_features,
                        out_features,
                    },
                ) => {
                    let (i_f, o_f) = (*in_features as usize, *out_features as usize);
                    // File layout is [out, in]; burn's Linear stores [in, out].
                    let mut t = vec![0.0; i_f * o_f];
                    for o in 0..o_f {
                        for j in 0..i_f {
                            t[j * o_f + o] = w.weight[o * i_f + j];
                        }
                    }
                    l.weight = Param::from_tensor(Tensor::from_data(
                        TensorData::new(t, [i_f, o_f]),
                        device,
                    ));
                    l.bias = Some(Param::from_tensor(Tensor::from_data(
                        TensorData::new(w.bias.clone(), [o_f]),
                        device,
                    )));
                }
                (_, None, _) => {}
                (_, Some(_), l) => {
                    anyhow::bail!("layer {i} ({}) has weights burn cannot place", l.kind())
                }
            }
        }
        Ok(m)
    }

    /// Logits `[n, classes]` for input `[n, c, h, w]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        self.forward_with_map(input).0
    }

    /// Logits `[n, classes]` and the feature map the global pool reads (`[n, c, h, w]`; the
    /// map that mask supervision trains when the model ends in a scoring conv + max pool).
    pub fn forward_with_map(&self, input: Tensor<4>) -> (Tensor<2>, Option<Tensor<4>>) {
        self.forward_in(input, None)
    }

    /// [`Self::forward_with_map`] for inputs whose images fill only the top-left `(width,
    /// height)` of the input (`Resize::Fit`, see `InputSpec::content_size`): a defect max pool
    /// then ignores the positions in the padding, as the engine does.
    pub fn forward_in(
        &self,
        input: Tensor<4>,
        content: Option<&[(u32, u32)]>,
    ) -> (Tensor<2>, Option<Tensor<4>>) {
        let [_, _, in_h, in_w] = input.dims();
        let mut x = input;
        let mut flat: Option<Tensor<2>> = None;
        let mut map: Option<Tensor<4>> = None;
        // Outputs later layers refer to (Add, LocalFeatures), by layer index.
        let mut kept: Vec<Option<Tensor<4>>> = vec![None; self.blocks.len()];
        let mut wanted = vec![false; self.blocks.len()];
        for block in &self.blocks {
            match block {
                Block::Add(a) => wanted[a.from] = true,
                Block::LocalFeatures(l) => l.from.iter().for_each(|&f| wanted[f] = true),
                _ => {}
            }
        }
        for (i, block) in self.blocks.iter().enumerate() {
            match block {
                Block::Conv(c) => {
                    x = c.conv.forward(x);
                    if let Some(bn) = &c.bn {
                        x = bn.forward(x);
                    }
                }
                Block::Relu(r) => x = r.forward(x),
                Block::Relu6(_) => x = burn::tensor::activation::relu6(x),
                Block::Add(a) => {
                    if let Some(y) = &kept[a.from] {
                        x = x + y.clone();
                    }
                }
                Block::LocalFeatures(l) => {
                    let parts: Vec<Tensor<4>> = l
                        .from
                        .iter()
                        .zip(&l.pools)
                        .filter_map(|(&f, pool)| kept[f].clone().map(|t| pool.forward(t)))
                        .collect();
                    x = Tensor::cat(parts, 1);
                }
                Block::DefectMaxPool(d) => {
                    let [n, _, h, w] = x.dims();
                    let penalty = content.map(|c| {
                        let mut p = vec![0f32; n * h * w];
                        for (i, &(cw, ch)) in c.iter().enumerate().take(n) {
                            let vw = kernels::valid_cells(cw, w as u32, in_w as u32) as usize;
                            let vh = kernels::valid_cells(ch, h as u32, in_h as u32) as usize;
                            for y in 0..h {
                                for xx in 0..w {
                                    if y >= vh || xx >= vw {
                                        p[(i * h + y) * w + xx] = -1e30;
                                    }
                                }
                            }
                        }
                        Tensor::<2>::from_data(TensorData::new(p, [n, h * w]), &x.device())
                    });
                    flat = Some(d.forward(x.clone(), penalty));
                    map = Some(x.clone());
                }
                Block::MaxPool(p) => x = p.forward(x),
                Block::GlobalAvgPool(_) => {
                    let [n, c, _, _] = x.dims();
                    flat = Some(x.clone().mean_dim(3).mean_dim(2).reshape([n, c]));
                    map = Some(x.clone());
                }
                Block::GlobalMaxPool(_) => {
                    let [n, c, h, w] = x.dims();
                    flat = Some(x.clone().reshape([n, c, h * w]).max_dim(2).reshape([n, c]));
                    map = Some(x.clone());
                }
                Block::Linear(l) => {
                    if let Some(f) = flat.take() {
                        flat = Some(l.forward(f));
                    }
                }
            }
            if wanted[i] {
                kept[i] = Some(x.clone());
            }
        }
        let logits = flat.unwrap_or_else(|| {
            let [n, c, h, w] = x.dims();
            x.reshape([n, c * h * w])
        });
        (logits, map)
    }
}

/// Hidden width of the per-position head.
pub const HIDDEN: u32 = 128;
/// The per-position head as burn trains it: rows of standardised features → class scores.
#[derive(Module, Debug)]
pub struct PositionHead {
    /// 232 → 128.
    pub hidden: Linear,
    /// 128 → classes.
    pub out: Linear,
}

impl PositionHead {
    /// Class scores `[rows, classes]` of feature rows `[rows, features]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(activation::relu(self.hidden.forward(x)))
    }

    /// Hidden units.
    pub fn hidden_width(&self) -> usize {
        self.hidden.weight.shape().dims::<2>()[1]
    }

    /// One head whose class scores are the mean of `members`' (an ensemble as one network, so
    /// the engine runs it as two 1×1 convolutions like any head): the hidden layers side by
    /// side, the output layers stacked and divided by their count, the output biases averaged.
    /// Exact, as ReLU acts on each hidden unit alone. `members` must not be empty.
    pub fn average(members: &[PositionHead]) -> anyhow::Result<PositionHead> {
        let first = members
            .first()
            .ok_or_else(|| anyhow::anyhow!("an ensemble needs at least one head"))?;
        let n = members.len() as f32;
        let device = first.hidden.weight.val().device();
        let bias = |l: &Linear| {
            l.bias
                .as_ref()
                .map(|b| b.val())
                .ok_or_else(|| anyhow::anyhow!("a head layer without bias"))
        };
        let mut hidden_b = Vec::new();
        let mut out_b: Option<Tensor<1>> = None;
        for m in members {
            hidden_b.push(bias(&m.hidden)?);
            let b = bias(&m.out)?;
            out_b = Some(match out_b {
                Some(sum) => sum + b,
                None => b,
            });
        }
        let hidden_w = Tensor::cat(members.iter().map(|m| m.hidden.weight.val()).collect(), 1);
        let out_w = Tensor::cat(members.iter().map(|m| m.out.weight.val()).collect(), 0) / n;
        let [features, width] = hidden_w.dims();
        let classes = out_w.dims()[1];
        let mut hidden = LinearConfig::new(features, width).init(&device);
        hidden.weight = Param::from_tensor(hidden_w);
        hidden.bias = Some(Param::from_tensor(Tensor::cat(hidden_b, 0)));
        let mut out = LinearConfig::new(width, classes).init(&device);
        out.weight = Param::from_tensor(out_w);
        out.bias = out_b.map(|b| Param::from_tensor(b / n));
        Ok(PositionHead { hidden, out })
    }
}

/// One wgpu device for burn and the `kernels` engine: burn acquires it (with the features its
/// compilers need, e.g. 64-bit integers) and hands the same handles out as a `GpuContext`.
/// `WGPU_BACKEND` (vulkan, metal, dx12, gl) pins the graphics API, as it does for the engine.
///
/// burn registers its runtime once per process, so the first device is kept and handed out
/// again to later callers (the app, then each training run).
pub fn shared_gpu() -> anyhow::Result<(Device, GpuContext)> {
    static SHARED: std::sync::Mutex<Option<(Device, GpuContext)>> = std::sync::Mutex::new(None);
    let mut shared = SHARED
        .lock()
        .map_err(|_| anyhow::anyhow!("the shared GPU device lock is poisoned"))?;
    if let Some(s) = shared.as_ref() {
        return Ok(s.clone());
    }
    let made = init_shared_gpu()?;
    *shared = Some(made.clone());
    Ok(made)
}

/// A device of its own for long GPU work beside the window: feature extraction, the final
/// evaluation, the Label tab's batch predictions. Made once, then handed out again.
///
/// Why: the window renders on [`shared_gpu`]'s queue, and a frame submitted behind GPU work
/// waits for it. On lavapipe, devices also share one compute thread pool that runs dispatches
/// first come, first served, so a frame queued behind the station's inference waits for every
/// extraction dispatch that inference waits for (1.5–4.5 s per click during extraction, issue
/// 24). Long work and the station ([`station_gpu`]) each get their own device; the window's
/// queue holds only the window's frames.
///
/// `INSPECTOR_ONE_DEVICE=1` keeps all work on [`shared_gpu`]'s device (a driver that allows one
/// device per process; and the comparison in `ui_label_train.rs`'s frame-time measurement).
pub fn background_gpu() -> anyhow::Result<GpuContext> {
    static BACKGROUND: std::sync::Mutex<Option<GpuContext>> = std::sync::Mutex::new(None);
    own_device(&BACKGROUND)
}

/// The device the app's station inspects on: its own, apart from the window's and from long
/// work's (see [`background_gpu`]).
pub fn station_gpu() -> anyhow::Result<GpuContext> {
    static STATION: std::sync::Mutex<Option<GpuContext>> = std::sync::Mutex::new(None);
    own_device(&STATION)
}

fn own_device(slot: &std::sync::Mutex<Option<GpuContext>>) -> anyhow::Result<GpuContext> {
    if std::env::var_os("INSPECTOR_ONE_DEVICE").is_some_and(|v| v == "1") {
        return shared_gpu().map(|(_, g)| g);
    }
    let mut slot = slot
        .lock()
        .map_err(|_| anyhow::anyhow!("a GPU device lock is poisoned"))?;
    if let Some(g) = slot.as_ref() {
        return Ok(g.clone());
    }
    let made = GpuContext::headless()?;
    *slot = Some(made.clone());
    Ok(made)
}

fn init_shared_gpu() -> anyhow::Result<(Device, GpuContext)> {
    use burn::tensor::wgpu::WgpuBackend;
    let mut options = Device::wgpu_options();
    let api = match std::env::var("WGPU_BACKEND")
        .unwrap_or_default()
        .to_lowercase()
        .as_str()
    {
        "vulkan" => Some(WgpuBackend::Vulkan),
        "metal" => Some(WgpuBackend::Metal),
        "dx12" => Some(WgpuBackend::Dx12),
        "gl" | "opengl" => Some(WgpuBackend::Gl),
        _ => None,
    };
    if let Some(api) = api {
        options = options.graphics_api(api);
    }
    let (device, setup) = options.init_with_setup().map_err(|e| {
        anyhow::anyhow!(
            "no usable GPU adapter ({e}). On a machine without a GPU install Mesa's Vulkan driver: \
             `apt-get install mesa-vulkan-drivers`"
        )
    })?;
    let gpu = GpuContext {
        instance: setup.instance,
        adapter: setup.adapter,
        device: setup.device,
        queue: setup.queue,
    };
    Ok((device, gpu))
}
