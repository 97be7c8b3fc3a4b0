//! A batch's gold, once every run of the batch has ended: each gold procedure reading one of
//! the batch's tables is `CALL`ed once, in dependency order, after all of its inputs merged,
//! and skipped (with the reason kept) when an input failed. See [`sluice_core::gold`].
//!
//! The state store holds who runs the steps and how each ended, so a retried or duplicated
//! event carries on where the last attempt stopped instead of starting over, and two events
//! never run them at once.

use sluice_core::Config;
use sluice_core::gold::{GoldRecord, GoldStatus, next_step, table_outcomes};

use super::*;
use crate::state::GoldClaim;

/// How long a claim on a batch's gold holds without its holder finishing: longer than a
/// Lambda invocation may last (15 minutes), so a live holder is never taken over; a dead
/// one's steps are carried on by the next event after that.
pub const GOLD_CLAIM: chrono::Duration = chrono::Duration::minutes(16);

impl Pipeline {
    /// Runs the gold of batch `batch_id`, whose runs are `runs` (all ended), as `holder`.
    /// `None` when no gold reads a table of the batch. Another holder's record, or a finished
    /// one, is returned as it stands. A procedure that fails is recorded FAILED (what reads it
    /// is skipped); only the state store's errors are returned.
    pub async fn run_batch_gold(
        &self,
        config: &Config,
        batch_id: &str,
        holder: &str,
        runs: &[RunRecord],
    ) -> Result<Option<GoldRecord>> {
        let steps = config.gold_graph().batch_steps(&table_outcomes(runs));
        if steps.is_empty() {
            return Ok(None);
        }
        let now = Utc::now();
        let claim = GoldRecord {
            batch_id: batch_id.to_owned(),
            holder: holder.to_owned(),
            claimed_until: now + GOLD_CLAIM,
            steps,
            finished: false,
            updated_at: now,
        };
        let mut record = match self.state.claim_gold(&claim, now).await? {
            GoldClaim::Claimed(record) => record,
            GoldClaim::Held(record) => {
                info!(batch_id, holder = %record.holder, "gold of the batch is run by another");
                return Ok(Some(record));
            }
            GoldClaim::Finished(record) => {
                info!(batch_id, gold = %record.summary(), "gold of the batch already ran");
                return Ok(Some(record));
            }
        };
        let Some(loader) = self.warehouse.as_ref() else {
            // Without a warehouse there is nothing to call: say so on every step left.
            for step in record
                .steps
                .iter_mut()
                .filter(|s| s.status == GoldStatus::Pending)
            {
                step.status = GoldStatus::Skipped;
                step.detail = Some("no warehouse to call it in".into());
                step.ended_at = Some(now);
            }
            record.finished = true;
            self.state.save_gold(&record).await?;
            return Ok(Some(record));
        };
        while let Some(i) = next_step(&mut record.steps, Utc::now()) {
            let procedure = record.steps[i].procedure.clone();
            let called = loader.call_gold(&procedure, batch_id).await;
            let step = &mut record.steps[i];
            match called {
                Ok(()) => step.status = GoldStatus::Done,
                Err(e) => {
                    warn!(batch_id, procedure, error = %e, "gold procedure failed; what reads it is skipped");
                    step.status = GoldStatus::Failed;
                    step.detail = Some(e.to_string());
                }
            }
            step.ended_at = Some(Utc::now());
            record.updated_at = Utc::now();
            self.state.save_gold(&record).await?;
        }
        record.finished = true;
        record.updated_at = Utc::now();
        self.state.save_gold(&record).await?;
        info!(batch_id, gold = %record.summary(), "gold of the batch done");
        Ok(Some(record))
    }
}
