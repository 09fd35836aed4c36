//! Grouping cells into batches that share one UNet call per step.
use crate::params::GenParams;

/// Splits `cells` into batches of at most `max_batch` indices, each batch holding cells with
/// the same [`GenParams::batch_key`]. Batches follow the order of first appearance, and
/// indices keep their order within a batch.
pub fn plan_batches(cells: &[GenParams], max_batch: usize) -> Vec<Vec<usize>> {
    let max_batch = max_batch.max(1);
    let mut groups: Vec<(_, Vec<usize>)> = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        let key = cell.batch_key();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups
        .into_iter()
        .flat_map(|(_, members)| {
            members
                .chunks(max_batch)
                .map(<[usize]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::SchedulerKind;

    #[test]
    fn batches_share_a_key_and_respect_the_size_limit() {
        let mut cells: Vec<GenParams> = (0..7).map(GenParams::new).collect();
        cells[2].steps = 10;
        cells[5].scheduler = SchedulerKind::Euler;
        let batches = plan_batches(&cells, 2);
        assert_eq!(
            batches,
            vec![vec![0, 1], vec![3, 4], vec![6], vec![2], vec![5]]
        );
        for b in &batches {
            assert!(
                b.iter()
                    .all(|&i| cells[i].batch_key() == cells[b[0]].batch_key())
            );
        }
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
    }
}
