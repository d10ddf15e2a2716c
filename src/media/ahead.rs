//! Work done ahead on a pool of threads and handed out in order (gifski's pattern): jobs
//! `0..count` are claimed by the workers in increasing order, at most `depth` results exist at
//! once (done, in progress or in the consumer's hands), and the consumer takes them by job
//! number, never out of order. Result buffers come back to the workers for reuse.
//!
//! Used for the sources of the render: a frames folder's pictures (decoded and rendered by
//! several workers) and a start video's frames (decoded on a thread of its own).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Context, Error, ErrorKind, Result};

/// Results of jobs `0..count`, computed ahead by a pool of workers.
pub struct Ahead<T: Send + 'static> {
    results: mpsc::Receiver<(u64, Result<T>)>,
    /// Results that arrived before their turn.
    early: BTreeMap<u64, Result<T>>,
    /// Slots for results, each carrying a buffer to reuse once one has come back.
    slots: Option<mpsc::SyncSender<Option<T>>>,
    /// The job handed out last, kept until the next is asked for.
    current: Option<(u64, T)>,
    /// The next job to take from the workers.
    next: u64,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

/// How many workers a pool gets: one per core, at least one and at most `max`.
pub fn workers_for(max: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, max.max(1))
}

impl<T: Send + 'static> Ahead<T> {
    /// Starts `workers` threads named `name-<n>`; each gets its own state from `make` (built
    /// on its own thread) and computes job `j` as `work(state, j, reused)`, where `reused` is
    /// a buffer of an earlier result when one has come back. At most `depth` (at least
    /// `workers`) results are held at once.
    pub fn start<S, M, W>(
        name: &str,
        count: u64,
        workers: usize,
        depth: usize,
        make: M,
        work: W,
    ) -> Result<Ahead<T>>
    where
        M: Fn() -> Result<S> + Send + Sync + 'static,
        W: Fn(&mut S, u64, Option<T>) -> Result<T> + Send + Sync + 'static,
    {
        let workers = workers.max(1);
        let depth = depth.max(workers);
        let (slots_tx, slots_rx) = mpsc::sync_channel::<Option<T>>(depth);
        for _ in 0..depth {
            slots_tx
                .send(None)
                .map_err(|_| Error::internal("decode-ahead slots closed"))?;
        }
        let slots_rx = Arc::new(Mutex::new(slots_rx));
        let (results_tx, results) = mpsc::channel();
        let next_job = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (make, work) = (Arc::new(make), Arc::new(work));
        let mut handles = Vec::with_capacity(workers);
        for n in 0..workers {
            let (slots_rx, results_tx) = (Arc::clone(&slots_rx), results_tx.clone());
            let (next_job, stop) = (Arc::clone(&next_job), Arc::clone(&stop));
            let (make, work) = (Arc::clone(&make), Arc::clone(&work));
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    let mut state = match make() {
                        Ok(s) => Some(s),
                        Err(e) => {
                            // The first job this worker would have done reports the error.
                            let j = next_job.fetch_add(1, Ordering::SeqCst);
                            if j < count {
                                let _ = results_tx.send((j, Err(e)));
                            }
                            None
                        }
                    };
                    let Some(state) = state.as_mut() else { return };
                    loop {
                        // A slot first, then a job number: the consumer waits only for jobs
                        // that hold a slot, so the pool cannot stall.
                        let slot = match slots_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(reused) = slot else { return };
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let j = next_job.fetch_add(1, Ordering::SeqCst);
                        if j >= count {
                            return;
                        }
                        let result = work(state, j, reused);
                        if results_tx.send((j, result)).is_err() {
                            return;
                        }
                    }
                })
                .ctx(ErrorKind::Internal, "starting a decode worker")?;
            handles.push(handle);
        }
        Ok(Ahead {
            results,
            early: BTreeMap::new(),
            slots: Some(slots_tx),
            current: None,
            next: 0,
            stop,
            workers: handles,
        })
    }

    /// The result of job `j`. Jobs are asked for in non-decreasing order; asking for the same
    /// job again gives the same result, and jobs skipped over are dropped.
    pub fn get(&mut self, j: u64) -> Result<&T> {
        if let Some((cj, _)) = &self.current {
            if *cj > j {
                return Err(Error::internal(format!(
                    "decode-ahead job {j} asked for after job {cj}"
                )));
            }
        }
        if self.current.as_ref().is_some_and(|(cj, _)| *cj == j) {
            return self
                .current
                .as_ref()
                .map(|(_, t)| t)
                .ok_or_else(|| Error::internal("decode-ahead result vanished"));
        }
        if let Some((_, t)) = self.current.take() {
            self.give_back(Some(t));
        }
        while self.next <= j {
            let k = self.next;
            self.next += 1;
            let result = self.take(k);
            match result {
                Ok(t) if k == j => self.current = Some((k, t)),
                Ok(t) => self.give_back(Some(t)),
                Err(e) => {
                    self.give_back(None);
                    return Err(e);
                }
            }
        }
        self.current
            .as_ref()
            .map(|(_, t)| t)
            .ok_or_else(|| Error::internal("decode-ahead result vanished"))
    }

    fn take(&mut self, k: u64) -> Result<T> {
        loop {
            if let Some(r) = self.early.remove(&k) {
                return r;
            }
            match self.results.recv() {
                Ok((i, r)) => {
                    self.early.insert(i, r);
                }
                Err(_) => {
                    return Err(Error::internal(format!(
                        "the decode workers stopped before job {k}"
                    )))
                }
            }
        }
    }

    fn give_back(&self, buffer: Option<T>) {
        if let Some(tx) = &self.slots {
            // Never blocks: there are exactly as many slots as the channel holds.
            let _ = tx.try_send(buffer);
        }
    }
}

impl<T: Send + 'static> Drop for Ahead<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Workers waiting for a slot see the channel close; busy ones finish their job.
        self.slots = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn results_come_in_order_from_many_workers_with_buffers_reused() {
        let made = Arc::new(AtomicUsize::new(0));
        let m = Arc::clone(&made);
        let mut a: Ahead<Vec<u64>> = Ahead::start(
            "test",
            200,
            4,
            6,
            || Ok(()),
            move |_, j, reused: Option<Vec<u64>>| {
                // Uneven work so that later jobs often finish first.
                std::thread::sleep(std::time::Duration::from_micros((j * 7919) % 500));
                let mut v = reused.unwrap_or_else(|| {
                    m.fetch_add(1, Ordering::SeqCst);
                    Vec::new()
                });
                v.clear();
                v.push(j);
                Ok(v)
            },
        )
        .unwrap();
        for j in 0..200 {
            assert_eq!(a.get(j).unwrap(), &vec![j]);
            assert_eq!(a.get(j).unwrap(), &vec![j], "asked twice");
        }
        // No more buffers than slots were ever made.
        assert!(made.load(Ordering::SeqCst) <= 6, "{made:?}");
        assert!(a.get(5).is_err(), "going back is refused");
    }

    #[test]
    fn skipped_jobs_and_errors() {
        let mut a: Ahead<u64> = Ahead::start(
            "test",
            50,
            2,
            4,
            || Ok(()),
            |_, j, _| {
                if j == 30 {
                    Err(Error::internal("job 30 fails"))
                } else {
                    Ok(j * 2)
                }
            },
        )
        .unwrap();
        assert_eq!(*a.get(3).unwrap(), 6);
        assert_eq!(*a.get(20).unwrap(), 40);
        let e = a.get(30).unwrap_err();
        assert!(e.to_string().contains("job 30 fails"), "{e}");
        // Dropped early: the workers stop and are joined.
        drop(a);
    }

    #[test]
    fn a_worker_that_cannot_start_reports_it() {
        let mut a: Ahead<u64> = Ahead::start(
            "test",
            10,
            1,
            2,
            || -> Result<()> { Err(Error::internal("no decoder")) },
            |_, j, _| Ok(j),
        )
        .unwrap();
        let e = a.get(0).unwrap_err();
        assert!(e.to_string().contains("no decoder"), "{e}");
    }
}
