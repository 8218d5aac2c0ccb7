//! Test plugin: `{"mode": "ok" | "panic" | "nan" | "error" | "slow" | "fail-create" |
//! "panic-create"}`. `ok` scores candidates by their coarse score reversed (so the order
//! visibly changes); `slow` does the same after sleeping two seconds (timeout tests).

use setr_plugin_api::{export_plugin, Candidate, Plugin, Query};

/// The instance.
pub struct Testing {
    mode: String,
}

impl Plugin for Testing {
    const NAME: &'static str = "testing";
    const DESCRIPTION: &'static str = "misbehaves on request, for tests";

    fn create(config_json: &str) -> Result<Self, String> {
        let mode = config_json
            .split('"')
            .skip_while(|s| *s != "mode")
            .nth(2)
            .unwrap_or("ok")
            .to_owned();
        match mode.as_str() {
            "fail-create" => Err("asked to fail".into()),
            "panic-create" => panic!("asked to panic in create"),
            _ => Ok(Testing { mode }),
        }
    }

    fn score(
        &mut self,
        _query: &Query<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [f32],
    ) -> Result<(), String> {
        match self.mode.as_str() {
            "panic" => panic!("asked to panic in score"),
            "error" => Err("asked to fail in score".into()),
            "slow" => {
                std::thread::sleep(std::time::Duration::from_secs(2));
                for (s, c) in scores.iter_mut().zip(candidates) {
                    *s = -c.coarse_score;
                }
                Ok(())
            }
            "nan" => {
                scores.fill(f32::NAN);
                Ok(())
            }
            _ => {
                for (s, c) in scores.iter_mut().zip(candidates) {
                    *s = -c.coarse_score;
                }
                Ok(())
            }
        }
    }
}

export_plugin!(Testing);
