//! What every differential test here shares, whatever the backend: a [`Mismatch`] that
//! names the step and what differed, the comparison of one observation from each side,
//! and a proptest runner whose shrunk counterexamples are kept in a file beside the
//! test and run again first on the next run.

use std::fmt;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

/// The first point where the emulation and the real backend disagreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Index of the step in its sequence.
    pub step: usize,
    /// The step, as its `Debug` prints it.
    pub input: String,
    /// What was compared: "reply", "keyspace", ...
    pub what: &'static str,
    pub real: String,
    pub emulated: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} ({}): the {} differs\n      real: {}\n  emulated: {}",
            self.step, self.input, self.what, self.real, self.emulated
        )
    }
}

impl std::error::Error for Mismatch {}

/// `Ok` if `same(real, emulated)`, else the mismatch at `step`.
pub fn agree<T: fmt::Debug>(
    step: usize,
    input: &impl fmt::Debug,
    what: &'static str,
    real: &T,
    emulated: &T,
    same: impl Fn(&T, &T) -> bool,
) -> Result<(), Mismatch> {
    if same(real, emulated) {
        return Ok(());
    }
    Err(Mismatch {
        step,
        input: format!("{input:?}"),
        what,
        real: format!("{real:?}"),
        emulated: format!("{emulated:?}"),
    })
}

/// Where a property keeps its shrunk counterexamples (proptest seeds, one a line).
#[derive(Debug, Clone, Copy)]
pub enum Persistence {
    /// This file (absolute, e.g. `concat!(env!("CARGO_MANIFEST_DIR"), "/tests/...")`):
    /// the seeds in it are run first, a new failure's seed is appended.
    #[cfg_attr(feature = "memory-broken", allow(dead_code, reason = "runs expected to fail keep nothing"))]
    File(&'static str),
    /// Nothing read or written: for runs expected to fail (a deliberately broken
    /// emulation), whose counterexamples must not become regressions.
    #[cfg_attr(not(feature = "memory-broken"), allow(dead_code, reason = "only runs expected to fail use it"))]
    Off,
}

/// Bound on shrinking, so a failure is reported in seconds, not minutes.
const MAX_SHRINK_ITERS: u32 = 2_048;

/// Runs `test` on `cases` values of `strategy` (plus the persisted ones first) and
/// returns the shrunk counterexample and its mismatch if any case fails.
pub fn run_property<S: Strategy>(
    cases: u32,
    persistence: Persistence,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), Mismatch>,
) -> Result<(), String> {
    let failure_persistence = match persistence {
        Persistence::File(path) => Some(Box::new(FileFailurePersistence::Direct(path)) as _),
        Persistence::Off => None,
    };
    let config = Config { cases, failure_persistence, max_shrink_iters: MAX_SHRINK_ITERS, ..Config::default() };
    let mut runner = TestRunner::new(config);
    match runner.run(strategy, |value| test(value).map_err(|mismatch| TestCaseError::fail(mismatch.to_string()))) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, value)) => Err(format!("{reason}\nminimal failing input: {value:#?}")),
        Err(TestError::Abort(reason)) => Err(format!("aborted: {reason}")),
    }
}
