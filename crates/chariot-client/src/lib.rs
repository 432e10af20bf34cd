//! Async Rust client for the native protocol: being written (see the README's status).
