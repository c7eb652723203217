//! Named regressions of issue 12, each against the real kernel.

#[allow(unused_imports)]
use super::*;
