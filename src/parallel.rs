//! Splitting a start's bulk work (revisions, rendering, sealing) over this process's CPUs.
//!
//! Pure fan-out over scoped threads, no pool: the work runs at start and at a reload, and a
//! thread costs tens of microseconds beside milliseconds of work. With one CPU (or a small
//! config) everything runs on the caller's thread, as before.

/// How many threads the work for `meetings` meetings runs on: this process's CPUs (as its
/// affinity allows, at most 8), and one for fewer than 256 meetings (a thread would cost more
/// than it saves).
pub fn worker_threads(meetings: usize) -> usize {
    if meetings < 256 {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// `work` applied to `items` split into `threads` runs of consecutive items (the first on the
/// caller's thread, each other on a thread of its own), the results in the items' order. A
/// panic in any run is resumed on the caller's thread.
pub fn in_runs<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let run = items.len().div_ceil(threads.max(1)).max(1);
    let mut runs = items.chunks(run);
    let first = runs.next().unwrap_or_default();
    let work = &work;
    std::thread::scope(|scope| {
        let others: Vec<_> = runs.map(|run| scope.spawn(move || work(run))).collect();
        let mut results = Vec::with_capacity(others.len() + 1);
        results.push(work(first));
        for other in others {
            results.push(
                other
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            );
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_every_item_once_in_order_for_any_number_of_threads() {
        let items: Vec<u32> = (0..1000).collect();
        for threads in [0, 1, 2, 3, 7, 999, 1000, 5000] {
            let runs = in_runs(&items, threads, <[u32]>::to_vec);
            assert!(
                runs.len() <= threads.max(1),
                "{threads}: {} runs",
                runs.len()
            );
            assert_eq!(runs.concat(), items, "{threads} threads");
        }
        assert_eq!(in_runs(&[] as &[u32], 4, <[u32]>::len), vec![0]);
    }

    #[test]
    fn a_small_config_stays_on_one_thread() {
        assert_eq!(worker_threads(0), 1);
        assert_eq!(worker_threads(255), 1);
        assert!((1..=8).contains(&worker_threads(5000)));
    }
}
