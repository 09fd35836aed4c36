//! Experiment files: schema, validation, grid expansion into cells.
