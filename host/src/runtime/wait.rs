//! WASI for the guests, with every wait bounded by the call's deadline.
//!
//! Epoch interruption stops wasm code, not a host call that blocks: a guest
//! that sleeps (`std::thread::sleep`) or polls a clock waits in the host, in
//! `wasi:io/poll`, where no epoch check runs. So the two calls of WASI that
//! wait, `poll` and `pollable.block`, are replaced by ones that give up at the
//! deadline of the call in progress and fail it as a deadline would. Every
//! other WASI call returns without waiting for the guest: there are no
//! sockets, stdin is empty, stdout and stderr go to the log, and files are
//! the package's own, read-only.

use std::time::Instant;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::io::poll::{Host as _, HostPollable as _};

use super::RuntimeError;
use super::instance::InstanceState;

/// The interface whose waits are bounded, at the version this wasmtime
/// provides (guests built for any 0.2.x import it by semver).
const POLL_INTERFACE: &str = "wasi:io/poll@0.2.12";

/// A guest waited in WASI until its call's deadline.
#[derive(Debug, thiserror::Error)]
#[error("the call's deadline passed while the guest waited in a host call")]
pub struct WaitedPastDeadline;

/// A linker with all of WASI p2, its waits bounded by the call's deadline.
/// WASI's calls are async: a call that runs inline on the server's async
/// threads waits as a future, not by blocking its thread.
pub(super) fn wasi_linker(
    engine: &wasmtime::Engine,
) -> Result<Linker<InstanceState>, RuntimeError> {
    let link =
        |error: wasmtime::Error| RuntimeError::Engine(format!("cannot link WASI: {error:#}"));
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
    linker.allow_shadowing(true);
    let mut poll = linker.instance(POLL_INTERFACE).map_err(link)?;
    poll.func_wrap_async(
        "poll",
        |mut store: StoreContextMut<'_, InstanceState>,
         (pollables,): (Vec<Resource<DynPollable>>,)| {
            Box::new(async move {
                let (table, deadline) = store.data_mut().waiting();
                Ok((until(deadline, table.poll(pollables)).await??,))
            })
        },
    )
    .map_err(link)?;
    poll.func_wrap_async(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, InstanceState>, (pollable,): (Resource<DynPollable>,)| {
            Box::new(async move {
                let (table, deadline) = store.data_mut().waiting();
                until(deadline, table.block(pollable)).await?
            })
        },
    )
    .map_err(link)?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// Waits for `wait` until `deadline` at most.
async fn until<F: Future>(deadline: Instant, wait: F) -> wasmtime::Result<F::Output> {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, wait)
        .await
        .map_err(|_elapsed| WaitedPastDeadline.into())
}

/// Runs a guest call to its end on this thread, as a compute thread does,
/// inside WASI's Tokio runtime (a compute thread has none of its own).
pub(super) fn block_on<F: Future>(call: F) -> F::Output {
    wasmtime_wasi::runtime::in_tokio(call)
}

pin_project_lite::pin_project! {
    /// A guest call that may move between threads and executors: each poll
    /// runs inside a Tokio runtime (the caller's, else WASI's), where the
    /// call's WASI timers are made. The call is pinned in place, so that
    /// the one box its owner puts it in is the only allocation.
    pub struct Ambient<F> {
        #[pin]
        call: F,
    }
}

impl<F> Ambient<F> {
    /// `call`, polled inside a Tokio runtime.
    pub fn new(call: F) -> Self {
        Ambient { call }
    }
}

impl<F: Future> Future for Ambient<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let call = self.project().call;
        wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| call.poll(context))
    }
}
