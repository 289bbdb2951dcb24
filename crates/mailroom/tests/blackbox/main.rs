//! Black-box tests: the real HTTP API and the real binary, on SQLite and on
//! PostgreSQL. The PostgreSQL half runs when `MAILROOM_TEST_POSTGRES_URL` is
//! set (CI sets it) and is skipped with a loud notice otherwise.

mod support;

mod api;
mod audit;
mod auth;
mod cli;
mod crash;
mod encryption;
mod graph;
mod hostile;
mod imap;
mod mcp;
mod mcp_clients;
mod ops;
mod protection_cli;
mod queue;
mod ratelimit;
mod score;
mod submission;
