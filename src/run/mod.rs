//! Results folders, manifest, records, resume and shards.
//!
//! A run folder `results/<experiment>/<run-id>/` holds `images/<cell-id>.png`, one
//! `cells/<cell-id>.json` record per finished cell (written after its image, atomically: a
//! cell is done iff its record says so), `inputs/NAME.png`, and the merged `records.csv`,
//! `run.json`, `manifest.json`, `experiment.toml` and `log.txt`.
pub mod attention_maps;
pub mod batching;
pub mod derived;
pub mod fsio;
pub mod generator;
pub mod ids;
pub mod info;
mod inputs;
pub mod layout;
mod maker;
mod manifest;
pub mod png;
pub mod records;
pub mod replay;
pub mod runner;

pub use generator::Generator;
pub use runner::{RunChoice, RunOptions, Shard, Summary};

/// Returned (as an error) when a run stops on SIGINT after finishing its writes.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: the images finished so far are saved; run the same command again to resume")]
pub struct Interrupted;
