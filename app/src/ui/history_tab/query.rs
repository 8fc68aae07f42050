//! The History tab's query worker: its own database connection on its own thread, answering
//! pages (rows, counts, charts' data, thumbnails), a row's archived images, and CSV exports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::records::history::{self, Filter, HourBucket, InspectionRow, Store};

/// Rows per page.
pub const PAGE: u64 = 50;

pub(super) enum Request {
    Page { filter: Filter, page: u64 },
    Detail(Box<InspectionRow>),
    Export { filter: Filter, path: PathBuf },
}

pub(super) enum Reply {
    Page(Box<PageResult>),
    Detail(
        i64,
        Option<(egui::ColorImage, u32, u32)>,
        Option<egui::ColorImage>,
    ),
    Exported(Result<(PathBuf, usize), String>),
    Error(String),
}

/// One page of results with the charts' data.
pub struct PageResult {
    /// The filter it answers.
    pub filter: Filter,
    /// Page number.
    pub page: u64,
    /// The rows.
    pub rows: Vec<InspectionRow>,
    /// Rows matching in all.
    pub total: u64,
    /// Per hour.
    pub hourly: Vec<HourBucket>,
    /// Fails per class.
    pub pareto: Vec<(String, u64)>,
    /// Classes and models for the filter menus.
    pub classes: Vec<String>,
    /// Models.
    pub models: Vec<String>,
    /// Thumbnails by row id.
    pub thumbs: Vec<(i64, egui::ColorImage)>,
    /// Query time, ms.
    pub took_ms: f64,
}

pub(super) fn query_loop(db: &Path, rx: Receiver<Request>, tx: Sender<Reply>, ctx: egui::Context) {
    // The writer creates the database; wait for it rather than creating a second one.
    let store = loop {
        if db.is_file() {
            match Store::open(db) {
                Ok(s) => break s,
                Err(e) => {
                    let _ = tx.send(Reply::Error(e.to_string()));
                }
            }
        }
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(_) => {
                let _ = tx.send(Reply::Error(format!(
                    "no history yet: {} does not exist (it appears with the first recorded verdict)",
                    db.display()
                )));
                ctx.request_repaint();
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(_) => return,
        }
    };
    let archive = store.archive_dir();
    while let Ok(req) = rx.recv() {
        let reply = match req {
            Request::Page { filter, page } => {
                let t = Instant::now();
                let r = (|| -> Result<PageResult, history::HistoryError> {
                    let rows = store.query(&filter, PAGE, page * PAGE)?;
                    let thumbs = rows
                        .iter()
                        .filter_map(|r| {
                            let p = archive.join(r.image_path.as_ref()?);
                            let img = crate::data::dataset::decode_image(&p).ok()?;
                            Some((r.id, crate::station::display::frame_image(&img, 64)))
                        })
                        .collect();
                    Ok(PageResult {
                        total: store.count(&filter)?,
                        hourly: store.hourly(&filter)?,
                        pareto: store.pareto(&filter)?,
                        classes: store.distinct("class")?,
                        models: store.distinct("model_id")?,
                        filter,
                        page,
                        rows,
                        thumbs,
                        took_ms: 0.0,
                    })
                })();
                match r {
                    Ok(mut p) => {
                        p.took_ms = t.elapsed().as_secs_f64() * 1e3;
                        Reply::Page(Box::new(p))
                    }
                    Err(e) => Reply::Error(e.to_string()),
                }
            }
            Request::Detail(row) => {
                let load = |rel: &Option<String>| {
                    let p = archive.join(rel.as_ref()?);
                    let img = crate::data::dataset::decode_image(&p).ok()?;
                    Some((
                        crate::station::display::frame_image(&img, 1024),
                        img.width,
                        img.height,
                    ))
                };
                let heat = row.heatmap_path.as_ref().and_then(|rel| {
                    let img = image::open(archive.join(rel)).ok()?.to_rgba8();
                    Some(egui::ColorImage::from_rgba_unmultiplied(
                        [img.width() as usize, img.height() as usize],
                        img.as_raw(),
                    ))
                });
                Reply::Detail(row.id, load(&row.image_path), heat)
            }
            Request::Export { filter, path } => Reply::Exported(export(&store, &filter, &path)),
        };
        if tx.send(reply).is_err() {
            return;
        }
        ctx.request_repaint();
    }
}

/// The default name of an export: `defect-history-2026-11-30.csv`.
pub fn export_file_name(today: chrono::NaiveDate) -> String {
    format!("defect-history-{}.csv", today.format("%Y-%m-%d"))
}

/// Where an export typed as `typed` goes: empty = the default name in `default_dir`, a
/// relative path = in `default_dir` (never the working directory, which a desktop launcher
/// sets to `/` or the install folder), an absolute path as it is.
pub fn export_target(typed: &str, today: chrono::NaiveDate, default_dir: &Path) -> PathBuf {
    let typed = typed.trim();
    if typed.is_empty() {
        return default_dir.join(export_file_name(today));
    }
    let p = PathBuf::from(typed);
    if p.is_absolute() {
        p
    } else {
        default_dir.join(p)
    }
}

fn export(store: &Store, filter: &Filter, typed: &Path) -> Result<(PathBuf, usize), String> {
    let today = chrono::Local::now().date_naive();
    let mut path = export_target(
        &typed.to_string_lossy(),
        today,
        &crate::ui::file_dialog::default_export_dir(),
    );
    if path.is_dir() {
        path = path.join(export_file_name(today));
    }
    let path = std::path::absolute(&path).unwrap_or(path);
    let path = path.as_path();
    let rows = store
        .query(filter, u64::MAX >> 1, 0)
        .map_err(|e| e.to_string())?;
    // Write next to the target, then rename: a failed export never leaves half a file.
    let tmp = path.with_extension("csv.partial");
    let file =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    history::write_csv(std::io::BufWriter::new(file), &rows)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((path.to_path_buf(), rows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_goes_to_the_default_folder_unless_the_path_is_absolute() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap_or_default();
        let docs = Path::new("/home/lead/Documents");
        assert_eq!(export_file_name(today), "defect-history-2026-11-30.csv");
        assert_eq!(
            export_target("", today, docs),
            docs.join("defect-history-2026-11-30.csv")
        );
        assert_eq!(
            export_target("  shift-b.csv ", today, docs),
            docs.join("shift-b.csv")
        );
        assert_eq!(
            export_target("/mnt/share/fails.csv", today, docs),
            Path::new("/mnt/share/fails.csv")
        );
    }
}
