//! Helpers for the end-to-end tests and the load generator.
