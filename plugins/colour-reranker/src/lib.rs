//! Example reranker plugin (no model): finds colour words in the modification text ("make
//! it red", "same dress but navy") and scores each candidate by the fraction of its pixels
//! nearest to one of those colours. Candidates keep a tie (score 0) when the text names no
//! colour, so the host's order stands. Configuration: `{"tolerance": 90}` (max RGB distance
//! for a pixel to count) and optional `{"colours": {"teal": [0, 128, 128]}}`.

use setr_plugin_api::{export_plugin, Candidate, Plugin, Query};

/// Named colours (the synthetic benchmark's palette plus common fashion words).
const COLOURS: &[(&str, [u8; 3])] = &[
    ("red", [220, 30, 30]),
    ("green", [30, 170, 50]),
    ("blue", [30, 60, 220]),
    ("yellow", [240, 220, 30]),
    ("purple", [140, 40, 170]),
    ("orange", [250, 140, 20]),
    ("pink", [240, 130, 180]),
    ("black", [20, 20, 20]),
    ("white", [245, 245, 245]),
    ("grey", [128, 128, 128]),
    ("gray", [128, 128, 128]),
    ("brown", [120, 70, 30]),
    ("navy", [20, 30, 90]),
    ("beige", [225, 205, 165]),
];

/// The plugin instance.
pub struct ColourReranker {
    tolerance: u32,
    colours: Vec<(String, [u8; 3])>,
}

fn parse_config(json: &str) -> Result<ColourReranker, String> {
    // A deliberately tiny parser for the two documented keys keeps the plugin free of
    // dependencies; unknown keys are refused so typos do not pass silently.
    let mut plugin = ColourReranker {
        tolerance: 90,
        colours: COLOURS.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
    };
    let body = json.trim();
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or("config must be a JSON object")?
        .trim();
    if inner.is_empty() {
        return Ok(plugin);
    }
    if let Some(rest) = inner.strip_prefix("\"tolerance\":") {
        plugin.tolerance = rest
            .trim()
            .parse()
            .map_err(|_| format!("tolerance must be an integer, got {}", rest.trim()))?;
        return Ok(plugin);
    }
    Err(format!(
        "unknown configuration {inner} (supported: tolerance)"
    ))
}

impl ColourReranker {
    /// Colours named in `text` (whole words, case-insensitive).
    fn named(&self, text: &str) -> Vec<[u8; 3]> {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).collect();
        self.colours
            .iter()
            .filter(|(name, _)| words.contains(&name.as_str()))
            .map(|(_, rgb)| *rgb)
            .collect()
    }

    /// Fraction of pixels within `tolerance` of one of `targets`.
    fn fraction(&self, pixels: &[u8], targets: &[[u8; 3]]) -> f32 {
        let limit = self.tolerance * self.tolerance;
        let total = pixels.len() / 3;
        if total == 0 {
            return 0.0;
        }
        let hits = pixels
            .chunks_exact(3)
            .filter(|p| {
                targets.iter().any(|t| {
                    let d: u32 = (0..3)
                        .map(|i| (i32::from(p[i]) - i32::from(t[i])).pow(2) as u32)
                        .sum();
                    d <= limit
                })
            })
            .count();
        hits as f32 / total as f32
    }
}

impl Plugin for ColourReranker {
    const NAME: &'static str = "colour";
    const DESCRIPTION: &'static str =
        "fraction of pixels of the colours named in the modification text";

    fn create(config_json: &str) -> Result<Self, String> {
        parse_config(config_json)
    }

    fn score(
        &mut self,
        query: &Query<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [f32],
    ) -> Result<(), String> {
        let targets = self.named(query.text);
        for (score, candidate) in scores.iter_mut().zip(candidates) {
            *score = match (&candidate.image, targets.is_empty()) {
                (Some(image), false) => self.fraction(image.pixels, &targets),
                _ => 0.0,
            };
        }
        Ok(())
    }
}

export_plugin!(ColourReranker);

#[cfg(test)]
mod tests {
    use super::*;
    use setr_plugin_api::Image;

    #[test]
    fn scores_by_the_named_colour() {
        let mut plugin = ColourReranker::create("{}").unwrap();
        let red = [220u8, 30, 30].repeat(4);
        let mixed = [[220u8, 30, 30], [30, 60, 220], [30, 60, 220], [30, 60, 220]].concat();
        let image = |p: &'static [u8]| Image {
            width: 2,
            height: 2,
            pixels: p,
        };
        let red: &'static [u8] = Box::leak(red.into_boxed_slice());
        let mixed: &'static [u8] = Box::leak(mixed.into_boxed_slice());
        let candidates = [red, mixed].map(|p| Candidate {
            id: 0,
            image: Some(image(p)),
            embedding: None,
            coarse_score: 0.0,
            metadata_json: "null",
        });
        let query = Query {
            text: "make it RED",
            reference: None,
            reference_embedding: None,
        };
        let mut scores = [0.0; 2];
        plugin.score(&query, &candidates, &mut scores).unwrap();
        assert_eq!(scores, [1.0, 0.25]);
        let query = Query {
            text: "add a circle",
            reference: None,
            reference_embedding: None,
        };
        plugin.score(&query, &candidates, &mut scores).unwrap();
        assert_eq!(scores, [0.0, 0.0]);
    }

    #[test]
    fn config_is_checked() {
        assert_eq!(
            ColourReranker::create("{\"tolerance\": 10}")
                .unwrap()
                .tolerance,
            10
        );
        assert!(ColourReranker::create("{\"tolerence\": 10}").is_err());
        assert!(ColourReranker::create("[]").is_err());
    }
}
