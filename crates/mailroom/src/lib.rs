//! The `mailroom` binary's library half: configuration, the composition
//! root that wires store, queue, pipeline and HTTP together, and the CLI
//! commands. It holds no business rules; those live in `mailroom-app` and
//! the pure crates beneath it.

pub mod config;
pub mod import;
pub mod keys_cli;
pub mod score_cli;
pub mod server;
