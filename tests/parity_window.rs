//! `window = "sigma"` and negative weights against a reference on diffusers' UNet and
//! schedulers (tests/reference/methods_parity.py; CPU, fp32, tiny random models, 32x32), for
//! DDIM, dpmpp_2m_karras and euler_ancestral, with guards: windows chosen so that the sigma rule selects other
//! steps than the steps rule (negimg's active-step sets equal the reference's ComfyUI formula
//! and differ from the steps rule's, and the images differ), and a negative weight whose image
//! is neither the weight-0 nor the positive-weight image.
mod common;

use common::parity::{self, Setup, WindowParity, branch};
use negimg::params::{GenParams, SchedulerKind, Window};
use std::path::Path;
use std::sync::OnceLock;

/// A window cell (see [`parity::window_cell`]): with 4 DDIM steps (timesteps 751, 501, 251,
/// 1) the steps rule takes steps 0-2 and 2-3, the sigma rule 0-1 and 1-3.
fn cell(dir: &Path, name: &str, scheduler: SchedulerKind, window: Window) -> (String, GenParams) {
    (
        name.to_string(),
        parity::window_cell(dir, scheduler, window),
    )
}

/// A full window with the cond weight `w` (negative weights: ComfyUI's range goes to -1).
fn weighted(dir: &Path, name: &str, w: f64) -> (String, GenParams) {
    let (_, mut c) = cell(dir, name, SchedulerKind::Ddim, Window::Steps);
    c.positive = branch(w, 0.0, 1.0);
    c.negative_branch.weight = 0.5;
    (name.to_string(), c)
}

fn shared() -> &'static WindowParity {
    static SHARED: OnceLock<WindowParity> = OnceLock::new();
    SHARED.get_or_init(|| {
        let setup = Setup::tiny("parity_window", "methods_parity.py");
        let (ddim, karras) = (SchedulerKind::Ddim, SchedulerKind::DpmPp2mKarras);
        let ancestral = SchedulerKind::EulerAncestral;
        // One batch: sigma- and steps-window cells share UNet calls.
        let cells = |dir: &Path| {
            vec![
                cell(dir, "sigma_ddim", ddim, Window::Sigma),
                cell(dir, "steps_ddim", ddim, Window::Steps),
                cell(dir, "sigma_karras", karras, Window::Sigma),
                cell(dir, "steps_karras", karras, Window::Steps),
                cell(dir, "sigma_euler_ancestral", ancestral, Window::Sigma),
                cell(dir, "steps_euler_ancestral", ancestral, Window::Steps),
                weighted(dir, "negative_weight", -0.5),
                weighted(dir, "zero_weight", 0.0),
                weighted(dir, "positive_weight", 0.5),
            ]
        };
        WindowParity::compute(setup, cells)
    })
}

/// Ours matches the reference image of `name` within 1/255.
fn assert_parity(name: &str) {
    shared().parity.assert_parity(name);
}

/// Our image of `a` is more than 2/255 (twice the parity tolerance) from our image of `b`.
fn assert_far(a: &str, b: &str) {
    shared().parity.assert_far(a, b);
}

/// The sigma rule's steps are the reference's and not the steps rule's, and the image
/// matches the reference's and differs from the steps-window image of the same cell.
fn assert_sigma_window(scheduler: &str) {
    let s = shared();
    let (sigma, steps) = (format!("sigma_{scheduler}"), format!("steps_{scheduler}"));
    let ours = s.our_active(&sigma, Window::Sigma);
    eprintln!("{sigma}: active steps (uncond, cond) {ours:?}");
    assert_eq!(ours, s.reference_active(&sigma), "{sigma}: active steps");
    assert_eq!(
        s.our_active(&sigma, Window::Steps),
        s.reference_active(&steps),
        "{steps}: active steps"
    );
    assert_ne!(
        ours,
        s.our_active(&sigma, Window::Steps),
        "{sigma}: rules agree"
    );
    assert_parity(&sigma);
    assert_far(&sigma, &steps);
}

#[test]
fn parity_window_sigma_ddim() {
    assert_sigma_window("ddim");
}

#[test]
fn parity_window_sigma_dpmpp_2m_karras() {
    assert_sigma_window("karras");
}

/// Euler ancestral's sigmas (those of Euler) gate the windows; its step noise comes from the
/// cell's generator in the reference's loop as in diffusers' pipeline.
#[test]
fn parity_window_sigma_euler_ancestral() {
    assert_sigma_window("euler_ancestral");
}

#[test]
fn parity_window_steps_both_schedulers() {
    assert_parity("steps_ddim");
    assert_parity("steps_karras");
}

#[test]
fn parity_negative_weight() {
    assert_parity("negative_weight");
    // Not dropped to 0, nor taken as its absolute value.
    assert_far("negative_weight", "zero_weight");
    assert_far("negative_weight", "positive_weight");
}
