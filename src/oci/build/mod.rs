//! Dockerfile builds (`oci::build`): the parser and the word expansion of
//! Docker's frontend.
//!
//! [`Dockerfile::parse`] turns the text into [`Instruction`]s with their
//! flags, heredocs and lines; [`expand_word`] and [`expand_words`] apply
//! the build's variables to the words an instruction keeps raw, as
//! Docker's shell lexer does. Errors name the line and column.
//! [`run_step`] runs a `RUN` command in a kernel overlay mount of the
//! image's layers, in namespaces of its own, its changes left in a fresh
//! upper directory. [`Ignore`] reads a `.dockerignore` and [`glob_match`]
//! matches `COPY` wildcards, both with Docker's rules. [`copy_into`]
//! carries out `COPY` and `ADD` into a view, [`sources_digest`] keys them
//! in the build cache and [`resolve_chown`] reads `--chown`. [`build`] puts
//! them together: a Dockerfile becomes an image, one layer per instruction
//! that changes the filesystem, with Docker's config and history and a
//! build cache.

mod builder;
mod copy;
mod dockerfile;
mod ignore;
mod run;
mod words;

pub use self::builder::{BuildEvent, BuildReport, BuildSpec, LayerReport, StepReport, build};
pub use self::copy::{CopyOptions, CopySource, copy_into, resolve_chown, sources_digest};
pub use self::dockerfile::{
    Command, CommandLine, Dockerfile, Flag, Healthcheck, Heredoc, Instruction,
    MAX_DOCKERFILE_BYTES, ParseError,
};
pub use self::ignore::{BadPattern, Ignore, glob_match};
pub use self::run::{RunOutcome, RunStep, TAIL_LINE_BYTES, TAIL_LINES, run_step};
pub use self::words::{Vars, WordError, expand_word, expand_words};
