//! Checks that need a whole cell: windows, images a mode needs, models a cell needs.
use super::Models;
use super::cell::CellSpec;
use super::grid::Grid;
use super::source::Source;
use crate::params::AdapterKind;
use anyhow::Result;

pub fn cells(src: &Source, grid: &Grid, cells: &[CellSpec], models: &Models) -> Result<()> {
    let varying = grid.varying();
    for (i, c) in cells.iter().enumerate() {
        let fail = |keys: &str, msg: String| {
            let at = if varying.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.describe(&varying))
            };
            Err(src.error_at_key(keys, format!("cell {}{at}: {msg}", i + 1)))
        };
        if c.start > c.end {
            return fail(
                "start, end",
                format!("start {} is after end {}", c.start, c.end),
            );
        }
        let neg = c.negative_branch();
        if neg.start > neg.end {
            return fail(
                "neg_start, neg_end",
                format!(
                    "the negative window starts at {} after it ends at {}",
                    neg.start, neg.end
                ),
            );
        }
        if c.negative_mode().uses_image() && c.negative_image.is_none() {
            return fail(
                "negative, negative_image",
                format!(
                    "negative = \"{}\" needs a negative_image",
                    c.negative_mode()
                ),
            );
        }
        if models.adapter(c.adapter).is_none() {
            let which = match c.adapter {
                AdapterKind::Base => "base",
                AdapterKind::Plus => "plus",
            };
            return fail(
                "adapter",
                format!("adapter = \"{which}\" needs [models] ip_adapter.{which}"),
            );
        }
    }
    Ok(())
}
