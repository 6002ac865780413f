//! input tests.
