//! Building an [`Engine`]: the layer list walked once into activations (with the borders their
//! consumers need), packed weights, parameter buffers and dispatch steps, then the bind groups.
//! One function on purpose: every layer arm reads and extends the same running state (the
//! activations so far, which layer's output lives where, the head's buffers), and splitting it
//! would pass that state through a dozen signatures. That is why this file runs past 800 lines
//! (about 870): the walk is one piece, read top to bottom beside `spec::Layer`.

use super::step::{Bind, Buffers, Params, Step, bank_slices};
use super::{Act, Engine, init_storage, storage};
use crate::error::EngineError;
use crate::model::Model;
use crate::ops::{self, Kernels};
use crate::spec::{Layer, Resize};

impl Engine {
    pub(super) fn build(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        model: &Model,
        max_batch: u32,
        adapter_label: String,
        config: ops::tuning::KernelConfig,
    ) -> Result<Self, EngineError> {
        let plan = model.spec.validate()?;
        let max_batch = max_batch.max(1);
        let limits = device.limits();
        let limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let spec = model.spec.clone();
        let kernels = Kernels::new(device, config);
        let layers = &spec.layers;
        let uniform = |label: &str, params: &Params| {
            use wgpu::util::DeviceExt as _;
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: params.bytes(),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
        };
        // The border an activation needs: the largest padding of its consumer, if that is a
        // conv (in-place layers in between don't consume).
        let border_before = |from: usize| -> u32 {
            match layers[from..].iter().find(|l| !l.in_place()) {
                Some(l @ Layer::Conv2d { .. }) => l.conv_pads().into_iter().max().unwrap_or(0),
                _ => 0,
            }
        };
        let new_act =
            |label: String, c: u32, h: u32, w: u32, border: u32| -> Result<Act, EngineError> {
                let c4 = c.div_ceil(4);
                let per_image = (h + 2 * border) as u64 * (w + 2 * border) as u64 * c4 as u64 * 16;
                let buffer = storage(device, &label, per_image * max_batch as u64, limit)?;
                Ok(Act {
                    c4,
                    h,
                    w,
                    border,
                    buffer,
                })
            };

        // The classifier's logits (one f32 per image and class).
        let logits_for = |classes: u32| {
            storage(
                device,
                "kernels::logits",
                max_batch as u64 * classes as u64 * 4,
                limit,
            )
        };
        let mut acts = Vec::new();
        let mut steps: Vec<Step> = Vec::new();
        let inp = &spec.input;
        acts.push(new_act(
            "kernels::act::input".into(),
            inp.channels,
            inp.height,
            inp.width,
            border_before(0),
        )?);
        let frames = storage(
            device,
            "kernels::frames",
            (max_batch as u64) * std::mem::size_of::<ops::preprocess::FrameDesc>() as u64,
            limit,
        )?;
        let pixels = storage(device, "kernels::pixels", 1 << 16, limit)?;
        let content = storage(device, "kernels::content", max_batch as u64 * 8, limit)?;
        let mut mean = [0.0; 4];
        let mut inv_std = [0.0; 4];
        for c in 0..inp.channels as usize {
            mean[c] = inp.mean[c];
            inv_std[c] = 1.0 / inp.std[c];
        }
        let pre = Params::Preprocess(ops::preprocess::Params {
            out_w: inp.width,
            out_h: inp.height,
            out_border: acts[0].border,
            channels: inp.channels,
            batch: max_batch,
            fit: (inp.resize == Resize::Fit) as u32,
            _pad: [0; 2],
            mean,
            inv_std,
        });
        steps.push(Step {
            label: "preprocess".into(),
            uniform: uniform("kernels::preprocess::params", &pre),
            params: pre,
            binds: vec![Bind::Frames, Bind::Pixels, Bind::Act(0), Bind::Content],
            bind_group: None,
        });

        let classes = spec.classes.len() as u32;
        let mut weight_buffers: Vec<wgpu::Buffer> = Vec::new();
        let mut add_weights = |device: &wgpu::Device, label: String, data: &[f32]| {
            weight_buffers.push(init_storage(device, &label, data));
            weight_buffers.len() - 1
        };
        // layer_act[i]: the activation holding layer i's output (in-place layers share one).
        let mut layer_act: Vec<usize> = Vec::with_capacity(layers.len());
        let mut features: Option<wgpu::Buffer> = None;
        let mut logits: Option<wgpu::Buffer> = None;
        let mut linear_weights: Option<usize> = None;
        let mut heat_features: Option<usize> = None;
        let mut defect_pool = false;
        // The scratch buffer: the memory bank's partial minima and the split-K slices (never
        // live at once: every dispatch runs after the one before it).
        let mut scratch_bytes: u64 = 16;
        let mut bank_sel: Option<wgpu::Buffer> = None;
        let mut bank_cand: Option<wgpu::Buffer> = None;
        let mut bank_head = false;
        for (i, layer) in layers.iter().enumerate() {
            let cur = layer_act.last().copied().unwrap_or(0);
            let out_shape = plan.shapes[i + 1];
            let label = format!("{}{i}", layer.kind());
            match *layer {
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    groups,
                    ..
                } => {
                    let act = match layers.get(i + 1) {
                        Some(Layer::Relu) => 1,
                        Some(Layer::Relu6) => 2,
                        _ => 0,
                    };
                    // A 1×1, stride-1, unpadded convolution runs as a GEMM where the adapter
                    // table says so; the residual add right after it fuses into its epilogue.
                    let gemm = match kernels.config.pointwise {
                        ops::tuning::Pointwise::Gemm(t)
                            if kernel == 1
                                && stride == 1
                                && groups == 1
                                && layer.conv_pads() == [0; 4] =>
                        {
                            Some(t)
                        }
                        _ => None,
                    };
                    // The residual add right after a dense 1×1 convolution fuses into its
                    // epilogue (GEMM or direct kernel).
                    let fuse_add = match layers.get(i + 1) {
                        Some(&Layer::Add { from }) if kernel == 1 && groups == 1 => Some(from),
                        _ => None,
                    };
                    let mut splits_somewhere = false;
                    let out = new_act(
                        format!("kernels::act::{i}"),
                        out_channels,
                        out_shape.h,
                        out_shape.w,
                        border_before(i + 1),
                    )?;
                    let Some(w) = &model.weights[i] else {
                        unreachable!("validated model")
                    };
                    let [pt, pl, _, _] = layer.conv_pads();
                    let src = &acts[cur];
                    let (off_y, off_x) = (src.border - pt, src.border - pl);
                    let (params, wi, bi) = if groups > 1 {
                        let packed = ops::depthwise::pack_weights(
                            &w.weight,
                            out_channels as usize,
                            kernel as usize,
                        );
                        let mut bias = w.bias.clone();
                        bias.resize(out.c4 as usize * 4, 0.0);
                        let wi = add_weights(device, format!("kernels::{label}::weights"), &packed);
                        let bi = add_weights(device, format!("kernels::{label}::bias"), &bias);
                        let p = Params::Depthwise(ops::depthwise::Params {
                            batch: max_batch,
                            in_h: src.h,
                            in_w: src.w,
                            c4: src.c4,
                            out_h: out.h,
                            out_w: out.w,
                            out_border: out.border,
                            kernel,
                            stride,
                            in_border: src.border,
                            off_y,
                            off_x,
                            act,
                            x_groups: out.w.div_ceil(kernels.depthwise_px),
                            _pad: [0; 2],
                        });
                        (p, wi, bi)
                    } else {
                        // Dense: the direct kernel or (1×1 on a GPU) the GEMM; one weight
                        // layout, padded to the chosen kernel's output tile.
                        let padded = match gemm {
                            Some(t) => t.padded_out_channels(out_channels as usize),
                            None if kernel == 1 => kernels
                                .pointwise_tile
                                .padded_out_channels(out_channels as usize),
                            None => kernels.conv_tile.padded_out_channels(out_channels as usize),
                        };
                        let packed = ops::conv2d::pack_weights(
                            &w.weight,
                            out_channels as usize,
                            in_channels as usize,
                            kernel as usize,
                            padded,
                        );
                        let mut bias = w.bias.clone();
                        bias.resize(padded, 0.0);
                        let wi = add_weights(device, format!("kernels::{label}::weights"), &packed);
                        let bi = add_weights(device, format!("kernels::{label}::bias"), &bias);
                        if let Some(t) = gemm {
                            let res_border = fuse_add.map_or(0, |f| acts[layer_act[f]].border);
                            let mut gp = ops::pointwise_gemm::Params {
                                batch: max_batch,
                                h: out.h,
                                w: out.w,
                                in_c4: src.c4,
                                out_c4: out.c4,
                                in_border: src.border,
                                out_border: out.border,
                                act,
                                res: fuse_add.is_some() as u32,
                                res_border,
                                splits: 1,
                                k_chunk: src.c4,
                            };
                            // Split-K: the slices of every call size fit the scratch buffer; a
                            // reduce step follows where some call size splits.
                            // (Single frames may run another tile: `KernelConfig::gemm_tile`.)
                            let (k, config) = (kernels.config.split_k, &kernels.config);
                            let tile = |n| config.gemm_tile(n).unwrap_or(t);
                            for n in 1..=max_batch {
                                gp.batch = n;
                                let part = k.partial_vec4s(&gp, tile(n));
                                scratch_bytes = scratch_bytes.max(16 * part);
                                splits_somewhere |= part > 0;
                            }
                            (gp.splits, gp.k_chunk) = k.choose(&gp, tile(max_batch));
                            (Params::Gemm(gp), wi, bi)
                        } else {
                            let tile = if kernel == 1 {
                                kernels.pointwise_tile
                            } else {
                                kernels.conv_tile
                            };
                            let cp = ops::conv2d::Params {
                                batch: max_batch,
                                in_h: src.h,
                                in_w: src.w,
                                in_c4: src.c4,
                                out_h: out.h,
                                out_w: out.w,
                                out_c4: out.c4,
                                out_border: out.border,
                                kernel,
                                stride,
                                in_border: src.border,
                                act,
                                x_groups: out.w.div_ceil(tile.px),
                                off_y,
                                off_x,
                                res: fuse_add.is_some() as u32,
                                res_border: fuse_add.map_or(0, |f| acts[layer_act[f]].border),
                                _pad: [0; 3],
                            };
                            let p = if kernel == 1 {
                                Params::Pointwise(cp)
                            } else {
                                Params::Conv(cp)
                            };
                            (p, wi, bi)
                        }
                    };
                    acts.push(out);
                    let mut binds = vec![
                        Bind::Act(cur),
                        Bind::Weights(wi),
                        Bind::Weights(bi),
                        Bind::Act(acts.len() - 1),
                    ];
                    // The residual (or, unfused, the input again: never read).
                    let res = Bind::Act(fuse_add.map_or(cur, |f| layer_act[f]));
                    if !matches!(params, Params::Depthwise(_)) {
                        binds.push(res);
                    }
                    let reduce = match params {
                        Params::Gemm(p) => {
                            binds.push(Bind::Scratch);
                            splits_somewhere.then(|| Step {
                                uniform: uniform(&format!("kernels::{label}.sum::params"), &params),
                                label: format!("{label}.sum"),
                                params: Params::GemmReduce(p),
                                binds: vec![Bind::Scratch, Bind::Act(acts.len() - 1), res],
                                bind_group: None,
                            })
                        }
                        _ => None,
                    };
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}::params"), &params),
                        label,
                        params,
                        binds,
                        bind_group: None,
                    });
                    steps.extend(reduce);
                    layer_act.push(acts.len() - 1);
                }
                Layer::Relu | Layer::Relu6 => {
                    let fused = i > 0 && matches!(layers[i - 1], Layer::Conv2d { .. });
                    if !fused {
                        let rp = ops::relu::Params {
                            len: 0,
                            _pad: [0; 3],
                        };
                        let per_image = acts[cur].vec4s_per_image() as u32;
                        let params = if matches!(layer, Layer::Relu) {
                            Params::Relu { p: rp, per_image }
                        } else {
                            Params::Relu6 { p: rp, per_image }
                        };
                        steps.push(Step {
                            uniform: uniform(&format!("kernels::{label}::params"), &params),
                            label,
                            params,
                            binds: vec![Bind::Act(cur)],
                            bind_group: None,
                        });
                    }
                    layer_act.push(cur);
                }
                Layer::Add { .. }
                    if steps.last().is_some_and(|s| match s.params {
                        Params::Gemm(p) | Params::GemmReduce(p) => p.res == 1,
                        Params::Pointwise(p) => p.res == 1,
                        _ => false,
                    }) =>
                {
                    // Fused into the epilogue of the 1×1 convolution before it.
                    layer_act.push(cur);
                }
                Layer::Add { from } => {
                    let src = layer_act[from];
                    let (d, s) = (&acts[cur], &acts[src]);
                    let params = Params::Add(ops::add::Params {
                        batch: max_batch,
                        h: d.h,
                        w: d.w,
                        c4: d.c4,
                        dst_border: d.border,
                        src_border: s.border,
                        _pad: [0; 2],
                    });
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}::params"), &params),
                        label,
                        params,
                        binds: vec![Bind::Act(src), Bind::Act(cur)],
                        bind_group: None,
                    });
                    layer_act.push(cur);
                }
                Layer::LocalFeatures { ref from, kernel } => {
                    let out = new_act(
                        format!("kernels::act::{i}"),
                        out_shape.c,
                        out_shape.h,
                        out_shape.w,
                        border_before(i + 1),
                    )?;
                    let dst = acts.len();
                    // Up to four sources per dispatch (one for the usual three stages).
                    let mut c_offset = 0;
                    let max = ops::local_features::MAX_SOURCES;
                    for (j, chunk) in from.chunks(max).enumerate() {
                        let mut src = [ops::local_features::Source::default(); 4];
                        let mut total4 = 0;
                        let mut binds = Vec::with_capacity(max + 1);
                        for (q, &f) in src.iter_mut().zip(chunk) {
                            let sa = layer_act[f];
                            let s = &acts[sa];
                            let c = plan.shapes[f + 1].c;
                            *q = ops::local_features::Source {
                                h: s.h,
                                w: s.w,
                                c4: s.c4,
                                border: s.border,
                                c,
                                stride: crate::spec::local_stride(plan.shapes[f + 1], out_shape),
                                c_offset,
                                first4: total4,
                            };
                            c_offset += c;
                            total4 += s.c4;
                            binds.push(Bind::Act(sa));
                        }
                        // Unused source bindings repeat the first (never read).
                        while binds.len() < max {
                            binds.push(binds[0]);
                        }
                        binds.push(Bind::Act(dst));
                        let params = Params::LocalFeatures(ops::local_features::Params {
                            batch: max_batch,
                            kernel,
                            dst_h: out.h,
                            dst_w: out.w,
                            dst_c4: out.c4,
                            dst_border: out.border,
                            sources: chunk.len() as u32,
                            total4,
                            src,
                        });
                        let label = if from.len() > max {
                            format!("{label}.{j}")
                        } else {
                            label.clone()
                        };
                        steps.push(Step {
                            uniform: uniform(&format!("kernels::{label}::params"), &params),
                            label,
                            params,
                            binds,
                            bind_group: None,
                        });
                    }
                    acts.push(out);
                    layer_act.push(dst);
                }
                Layer::MaxPool2d { kernel, stride } => {
                    let out = new_act(
                        format!("kernels::act::{i}"),
                        out_shape.c,
                        out_shape.h,
                        out_shape.w,
                        border_before(i + 1),
                    )?;
                    let params = Params::MaxPool(ops::max_pool::Params {
                        batch: max_batch,
                        in_h: acts[cur].h,
                        in_w: acts[cur].w,
                        c4: acts[cur].c4,
                        out_h: out.h,
                        out_w: out.w,
                        out_border: out.border,
                        kernel,
                        stride,
                        _pad: [0; 3],
                    });
                    acts.push(out);
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}::params"), &params),
                        label,
                        params,
                        binds: vec![Bind::Act(cur), Bind::Act(acts.len() - 1)],
                        bind_group: None,
                    });
                    layer_act.push(acts.len() - 1);
                }
                Layer::GlobalAvgPool | Layer::GlobalMaxPool | Layer::DefectMaxPool => {
                    let a = &acts[cur];
                    // The pooled features the linear reads (a placeholder for the defect max
                    // pool, which runs its classifier itself).
                    let pooled = match layer {
                        Layer::DefectMaxPool => 1,
                        _ => max_batch as u64 * a.c4 as u64,
                    };
                    features = Some(storage(device, "kernels::features", pooled * 16, limit)?);
                    heat_features = Some(cur);
                    let gp = ops::global_pool::Params {
                        batch: max_batch,
                        h: a.h,
                        w: a.w,
                        c4: a.c4,
                    };
                    let (params, binds) = match layer {
                        Layer::GlobalMaxPool => (
                            Params::GlobalMaxPool(gp),
                            vec![Bind::Act(cur), Bind::Features],
                        ),
                        Layer::GlobalAvgPool => (
                            Params::GlobalAvgPool(gp),
                            vec![Bind::Act(cur), Bind::Features],
                        ),
                        _ => {
                            // The linear classifier that follows (validated: the last layer)
                            // and the softmax run in the pool's epilogue: one dispatch.
                            defect_pool = true;
                            let (
                                Some(Layer::Linear {
                                    in_features,
                                    out_features,
                                }),
                                Some(Some(lw)),
                            ) = (layers.get(i + 1), model.weights.get(i + 1))
                            else {
                                unreachable!("validated model: a linear follows the pool")
                            };
                            debug_assert_eq!(*out_features, classes, "validated: one per class");
                            let packed = ops::linear::pack_weights(
                                &lw.weight,
                                *out_features as usize,
                                *in_features as usize,
                            );
                            let wi =
                                add_weights(device, "kernels::linear::weights".into(), &packed);
                            let bi = add_weights(device, "kernels::linear::bias".into(), &lw.bias);
                            linear_weights = Some(wi);
                            (
                                Params::DefectPool(ops::defect_pool::Params {
                                    batch: max_batch,
                                    h: a.h,
                                    w: a.w,
                                    c4: a.c4,
                                    classes,
                                    in_w: inp.width,
                                    in_h: inp.height,
                                    heat_offset: max_batch * classes,
                                    in4: in_features.div_ceil(4),
                                    _pad: [0; 3],
                                }),
                                vec![
                                    Bind::Act(cur),
                                    Bind::IsPass,
                                    Bind::Content,
                                    Bind::Output,
                                    Bind::HeatClass,
                                    Bind::Weights(wi),
                                    Bind::Weights(bi),
                                ],
                            )
                        }
                    };
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}::params"), &params),
                        label,
                        params,
                        binds,
                        bind_group: None,
                    });
                    layer_act.push(cur);
                }
                Layer::MemoryBank {
                    entries,
                    features: nf,
                    neighbors,
                } => {
                    let Some(w) = &model.weights[i] else {
                        unreachable!("validated model")
                    };
                    let a = &acts[cur];
                    debug_assert_eq!(a.border, 0, "a memory bank's input has no border");
                    let hw = a.h * a.w;
                    let packed = ops::bank::pack_bank(&w.weight, entries as usize, nf as usize);
                    let bank_bytes = packed.len() as u64 * 4;
                    if bank_bytes > limit {
                        return Err(EngineError::TooLargeForDevice {
                            what: format!("the memory bank ({entries} entries × {nf} features)"),
                            bytes: bank_bytes,
                            limit,
                        });
                    }
                    let wi = add_weights(device, format!("kernels::{label}::bank"), &packed);
                    let bi = add_weights(device, format!("kernels::{label}::calibration"), &w.bias);
                    let split = kernels.config.bank;
                    let (slices, slice_len, scan) = bank_slices(split, entries, max_batch * hw);
                    // The partial buffer holds every call size's slices (fewer images: more).
                    let partial_len = (1..=max_batch)
                        .map(|n| {
                            n as u64 * hw as u64 * bank_slices(split, entries, n * hw).0 as u64
                        })
                        .max()
                        .unwrap_or(1);
                    scratch_bytes = scratch_bytes.max(partial_len * 8);
                    let groups = split.support_groups(entries);
                    bank_sel = Some(storage(
                        device,
                        "kernels::bank_select",
                        max_batch as u64 * 16,
                        limit,
                    )?);
                    bank_cand = Some(storage(
                        device,
                        "kernels::bank_support",
                        max_batch as u64 * groups as u64 * ops::bank::SUPPORT_K as u64 * 8,
                        limit,
                    )?);
                    features = Some(storage(device, "kernels::features", 16, limit)?);
                    logits = Some(logits_for(classes)?);
                    heat_features = Some(cur);
                    linear_weights = Some(wi);
                    // No CAM: the heatmap is the score map; softmax picks the anomaly class.
                    defect_pool = true;
                    bank_head = true;
                    let dist = Params::BankDistance {
                        p: ops::bank::DistanceParams {
                            positions: max_batch * hw,
                            c4: a.c4,
                            entries,
                            slice_len,
                            slices,
                            h: a.h,
                            w: a.w,
                            in_w: inp.width,
                            in_h: inp.height,
                            _pad: [0; 3],
                        },
                        per_image: hw,
                        split,
                    };
                    steps.push(Step {
                        uniform: uniform(&format!("kernels::{label}.distance::params"), &dist),
                        label: format!("{label}.distance"),
                        params: dist,
                        binds: vec![
                            Bind::Act(cur),
                            Bind::Weights(wi),
                            Bind::Scratch,
                            Bind::Content,
                        ],
                        bind_group: None,
                    });
                    if split.reduces() {
                        let red = Params::BankReduce {
                            p: ops::bank::ReduceParams {
                                positions: max_batch * hw,
                                slices,
                                stride: slices,
                                _pad: 0,
                            },
                            per_image: hw,
                            split,
                            entries,
                        };
                        steps.push(Step {
                            uniform: uniform(&format!("kernels::{label}.reduce::params"), &red),
                            label: format!("{label}.reduce"),
                            params: red,
                            binds: vec![Bind::Scratch],
                            bind_group: None,
                        });
                    }
                    let sp = ops::bank::ScoreParams {
                        batch: max_batch,
                        h: a.h,
                        w: a.w,
                        c4: a.c4,
                        entries,
                        slices: scan,
                        neighbors,
                        heat_offset: max_batch * classes,
                        in_w: inp.width,
                        in_h: inp.height,
                        stride: slices,
                        groups,
                    };
                    let stages = [
                        (
                            "select",
                            Params::BankSelect(sp, split),
                            vec![
                                Bind::Scratch,
                                Bind::Content,
                                Bind::Weights(bi),
                                Bind::Output,
                                Bind::BankSel,
                            ],
                        ),
                        (
                            "support",
                            Params::BankSupport(sp, split),
                            vec![Bind::Weights(wi), Bind::BankSel, Bind::BankCand],
                        ),
                        (
                            "finish",
                            Params::BankFinish(sp, split),
                            vec![
                                Bind::Act(cur),
                                Bind::Weights(wi),
                                Bind::BankSel,
                                Bind::BankCand,
                                Bind::Weights(bi),
                                Bind::Logits,
                            ],
                        ),
                    ];
                    for (stage, params, binds) in stages {
                        steps.push(Step {
                            uniform: uniform(&format!("kernels::{label}.{stage}::params"), &params),
                            label: format!("{label}.{stage}"),
                            params,
                            binds,
                            bind_group: None,
                        });
                    }
                    layer_act.push(cur);
                }
                Layer::Linear { .. } if defect_pool => {
                    // Run by the defect max pool's dispatch (above): a placeholder, nothing
                    // reads the logits.
                    logits = Some(storage(device, "kernels::logits", 16, limit)?);
                    layer_act.push(cur);
                }
                Layer::Linear {
                    in_features,
                    out_features,
                } => {
                    let Some(w) = &model.weights[i] else {
                        unreachable!("validated model")
                    };
                    let packed = ops::linear::pack_weights(
                        &w.weight,
                        out_features as usize,
                        in_features as usize,
                    );
                    let wi = add_weights(device, "kernels::linear::weights".into(), &packed);
                    let bi = add_weights(device, "kernels::linear::bias".into(), &w.bias);
                    linear_weights = Some(wi);
                    logits = Some(logits_for(out_features)?);
                    let params = Params::Linear(ops::linear::Params {
                        batch: max_batch,
                        in4: in_features.div_ceil(4),
                        out_features,
                        _pad: 0,
                    });
                    steps.push(Step {
                        uniform: uniform("kernels::linear::params", &params),
                        label,
                        params,
                        binds: vec![
                            Bind::Features,
                            Bind::Weights(wi),
                            Bind::Weights(bi),
                            Bind::Logits,
                        ],
                        bind_group: None,
                    });
                    layer_act.push(cur);
                }
            }
        }
        let (Some(features), Some(logits), Some(linear_weights), Some(heat_idx)) =
            (features, logits, linear_weights, heat_features)
        else {
            unreachable!("validated model ends with a global pool + linear")
        };
        let heat = &acts[heat_idx];
        let heat_len = heat.h * heat.w;
        let is_pass: Vec<u32> = plan.is_pass.iter().map(|&p| p as u32).collect();
        let is_pass_buf = {
            use wgpu::util::DeviceExt as _;
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("kernels::is_pass"),
                contents: bytemuck::cast_slice(&is_pass),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let out_bytes = max_batch as u64 * (classes + heat_len) as u64 * 4;
        let output = storage(device, "kernels::output", out_bytes, limit)?;
        let scratch = storage(device, "kernels::scratch", scratch_bytes, limit)?;
        let bank_sel = match bank_sel {
            Some(b) => b,
            None => storage(device, "kernels::bank_select", 16, limit)?,
        };
        let bank_cand = match bank_cand {
            Some(b) => b,
            None => storage(device, "kernels::bank_support", 16, limit)?,
        };
        let heat_class = storage(device, "kernels::heat_class", max_batch as u64 * 4, limit)?;
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernels::readback"),
            size: (out_bytes + max_batch as u64 * 4).next_multiple_of(16),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let sm = Params::Softmax(ops::softmax::Params {
            batch: max_batch,
            classes,
            keep_class: (defect_pool && !bank_head) as u32,
            _pad: 0,
        });
        // (The defect max pool computes its probabilities itself.)
        if !defect_pool || bank_head {
            steps.push(Step {
                label: "softmax".into(),
                uniform: uniform("kernels::softmax::params", &sm),
                params: sm,
                binds: vec![Bind::Logits, Bind::IsPass, Bind::Output, Bind::HeatClass],
                bind_group: None,
            });
        }
        if !defect_pool {
            let cam = Params::Cam(ops::cam_heatmap::Params {
                batch: max_batch,
                h: heat.h,
                w: heat.w,
                c4: heat.c4,
                out_offset: 0,
                _pad: [0; 3],
            });
            steps.push(Step {
                label: "cam_heatmap".into(),
                uniform: uniform("kernels::cam_heatmap::params", &cam),
                params: cam,
                binds: vec![
                    Bind::Act(heat_idx),
                    Bind::Weights(linear_weights),
                    Bind::HeatClass,
                    Bind::Output,
                ],
                bind_group: None,
            });
        }

        // Bind groups, now that every buffer exists.
        let buffers = Buffers {
            acts: &acts,
            weights: &weight_buffers,
            frames: &frames,
            pixels: &pixels,
            content: &content,
            features: &features,
            logits: &logits,
            is_pass: &is_pass_buf,
            output: &output,
            heat_class: &heat_class,
            scratch: &scratch,
            bank_sel: &bank_sel,
            bank_cand: &bank_cand,
        };
        for step in &mut steps {
            step.bind_group = Some(buffers.bind(device, &kernels, step));
        }
        queue.submit([]);
        Ok(Self {
            device: device.clone(),
            queue: queue.clone(),
            spec,
            plan,
            max_batch,
            requested_batch: max_batch,
            kernels,
            steps,
            acts,
            layer_act,
            frames,
            pixels,
            content,
            output,
            heat_class,
            readback,
            current_batch: 0, // forces the first call to write every step's parameters
            adapter_label,
        })
    }
}
