//! products tests.
