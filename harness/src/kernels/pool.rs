//! Where the kernels' parallel work runs: one pool for every op of a forward pass.
//!
//! candle 0.11 runs its own element-wise ops (a residual add, a LayerNorm's parts) on a
//! barrier pool of `threads - 1` workers in which the calling thread takes a share and the
//! workers spin before they park; rayon's pool has `threads` workers of its own, and a call
//! from outside it puts the caller to sleep until a worker finishes. Handing the harness's
//! products and attention to rayon therefore kept two sets of threads busy on the same cores
//! (candle's spinning worker beside rayon's two) and paid a sleep and wake-up of the calling
//! thread on every product: on a 2-core host the forward pass of a short sentence is dozens
//! of such hand-offs (issue 16). The kernels now share candle's barrier pool, so a forward
//! pass uses exactly `threads` threads and the caller works instead of waiting.
//! `HARNESS_POOL=rayon` restores the old hand-off for comparison.

#[cfg(test)]
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which pool runs the kernels' jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// candle's barrier pool (the default): the caller takes part.
    Barrier,
    /// rayon's global pool: the caller waits (`HARNESS_POOL=rayon`).
    Rayon,
}

/// A value of `HARNESS_POOL` read: unset, empty or `barrier` for candle's barrier pool,
/// `rayon` for rayon's, or an error naming the choices.
fn parse_pool(value: Option<&str>) -> Result<Pool, String> {
    match value {
        None | Some("") | Some("barrier") => Ok(Pool::Barrier),
        Some("rayon") => Ok(Pool::Rayon),
        Some(other) => Err(format!(
            "HARNESS_POOL={other:?} is not a pool: use `rayon` (or leave it unset for the \
             shared barrier pool)"
        )),
    }
}

/// Check `HARNESS_POOL` up front, so a bad value is a clear error before any work.
pub fn check_env() -> Result<(), String> {
    parse_pool(std::env::var("HARNESS_POOL").ok().as_deref()).map(|_| ())
}

/// The pool of this process, read once from `HARNESS_POOL` (the CLI has checked it by then).
pub fn pool() -> Pool {
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    *POOL.get_or_init(|| {
        parse_pool(std::env::var("HARNESS_POOL").ok().as_deref()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Threads a kernel splits its work over: candle's count (`RAYON_NUM_THREADS`, else the
/// physical cores), read once. candle's `get_num_threads` parses `/proc/cpuinfo` on every call
/// where no CPU list is set, which was 4% of a short sentence's forward pass.
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

/// Run `f(i)` for every `i` in `0..jobs`, spread over the pool's threads; returns when all
/// have run. One job runs on the calling thread without any hand-off.
pub fn for_each_job(jobs: usize, f: impl Fn(usize) + Sync + Send) {
    for_each_job_on(pool(), jobs, f)
}

/// [`for_each_job`] on the given pool.
fn for_each_job_on(pool: Pool, jobs: usize, f: impl Fn(usize) + Sync + Send) {
    if jobs == 1 || IN_JOB.get() {
        // One job, or a job of this pool asking for more: the calling thread runs them (the
        // pool is busy with the outer call, and candle's pool admits one call at a time).
        (0..jobs).for_each(f);
        return;
    }
    let job = |i: usize| {
        let _flag = InJob(IN_JOB.replace(true));
        f(i)
    };
    match pool {
        // Each thread, the caller included, takes the next jobs until none is left.
        Pool::Barrier => {
            candle_core::utils::barrier_pool().execute_chunked(jobs, |range| range.for_each(&job))
        }
        Pool::Rayon => {
            use rayon::prelude::*;
            (0..jobs).into_par_iter().for_each(job);
        }
    }
}

thread_local! {
    /// Whether this thread is running one of the pool's jobs.
    static IN_JOB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Puts back the thread's [`IN_JOB`] flag when a job ends, even by a panic.
struct InJob(bool);

impl Drop for InJob {
    fn drop(&mut self) {
        IN_JOB.set(self.0)
    }
}

/// Run `f` on `len` values of one of this thread's scratch buffers, grown as needed and kept
/// for the thread's next job instead of allocated and zeroed for each. The values are left
/// from earlier use: every user writes what it reads.
pub fn with_scratch<R>(
    buffer: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    buffer.with_borrow_mut(|b| {
        if b.len() < len {
            b.resize(len, 0.0);
        }
        f(&mut b[..len])
    })
}

/// Run `f(i, chunk)` for every `chunk`-long stretch `i` of `dst` (the last may be shorter),
/// spread over the pool's threads.
pub fn for_each_chunk_mut<T: Send>(
    dst: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let (len, chunk) = (dst.len(), chunk.max(1));
    let base = SendMut(dst.as_mut_ptr());
    for_each_job(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        // SAFETY: job i alone touches elements start..start + chunk, inside `dst`, which
        // this call borrows mutably until every job has returned.
        let part = unsafe {
            std::slice::from_raw_parts_mut(base.get().add(start), chunk.min(len - start))
        };
        f(i, part)
    });
}

/// Run `f` on every item, spread over the pool's threads (each item is moved to the job that
/// takes it).
pub fn for_each_item<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    let slots: Vec<std::sync::Mutex<Option<T>>> = items
        .into_iter()
        .map(|t| std::sync::Mutex::new(Some(t)))
        .collect();
    for_each_job(slots.len(), |i| {
        let item = slots[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("every job takes its own item once");
        f(item)
    });
}

/// A pointer that jobs of one call share, each using its own elements.
struct SendMut<T>(*mut T);
unsafe impl<T: Send> Send for SendMut<T> {}
unsafe impl<T: Send> Sync for SendMut<T> {}

impl<T> SendMut<T> {
    /// The pointer (a method, so closures capture the whole Sync wrapper).
    fn get(&self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_on_either_pool() {
        for pool in [Pool::Barrier, Pool::Rayon] {
            for jobs in [0, 1, 2, 3, 17, 100] {
                let hits: Vec<AtomicUsize> = (0..jobs).map(|_| AtomicUsize::new(0)).collect();
                for_each_job_on(pool, jobs, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                let once = hits.iter().all(|h| h.load(Ordering::Relaxed) == 1);
                assert!(once, "{jobs} jobs on {pool:?}");
            }
        }
    }

    #[test]
    fn pool_settings_are_read_or_refused_by_name() {
        assert_eq!(parse_pool(None), Ok(Pool::Barrier));
        assert_eq!(parse_pool(Some("")), Ok(Pool::Barrier));
        assert_eq!(parse_pool(Some("barrier")), Ok(Pool::Barrier));
        assert_eq!(parse_pool(Some("rayon")), Ok(Pool::Rayon));
        let err = parse_pool(Some("rayn")).unwrap_err();
        assert!(
            err.contains("HARNESS_POOL=\"rayn\" is not a pool: use `rayon`"),
            "{err}"
        );
    }

    #[test]
    fn chunks_cover_the_slice_with_their_own_indices() {
        let mut v = vec![0usize; 1001];
        for_each_chunk_mut(&mut v, 64, |i, part| {
            for (j, x) in part.iter_mut().enumerate() {
                *x = i * 64 + j;
            }
        });
        assert_eq!(v, (0..1001).collect::<Vec<_>>());
    }

    #[test]
    fn items_are_each_taken_once() {
        let sum = AtomicUsize::new(0);
        for_each_item((1..=50).collect(), |x: usize| {
            sum.fetch_add(x, Ordering::Relaxed);
        });
        assert_eq!(sum.into_inner(), 50 * 51 / 2);
    }

    #[test]
    fn nested_use_runs_inline_instead_of_deadlocking() {
        for pool in [Pool::Barrier, Pool::Rayon] {
            let total = AtomicUsize::new(0);
            for_each_job_on(pool, 4, |_| {
                for_each_job_on(pool, 4, |_| {
                    total.fetch_add(1, Ordering::Relaxed);
                })
            });
            assert_eq!(total.into_inner(), 16, "{pool:?}");
        }
    }
}
