//! Model versions: a trained model saved under a name with its notes, dataset fingerprint, val
//! metrics and chosen threshold, in `<platform data dir>/models/` (a `.safetensors` file and a
//! `.json` sidecar each). The threshold and the version record also go into the model file's
//! own spec, so the file alone says what it is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::evaluation::eval::EvalReport;

/// A saved version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Name (also the file stem).
    pub name: String,
    /// Free-form notes.
    pub notes: String,
    /// When it was saved (RFC 3339).
    pub created: String,
    /// Dataset folder it was trained on.
    pub dataset: String,
    /// Fingerprint of the dataset's labels.
    pub dataset_fingerprint: String,
    /// Decision threshold (FAIL at or above).
    pub threshold: f32,
    /// The review band's PASS threshold (None: two-way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_threshold: Option<f32>,
    /// Val miss rate at the threshold.
    pub miss_rate: f64,
    /// Val false-reject rate at the threshold.
    pub false_reject_rate: f64,
    /// Val accuracy.
    pub accuracy: f64,
    /// Val AUROC.
    pub auroc: Option<f64>,
    /// The model file.
    pub path: PathBuf,
}

/// Where versions live by default.
pub fn default_dir() -> PathBuf {
    crate::records::history::default_db_path()
        .parent()
        .map(|p| p.join("models"))
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// Saves `model` (a trained file) as version `name` with `threshold` and the review band's
/// `pass_threshold` (None: two-way). Refuses an existing name.
#[allow(clippy::too_many_arguments)]
pub fn save(
    dir: &Path,
    model: &Path,
    name: &str,
    notes: &str,
    threshold: f32,
    pass_threshold: Option<f32>,
    dataset: &Path,
    fingerprint: &str,
    val: &EvalReport,
    rates: (f64, f64),
) -> Result<VersionInfo, String> {
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "version name {name:?}: use letters, digits, '-', '_' or '.'"
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.safetensors"));
    if path.exists() {
        return Err(format!(
            "a version named {name} already exists; choose another name"
        ));
    }
    let mut m = kernels::Model::load(model).map_err(|e| e.to_string())?;
    let info = VersionInfo {
        name: name.into(),
        notes: notes.into(),
        created: crate::records::history::rfc3339(chrono::Utc::now()),
        dataset: dataset.display().to_string(),
        dataset_fingerprint: fingerprint.into(),
        threshold,
        pass_threshold,
        miss_rate: rates.0,
        false_reject_rate: rates.1,
        accuracy: val.accuracy,
        auroc: val.auroc,
        path: path.clone(),
    };
    m.spec.threshold = threshold;
    m.spec.pass_threshold = pass_threshold.map(|p| p.min(threshold));
    m.spec.name = name.into();
    if let serde_json::Value::Object(o) = &mut m.spec.training {
        o.insert(
            "version".into(),
            serde_json::to_value(&info).unwrap_or_default(),
        );
    } else {
        m.spec.training = serde_json::json!({ "version": info });
    }
    let bytes = m.to_bytes().map_err(|e| e.to_string())?;
    crate::data::labeling::write_atomic(&path, &bytes)?;
    let json = serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?;
    crate::data::labeling::write_atomic(&dir.join(format!("{name}.json")), &json)?;
    Ok(info)
}

/// The versions in `dir`, newest first.
pub fn list(dir: &Path) -> Vec<VersionInfo> {
    let mut out: Vec<VersionInfo> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .filter(|v: &VersionInfo| v.path.is_file())
        .collect();
    out.sort_by(|a, b| b.created.cmp(&a.created));
    out
}
