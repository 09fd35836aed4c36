//! Derived images of a run, written into `inputs/`.
