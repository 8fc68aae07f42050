//! Frame sources: a camera (nokhwa), an image-folder replay and a synthetic generator, behind
//! one trait. A source is opened and owned by the capture thread (a nokhwa camera is not `Send`),
//! so what travels between threads is the [`SourceSpec`] that says how to open it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::data::dataset::{self, DecodedImage};
use crate::data::files::{IMAGE_EXTENSIONS, list_images};

/// How to open a source; parsed from `folder:<DIR>`, `camera:<N>` or `synthetic`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SourceSpec {
    /// Replay the images of a folder (a dataset's `manifest.csv` order when it has one, else
    /// every image file below it, sorted by path).
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Start again at the first image after the last one.
        looping: bool,
    },
    /// A camera by index, with an optional requested resolution and frame rate.
    Camera {
        /// Index in [`list_cameras`]' order.
        index: u32,
        /// Requested width × height (the camera picks the closest it supports); None = highest
        /// frame rate it offers.
        resolution: Option<(u32, u32)>,
        /// Requested frames per second.
        fps: u32,
    },
    /// Generated textured parts, some with dark scratches and blobs: soak and load tests.
    Synthetic {
        /// Frame width and height.
        size: (u32, u32),
        /// Seed: the same seed gives the same frames.
        seed: u64,
    },
}

impl SourceSpec {
    /// Parses the command-line form. Folders replay once here; the app loops them.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(dir) = s.strip_prefix("folder:") {
            if dir.is_empty() {
                return Err(
                    "folder: needs a directory, e.g. folder:datasets/magnetic-tile-demo".into(),
                );
            }
            Ok(Self::Folder {
                dir: PathBuf::from(dir),
                looping: false,
            })
        } else if let Some(n) = s.strip_prefix("camera:") {
            let index = n.parse().map_err(|_| {
                format!("camera:{n}: the camera index must be a number (see `inspector cameras`)")
            })?;
            Ok(Self::Camera {
                index,
                resolution: None,
                fps: 30,
            })
        } else if s == "synthetic" {
            Ok(Self::Synthetic {
                size: (256, 256),
                seed: 1,
            })
        } else {
            Err(format!(
                "unknown source {s:?}: use folder:<DIR>, camera:<N> or synthetic"
            ))
        }
    }

    /// A short human name: "folder datasets/x", "camera 0", "synthetic".
    pub fn describe(&self) -> String {
        match self {
            Self::Folder { dir, .. } => format!("folder {}", dir.display()),
            Self::Camera { index, .. } => format!("camera {index}"),
            Self::Synthetic { .. } => "synthetic".into(),
        }
    }

    /// The command-line form (`folder:<DIR>` …), as stored in the history database.
    pub fn uri(&self) -> String {
        match self {
            Self::Folder { dir, .. } => format!("folder:{}", dir.display()),
            Self::Camera { index, .. } => format!("camera:{index}"),
            Self::Synthetic { .. } => "synthetic".into(),
        }
    }

    /// Whether frames come live (newest wins; frames the inference cannot keep up with are
    /// dropped) rather than from storage (every frame is inspected; the source waits).
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Camera { .. })
    }

    /// Opens the source. Errors name the source and what to do.
    pub fn open(&self) -> Result<Box<dyn FrameSource>, String> {
        match self {
            Self::Folder { dir, looping } => Ok(Box::new(FolderSource::open(dir, *looping)?)),
            Self::Camera {
                index,
                resolution,
                fps,
            } => Ok(Box::new(CameraSource::open(*index, *resolution, *fps)?)),
            Self::Synthetic { size, seed } => Ok(Box::new(SyntheticSource::new(*size, *seed))),
        }
    }
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct CapturedFrame {
    /// Pixels.
    pub image: Arc<DecodedImage>,
    /// Where it came from: a file path relative to the folder, "frame 12".
    pub origin: String,
    /// When it was captured (for capture-to-verdict latency).
    pub captured: Instant,
    /// Wall-clock capture time.
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

/// What a source gives when asked for a frame.
#[derive(Debug)]
pub enum Pull {
    /// A frame.
    Frame(CapturedFrame),
    /// An entry that could not be read (a corrupt file); the source goes on.
    Unreadable {
        /// The entry.
        origin: String,
        /// Why.
        error: String,
    },
    /// A source that replays once has nothing more.
    End,
    /// The device is gone (camera unplugged); the source retries on later pulls.
    Lost(String),
    /// Nothing this time, ask again: a triggered source with no trigger yet (it returns within
    /// a few ms, so a pause or a stop takes effect between two pulls).
    Idle,
}

/// A source of frames, owned by the capture thread.
pub trait FrameSource {
    /// Blocks until the next frame (a camera) or produces it at once (folder, synthetic).
    fn pull(&mut self) -> Pull;
    /// Whether the source paces itself (a camera delivers at its own rate).
    fn self_paced(&self) -> bool {
        false
    }
}

/// Replays the images of a folder.
pub struct FolderSource {
    root: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
    looping: bool,
}

impl FolderSource {
    /// Lists the images: a dataset's rows in manifest order (masks are not inspected), else every
    /// image file below `dir`, sorted by path.
    pub fn open(dir: &Path, looping: bool) -> Result<Self, String> {
        if !dir.is_dir() {
            return Err(format!(
                "image folder {} does not exist or is not a folder",
                dir.display()
            ));
        }
        let files = if dir.join("manifest.csv").is_file() {
            let ds = dataset::Dataset::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            ds.samples.iter().map(|s| s.path.clone()).collect()
        } else {
            let mut files = Vec::new();
            list_images(dir, &mut files);
            files.sort();
            files
        };
        if files.is_empty() {
            return Err(format!(
                "image folder {} has no images ({})",
                dir.display(),
                IMAGE_EXTENSIONS.join(", ")
            ));
        }
        Ok(Self {
            root: dir.to_path_buf(),
            files,
            next: 0,
            looping,
        })
    }
}

impl FrameSource for FolderSource {
    fn pull(&mut self) -> Pull {
        if self.next >= self.files.len() {
            if !self.looping {
                return Pull::End;
            }
            self.next = 0;
        }
        let path = &self.files[self.next];
        self.next += 1;
        let origin = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string();
        let captured = Instant::now();
        match dataset::decode_image(path) {
            Ok(image) => Pull::Frame(CapturedFrame {
                image: Arc::new(image),
                origin,
                captured,
                timestamp: chrono::Utc::now(),
            }),
            Err(error) => Pull::Unreadable { origin, error },
        }
    }
}

/// Generated gray parts: a smooth texture, and on about one frame in three a dark scratch or
/// blob. Deterministic per seed.
pub struct SyntheticSource {
    size: (u32, u32),
    rng: kernels::rng::SplitMix64,
    frame: u64,
}

impl SyntheticSource {
    /// A generator of `size` frames.
    pub fn new(size: (u32, u32), seed: u64) -> Self {
        Self {
            size: (size.0.clamp(8, 8192), size.1.clamp(8, 8192)),
            rng: kernels::rng::SplitMix64::new(seed),
            frame: 0,
        }
    }

    fn uniform(&mut self) -> f32 {
        (self.rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// The next frame's pixels.
    pub fn generate(&mut self) -> DecodedImage {
        let (w, h) = self.size;
        let (fx, fy, phase) = (
            2.0 + 6.0 * self.uniform(),
            2.0 + 6.0 * self.uniform(),
            std::f32::consts::TAU * self.uniform(),
        );
        let base = 90.0 + 60.0 * self.uniform();
        let mut data = vec![0u8; (w * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                let tau = std::f32::consts::TAU;
                let t = (u * fx * tau + phase).sin() * (v * fy * tau).cos();
                let noise = ((x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663)) % 17) as f32;
                data[(y * w + x) as usize] = (base + 20.0 * t + noise).clamp(0.0, 255.0) as u8;
            }
        }
        if self.uniform() < 0.33 {
            // A dark defect: a line scratch or a round blob.
            let (cx, cy) = (self.uniform() * w as f32, self.uniform() * h as f32);
            let r = 3.0 + self.uniform() * (w.min(h) as f32 / 10.0);
            let scratch = self.uniform() < 0.5;
            let angle = self.uniform() * std::f32::consts::PI;
            let (dx, dy) = (angle.cos(), angle.sin());
            for y in 0..h {
                for x in 0..w {
                    let (px, py) = (x as f32 - cx, y as f32 - cy);
                    let inside = if scratch {
                        let along = px * dx + py * dy;
                        let across = (px * dy - py * dx).abs();
                        along.abs() < r * 3.0 && across < 1.5
                    } else {
                        px * px + py * py < r * r
                    };
                    if inside {
                        let p = &mut data[(y * w + x) as usize];
                        *p = (*p / 4).saturating_add(10);
                    }
                }
            }
        }
        DecodedImage {
            data,
            width: w,
            height: h,
            format: kernels::PixelFormat::Gray8,
        }
    }
}

impl FrameSource for SyntheticSource {
    fn pull(&mut self) -> Pull {
        let captured = Instant::now();
        let image = self.generate();
        self.frame += 1;
        Pull::Frame(CapturedFrame {
            image: Arc::new(image),
            origin: format!("frame {}", self.frame),
            captured,
            timestamp: chrono::Utc::now(),
        })
    }
}

/// Watches a source's failures to read: after [`ReadWatch::FAILURES`] in a row, or failures
/// for [`ReadWatch::SPAN`] without a frame between them, the source counts as lost (NO SIGNAL,
/// as for an unplugged camera) until the next frame is read. A folder renamed or removed in
/// the middle of a replay is the case it is for: each pull is still counted as unreadable, but
/// the station no longer looks live.
#[derive(Debug, Default)]
pub struct ReadWatch {
    streak: u32,
    since: Option<Instant>,
}

impl ReadWatch {
    /// Failures in a row that make the source lost.
    pub const FAILURES: u32 = 3;
    /// How long failures in a row may last before the source is lost (with at least two).
    pub const SPAN: Duration = Duration::from_secs(1);

    /// A frame was read: the streak ends.
    pub fn read(&mut self) {
        self.streak = 0;
        self.since = None;
    }

    /// `origin` of `spec` could not be read (`error`). Some(why) when the streak makes the
    /// source lost (on this failure and every later one until [`Self::read`]).
    pub fn failed(&mut self, spec: &SourceSpec, origin: &str, error: &str) -> Option<String> {
        self.streak += 1;
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.streak < Self::FAILURES && (self.streak < 2 || since.elapsed() < Self::SPAN) {
            return None;
        }
        let n = self.streak;
        Some(match spec {
            SourceSpec::Folder { dir, .. } if !dir.is_dir() => format!(
                "image folder {} is gone (renamed or removed?): {n} frames in a row could not be read",
                dir.display()
            ),
            _ => format!(
                "{} delivers nothing readable: {n} frames in a row could not be read (last: {origin}: {error})",
                spec.describe()
            ),
        })
    }
}

/// A camera through nokhwa. When the camera fails (unplugged), pulls report [`Pull::Lost`] and
/// try to reopen it every [`CameraSource::RETRY`].
pub struct CameraSource {
    index: u32,
    resolution: Option<(u32, u32)>,
    fps: u32,
    camera: Option<nokhwa::Camera>,
    last_attempt: Instant,
    frame: u64,
}

/// A camera the system reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CameraDesc {
    /// Index to pass as `camera:<N>`.
    pub index: String,
    /// Its name.
    pub name: String,
    /// Driver's description.
    pub description: String,
}

/// Lists the cameras the system reports (an empty list when there are none).
pub fn list_cameras() -> Result<Vec<CameraDesc>, String> {
    let backend = nokhwa::native_api_backend()
        .ok_or_else(|| "this platform has no camera backend".to_string())?;
    let cams = nokhwa::query(backend).map_err(|e| format!("cannot list cameras: {e}"))?;
    Ok(cams
        .into_iter()
        .map(|c| CameraDesc {
            index: c.index().to_string(),
            name: c.human_name(),
            description: c.description().to_string(),
        })
        .collect())
}

impl CameraSource {
    /// How often a lost camera is retried.
    pub const RETRY: Duration = Duration::from_secs(3);

    /// Opens camera `index`; the error names the camera and what to check.
    pub fn open(index: u32, resolution: Option<(u32, u32)>, fps: u32) -> Result<Self, String> {
        let camera = Self::connect(index, resolution, fps)?;
        Ok(Self {
            index,
            resolution,
            fps,
            camera: Some(camera),
            last_attempt: Instant::now(),
            frame: 0,
        })
    }

    fn connect(
        index: u32,
        resolution: Option<(u32, u32)>,
        fps: u32,
    ) -> Result<nokhwa::Camera, String> {
        use nokhwa::pixel_format::RgbFormat;
        use nokhwa::utils::{
            CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
            Resolution,
        };
        let requested = match resolution {
            Some((w, h)) => RequestedFormatType::Closest(CameraFormat::new(
                Resolution::new(w, h),
                FrameFormat::MJPEG,
                fps.max(1),
            )),
            None => RequestedFormatType::AbsoluteHighestFrameRate,
        };
        let mut camera = nokhwa::Camera::new(
            CameraIndex::Index(index),
            RequestedFormat::new::<RgbFormat>(requested),
        )
        .map_err(|e| {
            format!(
                "cannot open camera {index}: {e}. Check that it is plugged in and not used \
                         by another program; `inspector cameras` lists the cameras"
            )
        })?;
        camera
            .open_stream()
            .map_err(|e| format!("camera {index} opened but will not stream: {e}"))?;
        Ok(camera)
    }
}

impl FrameSource for CameraSource {
    fn self_paced(&self) -> bool {
        self.camera.is_some()
    }

    fn pull(&mut self) -> Pull {
        use nokhwa::pixel_format::RgbFormat;
        let Some(camera) = self.camera.as_mut() else {
            let wait = Self::RETRY.saturating_sub(self.last_attempt.elapsed());
            std::thread::sleep(wait.min(Duration::from_millis(200)));
            if self.last_attempt.elapsed() < Self::RETRY {
                return Pull::Lost(format!("camera {} lost; retrying", self.index));
            }
            self.last_attempt = Instant::now();
            return match Self::connect(self.index, self.resolution, self.fps) {
                Ok(c) => {
                    self.camera = Some(c);
                    self.pull()
                }
                Err(e) => Pull::Lost(e),
            };
        };
        let captured = Instant::now();
        let result = camera
            .frame()
            .and_then(|buf| buf.decode_image::<RgbFormat>());
        match result {
            Ok(img) => {
                self.frame += 1;
                let (width, height) = img.dimensions();
                Pull::Frame(CapturedFrame {
                    image: Arc::new(DecodedImage {
                        data: img.into_raw(),
                        width,
                        height,
                        format: kernels::PixelFormat::Rgb8,
                    }),
                    origin: format!("camera {} frame {}", self.index, self.frame),
                    captured,
                    timestamp: chrono::Utc::now(),
                })
            }
            Err(e) => {
                self.camera = None;
                self.last_attempt = Instant::now();
                Pull::Lost(format!("camera {} lost: {e}", self.index))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            SourceSpec::parse("folder:/x").unwrap(),
            SourceSpec::Folder {
                dir: "/x".into(),
                looping: false
            }
        );
        assert!(matches!(
            SourceSpec::parse("camera:2").unwrap(),
            SourceSpec::Camera { index: 2, .. }
        ));
        assert!(SourceSpec::parse("camera:x").is_err());
        assert!(SourceSpec::parse("folder:").is_err());
        assert!(SourceSpec::parse("video.mp4").is_err());
        assert!(matches!(
            SourceSpec::parse("synthetic").unwrap(),
            SourceSpec::Synthetic { .. }
        ));
    }

    #[test]
    fn synthetic_is_deterministic_and_varied() {
        let mut a = SyntheticSource::new((64, 48), 7);
        let mut b = SyntheticSource::new((64, 48), 7);
        let frames: Vec<_> = (0..6).map(|_| a.generate().data).collect();
        for f in &frames {
            assert_eq!(f.len(), 64 * 48);
            assert_eq!(*f, b.generate().data);
        }
        assert_ne!(frames[0], frames[1]);
    }

    #[test]
    fn missing_camera_is_an_error_not_a_panic() {
        // These machines have no camera; a station without one must get a message.
        if list_cameras().map(|c| c.is_empty()).unwrap_or(true) {
            let e = CameraSource::open(0, None, 30)
                .err()
                .expect("no camera to open");
            assert!(e.contains("camera 0"), "{e}");
        }
    }
}
