//! The README's table of where `window = "steps"` and `window = "sigma"` select different
//! steps is computed by negimg (SD1.5's schedule); this test fails when the README's copy
//! differs from what negimg computes now. `NEGIMG_UPDATE_README=1` rewrites it.
mod common;

use negimg::params::SchedulerKind;
use negimg::sampling::SchedulerConfig;
use negimg::sampling::window::{WindowCase, comparison_table};

const BEGIN: &str = "<!-- window-table:begin (tests/readme_window.rs) -->\n";
const END: &str = "<!-- window-table:end -->";

fn cases() -> Vec<WindowCase> {
    let windows = [
        (0.0, 1.0),
        (0.0, 0.3),
        (0.0, 0.5),
        (0.2, 1.0),
        (0.3, 0.8),
        (0.5, 1.0),
        (0.7, 1.0),
    ];
    [(SchedulerKind::Ddim, 25), (SchedulerKind::DpmPp2mKarras, 8)]
        .into_iter()
        .flat_map(|(scheduler, steps)| {
            windows.map(|(start, end)| WindowCase {
                scheduler,
                steps,
                start,
                end,
            })
        })
        .collect()
}

#[test]
fn readme_window_table_is_what_negimg_computes() {
    let table = comparison_table(&SchedulerConfig::sd15_ddim(), &cases()).unwrap();
    // The two rules must disagree somewhere, or the table shows nothing.
    assert!(table.contains("| yes |"), "{table}");
    let path = common::repo().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme.find(BEGIN).expect("README has no window table") + BEGIN.len();
    let end = start + readme[start..].find(END).expect("window table not closed");
    if std::env::var_os("NEGIMG_UPDATE_README").is_some() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &readme[start..end],
        table,
        "README's window table is stale: run NEGIMG_UPDATE_README=1 cargo test --test readme_window"
    );
}
