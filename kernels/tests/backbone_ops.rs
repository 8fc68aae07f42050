//! The backbone's ops (depthwise and 1×1 convolutions, per-side padding, ReLU6, the residual
//! add, local features, the defect max pool, aspect-keeping input) on the GPU engine against the
//! f64 CPU reference, on fresh random weights and frames of awkward shapes; and the imported
//! EfficientNet-Lite0 against a fixture computed once by an independent implementation.
//!
//! Tolerance: the error relative to the reference tensor's largest magnitude
//! (`common::rel_err`) ≤ 1e-4, as for every engine test.

mod common;

use common::*;
use kernels::backbone::{self, Extent, same_padding};
use kernels::rng::SplitMix64;
use kernels::{Engine, Frame, Layer, Model, ModelSpec, PixelFormat, Resize, Roi, reference};

const TOLERANCE: f64 = 1e-4;

fn same_conv(h: u32, w: u32, i: u32, o: u32, k: u32, s: u32, groups: u32) -> (Layer, u32, u32) {
    let (t, b, oh) = same_padding(h, k, s);
    let (l, r, ow) = same_padding(w, k, s);
    (
        Layer::Conv2d {
            in_channels: i,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: 0,
            groups,
            pads: Some([t, l, b, r]),
        },
        oh,
        ow,
    )
}

/// A small inverted-residual network with every new op, channels not a multiple of 4.
fn block_spec(
    h: u32,
    w: u32,
    classes: usize,
    defect_pool: bool,
    resize: Resize,
    dw_kernel: u32,
) -> ModelSpec {
    let (l0, h1, w1) = same_conv(h, w, 3, 10, 3, 2, 1);
    let (l10, _, _) = same_conv(h1, w1, 22, 22, 3, 2, 22);
    let layers = vec![
        l0,           // 0
        Layer::Relu6, // 1
        Layer::conv(10, 30, 1, 1, 0),
        Layer::Relu6, // 3
        Layer::Conv2d {
            in_channels: 30,
            out_channels: 30,
            kernel: dw_kernel,
            stride: 1,
            padding: dw_kernel / 2,
            groups: 30,
            pads: None,
        },
        Layer::Relu6, // 5
        Layer::conv(30, 10, 1, 1, 0),
        Layer::Add { from: 1 }, // 7
        Layer::conv(10, 22, 1, 1, 0),
        Layer::Relu6, // 9
        l10,
        Layer::Relu6,                 // 11
        Layer::conv(22, 13, 1, 1, 0), // 12
        Layer::LocalFeatures {
            from: vec![7, 12],
            kernel: 3,
        }, // 13: 23 channels
        Layer::conv(23, classes as u32, 1, 1, 0),
    ];
    let mut s = spec(3, h, w, layers, classes as u32, classes);
    if defect_pool {
        let n = s.layers.len();
        s.layers[n - 2] = Layer::DefectMaxPool;
    }
    s.input.resize = resize;
    s
}

fn frames_of<'a>(cases: &'a [(Vec<u8>, u32, u32, PixelFormat, Option<Roi>)]) -> Vec<Frame<'a>> {
    cases
        .iter()
        .map(|(d, w, h, f, roi)| Frame {
            data: d,
            width: *w,
            height: *h,
            format: *f,
            roi: *roi,
        })
        .collect()
}

fn random_frames(
    rng: &mut SplitMix64,
    n: usize,
) -> Vec<(Vec<u8>, u32, u32, PixelFormat, Option<Roi>)> {
    (0..n)
        .map(|i| {
            let w = 1 + rng.below(120) as u32;
            let h = 1 + rng.below(120) as u32;
            let format = [PixelFormat::Gray8, PixelFormat::Rgb8, PixelFormat::Rgba8][i % 3];
            let data = pixels(rng, w, h, format.bytes_per_pixel());
            let roi = (i % 2 == 1).then(|| Roi {
                x: rng.below(w as u64) as u32,
                y: rng.below(h as u64) as u32,
                width: 1 + rng.below(w as u64) as u32,
                height: 1 + rng.below(h as u64) as u32,
            });
            (data, w, h, format, roi)
        })
        .collect()
}

#[test]
fn depthwise_pointwise_relu6_residual_local_features_match_the_reference() {
    let mut rng = SplitMix64::new(seed("backbone_ops"));
    let g = gpu();
    for (round, resize) in [Resize::Stretch, Resize::Fit, Resize::Stretch]
        .into_iter()
        .enumerate()
    {
        // Odd and even sides, so SAME padding is symmetric on some and one-sided on others.
        let h = 9 + rng.below(40) as u32;
        let w = 9 + rng.below(40) as u32;
        let classes = 2 + rng.below(5) as usize;
        for defect_pool in [false, true] {
            // Kernel 7 runs the generic depthwise pipeline, 3 and 5 the specialised ones.
            let mut spec = block_spec(h, w, classes, defect_pool, resize, [5, 3, 7][round]);
            if round == 1 {
                // Six sources, two at the finer resolution twice over: two dispatches (4 + 2).
                spec.layers[13] = Layer::LocalFeatures {
                    from: vec![7, 12, 9, 1, 5, 12],
                    kernel: 3,
                };
                spec.layers[14] = Layer::conv(10 + 13 + 22 + 10 + 30 + 13, classes as u32, 1, 1, 0);
            }
            let model = Model::random(spec, rng.next_u64()).expect("model");
            let mut engine =
                Engine::new(&g.device, &g.queue, &model, 5, g.describe()).expect("engine");
            for n in [5usize, 1] {
                let cases = random_frames(&mut rng, n);
                check(
                    TOLERANCE,
                    &model,
                    &mut engine,
                    &frames_of(&cases),
                    &format!(
                        "round {round} {h}×{w} {resize:?} defect_pool {defect_pool} batch {n}"
                    ),
                );
            }
        }
    }
}

/// Both rows of the adapter table (direct register tiles; the workgroup-memory GEMM with the
/// residual add fused) and GEMM tiles of awkward shapes, whatever this adapter is.
#[test]
fn every_pointwise_variant_matches_the_reference() {
    use kernels::ops::pointwise_gemm::{GemmTile, SplitK};
    use kernels::ops::tuning::{KernelConfig, Pointwise};
    let mut rng = SplitMix64::new(seed("pointwise_variants"));
    let g = gpu();
    let tiles = [
        GemmTile::DEFAULT,
        GemmTile {
            tm: 4,
            tn: 16,
            rm: 2,
            rn: 1,
            bk: 8,
        },
        GemmTile {
            tm: 16,
            tn: 4,
            rm: 1,
            rn: 3,
            bk: 4,
        },
        GemmTile {
            tm: 8,
            tn: 4,
            rm: 3,
            rn: 1,
            bk: 8,
        },
    ];
    // Split-K forced on every GEMM dispatch: K-steps of one input vec4 (bk 1), up to three
    // slices, so the block's K of 3, 8 and 6 vec4s split into 1+1+1, 3+3+2 and 2+2+2.
    let split = SplitK {
        min_workgroups: u32::MAX,
        max_splits: 3,
        min_steps: 1,
    };
    let one_vec4_steps = GemmTile {
        tm: 8,
        tn: 8,
        rm: 8,
        rn: 2,
        bk: 1,
    };
    // Single frames run the latency tile where one is set (it must be as wide as the batch
    // tile): the table's with the table's batch tile, an awkward one with the tile as wide.
    let awkward_latency = GemmTile {
        tm: 16,
        tn: 4,
        rm: 1,
        rn: 4,
        bk: 4,
    };
    let latency = |t: GemmTile| {
        if t == GemmTile::DEFAULT {
            Some(GemmTile::LATENCY)
        } else {
            (awkward_latency.bn4() == t.bn4()).then_some(awkward_latency)
        }
    };
    let configs = std::iter::once(KernelConfig::CPU)
        .chain(tiles.iter().map(|&t| KernelConfig {
            pointwise: Pointwise::Gemm(t),
            latency_tile: latency(t),
            ..KernelConfig::GPU
        }))
        .chain([GemmTile::DEFAULT, one_vec4_steps].map(|t| KernelConfig {
            pointwise: Pointwise::Gemm(t),
            split_k: split,
            ..KernelConfig::GPU
        }));
    for (round, config) in configs.enumerate() {
        let h = 9 + rng.below(40) as u32;
        let w = 9 + rng.below(40) as u32;
        let classes = 2 + rng.below(5) as usize;
        let spec = block_spec(h, w, classes, round % 2 == 1, Resize::Stretch, 3);
        let model = Model::random(spec, rng.next_u64()).expect("model");
        let mut engine = Engine::with_config(&g.device, &g.queue, &model, 5, g.describe(), config)
            .expect("engine");
        assert_eq!(
            engine.kernel_config(),
            config,
            "the tile fits lavapipe's limits"
        );
        for n in [5usize, 2, 1] {
            let cases = random_frames(&mut rng, n);
            check(
                TOLERANCE,
                &model,
                &mut engine,
                &frames_of(&cases),
                &format!("{} {h}×{w} batch {n}", config.describe()),
            );
            if config.split_k != SplitK::OFF && n > 1 {
                // The products really were cut: three of the block's five 1×1 convolutions
                // have two K-steps or more even with 4-vec4 steps.
                let profile = engine.profile_detail(&frames_of(&cases)).expect("profile");
                let sums = profile.ops.iter().filter(|o| o.label.ends_with(".sum"));
                assert!(sums.count() >= 3, "{}", config.describe());
                assert_eq!(
                    engine.dispatch_stats().dispatches,
                    profile.ops.len(),
                    "the reduce passes are counted as dispatches"
                );
            }
        }
    }
}

/// The imported Lite0 at a realistic size through the GEMM path matches the direct path (both
/// are checked against the reference elsewhere; here the fused residuals of every block).
#[test]
fn lite0_blocks_agree_between_the_direct_and_gemm_paths() {
    use kernels::ops::tuning::KernelConfig;
    let mut rng = SplitMix64::new(seed("lite0_paths"));
    let g = gpu();
    let (layers, h, w) = (0..3).fold((Vec::new(), 37u32, 29u32), |(mut l, h, w), b| {
        let c = [10u32, 14, 14][b];
        let o = [14u32, 14, 14][b];
        let (dw, _, _) = same_conv(h, w, c * 4, c * 4, 3, 1, c * 4);
        if b == 0 {
            let (stem, _, _) = same_conv(h, w, 3, c, 3, 1, 1);
            l.push(stem);
            l.push(Layer::Relu6);
        }
        let input = l.len() - 1;
        l.push(Layer::conv(c, c * 4, 1, 1, 0));
        l.push(Layer::Relu6);
        l.push(dw);
        l.push(Layer::Relu6);
        l.push(Layer::conv(c * 4, o, 1, 1, 0));
        if c == o {
            l.push(Layer::Add { from: input });
        }
        (l, h, w)
    });
    let mut layers = layers;
    layers.push(Layer::conv(14, 3, 1, 1, 0));
    let spec = spec(3, h, w, layers, 3, 3);
    let model = Model::random(spec, rng.next_u64()).expect("model");
    for config in [KernelConfig::CPU, KernelConfig::GPU] {
        let mut engine = Engine::with_config(&g.device, &g.queue, &model, 4, g.describe(), config)
            .expect("engine");
        let cases = random_frames(&mut rng, 4);
        check(
            TOLERANCE,
            &model,
            &mut engine,
            &frames_of(&cases),
            &config.describe(),
        );
    }
}

#[test]
fn fit_keeps_the_aspect_ratio_and_the_pool_ignores_the_padding() {
    let spec = block_spec(32, 32, 3, true, Resize::Fit, 5);
    assert_eq!(spec.input.content_size(300, 100), (32, 11));
    assert_eq!(spec.input.content_size(100, 300), (11, 32));
    assert_eq!(spec.input.content_size(5, 5), (32, 32));
    assert_eq!(spec.input.content_size(1000, 1), (32, 1));
    // A content size is its own content size (the reference crops heatmaps with it).
    for (w, h) in [(300, 100), (100, 300), (7, 5), (1000, 1)] {
        let c = spec.input.content_size(w, h);
        assert_eq!(spec.input.content_size(c.0, c.1), c);
    }
    assert_eq!(kernels::valid_cells(11, 8, 32), 3);
    assert_eq!(kernels::valid_cells(32, 8, 32), 8);
    // A wide frame: the reference input is zero below the content rows.
    let mut rng = SplitMix64::new(seed("fit"));
    let model = Model::random(spec, rng.next_u64()).expect("model");
    let data = pixels(&mut rng, 90, 30, 1);
    let frame = Frame {
        data: &data,
        width: 90,
        height: 30,
        format: PixelFormat::Gray8,
        roi: None,
    };
    let x = reference::preprocess(&model, &frame).expect("pre");
    let hw = 32 * 32;
    for c in 0..3 {
        for y in 11..32 {
            for xx in 0..32 {
                assert_eq!(x[c * hw + y * 32 + xx], 0.0, "padding at ({xx},{y})");
            }
        }
    }
}

/// `[c, h, w]` f32 tensor `name` of the fixture.
fn fixture_f32(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), v)
}

#[test]
fn imported_lite0_matches_the_independent_fixture() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = root.join("../assets/backbones/efficientnet-lite0-s16.safetensors");
    let fixture =
        std::fs::read(root.join("tests/fixtures/lite0-fixture.safetensors")).expect("fixture");
    let st = safetensors::SafeTensors::deserialize(&fixture).expect("fixture container");
    let g = gpu();
    for case in ["a", "b"] {
        let input = st.tensor(&format!("{case}.input")).expect("input");
        let [h, w, _] = input.shape() else {
            panic!("input shape")
        };
        let (h, w) = (*h as u32, *w as u32);
        let pixels = input.data().to_vec();
        let mut b = backbone::load(&weights, h, w, Extent::Stages(4)).expect("backbone");
        let stages = [b.stage_ends[2], b.stage_ends[3], b.stage_ends[4]];
        b.layers.push(Layer::LocalFeatures {
            from: stages.to_vec(),
            kernel: 3,
        });
        b.weights.push(None);
        let lf = b.layers.len() - 1;
        let (classes, pass) = classes(2);
        let mut layers = b.layers.clone();
        layers.extend([
            Layer::conv(232, 2, 1, 1, 0),
            Layer::GlobalAvgPool,
            Layer::Linear {
                in_features: 2,
                out_features: 2,
            },
        ]);
        let mut weights = b.weights.clone();
        let mut rng = SplitMix64::new(7);
        let mut rand = |n: usize| (0..n).map(|_| rng.uniform(-0.1, 0.1)).collect::<Vec<f32>>();
        weights.push(Some(kernels::LayerWeights {
            weight: rand(464),
            bias: rand(2),
        }));
        weights.push(None);
        weights.push(Some(kernels::LayerWeights {
            weight: rand(4),
            bias: rand(2),
        }));
        let spec = ModelSpec::new("lite0-fixture", b.input.clone(), layers, classes, pass);
        let model = Model::new(spec, weights).expect("model");
        let frame = Frame {
            data: &pixels,
            width: w,
            height: h,
            format: PixelFormat::Rgb8,
            roi: None,
        };
        let mut engine = Engine::new(&g.device, &g.queue, &model, 1, g.describe()).expect("engine");
        let x = reference::preprocess(&model, &frame).expect("pre");
        let outs = reference::layer_outputs(&model, x);
        for (name, layer) in [
            ("stage2", stages[0]),
            ("stage3", stages[1]),
            ("stage4", stages[2]),
            ("local", lf),
        ] {
            let (shape, want) = fixture_f32(&st, &format!("{case}.{name}"));
            let s = model.plan.shapes[layer + 1];
            assert_eq!(
                shape,
                vec![s.c as usize, s.h as usize, s.w as usize],
                "{case}.{name}"
            );
            let (_, got) = engine.infer_with_layer(&[frame], layer).expect("engine");
            let e = rel_err(&got[0], &want);
            let r: Vec<f32> = outs[layer].iter().map(|&v| v as f32).collect();
            let re = rel_err(&r, &want);
            eprintln!("{case}.{name}: engine rel err {e:e}, reference rel err {re:e}");
            assert!(e <= TOLERANCE, "{case}.{name}: engine vs fixture {e:e}");
            assert!(re <= 1e-5, "{case}.{name}: reference vs fixture {re:e}");
        }
    }
}

#[test]
fn damaged_or_foreign_backbone_files_are_refused_by_name() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join("../assets/backbones/efficientnet-lite0-s16.safetensors"))
        .expect("asset");
    // Truncated: not a container.
    let e = backbone::efficientnet_lite0(&bytes[..bytes.len() / 2], 64, 64, Extent::Stages(4))
        .expect_err("truncated");
    assert!(
        e.to_string().contains("not a valid safetensors file"),
        "{e}"
    );
    // One tensor missing, one misshaped: each is named.
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("asset container");
    let rebuild = |skip: &str, reshape: Option<&str>| {
        let mut kept = Vec::new();
        for (name, view) in st.tensors() {
            if name == skip {
                continue;
            }
            let shape = if Some(name.as_str()) == reshape {
                vec![view.data().len() / 4]
            } else {
                view.shape().to_vec()
            };
            kept.push((name, view.dtype(), shape, view.data().to_vec()));
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = kept
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"),
                )
            })
            .collect();
        safetensors::serialize(views, None).expect("serialize")
    };
    let missing = rebuild("_blocks.3._depthwise_conv.weight", None);
    let e = backbone::efficientnet_lite0(&missing, 64, 64, Extent::Stages(4)).expect_err("missing");
    assert!(
        e.to_string().contains("_blocks.3._depthwise_conv.weight"),
        "{e}"
    );
    let misshaped = rebuild("", Some("_blocks.5._expand_conv.weight"));
    let ok_until_stage2 = backbone::efficientnet_lite0(&misshaped, 64, 64, Extent::Stages(2));
    assert!(ok_until_stage2.is_ok(), "stages 0-2 do not use block 5");
    let e =
        backbone::efficientnet_lite0(&misshaped, 64, 64, Extent::Stages(4)).expect_err("misshaped");
    assert!(
        e.to_string().contains("_blocks.5._expand_conv.weight"),
        "{e}"
    );
    // The classifier needs tensors the shipped (stages 0-4) asset does not hold.
    let e = backbone::efficientnet_lite0(&bytes, 64, 64, Extent::Classifier).expect_err("no head");
    assert!(e.to_string().contains("_blocks.11"), "{e}");
}
