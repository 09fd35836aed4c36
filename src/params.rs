//! The parameters of one generated image: what a grid cell resolves to and what the
//! pipeline consumes. Shared by `experiment`, `run`, `pipeline`, `scoring` and `report`.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// ip-adapter_sd15: projection of CLIP `image_embeds` to 4 tokens.
    Base,
    /// ip-adapter-plus_sd15: Resampler over `hidden_states[-2]`, 16 tokens.
    Plus,
}

/// What conditions the "unconditional" branch of classifier-free guidance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NegativeMode {
    /// Empty text and "no image" tokens.
    None,
    /// The negative text prompt, and "no image" tokens.
    Text,
    /// Empty text, and the negative image's tokens.
    Image,
    /// The negative text prompt and the negative image's tokens.
    Both,
}

impl NegativeMode {
    pub fn uses_text(self) -> bool {
        matches!(self, NegativeMode::Text | NegativeMode::Both)
    }
    pub fn uses_image(self) -> bool {
        matches!(self, NegativeMode::Image | NegativeMode::Both)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    Ddim,
    Euler,
    #[serde(rename = "dpmpp_2m")]
    DpmPp2m,
    #[serde(rename = "dpmpp_2m_karras")]
    DpmPp2mKarras,
}

/// How the "no image" tokens are made where a branch has no image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoImage {
    /// The reference implementation's: zero CLIP embedding (base), zero normalized pixels (Plus).
    #[default]
    Reference,
    /// ComfyUI's: the encoding of an all-black image.
    Black,
}

macro_rules! display_as_serde {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let value = serde_json::to_value(self).map_err(|_| fmt::Error)?;
                f.write_str(value.as_str().ok_or(fmt::Error)?)
            }
        }
    )*};
}
display_as_serde!(AdapterKind, NegativeMode, SchedulerKind, NoImage);

/// An IP-Adapter image weight and its active window, for one CFG branch.
///
/// Window: with N sampling steps, step i (0-based) is active iff `start <= i/N < end`.
/// Inactive steps use weight 0 (the image tokens are ignored at that step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BranchWeight {
    pub weight: f64,
    pub start: f64,
    pub end: f64,
}

impl BranchWeight {
    pub fn active(&self, step: usize, steps: usize) -> bool {
        let t = step as f64 / steps as f64;
        self.start <= t && t < self.end
    }
    /// The weight that applies at `step` of `steps`.
    pub fn at(&self, step: usize, steps: usize) -> f64 {
        if self.active(step, steps) {
            self.weight
        } else {
            0.0
        }
    }
}

/// Everything that determines one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub negative: NegativeMode,
    /// Positive image prompt (cond branch); `None`: "no image" tokens.
    pub positive_image: Option<PathBuf>,
    /// Negative image prompt (uncond branch, when `negative` uses images).
    pub negative_image: Option<PathBuf>,
    pub adapter: AdapterKind,
    /// Cond branch weight and window.
    pub positive: BranchWeight,
    /// Uncond branch weight and window (defaults to the positive ones, as in the official
    /// IP-Adapter where one scale multiplies both branches).
    pub negative_branch: BranchWeight,
    pub cfg: f64,
    pub steps: usize,
    pub scheduler: SchedulerKind,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub no_image: NoImage,
}

impl GenParams {
    /// The demo's defaults: 25 DDIM steps, CFG 7.5, 512x512, weight 1 over the whole run.
    pub fn new(seed: u64) -> Self {
        let full = BranchWeight {
            weight: 1.0,
            start: 0.0,
            end: 1.0,
        };
        GenParams {
            prompt: String::new(),
            negative_prompt: String::new(),
            negative: NegativeMode::Image,
            positive_image: None,
            negative_image: None,
            adapter: AdapterKind::Base,
            positive: full,
            negative_branch: full,
            cfg: 7.5,
            steps: 25,
            scheduler: SchedulerKind::Ddim,
            seed,
            width: 512,
            height: 512,
            no_image: NoImage::Reference,
        }
    }

    /// The negative text actually used by the uncond branch.
    pub fn uncond_text(&self) -> &str {
        if self.negative.uses_text() {
            &self.negative_prompt
        } else {
            ""
        }
    }

    /// The negative image actually used by the uncond branch.
    pub fn uncond_image(&self) -> Option<&PathBuf> {
        if self.negative.uses_image() {
            self.negative_image.as_ref()
        } else {
            None
        }
    }

    /// The parameters that decide the image: the negative image dropped where the mode
    /// ignores it (cells that differ only there make the same image).
    pub fn effective(&self) -> GenParams {
        GenParams {
            negative_image: self.uncond_image().cloned(),
            ..self.clone()
        }
    }

    /// Cells that can share one UNet call per step: same steps, size, scheduler, adapter kind.
    pub fn batch_key(&self) -> (usize, usize, usize, SchedulerKind, AdapterKind) {
        (
            self.steps,
            self.width,
            self.height,
            self.scheduler,
            self.adapter,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_active_from_its_first_step_not_one_late() {
        let w = BranchWeight {
            weight: 0.7,
            start: 0.2,
            end: 0.6,
        };
        let active: Vec<usize> = (0..10).filter(|&i| w.active(i, 10)).collect();
        assert_eq!(active, vec![2, 3, 4, 5]);
        assert_eq!(w.at(1, 10), 0.0);
        assert_eq!(w.at(2, 10), 0.7);
        let full = BranchWeight {
            weight: 1.0,
            start: 0.0,
            end: 1.0,
        };
        assert!((0..25).all(|i| full.active(i, 25)));
    }

    #[test]
    fn enums_display_as_their_toml_names() {
        assert_eq!(SchedulerKind::DpmPp2mKarras.to_string(), "dpmpp_2m_karras");
        assert_eq!(NegativeMode::Both.to_string(), "both");
        assert_eq!(AdapterKind::Plus.to_string(), "plus");
    }

    #[test]
    fn uncond_branch_uses_only_what_the_mode_names() {
        let mut p = GenParams::new(1);
        p.negative_prompt = "grass".into();
        p.negative_image = Some("lawn.png".into());
        p.negative = NegativeMode::Text;
        assert_eq!(p.uncond_text(), "grass");
        assert!(p.uncond_image().is_none());
        p.negative = NegativeMode::Image;
        assert_eq!(p.uncond_text(), "");
        assert!(p.uncond_image().is_some());
    }
}
