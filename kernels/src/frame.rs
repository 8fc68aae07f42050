//! Input frames as they come from a camera or an image file: raw 8-bit pixels, any size.

/// The pixel layout of a frame's bytes (tightly packed rows, no padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// One byte per pixel.
    Gray8,
    /// Three bytes per pixel, R G B.
    Rgb8,
    /// Four bytes per pixel, R G B A; alpha is ignored.
    Rgba8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> u32 {
        match self {
            Self::Gray8 => 1,
            Self::Rgb8 => 3,
            Self::Rgba8 => 4,
        }
    }
}

/// A region of interest in image pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Roi {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// One frame to inspect.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// `height` rows of `width × bytes_per_pixel` bytes.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel layout.
    pub format: PixelFormat,
    /// Region to inspect; `None` is the whole frame. A region reaching past the image is clipped.
    pub roi: Option<Roi>,
}

/// The largest frame side accepted (pixels).
pub const MAX_FRAME_SIDE: u32 = 1 << 15;

impl<'a> Frame<'a> {
    /// A whole-frame view of `data`.
    pub fn new(data: &'a [u8], width: u32, height: u32, format: PixelFormat) -> Self {
        Self {
            data,
            width,
            height,
            format,
            roi: None,
        }
    }

    /// Checks sizes and returns the effective (clipped) region of interest.
    pub fn effective_roi(&self) -> Result<Roi, String> {
        if self.width == 0 || self.height == 0 {
            return Err(format!("frame is empty ({}×{})", self.width, self.height));
        }
        if self.width > MAX_FRAME_SIDE || self.height > MAX_FRAME_SIDE {
            return Err(format!(
                "frame {}×{} is larger than {MAX_FRAME_SIDE} pixels on a side",
                self.width, self.height
            ));
        }
        let need = self.width as u64 * self.height as u64 * self.format.bytes_per_pixel() as u64;
        if self.data.len() as u64 != need {
            return Err(format!(
                "{}×{} {:?} needs {need} bytes, got {}",
                self.width,
                self.height,
                self.format,
                self.data.len()
            ));
        }
        let roi = self.roi.unwrap_or(Roi {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        });
        if roi.x >= self.width || roi.y >= self.height {
            return Err(format!(
                "region of interest starts at ({}, {}), outside the {}×{} frame",
                roi.x, roi.y, self.width, self.height
            ));
        }
        let width = roi.width.min(self.width - roi.x);
        let height = roi.height.min(self.height - roi.y);
        if width == 0 || height == 0 {
            return Err("region of interest is empty".into());
        }
        Ok(Roi {
            x: roi.x,
            y: roi.y,
            width,
            height,
        })
    }
}
