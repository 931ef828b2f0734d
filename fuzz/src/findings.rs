//! What fuzzing found that is not fixed yet, and how the targets step around it meanwhile.
//!
//! A failed invariant stops libFuzzer at once, so while a reported bug waits for its fix the
//! target would find nothing else. Each open finding here has an id, which the target that
//! found it checks with [`tolerated`] to leave out only the inputs of that bug, and a minimised
//! reproducer in `corpus/<target>/`. `tests/replay.rs` runs every reproducer [`strictly`] and
//! requires it to still fail: once the fix lands it passes, the test says so, and the entry
//! comes off [`OPEN`] (the reproducer stays in the corpus as a regression seed).

use std::cell::Cell;
use std::sync::OnceLock;

/// One open finding.
#[derive(Debug, Clone, Copy)]
pub struct Finding {
    /// What the targets call it.
    pub id: &'static str,
    /// The target that found it.
    pub target: &'static str,
    /// Its minimised reproducer, in `corpus/<target>/`.
    pub reproducer: &'static str,
    /// What is wrong, and where.
    pub summary: &'static str,
}

/// The findings reported and not fixed yet (docs/fuzzing.md has the details).
/// None open: the three the first campaign found (obs-text in `Connection`, grant and token
/// times past what a `SystemTime` holds) were fixed in commit `4f9191d`; their reproducers stay
/// in the corpus as regression seeds.
pub const OPEN: &[Finding] = &[];

thread_local! {
    static STRICT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with no open finding tolerated, on this thread.
pub fn strictly<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            STRICT.set(self.0);
        }
    }
    let _reset = Reset(STRICT.replace(true));
    f()
}

/// Whether `INFRA_FUZZ_STRICT` is set (to anything but `0`): no open finding is tolerated, in
/// this whole process (for a libFuzzer run that should find them again).
fn strict_by_environment() -> bool {
    static STRICT_ENV: OnceLock<bool> = OnceLock::new();
    *STRICT_ENV.get_or_init(|| std::env::var_os("INFRA_FUZZ_STRICT").is_some_and(|v| v != "0"))
}

/// Whether the targets step around open finding `id` (they do, unless [`strictly`] or
/// `INFRA_FUZZ_STRICT`).
pub fn tolerated(id: &str) -> bool {
    !STRICT.get() && !strict_by_environment() && OPEN.iter().any(|f| f.id == id)
}
