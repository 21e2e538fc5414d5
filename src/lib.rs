//! tapgate: a WebAuthn (passkey / hardware key) front door for HTTP
//! services. See ARCHITECTURE.md for the map; in short:
//!
//! - edges (the only code touching the outside world): [`cli`], [`config`],
//!   [`server`] (with [`connections`]: accept loop, slow-client limits), [`store`], [`pages`], [`echo`]
//! - core (no HTTP types, no IO, time passed in): [`model`], `tapgate_webauthn`
//!   (crates/webauthn), [`token`], [`policy`], [`audit`]
//! - glue on the request path: [`login`], [`gate`], [`upstream`], [`error`],
//!   [`revocation`] (the in-memory revoked-session set and its refresher)
//! - administration (CLI and admin page alike): [`admin`]
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod connections;
pub mod crypto;
pub mod echo;
pub mod error;
pub mod gate;
pub mod invite;
pub mod login;
pub mod model;
pub mod pages;
pub mod policy;
pub mod ratelimit;
pub mod revocation;
pub mod server;
pub mod store;
pub mod token;
pub mod upstream;
