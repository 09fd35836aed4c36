//! Each cell's attention maps from a batch's probe (README, "Attention maps"): the maps of
//! the row and term that carry its negative image ([`guidance::image_rows`]) and of its
//! cond row, at the latent grid, copied to the CPU once per batch.
use crate::models::attention_probe::{ProbeMaps, Quantity};
use crate::params::GenParams;
use crate::sampling::guidance::{self, Term};
use tch::{Device, Kind, Tensor};

/// One cell's maps, float32 on the CPU, at the latent grid (h, w).
#[derive(Debug)]
pub struct CellMaps {
    /// `‖scale · out_ip‖` of the negative image's term averaged over blocks `[h, w]`, and per
    /// block `[blocks, h, w]`; `None` where no row carries a negative image (no negative
    /// image, or a method that does not put it in the image attention, as NegToMe).
    pub negative: Option<NegativeMaps>,
    /// The same for the cond row's own term (the positive image's).
    pub positive: Tensor,
    pub positive_blocks: Tensor,
    /// Per image token `[T, h, w]`: the attention probabilities of the cond row's own term.
    pub positive_tokens: Tensor,
    /// Per text token `[77, h, w]`: the cond row's text attention probabilities.
    pub text_tokens: Tensor,
    /// NegToMe: the share of its cond row's merges (steps × attention outputs of the blocks
    /// that merge) in which each token merged, averaged over those blocks `[h, w]`; zero
    /// for a cell that does not merge; `None` when nothing in the batch merged.
    pub negtome_merged: Option<Tensor>,
}

/// The maps of the term that carries a cell's negative image.
#[derive(Debug)]
pub struct NegativeMaps {
    /// `[h, w]`: the mean of `blocks` over blocks.
    pub mean: Tensor,
    /// `[blocks, h, w]`.
    pub blocks: Tensor,
    /// Per image token `[T, h, w]`: the term's attention probabilities.
    pub tokens: Tensor,
}

/// `[blocks, rows, ...]` of quantity `q` (zeros of `like`'s shape where not recorded).
fn per_block(maps: &ProbeMaps, q: Quantity) -> Option<Tensor> {
    let blocks: Vec<&Tensor> = maps
        .blocks
        .iter()
        .filter_map(|b| b.upsampled.iter().find(|(k, _)| *k == q).map(|(_, t)| t))
        .collect();
    (!blocks.is_empty()).then(|| Tensor::stack(&blocks, 0))
}

/// The maps of each of `cells` (the batch the probe recorded), in cell order.
pub fn cell_maps(maps: &ProbeMaps, cells: &[GenParams]) -> Vec<CellMaps> {
    let cpu = |t: Tensor| t.to_device(Device::Cpu).to_kind(Kind::Float);
    let blocks_of = |q| per_block(maps, q).map(cpu);
    let (norm, extra) = (blocks_of(Quantity::Norm), blocks_of(Quantity::ExtraNorm));
    let (ip_tokens, text_tokens) = (
        blocks_of(Quantity::IpTokens),
        blocks_of(Quantity::TextTokens),
    );
    let extra_tokens = blocks_of(Quantity::ExtraIpTokens);
    let merged = maps.mean(Quantity::Merged).map(|t| cpu(t.shallow_clone()));
    let (Some(norm), Some(ip_tokens), Some(text_tokens)) = (norm, ip_tokens, text_tokens) else {
        return vec![];
    };
    let mean = |t: &Tensor| t.mean_dim(0, false, None::<Kind>);
    let refs: Vec<&GenParams> = cells.iter().collect();
    guidance::image_rows(&refs)
        .into_iter()
        .map(|rows| {
            let row = |t: &Tensor, r: usize| t.select(1, r as i64);
            let positive_blocks = row(&norm, rows.positive);
            let positive_tokens = mean(&row(&ip_tokens, rows.positive));
            // The negative term's maps; none without one (or a second term not recorded).
            let of = |blocks: Option<&Tensor>, r: usize| blocks.map(|t| row(t, r));
            let negative = match rows.negative {
                Some((r, Term::Own)) => Some((row(&norm, r), mean(&row(&ip_tokens, r)))),
                Some((r, Term::Extra)) => {
                    of(extra.as_ref(), r).zip(of(extra_tokens.as_ref(), r).map(|t| mean(&t)))
                }
                None => None,
            };
            CellMaps {
                negative: negative.map(|(blocks, tokens)| NegativeMaps {
                    mean: mean(&blocks),
                    blocks,
                    tokens,
                }),
                positive: mean(&positive_blocks),
                positive_blocks,
                positive_tokens,
                text_tokens: mean(&row(&text_tokens, rows.positive)),
                negtome_merged: merged.as_ref().map(|t| t.select(0, rows.positive as i64)),
            }
        })
        .collect()
}
