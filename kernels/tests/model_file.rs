//! The model file: exact round trip, a header readable without our code, every kind of damage
//! refused with a typed error naming the layer, and a fuzz of truncated / bit-flipped files.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use kernels::rng::SplitMix64;
use kernels::{Layer, Model, ModelError, ModelSpec, SpecError};
use safetensors::{Dtype, tensor::TensorView};

fn small_model(seed: u64) -> Model {
    let layers = vec![
        conv(3, 5, 3, 1, 1),
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: 2,
            stride: 2,
        },
        conv(5, 6, 3, 2, 1),
        Layer::Relu,
    ];
    Model::random(spec(3, 20, 18, layers, 6, 4), seed).expect("model")
}

/// Writes a safetensors file with the given spec JSON and tensors, bypassing `Model`.
fn raw_file(spec_json: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.to_string(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize(
        views,
        Some(HashMap::from([(
            "model_spec".to_owned(),
            spec_json.to_owned(),
        )])),
    )
    .expect("serialize")
}

fn tensors_of(m: &Model) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for (i, (l, w)) in m.spec.layers.iter().zip(&m.weights).enumerate() {
        if let (Some(shape), Some(w)) = (l.weight_file_shape(), w) {
            out.push((format!("layers.{i}.weight"), shape, w.weight.clone()));
            out.push((
                format!("layers.{i}.bias"),
                vec![w.bias.len()],
                w.bias.clone(),
            ));
        }
    }
    out
}

fn load(bytes: &[u8]) -> Result<Model, ModelError> {
    Model::from_bytes(bytes)
}

#[test]
fn round_trip_is_exact_and_file_is_plain_safetensors() {
    let m = small_model(seed("round_trip"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.safetensors");
    m.save(&path).expect("save");
    let back = Model::load(&path).expect("load");
    assert_eq!(back.spec, m.spec);
    assert_eq!(
        back.weights, m.weights,
        "weights must round-trip bit for bit"
    );

    // The header is the documented safetensors layout: u64 LE length, then JSON with dtype,
    // shape, data_offsets and __metadata__.model_spec — what Python's `safetensors` reads.
    let bytes = std::fs::read(&path).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header json");
    assert_eq!(header["layers.0.weight"]["dtype"], "F32");
    assert_eq!(
        header["layers.0.weight"]["shape"],
        serde_json::json!([5, 3, 3, 3])
    );
    assert_eq!(
        header["layers.6.weight"]["shape"],
        serde_json::json!([4, 6]),
        "linear weight: {header}"
    );
    let spec: ModelSpec = serde_json::from_str(
        header["__metadata__"]["model_spec"]
            .as_str()
            .expect("spec string"),
    )
    .expect("spec");
    assert_eq!(spec, m.spec);
}

#[test]
fn damaged_models_get_typed_errors_naming_the_layer() {
    let m = small_model(7);
    let spec_json = serde_json::to_string(&m.spec).expect("json");
    let good = tensors_of(&m);
    let as_refs = |t: &[(String, Vec<usize>, Vec<f32>)]| -> Vec<u8> {
        let r: Vec<(&str, Vec<usize>, Vec<f32>)> = t
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.clone(), c.clone()))
            .collect();
        raw_file(&spec_json, &r)
    };
    assert!(load(&as_refs(&good)).is_ok());

    // Missing tensor.
    let missing: Vec<_> = good
        .iter()
        .filter(|t| t.0 != "layers.3.bias")
        .cloned()
        .collect();
    match load(&as_refs(&missing)) {
        Err(e @ ModelError::MissingTensor { layer: 3, .. }) => {
            assert!(e.to_string().contains("layer 3 (conv2d)"), "{e}")
        }
        other => panic!("expected MissingTensor for layer 3, got {other:?}"),
    }
    // Mis-shaped tensor: message names expected and found shapes.
    let mut misshaped = good.clone();
    misshaped[0] = (
        "layers.0.weight".into(),
        vec![5, 3, 9],
        misshaped[0].2.clone(),
    );
    let e = load(&as_refs(&misshaped)).expect_err("misshaped");
    assert!(matches!(e, ModelError::BadTensor { layer: 0, .. }), "{e:?}");
    assert!(
        e.to_string().contains("[5, 3, 3, 3]") && e.to_string().contains("[5, 3, 9]"),
        "{e}"
    );
    // Non-finite weight.
    let mut nan = good.clone();
    nan[1].2[2] = f32::NAN;
    assert!(matches!(
        load(&as_refs(&nan)),
        Err(ModelError::NonFinite { layer: 0, .. })
    ));
    // A tensor the spec does not know.
    let mut extra = good.clone();
    extra.push(("layers.1.weight".into(), vec![1], vec![0.0]));
    assert!(matches!(
        load(&as_refs(&extra)),
        Err(ModelError::UnexpectedTensor(_))
    ));

    // Spec-level damage.
    let with_spec = |f: &dyn Fn(&mut serde_json::Value)| -> Result<Model, ModelError> {
        let mut v: serde_json::Value = serde_json::to_value(&m.spec).expect("value");
        f(&mut v);
        let r: Vec<(&str, Vec<usize>, Vec<f32>)> = good
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.clone(), c.clone()))
            .collect();
        load(&raw_file(&v.to_string(), &r))
    };
    let e = with_spec(&|v| v["layers"][1] = serde_json::json!({"kind": "dropout", "p": 0.5}))
        .expect_err("unknown kind");
    assert!(
        matches!(e, ModelError::SpecJson(_)) && e.to_string().contains("dropout"),
        "{e}"
    );
    let e = with_spec(&|v| v["layers"][3]["in_channels"] = 4.into()).expect_err("chain");
    assert!(
        matches!(e, ModelError::Spec(SpecError::Layer { index: 3, .. }))
            && e.to_string().contains("expects 4 input channels, found 5"),
        "{e}"
    );
    let e = with_spec(&|v| v["input"]["height"] = 1_000_000.into()).expect_err("absurd size");
    assert!(e.to_string().contains("height"), "{e}");
    let e = with_spec(&|v| v["layers"][0]["out_channels"] = 1_000_000.into())
        .expect_err("absurd channels");
    assert!(e.to_string().contains("layer 0"), "{e}");
    let e = with_spec(&|v| v["threshold"] = 3.0.into()).expect_err("threshold");
    assert!(
        matches!(e, ModelError::Spec(SpecError::Threshold(_))),
        "{e}"
    );
    let e = with_spec(&|v| v["pass_classes"] = serde_json::json!(["nope"])).expect_err("pass");
    assert!(e.to_string().contains("nope"), "{e}");
    let e = with_spec(&|v| v["version"] = 99.into()).expect_err("version");
    assert!(e.to_string().contains("version 99"), "{e}");

    // Not a model at all.
    assert!(matches!(load(b""), Err(ModelError::Container(_))));
    assert!(matches!(
        load(b"GIF89a not a model"),
        Err(ModelError::Container(_))
    ));
    let no_meta =
        safetensors::serialize(Vec::<(String, TensorView<'_>)>::new(), None).expect("serialize");
    assert!(matches!(load(&no_meta), Err(ModelError::MissingSpec)));
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Model::load(&dir.path().join("absent.safetensors")).expect_err("absent");
    assert!(e.to_string().contains("absent.safetensors"), "{e}");
}

#[test]
fn fuzz_truncated_and_bit_flipped_files_never_panic_or_hang() {
    let mut rng = SplitMix64::new(seed("fuzz"));
    let m = small_model(rng.next_u64());
    let bytes = m.to_bytes().expect("bytes");
    let start = Instant::now();
    let mut refused = 0;
    // Every truncation.
    for len in 0..bytes.len() {
        if load(&bytes[..len]).is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, bytes.len(), "every truncated file must be refused");
    // Random bit flips and byte overwrites, 1..8 per file, biased towards the header.
    let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
    for _ in 0..4000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(8) {
            let at = if rng.below(4) == 0 {
                rng.below(b.len() as u64)
            } else {
                rng.below(header_len as u64)
            } as usize;
            if rng.below(2) == 0 {
                b[at] ^= 1 << rng.below(8);
            } else {
                b[at] = rng.next_u64() as u8;
            }
        }
        let t = Instant::now();
        if let Ok(model) = load(&b) {
            // Whatever loads must be internally consistent.
            model.spec.validate().expect("a loaded model is valid");
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "one load took {:?}",
            t.elapsed()
        );
    }
    eprintln!(
        "fuzz: {} truncations + 4000 mutations in {:?}",
        bytes.len(),
        start.elapsed()
    );
}
