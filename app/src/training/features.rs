//! Backbone features for the head and anomaly trainers: the frozen backbone's local features
//! (stages 2–4, 3×3 local average, stride 16), extracted once per image by the `kernels`
//! engine (the same engine, preprocessing and weights that inspect at the station) and kept
//! in an on-disk cache keyed by the weights, preprocessing and image bytes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use kernels::backbone::{self, Extent};
use kernels::{Layer, Model, ModelSpec, Resize};

use super::splits::Split;
use super::types::Progress;
use crate::data::dataset::DecodedImage;

/// Where the backbone weights ship, relative to the install.
pub const BACKBONE_ASSET: &str = "assets/backbones/efficientnet-lite0-s16.safetensors";
/// Stages whose outputs make the local features.
pub(crate) const FEATURE_STAGES: [usize; 3] = [2, 3, 4];
/// Images per engine call during extraction.
pub(crate) const EXTRACT_BATCH: usize = 8;
/// Bumped whenever extraction changes in a way the cache key does not see.
pub(crate) const CACHE_VERSION: u32 = 1;

/// Where cached features live: `DEFECT_INSPECTOR_CACHE` if set, else the platform cache folder
/// (`~/.cache/defect-inspector/features` on Linux). `None` when there is none.
pub fn feature_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DEFECT_INSPECTOR_CACHE") {
        return Some(PathBuf::from(d).join("features"));
    }
    directories::ProjectDirs::from("org", "DefectInspector", "defect-inspector")
        .map(|p| p.cache_dir().join("features"))
}

/// Cached features, one file per (image file, backbone network): an image's features depend
/// only on its bytes and the frozen network, so the key is the image's path, size and
/// modification time plus a hash of the backbone weights, the input geometry and the engine's
/// shaders (a build whose kernels compute features differently must not read an older build's
/// cache). A changed image, preset, backbone or shader gets a new key; stale files are simply
/// never read again.
pub(crate) struct FeatureCache {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) network: u64,
}

/// The network part of a cache key: weights, geometry and every shader's name and source.
fn network_key(weights: &[u8], geometry: &[u8], shaders: &[(&str, &str)]) -> u64 {
    let mut parts: Vec<&[u8]> = vec![weights, geometry];
    for (name, source) in shaders {
        parts.push(name.as_bytes());
        parts.push(source.as_bytes());
    }
    hash_of(&parts)
}

pub(crate) fn hash_of(parts: &[&[u8]]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::hash::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

impl FeatureCache {
    pub(crate) fn new(weights: &Path, spec: &ModelSpec, layer: usize) -> Self {
        let dir = feature_cache_dir();
        let wbytes = std::fs::read(weights).unwrap_or_default();
        let geometry = serde_json::to_vec(&(&spec.input, &spec.layers[..=layer], CACHE_VERSION))
            .unwrap_or_default();
        Self {
            dir,
            network: network_key(&wbytes, &geometry, kernels::ops::SHADERS),
        }
    }

    pub(crate) fn file(&self, image: &Path) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let meta = std::fs::metadata(image).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos();
        let abs = std::fs::canonicalize(image).ok()?;
        let key = hash_of(&[
            abs.as_os_str().as_encoded_bytes(),
            &meta.len().to_le_bytes(),
            &mtime.to_le_bytes(),
            &self.network.to_le_bytes(),
        ]);
        Some(dir.join(format!("{key:016x}.f32")))
    }

    pub(crate) fn read(&self, image: &Path, len: usize) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.file(image)?).ok()?;
        (bytes.len() == len * 4).then(|| {
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
    }

    /// Best effort: a cache that cannot be written (read-only home, full disk) only costs time.
    pub(crate) fn write(&self, image: &Path, values: &[f32]) {
        let Some(file) = self.file(image) else { return };
        let Some(dir) = file.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// The backbone weights file: `DEFECT_INSPECTOR_BACKBONE` if set, else the bundled asset.
pub fn backbone_path() -> PathBuf {
    std::env::var_os("DEFECT_INSPECTOR_BACKBONE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::data::assets::bundled(BACKBONE_ASSET))
}

/// The backbone layers for an input, with the local-feature layer appended: `(backbone,
/// index of the LocalFeatures layer)`.
pub fn feature_network(
    weights: &Path,
    side: u32,
    resize: Resize,
) -> anyhow::Result<(backbone::Backbone, usize)> {
    let mut b = backbone::load(weights, side, side, Extent::Stages(4))
        .with_context(|| format!("loading the pretrained backbone {}", weights.display()))?;
    b.input.resize = resize;
    b.layers.push(Layer::LocalFeatures {
        from: FEATURE_STAGES.iter().map(|&s| b.stage_ends[s]).collect(),
        kernel: 3,
    });
    b.weights.push(None);
    let lf = b.layers.len() - 1;
    Ok((b, lf))
}

/// Channels of the local features (`Layer::LocalFeatures` of [`feature_network`]).
pub fn feature_channels(b: &backbone::Backbone) -> u32 {
    FEATURE_STAGES.iter().map(|&s| b.stage_channels[s]).sum()
}

/// Cached features of one split: per image `[c, h, w]` and its valid cells.
pub(crate) struct Features {
    /// `[n][c·h·w]`, channel-major per image.
    pub(crate) maps: Vec<Vec<f32>>,
    /// Valid (not letterbox) cells per image: `(cols, rows)`.
    pub(crate) valid: Vec<(usize, usize)>,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
}

impl Features {
    /// Rows `[cells, c]` of image `i`'s valid cells, row-major over (y, x), and the cell indices.
    pub(crate) fn rows(&self, i: usize) -> (Vec<f32>, Vec<usize>) {
        let (vw, vh) = self.valid[i];
        let hw = self.h * self.w;
        let mut rows = Vec::with_capacity(vw * vh * self.c);
        let mut cells = Vec::with_capacity(vw * vh);
        for y in 0..vh {
            for x in 0..vw {
                let p = y * self.w + x;
                cells.push(p);
                rows.extend((0..self.c).map(|ch| self.maps[i][ch * hw + p]));
            }
        }
        (rows, cells)
    }
}

/// Features of `images` (`files[i]` is image `i`'s file, for the cache), from the cache where
/// it has them, else from the engine. Also returns how many were extracted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn extract(
    engine: &mut kernels::Engine,
    layer: usize,
    spec: &ModelSpec,
    images: &[DecodedImage],
    files: &[PathBuf],
    cache: &FeatureCache,
    cancel: &AtomicBool,
    mut tick: impl FnMut(usize),
) -> anyhow::Result<(Features, usize)> {
    let plan = spec.validate()?;
    let s = plan.shapes[layer + 1];
    let (c, h, w) = (s.c as usize, s.h as usize, s.w as usize);
    let mut maps: Vec<Option<Vec<f32>>> = files.iter().map(|f| cache.read(f, c * h * w)).collect();
    let todo: Vec<usize> = (0..images.len()).filter(|&i| maps[i].is_none()).collect();
    let mut done = images.len() - todo.len();
    tick(done);
    for chunk in todo.chunks(EXTRACT_BATCH) {
        if cancel.load(Ordering::Relaxed) {
            bail!("training cancelled during feature extraction");
        }
        let frames: Vec<_> = chunk.iter().map(|&i| images[i].frame()).collect();
        let (_, feats) = engine.infer_with_layer(&frames, layer)?;
        for (&i, f) in chunk.iter().zip(feats) {
            cache.write(&files[i], &f);
            maps[i] = Some(f);
        }
        done += chunk.len();
        tick(done);
    }
    let valid = images
        .iter()
        .map(|img| {
            let (cw, ch) = spec.input.content_size(img.width, img.height);
            (
                kernels::valid_cells(cw, s.w, spec.input.width) as usize,
                kernels::valid_cells(ch, s.h, spec.input.height) as usize,
            )
        })
        .collect();
    Ok((
        Features {
            maps: maps.into_iter().map(Option::unwrap_or_default).collect(),
            valid,
            c,
            h,
            w,
        },
        todo.len(),
    ))
}

/// Features of a run's training and val images (`probe`: the run's network, its head weights
/// placeholders), through the inspection engine on `gpu`, from the cache where it has them;
/// progress is phase 0 over both splits. Returns them and how many images were extracted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn extract_splits(
    probe: &Model,
    lf: usize,
    weights_path: &Path,
    gpu: &kernels::GpuContext,
    train: &Split,
    val: &Split,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<(Features, Features, usize)> {
    let t = Instant::now();
    let mut engine = kernels::Engine::new(
        &gpu.device,
        &gpu.queue,
        probe,
        EXTRACT_BATCH as u32,
        gpu.describe(),
    )?;
    let total = train.images.len() + val.images.len();
    let mut report = |done: usize| {
        progress(Progress::Step {
            epoch: 0,
            step: done,
            steps: total,
            loss: f64::NAN,
        })
    };
    let spec = &probe.spec;
    let cache = FeatureCache::new(weights_path, spec, lf);
    let (train_f, new_train) = extract(
        &mut engine,
        lf,
        spec,
        &train.images,
        &train.files,
        &cache,
        cancel,
        &mut report,
    )?;
    let n_train = train.images.len();
    let (val_f, new_val) = extract(
        &mut engine,
        lf,
        spec,
        &val.images,
        &val.files,
        &cache,
        cancel,
        |d| report(n_train + d),
    )?;
    let extracted = new_train + new_val;
    tracing::info!(
        "features of {total} images in {:.1} s ({extracted} extracted, {} from the cache)",
        t.elapsed().as_secs_f64(),
        total - extracted
    );
    Ok((train_f, val_f, extracted))
}

#[cfg(test)]
mod tests {
    use super::network_key;

    /// A shader edited in a later build (one character) gives another key, so features an
    /// older build's kernels computed are never read back.
    #[test]
    fn the_cache_key_follows_the_shaders() {
        let base = [("a.wgsl", "x = 1;"), ("b.wgsl", "y = 2;")];
        let key = network_key(b"w", b"g", &base);
        assert_eq!(key, network_key(b"w", b"g", &base));
        assert_ne!(
            key,
            network_key(b"w", b"g", &[("a.wgsl", "x = 1;"), ("b.wgsl", "y = 3;")])
        );
        assert_ne!(key, network_key(b"v", b"g", &base));
        assert_ne!(key, network_key(b"w", b"h", &base));
        assert_ne!(key, network_key(b"w", b"g", &base[..1]));
    }
}
