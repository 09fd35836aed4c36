//! negimg: a research harness for negative image prompts in Stable Diffusion 1.5.
//!
//! Data path: experiment file -> [`experiment`] (validated cells) -> [`run`] (results folder,
//! resume, shards) -> [`sampling`] + [`pipeline`] (batches -> images) -> [`scoring`] ->
//! [`report`] (grids, curves, tables, index.html). The CLI in [`cli`] stays thin.
pub mod axis_value;
pub mod cli;
pub mod derive;
pub mod device;
pub mod digest;
pub mod experiment;
pub mod export;
pub mod images;
pub mod models;
pub mod npy;
pub mod params;
pub mod pipeline;
pub mod provenance;
pub mod report;
pub mod roles;
pub mod run;
pub mod sampling;
pub mod scoring;
pub mod steps;
pub mod weights;
