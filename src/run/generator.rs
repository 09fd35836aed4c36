//! What makes images from cells, as the run stage sees it: a trait, so that the runner's
//! tests can use a fake in place of the pipeline. The bottom of the run stage: batching,
//! the maker and the runner build on it.
use crate::params::GenParams;
use crate::pipeline::attention_maps::CellMaps;
use crate::pipeline::{CellOutcome, GenerateError, Pipeline, RowSteps};
use crate::steps::StepSet;

/// What makes images from cells: the pipeline, or a fake in tests of the runner.
pub trait Generator {
    /// The largest batch worth trying first for images of `width` x `height`; the runner
    /// decides the batch size of a run from it once and records it.
    fn estimate_batch(&self, width: usize, height: usize) -> usize;
    /// Each UNet call and decode takes at most `cells` cells' rows; a batch may hold more
    /// cells, which share their trajectories where they can.
    fn set_call_cells(&mut self, _cells: usize) {}
    /// The x̂₀ traces of the last batch, per cell: (step, image); empty without traces.
    fn take_traces(&mut self) -> Vec<Vec<(usize, image::RgbImage)>> {
        Vec::new()
    }
    /// One outcome per cell, in order: at least every cell marked in `wanted`; the others
    /// are there for the batch's shape (which cells share a UNet call decides its rounding)
    /// and may come back `None`, their work skipped where it leads to no wanted cell. The
    /// cells share a [`GenParams::batch_key`].
    fn generate(
        &mut self,
        cells: &[GenParams],
        wanted: &[bool],
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::result::Result<Vec<Option<CellOutcome>>, GenerateError>;
    /// The UNet row-steps of the last batch: (computed, those of the whole batch); `None`
    /// for a generator without a UNet.
    fn take_row_steps(&mut self) -> Option<RowSteps> {
        None
    }
    /// Records attention maps in the batches that follow, or stops (a generator that has
    /// no UNet, as the runner's fakes, makes none).
    fn set_attention_maps(&mut self, _on: bool) {}
    /// The steps the attention maps cover (all when `None`).
    fn set_attention_map_steps(&mut self, _steps: Option<StepSet>) {}
    /// The attention maps of the last batch's cells, in cell order; empty when none.
    fn take_attention_maps(&mut self) -> Vec<CellMaps> {
        vec![]
    }
}

impl Generator for Pipeline {
    fn estimate_batch(&self, width: usize, height: usize) -> usize {
        crate::device::estimate_max_batch(self.device(), self.kind(), width, height)
    }
    fn set_call_cells(&mut self, cells: usize) {
        Pipeline::set_call_cells(self, cells)
    }
    fn take_traces(&mut self) -> Vec<Vec<(usize, image::RgbImage)>> {
        Pipeline::take_traces(self)
    }
    fn generate(
        &mut self,
        cells: &[GenParams],
        wanted: &[bool],
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::result::Result<Vec<Option<CellOutcome>>, GenerateError> {
        Pipeline::generate_wanted(self, cells, wanted, progress)
    }
    fn take_row_steps(&mut self) -> Option<RowSteps> {
        Some(Pipeline::take_row_steps(self))
    }
    fn set_attention_maps(&mut self, on: bool) {
        Pipeline::set_attention_maps(self, on)
    }
    fn set_attention_map_steps(&mut self, steps: Option<StepSet>) {
        Pipeline::set_attention_map_steps(self, steps)
    }
    fn take_attention_maps(&mut self) -> Vec<CellMaps> {
        Pipeline::take_attention_maps(self)
    }
}
