//! The daemon's life around the request pipeline.
//!
//! - `start.rs`: the start/stop sequence ([`run`](start::run)): first snapshot, tasks,
//!   readiness, lame duck, drain.
//! - `listen.rs`: binding listeners, or taking inherited and handed-over sockets.
//! - `supervisor.rs`: the accept loops, one per listener address.
//! - `trigger.rs`: the reloader's inbox and the handle to ask it ([`Reloads`](trigger::Reloads)).
//! - `reload.rs`: watch + debounce + swap; the one task that changes the listeners.
//! - `takeover.rs`: `--takeover`, the listening sockets over a control socket.
//! - `upgrade.rs`: SIGUSR2, a new binary handed the sockets.
//! - `workers.rs`: the per-worker scheduler's threads, each with its own runtime.
//! - `signals.rs`: HUP, USR1, USR2 while running.
//! - `admin/`: the admin API on its own listener: health, upstream state, metrics,
//!   reloads and drains.

pub mod admin;
pub mod limits;
pub mod listen;
pub mod reload;
mod signals;
pub mod start;
pub mod supervisor;
pub mod takeover;
pub mod trigger;
pub mod upgrade;
pub mod workers;
