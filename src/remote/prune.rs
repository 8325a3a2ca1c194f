//! Applying retention in a bucket: what the calendar does not keep goes, manifest first (so a
//! backup stops existing before its data does), then data; and data that no manifest names,
//! left by a run that died between its upload and its manifest, once it is a day old.

use time::OffsetDateTime;

use super::catalog::{Listed, is_data_name, manifest_stem};
use super::retention::{self, CalendarRetention, Reason};
use super::{Bucket, RemoteError};

/// How old unclaimed data must be before it is swept: a younger one may be a running upload's.
const ORPHAN_AGE: time::Duration = time::Duration::days(1);

/// Each complete backup, newest first, with the reasons retention keeps it (none: it goes).
pub fn plan(complete: Vec<Listed>, now: OffsetDateTime, policy: CalendarRetention) -> Vec<(Listed, Vec<Reason>)> {
    let times: Vec<OffsetDateTime> = complete.iter().map(|listed| listed.manifest.created_at).collect();
    complete.into_iter().zip(retention::decide(&times, now, policy)).collect()
}

impl Bucket {
    /// Deletes what `policy` does not keep and sweeps old unclaimed data; returns what went.
    pub async fn apply_retention(
        &self,
        policy: CalendarRetention,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, RemoteError> {
        // One listing serves it all: retention deletes manifests and data, never upload records.
        let ours = self.ours().await?;
        let complete = self.complete_in(&ours).await?;
        // Data beside a manifest object is claimed whether or not that manifest reads (a newer
        // release's, a damaged one): only data with no manifest at all is a dead run's.
        let mut claimed: Vec<String> = complete.iter().map(|listed| listed.manifest.data.clone()).collect();
        claimed.extend(ours.iter().filter_map(|(name, _, _)| manifest_stem(name)).flat_map(|stem| {
            [format!("{stem}{}", crate::dump::naming::SUFFIX), format!("{stem}{}.age", crate::dump::naming::SUFFIX)]
        }));
        let mut deleted = Vec::new();
        for (listed, reasons) in plan(complete, now, policy) {
            if reasons.is_empty() {
                self.delete(&listed.manifest_name).await?;
                self.delete(&listed.manifest.data).await?;
                deleted.push(listed.manifest.data);
            }
        }
        let uploading: Vec<String> = self.unfinished_in(&ours).await?.into_iter().map(|(_, r)| r.data).collect();
        for (name, _, modified) in ours {
            let unclaimed = is_data_name(&name) && !claimed.contains(&name) && !uploading.contains(&name);
            if unclaimed && now - modified > ORPHAN_AGE {
                self.delete(&name).await?;
                deleted.push(name);
            }
        }
        Ok(deleted)
    }
}
