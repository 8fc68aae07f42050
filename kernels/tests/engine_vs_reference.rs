//! The GPU engine against the f64 CPU reference, on fresh random weights and frames of awkward
//! shapes. Tolerance: the error relative to the reference tensor's largest magnitude
//! (`common::rel_err`) must be ≤ 1e-4, for probabilities and heatmaps alike. Outputs are
//! poisoned (NaN) before every call, so a value the kernels failed to write fails the test.

mod common;

use common::*;
use kernels::rng::SplitMix64;
use kernels::{Engine, Frame, Layer, Model, PixelFormat, Roi, reference};

const TOLERANCE: f64 = 1e-4;

struct Case {
    data: Vec<u8>,
    w: u32,
    h: u32,
    format: PixelFormat,
    roi: Option<Roi>,
}

fn random_case(rng: &mut SplitMix64, format: PixelFormat, with_roi: bool) -> Case {
    let w = 1 + rng.below(150) as u32;
    let h = 1 + rng.below(150) as u32;
    let data = pixels(rng, w, h, format.bytes_per_pixel());
    let roi = with_roi.then(|| {
        // ROIs at the image edges, some reaching past them (clipped).
        let x = if rng.below(2) == 0 {
            0
        } else {
            w - 1 - rng.below(w.min(20) as u64) as u32
        };
        let y = if rng.below(2) == 0 {
            h.saturating_sub(1 + rng.below(h as u64) as u32)
        } else {
            0
        };
        Roi {
            x,
            y,
            width: 1 + rng.below(w as u64 + 10) as u32,
            height: 1 + rng.below(h as u64 + 10) as u32,
        }
    });
    Case {
        data,
        w,
        h,
        format,
        roi,
    }
}

fn check(model: &Model, engine: &mut Engine, cases: &[Case], what: &str) {
    let frames: Vec<Frame<'_>> = cases
        .iter()
        .map(|c| Frame {
            data: &c.data,
            width: c.w,
            height: c.h,
            format: c.format,
            roi: c.roi,
        })
        .collect();
    engine.poison_outputs();
    let got = engine
        .infer(&frames)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), frames.len());
    for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
        let want = reference::infer(model, f).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            g.probabilities
                .iter()
                .chain(&g.heatmap.values)
                .all(|v| v.is_finite()),
            "{what} frame {i}: unwritten (NaN) output"
        );
        let pe = rel_err(&g.probabilities, &want.probabilities);
        assert!(
            pe <= TOLERANCE,
            "{what} frame {i} ({:?} {}×{} roi {:?}): probabilities rel err {pe:e}\n gpu {:?}\n ref {:?}",
            f.format,
            f.width,
            f.height,
            f.roi,
            g.probabilities,
            want.probabilities
        );
        assert_eq!(
            (g.heatmap.width, g.heatmap.height),
            (want.heatmap.width, want.heatmap.height)
        );
        if g.heatmap.class_index != want.heatmap.class_index {
            // Only a near tie may pick another class.
            let (a, b) = (
                g.probabilities[g.heatmap.class_index],
                want.probabilities[want.heatmap.class_index],
            );
            assert!(
                (a - b).abs() < 1e-5,
                "{what} frame {i}: heatmap class {} vs reference {}",
                g.heatmap.class_index,
                want.heatmap.class_index
            );
            continue;
        }
        let he = rel_err(&g.heatmap.values, &want.heatmap.values);
        assert!(he <= TOLERANCE, "{what} frame {i}: heatmap rel err {he:e}");
        let sum: f32 = g.probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
    }
}

#[test]
fn ref_cnn_gray_97x131_batches_1_3_8() {
    let mut rng = SplitMix64::new(seed("ref_cnn"));
    let (c, p) = classes(6);
    let model = Model::random(kernels::ModelSpec::ref_cnn(c, p), rng.next_u64()).expect("model");
    let g = gpu();
    let mut engine = Engine::new(&g.device, &g.queue, &model, 8, g.describe()).expect("engine");
    for n in [1usize, 3, 8, 3] {
        let cases: Vec<Case> = (0..n)
            .map(|_| {
                let data = pixels(&mut rng, 97, 131, 1);
                Case {
                    data,
                    w: 97,
                    h: 131,
                    format: PixelFormat::Gray8,
                    roi: None,
                }
            })
            .collect();
        check(&model, &mut engine, &cases, &format!("ref-cnn batch {n}"));
    }
}

#[test]
fn awkward_rgb_model_mixed_formats_and_edge_rois() {
    let mut rng = SplitMix64::new(seed("awkward_rgb"));
    // Channel counts that are not multiples of 4, stride 2, 5×5 and 1×1 kernels, a 3/2 pool,
    // a standalone ReLU after a pool, a conv without ReLU, odd input size.
    let layers = vec![
        conv(3, 5, 3, 1, 1),
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: 2,
            stride: 2,
        },
        conv(5, 7, 5, 2, 2),
        Layer::Relu,
        conv(7, 6, 1, 1, 0),
        Layer::MaxPool2d {
            kernel: 3,
            stride: 2,
        },
        Layer::Relu,
        conv(6, 9, 3, 1, 0),
    ];
    let model = Model::random(spec(3, 45, 37, layers, 9, 3), rng.next_u64()).expect("model");
    let g = gpu();
    let mut engine = Engine::new(&g.device, &g.queue, &model, 8, g.describe()).expect("engine");
    let formats = [PixelFormat::Gray8, PixelFormat::Rgb8, PixelFormat::Rgba8];
    for n in [1usize, 3, 8] {
        let cases: Vec<Case> = (0..n)
            .map(|i| random_case(&mut rng, formats[(i + n) % 3], i % 2 == 1))
            .collect();
        check(
            &model,
            &mut engine,
            &cases,
            &format!("awkward rgb batch {n}"),
        );
    }
}

#[test]
fn every_conv_tile_matches_the_reference() {
    let mut rng = SplitMix64::new(seed("tiles"));
    let layers = vec![
        conv(3, 5, 3, 1, 1),
        Layer::Relu,
        conv(5, 21, 3, 2, 0),
        Layer::Relu,
        conv(21, 6, 1, 1, 0),
    ];
    let model = Model::random(spec(3, 23, 19, layers, 6, 3), rng.next_u64()).expect("model");
    let g = gpu();
    for (px, ocb) in [(1, 1), (3, 2), (4, 4), (5, 3)] {
        let tile = kernels::ops::conv2d::Tile { px, ocb };
        let mut engine = Engine::with_conv_tile(&g.device, &g.queue, &model, 3, g.describe(), tile)
            .expect("engine");
        let cases: Vec<Case> = (0..3)
            .map(|i| {
                random_case(
                    &mut rng,
                    [PixelFormat::Rgb8, PixelFormat::Gray8, PixelFormat::Rgba8][i],
                    i == 2,
                )
            })
            .collect();
        check(&model, &mut engine, &cases, &format!("tile {px}x{ocb}"));
    }
}

#[test]
fn awkward_gray_model_many_classes_odd_sizes() {
    let mut rng = SplitMix64::new(seed("awkward_gray"));
    let layers = vec![
        conv(1, 13, 3, 1, 0),
        Layer::Relu,
        conv(13, 17, 3, 2, 1),
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: 2,
            stride: 1,
        },
        conv(17, 11, 3, 1, 2),
    ];
    let model = Model::random(spec(1, 31, 29, layers, 11, 7), rng.next_u64()).expect("model");
    let g = gpu();
    let mut engine = Engine::new(&g.device, &g.queue, &model, 3, g.describe()).expect("engine");
    for n in [3usize, 1] {
        let cases: Vec<Case> = (0..n)
            .map(|i| {
                random_case(
                    &mut rng,
                    if i == 0 {
                        PixelFormat::Rgba8
                    } else {
                        PixelFormat::Gray8
                    },
                    true,
                )
            })
            .collect();
        check(
            &model,
            &mut engine,
            &cases,
            &format!("awkward gray batch {n}"),
        );
    }
}

/// The global max pool head (a last convolution without relu scoring every position, then the
/// maximum over positions), on odd sizes and a channel count that is not a multiple of 4.
#[test]
fn global_max_pool_model_matches_the_reference() {
    let mut rng = SplitMix64::new(seed("global_max_pool"));
    let layers = vec![
        conv(1, 10, 3, 1, 1),
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: 2,
            stride: 2,
        },
        conv(10, 14, 3, 1, 1),
        Layer::Relu,
        conv(14, 5, 1, 1, 0),
    ];
    let mut s = spec(1, 37, 23, layers, 5, 5);
    let n = s.layers.len();
    s.layers[n - 2] = Layer::GlobalMaxPool;
    let model = Model::random(s, rng.next_u64()).expect("model");
    let g = gpu();
    let mut engine = Engine::new(&g.device, &g.queue, &model, 4, g.describe()).expect("engine");
    for n in [4usize, 1] {
        let cases: Vec<Case> = (0..n)
            .map(|_| random_case(&mut rng, PixelFormat::Gray8, n == 1))
            .collect();
        check(
            &model,
            &mut engine,
            &cases,
            &format!("global max pool batch {n}"),
        );
    }
}

#[test]
fn adapter_backend_is_the_expected_one() {
    // scripts/test sets EXPECT_WGPU_BACKEND=vulkan: on CI that is lavapipe, and wgpu must not
    // have fallen back to its GL adapter.
    let info = gpu().adapter.get_info();
    eprintln!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    if let Ok(want) = std::env::var("EXPECT_WGPU_BACKEND") {
        assert_eq!(
            format!("{:?}", info.backend).to_lowercase(),
            want.to_lowercase(),
            "adapter {} is not the expected backend",
            info.name
        );
    }
}

#[test]
fn bad_frames_and_batches_are_refused_with_messages() {
    let mut rng = SplitMix64::new(seed("bad_frames"));
    let model = Model::random(
        spec(1, 8, 8, vec![conv(1, 4, 3, 1, 1)], 4, 2),
        rng.next_u64(),
    )
    .expect("model");
    let g = gpu();
    let mut engine = Engine::new(&g.device, &g.queue, &model, 2, g.describe()).expect("engine");
    let data = vec![0u8; 12];
    let short = Frame::new(&data, 4, 4, PixelFormat::Gray8);
    let err = engine.infer(&[short]).expect_err("short frame").to_string();
    assert!(err.contains("needs 16 bytes, got 12"), "{err}");
    let ok = Frame::new(&data, 4, 3, PixelFormat::Gray8);
    let outside = Frame {
        roi: Some(Roi {
            x: 9,
            y: 0,
            width: 2,
            height: 2,
        }),
        ..ok
    };
    assert!(
        engine
            .infer(&[ok, outside])
            .expect_err("roi")
            .to_string()
            .contains("frame 1")
    );
    assert!(matches!(
        engine.infer(&[ok, ok, ok]),
        Err(kernels::EngineError::BatchTooLarge { got: 3, max: 2 })
    ));
    // And the engine still works after refusing.
    assert_eq!(engine.infer(&[ok]).expect("ok frame").len(), 1);
}
