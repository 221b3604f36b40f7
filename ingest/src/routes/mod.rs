//! HTTP routes: the public webhook and the admin endpoints.

pub mod admin;
pub mod webhook;
