//! The bounded verification pool: token verification off the event loop, never unbounded.
//!
//! Each job (the tokens of one presentation) takes a queue slot before it is spawned; with every
//! slot taken, [`VerifyPool::submit`] hands the job back and the caller refuses the presentation
//! as `rate_limited` instead of queueing it. At most `workers` jobs run at once, each on a
//! blocking thread, so verification cannot starve the async runtime; results come back over a
//! channel with one place per slot, so a finished job never waits.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cordon_membership::session::{PresentationId, Proof, Rejection, verify_token};
use cordon_membership::{PeerId, Verifier};
use cordon_protocol::{PresentedToken, ReasonCode};
use tokio::sync::{Semaphore, mpsc};

use cordon_host::clock::Clock;

/// The tokens of one presentation to verify.
#[derive(Debug)]
pub struct Job {
    /// The presentation.
    pub id: PresentationId,
    /// The presenter (Noise-authenticated).
    pub peer: PeerId,
    /// Its tokens, in order.
    pub tokens: Vec<PresentedToken>,
    /// Verdicts already decided without signature checks, by token position; the job
    /// verifies only the tokens without one.
    pub known: Vec<Option<Result<Proof, Rejection>>>,
}

/// A finished job.
#[derive(Debug)]
pub struct Done {
    /// The presentation.
    pub id: PresentationId,
    /// One verdict per token, in order.
    pub verdicts: Vec<Result<Proof, Rejection>>,
    /// CPU time the job took.
    pub elapsed: Duration,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct VerifyPool {
    verifier: Arc<Verifier>,
    clock: Clock,
    slots: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
}

impl VerifyPool {
    /// A pool of `workers` threads (at least 1) with room for `max_pending` jobs queued or
    /// running (at least 1).
    pub fn new(verifier: Arc<Verifier>, clock: Clock, max_pending: usize, workers: usize) -> Self {
        let max_pending = max_pending.max(1);
        let (done_tx, done_rx) = mpsc::channel(max_pending);
        Self {
            verifier,
            clock,
            slots: Arc::new(Semaphore::new(max_pending)),
            workers: Arc::new(Semaphore::new(workers.max(1))),
            done_tx,
            done_rx,
        }
    }

    /// The verifier the jobs use.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Starts a job, or hands it back when every queue slot is taken.
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Err(Box::new(job));
        };
        let verifier = self.verifier.clone();
        let workers = self.workers.clone();
        let clock = self.clock.clone();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(_worker) = workers.acquire_owned().await else {
                return;
            };
            let id = job.id;
            let count = job.tokens.len();
            let done = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let now = clock.now();
                let mut known = job.known.into_iter();
                let verdicts = job
                    .tokens
                    .iter()
                    .map(|t| {
                        known
                            .next()
                            .flatten()
                            .unwrap_or_else(|| verify_token(&verifier, &job.peer, t, now))
                    })
                    .collect();
                Done {
                    id,
                    verdicts,
                    elapsed: started.elapsed(),
                }
            })
            .await
            .unwrap_or_else(|_| Done {
                // A verification that panicked still answers, so the presentation is not left
                // waiting.
                id,
                verdicts: (0..count)
                    .map(|_| Err(Rejection::new(ReasonCode::Internal, "verification failed")))
                    .collect(),
                elapsed: Duration::ZERO,
            });
            // Cannot wait: the channel has a place for every slot.
            let _ = tx.send(done).await;
        });
        Ok(())
    }

    /// The next finished job.
    pub fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Option<Done>> {
        self.done_rx.poll_recv(cx)
    }
}
