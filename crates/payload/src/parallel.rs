//! Work split over every core, results in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// `f(0..n)` on all cores (items handed out one at a time, so uneven items
/// balance), returned in index order.
pub fn map_indexed<T: Send>(n: u64, f: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(n as usize);
    if threads <= 1 {
        return (0..n).map(f).collect();
    }
    let next = AtomicU64::new(0);
    let out: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let value = f(i);
                out.lock().expect("no panics while held")[i as usize] = Some(value);
            });
        }
    });
    out.into_inner()
        .expect("threads joined")
        .into_iter()
        .map(|v| v.expect("every index computed"))
        .collect()
}
