//! A tokio runtime that lives in one network namespace: a
//! current-thread runtime on a thread that entered the namespace.
//!
//! A socket belongs to the namespace of the thread that creates it, and a
//! child process starts in the namespace of the thread that forks it. A
//! multi-thread runtime's workers are threads of the namespace the runtime
//! was made in, so code that must act as a host of a [`ClusterNet`]
//! (connect to etcd, start an etcd member) runs as tasks of this runtime,
//! whose one thread drives every task, timer and socket it has.
//!
//! [`ClusterNet`]: crate::cluster_net::ClusterNet

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::netns::NetNs;
use crate::{Error, Result};

/// A runtime whose tasks run in one namespace; stopped when dropped (its
/// tasks are dropped with it, and what they own: a child started with
/// `kill_on_drop` is killed).
#[derive(Debug)]
pub struct NsRuntime {
    name: String,
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<Thread>,
}

/// The runtime's thread: whether it entered the namespace, and whether its
/// runtime was built.
type Thread = std::thread::JoinHandle<Result<Result<()>>>;

/// A task of an [`NsRuntime`].
#[derive(Debug)]
pub struct Task<T> {
    handle: Handle,
    task: tokio::task::JoinHandle<T>,
}

impl NsRuntime {
    /// Starts the runtime's thread in `ns`; `name` names the thread.
    pub fn start(ns: &NetNs, name: &str) -> Result<Self> {
        let (ready, started) = std::sync::mpsc::channel();
        let thread = ns.spawn_in(name, move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| Error::Spawn {
                    name: "a tokio runtime".into(),
                    source,
                })?;
            let (stop, stopped) = oneshot::channel::<()>();
            if ready.send((runtime.handle().clone(), stop)).is_ok() {
                // Drives the tasks others spawn until the stop (or its
                // sender's drop).
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            }
            Ok(())
        })?;
        match started.recv() {
            Ok((handle, stop)) => Ok(NsRuntime {
                name: name.to_owned(),
                handle,
                stop: Some(stop),
                thread: Some(thread),
            }),
            // The thread ended before its runtime ran: its error says why.
            Err(_) => Err(join(thread, name).err().unwrap_or_else(|| Error::Exited {
                name: format!("runtime thread {name}"),
                status: "ended at start".into(),
                log_tail: String::new(),
            })),
        }
    }

    /// Starts `future` as a task in the namespace.
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Task {
            handle: self.handle.clone(),
            task: self.handle.spawn(future),
        }
    }

    /// Runs `future` in the namespace and waits for its output. Called
    /// from outside any runtime (a test's own thread); a panic of the task
    /// is resumed here.
    pub fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(future).join()
    }
}

impl<T> Task<T> {
    /// Waits for the task's output (from outside any runtime); a panic of
    /// the task is resumed here.
    pub fn join(self) -> T {
        // The runtime's own thread drives the task; this thread only
        // waits for its end.
        match self.handle.block_on(self.task) {
            Ok(output) => output,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the task was cancelled: its runtime stopped ({e})"),
        }
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && let Err(e) = join(thread, &self.name)
        {
            eprintln!("{e}");
        }
    }
}

/// Waits for the runtime thread `name`: its error, or its panic as one.
fn join(thread: Thread, name: &str) -> Result<()> {
    match thread.join() {
        Ok(ended) => ended.and_then(|ran| ran),
        Err(_) => Err(Error::Exited {
            name: format!("runtime thread {name}"),
            status: "panicked".into(),
            log_tail: String::new(),
        }),
    }
}
