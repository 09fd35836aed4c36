//! Derived input images: noise controls made from another input image (or from nothing),
//! as ComfyUI_IPAdapter_plus's `IPAdapterNoise` node and its older `noise` option make them,
//! plus simple controls (mean colour, grayscale, blur).
//!
//! [`noise`] computes the image with libtorch on the CPU, so seed N is torch's seed N;
//! [`inputs`] writes the images of a run into `inputs/`, cached by content.
pub mod noise;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Side of every derived image (the CLIP vision input).
pub const SIDE: i64 = 224;
/// Largest `blur` kernel (ComfyUI's limit).
pub const MAX_BLUR: u32 = 32;

/// How a derived image is made from its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    /// `IPAdapterNoise` "fade": the source blended with uniform noise.
    Fade,
    /// "dissolve": a random `strength` share of pixels replaced by uniform noise.
    Dissolve,
    /// "gaussian": the source plus normal noise times `strength`.
    Gaussian,
    /// "shuffle": an elastic warp, both flips, then multiplicative normal noise.
    Shuffle,
    /// The older IP-Adapter node's `noise` option (the elastic shuffle at seed 0).
    Legacy,
    /// The source blended towards a flat image of its mean colour.
    MeanColor,
    /// The source blended towards its grayscale (torchvision's luma weights).
    Grayscale,
    /// The source blended towards its Gaussian blur (kernel `blur`), no noise.
    Blur,
}

impl NoiseKind {
    pub const ALL: [NoiseKind; 8] = [
        NoiseKind::Fade,
        NoiseKind::Dissolve,
        NoiseKind::Gaussian,
        NoiseKind::Shuffle,
        NoiseKind::Legacy,
        NoiseKind::MeanColor,
        NoiseKind::Grayscale,
        NoiseKind::Blur,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NoiseKind::Fade => "fade",
            NoiseKind::Dissolve => "dissolve",
            NoiseKind::Gaussian => "gaussian",
            NoiseKind::Shuffle => "shuffle",
            NoiseKind::Legacy => "legacy",
            NoiseKind::MeanColor => "mean_color",
            NoiseKind::Grayscale => "grayscale",
            NoiseKind::Blur => "blur",
        }
    }

    pub fn from_name(name: &str) -> Option<NoiseKind> {
        NoiseKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for NoiseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One derived image: its source (`None`: a black 224x224 image), the kind, the strength
/// in 0..=1 and the Gaussian blur kernel (0: none; even sizes are made odd, as ComfyUI does).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub from: Option<String>,
    pub noise: NoiseKind,
    pub strength: f64,
    pub blur: u32,
}

impl Recipe {
    /// `fade 0.25 of house, blur 5`: how grids and the report label the image.
    pub fn caption(&self) -> String {
        let from = self.from.as_deref().unwrap_or("black");
        let s = self.strength;
        match (self.noise, self.blur) {
            (NoiseKind::Blur, b) => format!("blur {s} of {from}, kernel {b}"),
            (k, 0) => format!("{k} {s} of {from}"),
            (k, b) => format!("{k} {s} of {from}, blur {b}"),
        }
    }

    /// `fade of house, blur 5`: the recipe but its strength (what a family shares).
    pub fn family_caption(&self) -> String {
        let from = self.from.as_deref().unwrap_or("black");
        match (self.noise, self.blur) {
            (NoiseKind::Blur, b) => format!("blur of {from}, kernel {b}"),
            (k, 0) => format!("{k} of {from}"),
            (k, b) => format!("{k} of {from}, blur {b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in NoiseKind::ALL {
            assert_eq!(NoiseKind::from_name(k.name()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
        assert_eq!(NoiseKind::from_name("fdae"), None);
    }

    #[test]
    fn captions_name_kind_strength_and_source() {
        let mut r = Recipe {
            from: Some("house".into()),
            noise: NoiseKind::Fade,
            strength: 0.25,
            blur: 5,
        };
        assert_eq!(r.caption(), "fade 0.25 of house, blur 5");
        assert_eq!(r.family_caption(), "fade of house, blur 5");
        r.noise = NoiseKind::Blur;
        r.from = None;
        assert_eq!(r.caption(), "blur 0.25 of black, kernel 5");
    }
}
