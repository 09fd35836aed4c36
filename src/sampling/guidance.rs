//! Classifier-free guidance with per-row image weights and guidance scales.
//!
//! The UNet runs once per step on `[uncond rows; cond rows]` (2B rows for B cells). The
//! IP-Adapter scale of each row comes from its branch: the cell's `negative_branch` for the
//! uncond row, `positive` for the cond row, each evaluated at the step with
//! [`BranchWeight::at`](crate::params::BranchWeight::at): with N steps, step i (0-based) is
//! active iff `start <= i/N < end`; an inactive branch has scale 0 at that step. So a window
//! takes effect at its first step (not one late), and the negative weight applies at every
//! step (the two defects of the demo).
use crate::params::GenParams;
use tch::{Device, Kind, Tensor};

/// The IP-Adapter scale of each UNet row at `step` of `steps`: `[uncond...; cond...]`.
pub fn ip_scales(cells: &[&GenParams], step: usize, steps: usize) -> Vec<f64> {
    let uncond = cells.iter().map(|c| c.negative_branch.at(step, steps));
    let cond = cells.iter().map(|c| c.positive.at(step, steps));
    uncond.chain(cond).collect()
}

/// The same as a `[2B]` tensor of `kind` on `device`.
pub fn ip_scale_tensor(
    cells: &[&GenParams],
    step: usize,
    steps: usize,
    device: Device,
    kind: Kind,
) -> Tensor {
    Tensor::from_slice(&ip_scales(cells, step, steps))
        .to_kind(kind)
        .to_device(device)
}

/// Guided noise prediction from the UNet output `eps` of `[uncond; cond]` rows:
/// `uncond + cfg * (cond - uncond)` per row; rows with `cfg <= 1` take `cond` alone, as
/// diffusers does when guidance is off.
pub fn combine(eps: &Tensor, cfg: &[f64]) -> Tensor {
    let b = cfg.len() as i64;
    let uncond = eps.narrow(0, 0, b);
    let cond = eps.narrow(0, b, b);
    let scale = Tensor::from_slice(cfg)
        .to_kind(eps.kind())
        .to_device(eps.device())
        .view([b, 1, 1, 1]);
    let guided = &uncond + (&cond - &uncond) * &scale;
    if cfg.iter().all(|&g| g > 1.0) {
        return guided;
    }
    let on = Tensor::from_slice(&cfg.iter().map(|&g| g > 1.0).collect::<Vec<bool>>())
        .to_device(eps.device())
        .view([b, 1, 1, 1]);
    guided.where_self(&on, &cond)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::BranchWeight;

    #[test]
    fn scales_follow_each_branch_window_from_its_first_step() {
        let mut c = GenParams::new(0);
        c.positive = BranchWeight {
            weight: 0.8,
            start: 0.5,
            end: 1.0,
        };
        c.negative_branch = BranchWeight {
            weight: 0.3,
            start: 0.0,
            end: 0.5,
        };
        let per_step: Vec<Vec<f64>> = (0..4).map(|i| ip_scales(&[&c], i, 4)).collect();
        assert_eq!(
            per_step,
            vec![
                vec![0.3, 0.0],
                vec![0.3, 0.0],
                vec![0.0, 0.8],
                vec![0.0, 0.8]
            ]
        );
    }

    #[test]
    fn cfg_combines_per_row_and_is_off_at_one() {
        let eps = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 5.0]).view([4, 1, 1, 1]);
        let out = combine(&eps, &[2.0, 1.0]);
        let v = Vec::<f32>::try_from(out.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![4.0, 5.0]);
    }
}
