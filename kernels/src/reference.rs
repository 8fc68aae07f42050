//! A plain-Rust CPU reference of the whole inference path, accumulating in f64.
//!
//! It is written for clarity, not speed, in the most direct NCHW loops, and is the yardstick the
//! GPU engine is tested against. The preprocessing here *defines* the preprocessing contract
//! that training (burn) must reproduce:
//!
//! 1. Crop the (clipped) region of interest.
//! 2. Bilinear resize to the model input with half-pixel centres
//!    (`src = (dst + 0.5) · roi / out − 0.5`, clamped to the region's edge pixels).
//! 3. Channels: gray → RGB replicates; RGB(A) → gray is `0.299 R + 0.587 G + 0.114 B`;
//!    alpha is ignored.
//! 4. Scale to 0..1 (`/255`), then `(v − mean[c]) / std[c]`.

use crate::frame::{Frame, PixelFormat};
use crate::model::Model;
use crate::spec::{InputSpec, Layer};
use crate::{Heatmap, Inference};

/// Preprocesses one frame into a `[c, h, w]` tensor (row-major) for the model input.
pub fn preprocess(model: &Model, frame: &Frame<'_>) -> Result<Vec<f64>, String> {
    preprocess_input(&model.spec.input, frame)
}

/// [`preprocess`] for an input description: the one preprocessing contract, also used to build
/// training tensors.
pub fn preprocess_input(inp: &InputSpec, frame: &Frame<'_>) -> Result<Vec<f64>, String> {
    let roi = frame.effective_roi()?;
    let (c, oh, ow) = (
        inp.channels as usize,
        inp.height as usize,
        inp.width as usize,
    );
    let bpp = frame.format.bytes_per_pixel() as usize;
    let px = |x: usize, y: usize| -> [f64; 3] {
        let i = ((roi.y as usize + y) * frame.width as usize + roi.x as usize + x) * bpp;
        match frame.format {
            PixelFormat::Gray8 => [frame.data[i] as f64; 3],
            PixelFormat::Rgb8 | PixelFormat::Rgba8 => [
                frame.data[i] as f64,
                frame.data[i + 1] as f64,
                frame.data[i + 2] as f64,
            ],
        }
    };
    let sample = |dst: usize, out: usize, len: u32| -> (usize, usize, f64) {
        let s = ((dst as f64 + 0.5) * len as f64 / out as f64 - 0.5).clamp(0.0, (len - 1) as f64);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(len as usize - 1), s - i0 as f64)
    };
    let mut out = vec![0.0; c * oh * ow];
    for y in 0..oh {
        let (y0, y1, fy) = sample(y, oh, roi.height);
        for x in 0..ow {
            let (x0, x1, fx) = sample(x, ow, roi.width);
            let (a, b, cc, d) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
            let mut rgb = [0.0; 3];
            for k in 0..3 {
                let top = a[k] + (b[k] - a[k]) * fx;
                let bottom = cc[k] + (d[k] - cc[k]) * fx;
                rgb[k] = (top + (bottom - top) * fy) / 255.0;
            }
            let values = if c == 1 {
                vec![0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]]
            } else {
                rgb.to_vec()
            };
            for (ch, v) in values.into_iter().enumerate() {
                out[(ch * oh + y) * ow + x] = (v - inp.mean[ch] as f64) / inp.std[ch] as f64;
            }
        }
    }
    Ok(out)
}

/// Runs the forward pass from an already preprocessed `[c, h, w]` input.
pub fn forward_tensor(model: &Model, input: Vec<f64>) -> Inference {
    let plan = &model.plan;
    let mut act = input;
    let mut heat_input = Vec::new();
    let mut logits = Vec::new();
    for (i, layer) in model.spec.layers.iter().enumerate() {
        let s = plan.shapes[i];
        let o = plan.shapes[i + 1];
        let (ic, ih, iw) = (s.c as usize, s.h as usize, s.w as usize);
        let (oc, oh, ow) = (o.c as usize, o.h as usize, o.w as usize);
        act = match *layer {
            Layer::Conv2d {
                kernel,
                stride,
                padding,
                ..
            } => {
                let Some(w) = &model.weights[i] else {
                    unreachable!("validated")
                };
                let (k, st, p) = (kernel as usize, stride as usize, padding as isize);
                let mut out = vec![0.0; oc * oh * ow];
                for co in 0..oc {
                    for y in 0..oh {
                        for x in 0..ow {
                            let mut acc = w.bias[co] as f64;
                            for ci in 0..ic {
                                for ky in 0..k {
                                    let sy = (y * st + ky) as isize - p;
                                    if sy < 0 || sy >= ih as isize {
                                        continue;
                                    }
                                    for kx in 0..k {
                                        let sx = (x * st + kx) as isize - p;
                                        if sx < 0 || sx >= iw as isize {
                                            continue;
                                        }
                                        let wv =
                                            w.weight[((co * ic + ci) * k + ky) * k + kx] as f64;
                                        acc += wv * act[(ci * ih + sy as usize) * iw + sx as usize];
                                    }
                                }
                            }
                            out[(co * oh + y) * ow + x] = acc;
                        }
                    }
                }
                out
            }
            Layer::Relu => act.into_iter().map(|v| v.max(0.0)).collect(),
            Layer::MaxPool2d { kernel, stride } => {
                let (k, st) = (kernel as usize, stride as usize);
                let mut out = vec![f64::NEG_INFINITY; oc * oh * ow];
                for c in 0..oc {
                    for y in 0..oh {
                        for x in 0..ow {
                            let m = &mut out[(c * oh + y) * ow + x];
                            for ky in 0..k {
                                for kx in 0..k {
                                    *m = m.max(act[(c * ih + y * st + ky) * iw + x * st + kx]);
                                }
                            }
                        }
                    }
                }
                out
            }
            Layer::GlobalAvgPool => {
                heat_input = act.clone();
                let hw = ih * iw;
                (0..ic)
                    .map(|c| act[c * hw..(c + 1) * hw].iter().sum::<f64>() / hw as f64)
                    .collect()
            }
            Layer::GlobalMaxPool => {
                heat_input = act.clone();
                let hw = ih * iw;
                (0..ic)
                    .map(|c| {
                        act[c * hw..(c + 1) * hw]
                            .iter()
                            .cloned()
                            .fold(f64::NEG_INFINITY, f64::max)
                    })
                    .collect()
            }
            Layer::Linear {
                in_features,
                out_features,
            } => {
                let Some(w) = &model.weights[i] else {
                    unreachable!("validated")
                };
                let (fi, fo) = (in_features as usize, out_features as usize);
                logits = (0..fo)
                    .map(|o| {
                        w.bias[o] as f64
                            + (0..fi)
                                .map(|j| w.weight[o * fi + j] as f64 * act[j])
                                .sum::<f64>()
                    })
                    .collect();
                logits.clone()
            }
        };
    }
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let probabilities: Vec<f32> = exps.iter().map(|e| (e / sum) as f32).collect();
    let class_index = most_likely_fail_class(&probabilities, &plan.is_pass);

    let hs = plan.heatmap_shape();
    let (c, h, w) = (hs.c as usize, hs.h as usize, hs.w as usize);
    let Some(lw) = &model.weights[plan.linear_layer] else {
        unreachable!("validated")
    };
    let values = (0..h * w)
        .map(|p| {
            (0..c)
                .map(|ch| lw.weight[class_index * c + ch] as f64 * heat_input[ch * h * w + p])
                .sum::<f64>() as f32
        })
        .collect();
    Inference {
        probabilities,
        heatmap: Heatmap {
            width: hs.w,
            height: hs.h,
            class_index,
            values,
        },
    }
}

/// Preprocesses and runs one frame.
pub fn infer(model: &Model, frame: &Frame<'_>) -> Result<Inference, String> {
    Ok(forward_tensor(model, preprocess(model, frame)?))
}

/// Index of the most probable FAIL class (ties go to the lower index).
pub fn most_likely_fail_class(probabilities: &[f32], is_pass: &[bool]) -> usize {
    let mut best = usize::MAX;
    for (i, (&p, &pass)) in probabilities.iter().zip(is_pass).enumerate() {
        if !pass && (best == usize::MAX || p > probabilities[best]) {
            best = i;
        }
    }
    best
}
