//! The platform's file dialog (`rfd`) for every path the app asks for, without blocking the UI
//! thread: a click starts a short-lived worker that shows the dialog and sends what the person
//! chose over a bounded channel; the app polls it each frame like its other workers, and the
//! path lands in the field it was asked for (the field stays editable, so typing still works).
//!
//! On Linux and the BSDs `rfd` talks to the XDG desktop portal over D-Bus and falls back to
//! `zenity`; when neither is there (a bare X server such as Xvfb, a kiosk session) it returns
//! nothing, just as if the person had cancelled. So before showing anything the worker checks
//! that one of the two can answer and otherwise reports why no dialog can be shown, which the
//! field's owner shows beside the field with the advice to type the path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded};

/// Which field a dialog fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Settings › Model file (then "Load model").
    SettingsModel,
    /// Inspect › "Load model…": the chosen file is loaded at once.
    InspectModel,
    /// Settings › History database.
    Database,
    /// Settings › Source › Image folder.
    SourceFolder,
    /// Label › Dataset folder (then opened).
    LabelDataset,
    /// Train › Dataset folder.
    TrainDataset,
    /// History › CSV export (then written).
    CsvExport,
}

/// What kind of dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogKind {
    /// Choose an existing file.
    OpenFile,
    /// Choose a folder.
    PickFolder,
    /// Choose where to write a file.
    SaveFile,
}

/// One dialog to show.
#[derive(Clone, Debug, PartialEq)]
pub struct DialogRequest {
    /// Kind.
    pub kind: DialogKind,
    /// Window title.
    pub title: String,
    /// File type filters: (name, extensions without the dot).
    pub filters: Vec<(String, Vec<String>)>,
    /// The path typed in the field: the dialog opens in its folder (resolved on the worker:
    /// looking at the disk is no work for the UI thread).
    pub near: String,
    /// The proposed file name (save dialogs).
    pub file_name: Option<String>,
}

impl DialogRequest {
    /// A dialog of `kind` titled `title`, opening in the folder of `current` (a path typed in
    /// the field) when that folder exists.
    pub fn new(kind: DialogKind, title: &str, current: &str) -> Self {
        Self {
            kind,
            title: title.into(),
            filters: Vec::new(),
            near: current.into(),
            file_name: None,
        }
    }

    /// Proposes `name` as the file name (save dialogs).
    pub fn file_name(mut self, name: &str) -> Self {
        self.file_name = Some(name.into());
        self
    }

    /// The folder the dialog opens in: that of the typed path, else (save dialogs) the
    /// default export folder. Reads the disk: call it on the worker.
    pub fn start_dir(&self) -> Option<PathBuf> {
        start_dir_of(&self.near)
            .or_else(|| (self.kind == DialogKind::SaveFile).then(default_export_dir))
    }

    /// Adds a file type filter.
    pub fn filter(mut self, name: &str, extensions: &[&str]) -> Self {
        self.filters.push((
            name.into(),
            extensions.iter().map(|e| e.to_string()).collect(),
        ));
        self
    }
}

/// The folder a dialog for the typed path `current` opens in: the path itself when it is a
/// folder, else its parent when that exists.
pub fn start_dir_of(current: &str) -> Option<PathBuf> {
    let p = PathBuf::from(current.trim());
    if current.trim().is_empty() {
        return None;
    }
    if p.is_dir() {
        return std::path::absolute(&p).ok();
    }
    p.parent()
        .filter(|d| !d.as_os_str().is_empty() && d.is_dir())
        .and_then(|d| std::path::absolute(d).ok())
}

/// How a dialog ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The person chose this path.
    Picked(PathBuf),
    /// The person closed the dialog without choosing.
    Cancelled,
    /// No dialog could be shown; why.
    Unavailable(String),
}

/// Shows dialogs (the system's, or a scripted one in tests). Called on a worker thread.
pub trait DialogBackend: Send + Sync {
    /// Shows `req` and waits for the person's answer.
    fn show(&self, req: &DialogRequest) -> Outcome;
}

/// The platform's dialog through `rfd`, after checking that one can be shown.
pub struct SystemDialogs;

impl DialogBackend for SystemDialogs {
    fn show(&self, req: &DialogRequest) -> Outcome {
        if let Err(why) = availability(&Env::current()) {
            return Outcome::Unavailable(why);
        }
        let mut d = rfd::FileDialog::new().set_title(&req.title);
        for (name, ext) in &req.filters {
            d = d.add_filter(name, ext);
        }
        if let Some(dir) = req.start_dir() {
            d = d.set_directory(dir);
        }
        if let Some(name) = &req.file_name {
            d = d.set_file_name(name);
        }
        let picked = match req.kind {
            DialogKind::OpenFile => d.pick_file(),
            DialogKind::PickFolder => d.pick_folder(),
            DialogKind::SaveFile => d.save_file(),
        };
        picked.map_or(Outcome::Cancelled, Outcome::Picked)
    }
}

/// What decides whether a dialog can be shown (read from the process environment, or made up
/// in tests).
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `PATH`.
    pub path: Option<std::ffi::OsString>,
    /// `DBUS_SESSION_BUS_ADDRESS`.
    pub bus_address: Option<std::ffi::OsString>,
    /// `XDG_RUNTIME_DIR` (the session bus socket is `bus` in it).
    pub runtime_dir: Option<PathBuf>,
    /// `XDG_DATA_DIRS` (D-Bus service files are in `dbus-1/services` under each).
    pub data_dirs: Option<std::ffi::OsString>,
}

impl Env {
    /// This process's environment.
    pub fn current() -> Self {
        Self {
            path: std::env::var_os("PATH"),
            bus_address: std::env::var_os("DBUS_SESSION_BUS_ADDRESS"),
            runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            data_dirs: std::env::var_os("XDG_DATA_DIRS"),
        }
    }
}

/// Whether a file dialog can be shown; if not, a sentence saying why. On Linux and the BSDs:
/// a session bus that can start the desktop portal, or `zenity` on the `PATH` (what `rfd`
/// uses); elsewhere the system's own dialog is always there.
pub fn availability(env: &Env) -> Result<(), String> {
    if !cfg!(all(unix, not(target_os = "macos"))) {
        return Ok(());
    }
    if find_executable(env.path.as_deref(), "zenity").is_some() {
        return Ok(());
    }
    let bus = env.bus_address.as_ref().is_some_and(|a| !a.is_empty())
        || env
            .runtime_dir
            .as_ref()
            .is_some_and(|d| d.join("bus").exists());
    let data_dirs = env
        .data_dirs
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/usr/local/share:/usr/share".into());
    let portal = std::env::split_paths(&data_dirs).any(|d| {
        d.join("dbus-1/services/org.freedesktop.portal.Desktop.service")
            .is_file()
    });
    match (bus, portal) {
        (true, true) => Ok(()),
        (false, _) => Err(
            "no file dialog can be shown here: there is no desktop session bus (D-Bus) for the \
             desktop portal, and zenity is not installed"
                .into(),
        ),
        (true, false) => Err(
            "no file dialog can be shown here: the desktop portal (xdg-desktop-portal) is not \
             installed, and neither is zenity"
                .into(),
        ),
    }
}

/// The executable `name` in the `PATH` list, if any.
#[cfg(not(unix))]
fn find_executable(_: Option<&std::ffi::OsStr>, _: &str) -> Option<PathBuf> {
    None
}

/// The executable `name` in the `PATH` list, if any.
#[cfg(unix)]
fn find_executable(path: Option<&std::ffi::OsStr>, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(path?)
        .map(|d| d.join(name))
        .find(|f| {
            f.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The app's dialogs: at most one open at a time, answers polled each frame.
pub struct FileDialogs {
    backend: Arc<dyn DialogBackend>,
    tx: Sender<(Target, Outcome)>,
    rx: Receiver<(Target, Outcome)>,
    open: Option<Target>,
    /// Why the last dialog for a field could not be shown (shown beside that field until a
    /// dialog for it works).
    pub unavailable: Option<(Target, String)>,
}

impl Default for FileDialogs {
    fn default() -> Self {
        Self::with_backend(Arc::new(SystemDialogs))
    }
}

impl FileDialogs {
    /// Dialogs shown by `backend`.
    pub fn with_backend(backend: Arc<dyn DialogBackend>) -> Self {
        let (tx, rx) = bounded(4);
        Self {
            backend,
            tx,
            rx,
            open: None,
            unavailable: None,
        }
    }

    /// The field whose dialog is open.
    pub fn open(&self) -> Option<Target> {
        self.open
    }

    /// Shows `req` for `target` on a worker thread; false (nothing happens) while another
    /// dialog is open or when the thread cannot start (said in `unavailable`).
    pub fn request(&mut self, target: Target, req: DialogRequest, ctx: &egui::Context) -> bool {
        if self.open.is_some() {
            return false;
        }
        let (tx, backend, ctx) = (self.tx.clone(), self.backend.clone(), ctx.clone());
        let spawned = std::thread::Builder::new()
            .name("file-dialog".into())
            .spawn(move || {
                let outcome = backend.show(&req);
                let _ = tx.send((target, outcome));
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => {
                self.open = Some(target);
                true
            }
            Err(e) => {
                self.unavailable = Some((target, format!("the file dialog cannot start: {e}")));
                false
            }
        }
    }

    /// The dialogs that ended since the last call (never waits).
    pub fn poll(&mut self) -> Vec<(Target, Outcome)> {
        let done: Vec<(Target, Outcome)> = self.rx.try_iter().collect();
        for (target, outcome) in &done {
            if self.open == Some(*target) {
                self.open = None;
            }
            match outcome {
                Outcome::Unavailable(why) => self.unavailable = Some((*target, why.clone())),
                _ => {
                    if self.unavailable.as_ref().is_some_and(|(t, _)| t == target) {
                        self.unavailable = None;
                    }
                }
            }
        }
        done
    }

    /// A "Browse…" button for `target`: opens `req()` when clicked (disabled while a dialog is
    /// open), then, under it, a line while this field's dialog is open, or why none could be
    /// shown.
    pub fn button_ui(
        &mut self,
        ui: &mut egui::Ui,
        target: Target,
        req: impl FnOnce() -> DialogRequest,
    ) {
        let free = self.open.is_none();
        let hover = if free {
            "choose with the system's file dialog (or type the path)"
        } else {
            "a file dialog is open"
        };
        if ui
            .add_enabled(free, egui::Button::new("Browse…"))
            .on_hover_text(hover)
            .on_disabled_hover_text(hover)
            .clicked()
        {
            let ctx = ui.ctx().clone();
            self.request(target, req(), &ctx);
        }
    }

    /// The line for `target`: "waiting for the file dialog…" while it is open, or why no dialog
    /// could be shown and what to do instead.
    pub fn note_ui(&self, ui: &mut egui::Ui, target: Target) {
        if self.open == Some(target) {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("waiting for the file dialog…");
            });
        } else if let Some((t, why)) = &self.unavailable
            && *t == target
        {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("{why}. Type the path in the field instead."),
            );
        }
    }
}

/// Where exported files go by default: the documents folder, else the home folder, else the
/// temporary folder (never the working directory, which for a desktop launcher is `/`).
pub fn default_export_dir() -> PathBuf {
    directories::UserDirs::new()
        .and_then(|u| {
            u.document_dir()
                .filter(|d| d.is_dir())
                .map(Path::to_path_buf)
                .or_else(|| Some(u.home_dir().to_path_buf()))
        })
        .unwrap_or_else(std::env::temp_dir)
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::{Duration, Instant};

    fn executable(dir: &Path, name: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let f = dir.join(name);
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_dialog_needs_the_portal_on_a_session_bus_or_zenity() {
        let empty = tempfile::tempdir().unwrap();
        let bare = Env {
            path: Some(empty.path().into()),
            bus_address: None,
            runtime_dir: Some(empty.path().into()),
            data_dirs: Some(empty.path().into()),
        };
        let why = availability(&bare).unwrap_err();
        assert!(
            why.contains("no desktop session bus") && why.contains("zenity"),
            "{why}"
        );

        // zenity alone is enough (rfd falls back to it).
        let bin = tempfile::tempdir().unwrap();
        executable(bin.path(), "zenity");
        let with_zenity = Env {
            path: Some(std::env::join_paths([empty.path(), bin.path()]).unwrap()),
            ..bare.clone()
        };
        assert_eq!(availability(&with_zenity), Ok(()));
        // A zenity file that cannot run does not count.
        let noexec = tempfile::tempdir().unwrap();
        std::fs::write(noexec.path().join("zenity"), "").unwrap();
        let not_runnable = Env {
            path: Some(noexec.path().into()),
            ..bare.clone()
        };
        assert!(availability(&not_runnable).is_err());

        // A session bus without the portal service, then with it.
        let data = tempfile::tempdir().unwrap();
        let with_bus = Env {
            bus_address: Some("unix:path=/run/user/1000/bus".into()),
            data_dirs: Some(data.path().into()),
            ..bare.clone()
        };
        let why = availability(&with_bus).unwrap_err();
        assert!(why.contains("xdg-desktop-portal"), "{why}");
        let services = data.path().join("dbus-1/services");
        std::fs::create_dir_all(&services).unwrap();
        std::fs::write(services.join("org.freedesktop.portal.Desktop.service"), "").unwrap();
        assert_eq!(availability(&with_bus), Ok(()));
        // The portal installed but no bus to reach it on.
        let no_bus = Env {
            data_dirs: Some(data.path().into()),
            ..bare
        };
        assert!(availability(&no_bus).is_err());
    }

    #[test]
    fn the_dialog_opens_in_the_typed_paths_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.safetensors");
        assert_eq!(
            start_dir_of(&file.display().to_string()).as_deref(),
            Some(dir.path())
        );
        assert_eq!(
            start_dir_of(&dir.path().display().to_string()).as_deref(),
            Some(dir.path())
        );
        assert_eq!(start_dir_of(""), None);
        assert_eq!(start_dir_of("/no/such/folder/m.safetensors"), None);
    }

    struct Scripted(Outcome, Duration);
    impl DialogBackend for Scripted {
        fn show(&self, _: &DialogRequest) -> Outcome {
            std::thread::sleep(self.1);
            self.0.clone()
        }
    }

    fn wait(d: &mut FileDialogs) -> Vec<(Target, Outcome)> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let got = d.poll();
            if !got.is_empty() || Instant::now() > end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn one_dialog_at_a_time_answers_arrive_by_channel_and_say_why_none_showed() {
        let ctx = egui::Context::default();
        let req = DialogRequest::new(DialogKind::OpenFile, "Model file", "");
        let mut d = FileDialogs::with_backend(Arc::new(Scripted(
            Outcome::Picked("/data/m.safetensors".into()),
            Duration::from_millis(200),
        )));
        let t0 = Instant::now();
        assert!(d.request(Target::SettingsModel, req.clone(), &ctx));
        assert!(t0.elapsed() < Duration::from_millis(100), "request waited");
        assert_eq!(d.open(), Some(Target::SettingsModel));
        assert!(
            !d.request(Target::CsvExport, req.clone(), &ctx),
            "a second dialog opened"
        );
        assert_eq!(
            wait(&mut d),
            [(
                Target::SettingsModel,
                Outcome::Picked("/data/m.safetensors".into())
            )]
        );
        assert_eq!(d.open(), None);

        let mut d = FileDialogs::with_backend(Arc::new(Scripted(
            Outcome::Unavailable("no file dialog can be shown here".into()),
            Duration::ZERO,
        )));
        assert!(d.request(Target::LabelDataset, req, &ctx));
        wait(&mut d);
        assert_eq!(
            d.unavailable,
            Some((
                Target::LabelDataset,
                "no file dialog can be shown here".into()
            ))
        );
    }
}
