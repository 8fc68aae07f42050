//! The History tab's query worker: its own database connection on its own thread (a station's
//! history file or the plant database), answering pages (rows, counts, charts' data,
//! thumbnails), a row's images, CSV exports and a lead's decisions in the plant database.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::records::history::{self, Filter, HourBucket, InspectionRow};
use crate::records::plant::PlantError;
use crate::records::plant::read::{Records, RecordsLocation};

/// Rows per page.
pub const PAGE: u64 = 50;

pub(super) enum Request {
    /// A page of rows with the charts' data; `split`: the reject rate per station too.
    Page {
        filter: Filter,
        page: u64,
        split: bool,
    },
    Detail(Box<InspectionRow>),
    Export {
        filter: Filter,
        path: PathBuf,
    },
    /// A line lead's decision on a row of the plant database (written there, in its audit
    /// trail; a station's own rows are overridden through the station's history writer).
    PlantOverride {
        row: Box<InspectionRow>,
        verdict: String,
        by: String,
        reason: String,
    },
}

pub(super) enum Reply {
    Page(Box<PageResult>),
    Detail(
        i64,
        Option<(egui::ColorImage, u32, u32)>,
        Option<egui::ColorImage>,
    ),
    Exported(Result<(PathBuf, usize), String>),
    /// The plant database's answer to [`Request::PlantOverride`].
    Overridden(Result<String, String>),
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
    /// Per hour and station (asked for with "split by station"; empty otherwise).
    pub by_station: Vec<(String, HourBucket)>,
    /// Fails per class.
    pub pareto: Vec<(String, u64)>,
    /// Classes and models for the filter menus.
    pub classes: Vec<String>,
    /// Models.
    pub models: Vec<String>,
    /// Stations and lines for the filter menus (the plant database; empty for one station).
    pub stations: Vec<String>,
    /// Lines.
    pub lines: Vec<String>,
    /// Thumbnails by row id.
    pub thumbs: Vec<(i64, egui::ColorImage)>,
    /// Query time, ms.
    pub took_ms: f64,
}

/// The worker: opens `at` (a station's history file, or the plant database) when asked the
/// first time, and again after it failed, so a server that comes back is picked up.
pub(super) fn query_loop(
    at: RecordsLocation,
    rx: Receiver<Request>,
    tx: Sender<Reply>,
    ctx: egui::Context,
) {
    let mut records: Option<Records> = None;
    while let Ok(req) = rx.recv() {
        if records.is_none() {
            match open(&at) {
                Ok(r) => records = Some(r),
                Err(e) => {
                    if tx.send(Reply::Error(e)).is_err() {
                        return;
                    }
                    ctx.request_repaint();
                    continue;
                }
            }
        }
        let Some(store) = records.as_mut() else {
            continue;
        };
        let reply = answer(store, req);
        if tx.send(reply).is_err() {
            return;
        }
        ctx.request_repaint();
    }
}

fn open(at: &RecordsLocation) -> Result<Records, String> {
    if let RecordsLocation::File(db) = at
        && !db.is_file()
    {
        // The writer creates the database; never a second one here.
        return Err(format!(
            "no history yet: {} does not exist (it appears with the first recorded verdict)",
            db.display()
        ));
    }
    Records::open(at).map_err(|e| e.to_string())
}

fn answer(store: &mut Records, req: Request) -> Reply {
    match req {
        Request::Page {
            filter,
            page,
            split,
        } => {
            let t = Instant::now();
            let r = (|| -> Result<PageResult, PlantError> {
                let rows = store.query(&filter, PAGE, page * PAGE)?;
                let thumbs = thumbnails(store, &rows);
                let plant = store.is_plant();
                Ok(PageResult {
                    total: store.count(&filter)?,
                    hourly: store.hourly(&filter)?,
                    by_station: if split && plant {
                        store.hourly_by_station(&filter)?
                    } else {
                        Vec::new()
                    },
                    pareto: store.pareto(&filter)?,
                    classes: store.distinct("class")?,
                    models: store.distinct("model_id")?,
                    stations: if plant {
                        store.distinct("station_id")?
                    } else {
                        Vec::new()
                    },
                    lines: if plant {
                        store.distinct("line")?
                    } else {
                        Vec::new()
                    },
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
        Request::Detail(row) => match store {
            Records::Local(local) => {
                let archive = local.archive_dir();
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
                    Some(rgba(&img))
                });
                Reply::Detail(row.id, load(&row.image_path), heat)
            }
            // The plant keeps the reject thumbnail; the full frame stays on the station.
            Records::Plant(p) => {
                let img = p
                    .thumbnail(row.id)
                    .ok()
                    .flatten()
                    .and_then(|jpeg| image::load_from_memory(&jpeg).ok())
                    .map(|i| {
                        let i = i.to_rgba8();
                        (rgba(&i), i.width(), i.height())
                    });
                Reply::Detail(row.id, img, None)
            }
        },
        Request::Export { filter, path } => Reply::Exported(export(store, &filter, &path)),
        Request::PlantOverride {
            row,
            verdict,
            by,
            reason,
        } => Reply::Overridden(match store {
            Records::Plant(p) => p
                .override_row(&row, &verdict, &by, &reason)
                .map(|applied| {
                    format!(
                        "{} of {} {} as {verdict} in the plant database{}",
                        row.origin,
                        row.station,
                        if verdict == row.verdict {
                            "confirmed"
                        } else {
                            "overridden"
                        },
                        if applied {
                            ""
                        } else {
                            " (a later decision stands; this one is in the audit trail)"
                        }
                    )
                })
                .map_err(|e| e.to_string()),
            Records::Local(_) => Err("not the plant database".into()),
        }),
    }
}

fn rgba(img: &image::RgbaImage) -> egui::ColorImage {
    egui::ColorImage::from_rgba_unmultiplied(
        [img.width() as usize, img.height() as usize],
        img.as_raw(),
    )
}

/// The page's thumbnails: archived frames of a station's history, the reject thumbnails the
/// plant database keeps. None is an error (a missing image is shown as none).
fn thumbnails(store: &mut Records, rows: &[InspectionRow]) -> Vec<(i64, egui::ColorImage)> {
    match store {
        Records::Plant(p) => {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            p.thumbnails(&ids)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(id, jpeg)| {
                    let img = image::load_from_memory(&jpeg).ok()?.to_rgba8();
                    Some((id, rgba(&img)))
                })
                .collect()
        }
        Records::Local(local) => {
            let archive = local.archive_dir();
            rows.iter()
                .filter_map(|r| {
                    let p = archive.join(r.image_path.as_ref()?);
                    let img = crate::data::dataset::decode_image(&p).ok()?;
                    Some((r.id, crate::station::display::frame_image(&img, 64)))
                })
                .collect()
        }
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

fn export(store: &mut Records, filter: &Filter, typed: &Path) -> Result<(PathBuf, usize), String> {
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
