//! Comparison grids, curves, tables and index.html.
