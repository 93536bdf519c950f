//! (not written yet)

use super::Context;
use crate::report::Outcome;

pub async fn run(_context: &Context) -> anyhow::Result<Outcome> {
    anyhow::bail!("not written yet")
}
