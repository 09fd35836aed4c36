//! The models of a run by role, and one generic set of them: the experiment's references
//! (`ModelSet<ModelRef>`), the files the pipeline loads (`ModelSet<PathBuf>`) and the digests
//! that identify an image (`ModelSet<String>`) are the same shape with other contents.
use crate::params::AdapterKind;
use crate::weights::hub::Component;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a model is for. The serde name is the one written in manifests and printed by
/// `negimg models check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "pipeline")]
    Pipeline,
    #[serde(rename = "vae")]
    Vae,
    #[serde(rename = "ip_adapter.base")]
    IpAdapterBase,
    #[serde(rename = "ip_adapter.plus")]
    IpAdapterPlus,
    #[serde(rename = "ip_adapter.light")]
    IpAdapterLight,
    #[serde(rename = "ip_adapter.plus_face")]
    IpAdapterPlusFace,
    #[serde(rename = "ip_adapter.full_face")]
    IpAdapterFullFace,
    #[serde(rename = "image_encoder")]
    ImageEncoder,
    #[serde(rename = "scorer")]
    Scorer,
    #[serde(rename = "scorer_dino")]
    ScorerDino,
    #[serde(rename = "aesthetic")]
    Aesthetic,
}

impl Role {
    /// Every role, in the order manifests list them.
    pub const ALL: [Role; 11] = [
        Role::Pipeline,
        Role::Vae,
        Role::IpAdapterBase,
        Role::IpAdapterPlus,
        Role::IpAdapterLight,
        Role::IpAdapterPlusFace,
        Role::IpAdapterFullFace,
        Role::ImageEncoder,
        Role::Scorer,
        Role::ScorerDino,
        Role::Aesthetic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Pipeline => "pipeline",
            Role::Vae => "vae",
            Role::IpAdapterBase => "ip_adapter.base",
            Role::IpAdapterPlus => "ip_adapter.plus",
            Role::IpAdapterLight => "ip_adapter.light",
            Role::IpAdapterPlusFace => "ip_adapter.plus_face",
            Role::IpAdapterFullFace => "ip_adapter.full_face",
            Role::ImageEncoder => "image_encoder",
            Role::Scorer => "scorer",
            Role::ScorerDino => "scorer_dino",
            Role::Aesthetic => "aesthetic",
        }
    }

    /// What the reference points at, which decides the files the role needs.
    pub fn component(self) -> Component {
        match self {
            Role::Pipeline => Component::Pipeline,
            Role::IpAdapterBase
            | Role::IpAdapterPlus
            | Role::IpAdapterLight
            | Role::IpAdapterPlusFace
            | Role::IpAdapterFullFace
            | Role::Aesthetic => Component::File,
            Role::Vae | Role::ImageEncoder | Role::Scorer | Role::ScorerDino => {
                Component::ModelFolder
            }
        }
    }

    /// Whether the role's files decide the pixels of an image (the scorers' do not).
    pub fn makes_images(self) -> bool {
        !matches!(self, Role::Scorer | Role::ScorerDino | Role::Aesthetic)
    }

    pub fn adapter(kind: AdapterKind) -> Role {
        match kind {
            AdapterKind::Base => Role::IpAdapterBase,
            AdapterKind::Plus => Role::IpAdapterPlus,
            AdapterKind::Light => Role::IpAdapterLight,
            AdapterKind::PlusFace => Role::IpAdapterPlusFace,
            AdapterKind::FullFace => Role::IpAdapterFullFace,
        }
    }

    /// The adapter kind of an `ip_adapter.*` role.
    pub fn adapter_kind(self) -> Option<AdapterKind> {
        AdapterKind::ALL
            .into_iter()
            .find(|&k| Role::adapter(k) == self)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One `T` per role; the pipeline and the image encoder are always there.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModelSet<T> {
    /// A diffusers-layout folder, or a single-file LDM checkpoint (`.safetensors`).
    pub pipeline: T,
    /// A VAE that replaces the pipeline's own.
    pub vae: Option<T>,
    pub ip_adapter_base: Option<T>,
    pub ip_adapter_plus: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_adapter_light: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_adapter_plus_face: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_adapter_full_face: Option<T>,
    /// CLIPVisionModelWithProjection folder.
    pub image_encoder: T,
    /// CLIP model for the scores (not used to make images).
    pub scorer: Option<T>,
    /// DINOv2 model for the scores (not used to make images).
    pub scorer_dino: Option<T>,
    /// LAION aesthetic predictor head (`.pth` or `.safetensors`) on the CLIP scorer's
    /// embedding (not used to make images).
    pub aesthetic: Option<T>,
}

impl<T> ModelSet<T> {
    pub fn get(&self, role: Role) -> Option<&T> {
        match role {
            Role::Pipeline => Some(&self.pipeline),
            Role::Vae => self.vae.as_ref(),
            Role::IpAdapterBase => self.ip_adapter_base.as_ref(),
            Role::IpAdapterPlus => self.ip_adapter_plus.as_ref(),
            Role::IpAdapterLight => self.ip_adapter_light.as_ref(),
            Role::IpAdapterPlusFace => self.ip_adapter_plus_face.as_ref(),
            Role::IpAdapterFullFace => self.ip_adapter_full_face.as_ref(),
            Role::ImageEncoder => Some(&self.image_encoder),
            Role::Scorer => self.scorer.as_ref(),
            Role::ScorerDino => self.scorer_dino.as_ref(),
            Role::Aesthetic => self.aesthetic.as_ref(),
        }
    }

    pub fn adapter(&self, kind: AdapterKind) -> Option<&T> {
        self.get(Role::adapter(kind))
    }

    /// The adapter given as `kind` (`None` clears it).
    pub fn set_adapter(&mut self, kind: AdapterKind, value: Option<T>) {
        let slot = match kind {
            AdapterKind::Base => &mut self.ip_adapter_base,
            AdapterKind::Plus => &mut self.ip_adapter_plus,
            AdapterKind::Light => &mut self.ip_adapter_light,
            AdapterKind::PlusFace => &mut self.ip_adapter_plus_face,
            AdapterKind::FullFace => &mut self.ip_adapter_full_face,
        };
        *slot = value;
    }

    /// The adapters given, with their kinds, in [`AdapterKind::ALL`] order.
    pub fn adapters(&self) -> impl Iterator<Item = (AdapterKind, &T)> {
        AdapterKind::ALL
            .into_iter()
            .filter_map(move |k| self.adapter(k).map(|m| (k, m)))
    }

    /// The models given, in [`Role::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Role, &T)> {
        Role::ALL
            .into_iter()
            .filter_map(move |role| self.get(role).map(|m| (role, m)))
    }

    /// The same set with `f` applied to every model given.
    pub fn map<U>(&self, mut f: impl FnMut(Role, &T) -> U) -> ModelSet<U> {
        ModelSet {
            pipeline: f(Role::Pipeline, &self.pipeline),
            vae: self.vae.as_ref().map(|m| f(Role::Vae, m)),
            ip_adapter_base: self
                .ip_adapter_base
                .as_ref()
                .map(|m| f(Role::IpAdapterBase, m)),
            ip_adapter_plus: self
                .ip_adapter_plus
                .as_ref()
                .map(|m| f(Role::IpAdapterPlus, m)),
            ip_adapter_light: self
                .ip_adapter_light
                .as_ref()
                .map(|m| f(Role::IpAdapterLight, m)),
            ip_adapter_plus_face: self
                .ip_adapter_plus_face
                .as_ref()
                .map(|m| f(Role::IpAdapterPlusFace, m)),
            ip_adapter_full_face: self
                .ip_adapter_full_face
                .as_ref()
                .map(|m| f(Role::IpAdapterFullFace, m)),
            image_encoder: f(Role::ImageEncoder, &self.image_encoder),
            scorer: self.scorer.as_ref().map(|m| f(Role::Scorer, m)),
            scorer_dino: self.scorer_dino.as_ref().map(|m| f(Role::ScorerDino, m)),
            aesthetic: self.aesthetic.as_ref().map(|m| f(Role::Aesthetic, m)),
        }
    }
}

impl ModelSet<PathBuf> {
    /// The layout `negimg models init-random --out DIR` writes: `DIR/pipeline`,
    /// `DIR/<adapter file>` ([`adapter_file_name`]), `DIR/image_encoder`, `DIR/scorer`
    /// (optional models that are absent are left out).
    pub fn from_models_dir(dir: &Path) -> ModelSet<PathBuf> {
        let optional = |name: &str| Some(dir.join(name)).filter(|p| p.exists());
        let mut set = ModelSet {
            pipeline: dir.join("pipeline"),
            image_encoder: dir.join("image_encoder"),
            scorer: optional("scorer"),
            ..Default::default()
        };
        for kind in AdapterKind::ALL {
            // SD1.5's file name, else SDXL's (ViT-H image encoder), else for base SDXL's
            // ViT-bigG `ip-adapter_sdxl`.
            let sdxl = || sdxl_adapter_file_name(kind).and_then(optional);
            let big_g = || (kind == AdapterKind::Base).then(|| optional(SDXL_BIG_G_ADAPTER))?;
            let file = optional(adapter_file_name(kind))
                .or_else(sdxl)
                .or_else(big_g);
            set.set_adapter(kind, file);
        }
        set
    }
}

/// The SD1.5 file name of an adapter kind, as h94/IP-Adapter's `models/` names it.
pub fn adapter_file_name(kind: AdapterKind) -> &'static str {
    match kind {
        AdapterKind::Base => "ip-adapter_sd15.safetensors",
        AdapterKind::Plus => "ip-adapter-plus_sd15.safetensors",
        AdapterKind::Light => "ip-adapter_sd15_light.safetensors",
        AdapterKind::PlusFace => "ip-adapter-plus-face_sd15.safetensors",
        AdapterKind::FullFace => "ip-adapter-full-face_sd15.safetensors",
    }
}

/// h94/IP-Adapter's `sdxl_models/` base adapter for the ViT-bigG image encoder
/// (`sdxl_models/image_encoder`).
pub const SDXL_BIG_G_ADAPTER: &str = "ip-adapter_sdxl.safetensors";

/// The SDXL file name of an adapter kind for a ViT-H image encoder, as h94/IP-Adapter's
/// `sdxl_models/` names it (the kinds it has).
pub fn sdxl_adapter_file_name(kind: AdapterKind) -> Option<&'static str> {
    match kind {
        AdapterKind::Base => Some("ip-adapter_sdxl_vit-h.safetensors"),
        AdapterKind::Plus => Some("ip-adapter-plus_sdxl_vit-h.safetensors"),
        AdapterKind::PlusFace => Some("ip-adapter-plus-face_sdxl_vit-h.safetensors"),
        AdapterKind::Light | AdapterKind::FullFace => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_serialise_as_their_names_and_sets_iterate_in_order() {
        for role in Role::ALL {
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.name())
            );
        }
        let set = ModelSet {
            pipeline: 1,
            vae: None,
            ip_adapter_base: None,
            ip_adapter_plus: Some(4),
            image_encoder: 5,
            scorer: Some(6),
            ..Default::default()
        };
        let roles: Vec<Role> = set.iter().map(|(r, _)| r).collect();
        assert_eq!(
            roles,
            [
                Role::Pipeline,
                Role::IpAdapterPlus,
                Role::ImageEncoder,
                Role::Scorer
            ]
        );
        assert_eq!(set.map(|_, v| v * 10).adapter(AdapterKind::Plus), Some(&40));
        assert_eq!(set.adapter(AdapterKind::Base), None);
    }
}
