//! Schedulers, guidance (branches, weights, windows) and batching.
