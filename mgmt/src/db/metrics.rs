//! Performance history: raw samples (one per sampling round, kept an
//! hour) and 5-minute rollups of them (average, minimum, maximum, kept a
//! day), per object and metric.

use rusqlite::params;
use serde::Serialize;

use super::{Db, DbError};

/// How long raw samples are kept.
pub const RAW_KEEP_S: i64 = 3600;
/// The rollup period.
pub const ROLLUP_S: i64 = 300;
/// How long rollups are kept.
pub const ROLLUP_KEEP_S: i64 = 86_400;

/// One measured value of one sampling round.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// `host`, `vm`, `volume` or `port`.
    pub kind: &'static str,
    pub object: String,
    pub metric: &'static str,
    pub value: f64,
}

/// Which table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum Resolution {
    /// The samples of the last hour.
    #[serde(rename = "raw")]
    Raw,
    /// The 5-minute rollups of the last day.
    #[serde(rename = "5m")]
    Rollup,
}

/// One row of a series: time, value (the average for rollups), and for
/// rollups the minimum and maximum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesRow {
    pub metric: String,
    pub time: i64,
    pub value: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// An object that has samples, and its metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SampledObject {
    #[schema(schema_with = crate::api::schema::metric_kind)]
    pub kind: String,
    pub object: String,
    pub metrics: Vec<String>,
}

impl Db {
    /// Records one sampling round's points at `time`.
    pub fn insert_samples(&self, time: i64, points: &[Point]) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO metric_samples (kind, object, metric, time, value)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for p in points.iter().filter(|p| p.value.is_finite()) {
                stmt.execute(params![p.kind, p.object, p.metric, time, p.value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Rolls up every complete 5-minute period whose samples are all still
    /// kept (again, so a period is right even if mgmtd was away when it
    /// ended), then drops samples older than an hour and rollups older
    /// than a day.
    pub fn roll_up(&self, now: i64) -> Result<(), DbError> {
        let current = now.div_euclid(ROLLUP_S) * ROLLUP_S;
        let kept_from = now - RAW_KEEP_S;
        let first = (kept_from + ROLLUP_S - 1).div_euclid(ROLLUP_S) * ROLLUP_S;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO metric_rollups (kind, object, metric, time, avg, min, max, samples)
             SELECT kind, object, metric, (time / ?3) * ?3, AVG(value), MIN(value), MAX(value), COUNT(*)
             FROM metric_samples WHERE time >= ?1 AND time < ?2
             GROUP BY kind, object, metric, (time / ?3)",
            params![first, current, ROLLUP_S],
        )?;
        tx.execute(
            "DELETE FROM metric_samples WHERE time < ?1",
            params![kept_from],
        )?;
        tx.execute(
            "DELETE FROM metric_rollups WHERE time < ?1",
            params![now - ROLLUP_KEEP_S],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// An object's series from `since` on, oldest first.
    pub fn metric_series(
        &self,
        kind: &str,
        object: &str,
        resolution: Resolution,
        since: i64,
    ) -> Result<Vec<SeriesRow>, DbError> {
        let conn = self.conn();
        let sql = match resolution {
            Resolution::Raw => {
                "SELECT metric, time, value, NULL, NULL FROM metric_samples
                 WHERE kind = ?1 AND object = ?2 AND time >= ?3 ORDER BY time, metric"
            }
            Resolution::Rollup => {
                "SELECT metric, time, avg, min, max FROM metric_rollups
                 WHERE kind = ?1 AND object = ?2 AND time >= ?3 ORDER BY time, metric"
            }
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map(params![kind, object, since], |r| {
                Ok(SeriesRow {
                    metric: r.get(0)?,
                    time: r.get(1)?,
                    value: r.get(2)?,
                    min: r.get(3)?,
                    max: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The objects sampled in the last hour, with their metrics.
    pub fn sampled_objects(&self) -> Result<Vec<SampledObject>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT kind, object, metric FROM metric_samples ORDER BY kind, object, metric",
        )?;
        let rows: Vec<(String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut out: Vec<SampledObject> = Vec::new();
        for (kind, object, metric) in rows {
            match out.last_mut() {
                Some(o) if o.kind == kind && o.object == object => o.metrics.push(metric),
                _ => out.push(SampledObject {
                    kind,
                    object,
                    metrics: vec![metric],
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(object: &str, metric: &'static str, value: f64) -> Point {
        Point {
            kind: "vm",
            object: object.to_owned(),
            metric,
            value,
        }
    }

    #[test]
    fn samples_roll_up_into_complete_periods_and_expire() {
        let db = Db::in_memory().unwrap();
        let t0 = 1_700_000_100; // a period boundary (divisible by 300)
        assert_eq!(t0 % ROLLUP_S, 0);
        // Two periods of samples every 20 s: values 0..15 and 100..115.
        for i in 0..30 {
            let v = if i < 15 {
                f64::from(i)
            } else {
                100.0 + f64::from(i - 15)
            };
            db.insert_samples(t0 + i64::from(i) * 20, &[point("vm-1", "cpu_percent", v)])
                .unwrap();
        }
        // Not finite: not stored.
        db.insert_samples(t0 + 1, &[point("vm-1", "cpu_percent", f64::NAN)])
            .unwrap();
        // During the second period, only the first is complete.
        db.roll_up(t0 + 400).unwrap();
        let r = db
            .metric_series("vm", "vm-1", Resolution::Rollup, 0)
            .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].time, r[0].value), (t0, 7.0));
        assert_eq!((r[0].min, r[0].max), (Some(0.0), Some(14.0)));
        // Later both are, and the raw samples are still there ...
        db.roll_up(t0 + 700).unwrap();
        let r = db
            .metric_series("vm", "vm-1", Resolution::Rollup, 0)
            .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].time, r[1].value), (t0 + 300, 107.0));
        let raw = db
            .metric_series("vm", "vm-1", Resolution::Raw, t0 + 580)
            .unwrap();
        assert_eq!(raw.len(), 1);
        assert_eq!(raw[0].value, 114.0);
        // ... until an hour has passed; the rollups stay, and are not
        // recomputed from what is left.
        db.roll_up(t0 + 300 + RAW_KEEP_S).unwrap();
        assert!(
            db.metric_series("vm", "vm-1", Resolution::Raw, 0)
                .unwrap()
                .len()
                < 30
        );
        db.roll_up(t0 + 600 + RAW_KEEP_S).unwrap();
        assert!(
            db.metric_series("vm", "vm-1", Resolution::Raw, 0)
                .unwrap()
                .is_empty()
        );
        let r = db
            .metric_series("vm", "vm-1", Resolution::Rollup, 0)
            .unwrap();
        assert_eq!(r.iter().map(|x| x.value).collect::<Vec<_>>(), [7.0, 107.0]);
        // A day later the rollups are gone too.
        db.roll_up(t0 + 600 + ROLLUP_KEEP_S).unwrap();
        assert!(
            db.metric_series("vm", "vm-1", Resolution::Rollup, 0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn sampled_objects_list_their_metrics() {
        let db = Db::in_memory().unwrap();
        db.insert_samples(
            10,
            &[
                point("a", "cpu_percent", 1.0),
                point("a", "net_rx_bytes_per_s", 2.0),
                point("b", "cpu_percent", 3.0),
            ],
        )
        .unwrap();
        let o = db.sampled_objects().unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].metrics, ["cpu_percent", "net_rx_bytes_per_s"]);
        assert_eq!(o[1].object, "b");
    }
}
