//! The Settings tab's source form: [`SourceDraft`], the source being edited until it is
//! applied. Its own module, below the app's state and the tab, so the state can hold it
//! without importing the tab.

use std::path::PathBuf;

use crate::records::settings::Settings;
use crate::station::source::SourceSpec;

/// The source being edited, applied with a button.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceDraft {
    pub(super) kind: usize,
    pub(super) folder: String,
    pub(super) looping: bool,
    pub(super) camera: u32,
    pub(super) resolution: usize,
    pub(super) camera_fps: u32,
    pub(super) synthetic_size: u32,
}

pub(super) const KINDS: [&str; 4] = ["Demo images", "Image folder", "Camera", "Synthetic"];
pub(super) const RESOLUTIONS: [(&str, Option<(u32, u32)>); 5] = [
    ("camera's fastest mode", None),
    ("640 × 480", Some((640, 480))),
    ("1280 × 720", Some((1280, 720))),
    ("1920 × 1080", Some((1920, 1080))),
    ("2592 × 1944", Some((2592, 1944))),
];

impl SourceDraft {
    /// Fills the image folder field (a folder chosen with the file dialog).
    pub(super) fn set_folder(&mut self, folder: String) {
        self.kind = 1;
        self.folder = folder;
    }

    /// The draft of the saved source.
    pub(super) fn from_settings(s: &Settings) -> Self {
        let mut d = Self {
            kind: 0,
            folder: String::new(),
            looping: true,
            camera: 0,
            resolution: 0,
            camera_fps: 30,
            synthetic_size: 256,
        };
        match &s.source {
            None => {}
            Some(SourceSpec::Folder { dir, looping }) => {
                d.kind = 1;
                d.folder = dir.display().to_string();
                d.looping = *looping;
            }
            Some(SourceSpec::Camera {
                index,
                resolution,
                fps,
            }) => {
                d.kind = 2;
                d.camera = *index;
                d.resolution = RESOLUTIONS
                    .iter()
                    .position(|r| r.1 == *resolution)
                    .unwrap_or(0);
                d.camera_fps = *fps;
            }
            Some(SourceSpec::Synthetic { size, .. }) => {
                d.kind = 3;
                d.synthetic_size = size.0;
            }
        }
        d
    }

    /// The source the draft describes (None = the demo images), or what is missing.
    pub(super) fn spec(&self) -> Result<Option<SourceSpec>, String> {
        Ok(match self.kind {
            0 => None,
            1 => {
                if self.folder.trim().is_empty() {
                    return Err("type the folder of images to replay".into());
                }
                Some(SourceSpec::Folder {
                    dir: PathBuf::from(self.folder.trim()),
                    looping: self.looping,
                })
            }
            2 => Some(SourceSpec::Camera {
                index: self.camera,
                resolution: RESOLUTIONS[self.resolution].1,
                fps: self.camera_fps,
            }),
            _ => Some(SourceSpec::Synthetic {
                size: (self.synthetic_size, self.synthetic_size),
                seed: 1,
            }),
        })
    }
}
