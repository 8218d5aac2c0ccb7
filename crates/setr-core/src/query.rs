use serde::{Deserialize, Serialize};

use crate::{l2_normalize, CoreError, GalleryStats, Result};

/// A composed query as embeddings: the reference image's and the modification text's.
/// Either side may be absent when the strategy does not need it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComposedQuery {
    /// Embedding of the reference image.
    pub image: Option<Vec<f32>>,
    /// Embedding of the modification text.
    pub text: Option<Vec<f32>>,
}

/// How the coarse stage scores a gallery item `g` from `s_img = <g, q_img>` and
/// `s_txt = <g, q_txt>` (all vectors L2-normalised).
///
/// Written and parsed as `image`, `text`, `union`, `union:<text_weight>`, `intersection`
/// or `intersection:<lambda>`.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Strategy {
    /// `s_img` only.
    Image,
    /// `s_txt` only.
    Text,
    /// Baseline: score with `normalise((1 - w) q_img + w q_txt)`; `w = 0.5` is the plain sum.
    Union {
        /// Weight `w` of the text side, in [0, 1].
        text_weight: f32,
    },
    /// SETR's soft AND: standardise each side over the gallery, `z = (s - mean) / std`
    /// (mean and std follow from the gallery's mean vector and covariance), and score
    /// `(1 - lambda) * min(z_img, z_txt) + lambda * (z_img + z_txt) / 2`.
    /// `lambda = 0` is the pure intersection.
    Intersection {
        /// Blend towards the mean of the two z-scores, in [0, 1].
        lambda: f32,
    },
}

/// The default for a query with both sides is `union`: on held-out synthetic benchmarks
/// with the bundled demo models it has the best R@1 and R@50 of every strategy measured
/// (configs/models/demo-qwen3vl/README.md has the table); `intersection` stays available
/// by name.
impl Default for Strategy {
    fn default() -> Self {
        Strategy::Union { text_weight: 0.5 }
    }
}

impl Strategy {
    /// The strategy's name without parameters.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Image => "image",
            Strategy::Text => "text",
            Strategy::Union { .. } => "union",
            Strategy::Intersection { .. } => "intersection",
        }
    }

    /// The four strategies with default parameters.
    pub fn all() -> [Strategy; 4] {
        [
            Strategy::Image,
            Strategy::Text,
            Strategy::Union { text_weight: 0.5 },
            Strategy::Intersection { lambda: 0.0 },
        ]
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Union { text_weight } if *text_weight != 0.5 => {
                write!(f, "union:{text_weight}")
            }
            Strategy::Intersection { lambda } if *lambda != 0.0 => {
                write!(f, "intersection:{lambda}")
            }
            s => f.write_str(s.name()),
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || CoreError::InvalidStrategy(s.to_string());
        let (name, param) = match s.trim().split_once(':') {
            Some((n, p)) => (n, Some(p.trim().parse::<f32>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        if let Some(p) = param {
            if !(0.0..=1.0).contains(&p) {
                return Err(bad());
            }
        }
        match (name.to_ascii_lowercase().as_str(), param) {
            ("image", None) => Ok(Strategy::Image),
            ("text", None) => Ok(Strategy::Text),
            ("union", p) => Ok(Strategy::Union {
                text_weight: p.unwrap_or(0.5),
            }),
            ("intersection", p) => Ok(Strategy::Intersection {
                lambda: p.unwrap_or(0.0),
            }),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Strategy {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Strategy> for String {
    fn from(s: Strategy) -> String {
        s.to_string()
    }
}

/// How one query turns the dot products of a row into its score. Indices refer to the
/// rows of [`PreparedBatch::vectors`].
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Plan {
    /// score = `<g, v>`.
    Dot {
        /// Query vector index.
        v: usize,
    },
    /// score = `(1 - lambda) * min(z_i, z_t) + lambda * (z_i + z_t) / 2`, where
    /// `z_i = a_img * <g, v_img> + b_img` and likewise for the text.
    Intersection {
        /// Image vector index.
        v_img: usize,
        /// Text vector index.
        v_txt: usize,
        /// `1 / std_img`.
        a_img: f32,
        /// `-mean_img / std_img`.
        b_img: f32,
        /// `1 / std_txt`.
        a_txt: f32,
        /// `-mean_txt / std_txt`.
        b_txt: f32,
        /// Blend towards the mean z-score.
        lambda: f32,
    },
}

/// The intersection's score from the two z-scores: the soft AND
/// `(1 - lambda) min(z_img, z_txt) + lambda (z_img + z_txt) / 2`. The one definition, used
/// by every scan and by remote galleries that rescore candidates themselves.
#[inline(always)]
pub fn intersection_score(z_img: f32, z_txt: f32, lambda: f32) -> f32 {
    let hard = z_img.min(z_txt);
    if lambda == 0.0 {
        hard
    } else {
        (1.0 - lambda) * hard + lambda * 0.5 * (z_img + z_txt)
    }
}

impl Plan {
    /// The score of a row from its dot products with every prepared vector.
    #[inline(always)]
    pub fn score(&self, dots: &[f32]) -> f32 {
        match *self {
            Plan::Dot { v } => dots[v],
            Plan::Intersection { v_img, v_txt, .. } => self.combine(dots[v_img], dots[v_txt]),
        }
    }

    /// The scores of a block of rows from their dot products with every prepared vector
    /// (`dots[v][r]`): [`Plan::score`] for each row, in a loop the compiler vectorises.
    #[inline(always)]
    pub(crate) fn score_block<const N: usize>(&self, dots: &[[f32; N]], out: &mut [f32; N]) {
        match *self {
            Plan::Dot { v } => *out = dots[v],
            Plan::Intersection { v_img, v_txt, .. } => {
                for ((o, si), st) in out.iter_mut().zip(&dots[v_img]).zip(&dots[v_txt]) {
                    *o = self.combine(*si, *st);
                }
            }
        }
    }

    /// The score from the image side's and the text side's dot products (a `Dot` plan has
    /// one side, passed as `s_img`).
    #[inline(always)]
    fn combine(&self, s_img: f32, s_txt: f32) -> f32 {
        match *self {
            Plan::Dot { .. } => s_img,
            Plan::Intersection {
                a_img,
                b_img,
                a_txt,
                b_txt,
                lambda,
                ..
            } => intersection_score(a_img * s_img + b_img, a_txt * s_txt + b_txt, lambda),
        }
    }
}

/// A validated batch of queries: normalised query vectors (row-major, `dim` each) and one
/// plan per query. Backends score from this, so validation happens exactly once.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedBatch {
    /// Row dimension.
    pub dim: usize,
    /// Normalised query vectors, row-major.
    pub vectors: Vec<f32>,
    /// One plan per query, in query order.
    pub plans: Vec<Plan>,
    /// The strategy the plans were made for.
    pub strategy: Strategy,
}

/// A side whose scores vary less than this over the gallery (a gallery of near-identical
/// items along that query) carries no ranking information: its z-score is 0 everywhere
/// instead of amplified rounding noise.
const MIN_STD: f64 = 1e-3;

/// `(a, b)` of `z = a * s + b`.
fn standardise(mean: f64, var: f64) -> (f32, f32) {
    let sd = var.max(0.0).sqrt();
    if sd < MIN_STD {
        (0.0, 0.0)
    } else {
        ((1.0 / sd) as f32, (-mean / sd) as f32)
    }
}

impl PreparedBatch {
    /// Validates and normalises `queries` for `strategy`. `stats` is needed only by
    /// [`Strategy::Intersection`].
    pub fn new(
        queries: &[ComposedQuery],
        strategy: Strategy,
        dim: usize,
        stats: Option<&GalleryStats>,
    ) -> Result<Self> {
        if let Strategy::Union { text_weight: w } | Strategy::Intersection { lambda: w } = strategy
        {
            if !(0.0..=1.0).contains(&w) {
                return Err(CoreError::InvalidStrategy(strategy.to_string()));
            }
        }
        let mut vectors = Vec::with_capacity(queries.len() * dim * 2);
        let mut plans = Vec::with_capacity(queries.len());
        let missing = |needs| CoreError::MissingQuerySide {
            strategy: strategy.name().to_string(),
            needs,
        };
        for (n, q) in queries.iter().enumerate() {
            let side = |v: &Option<Vec<f32>>, what: &str| -> Result<Option<Vec<f32>>> {
                match v {
                    Some(v) => {
                        let what = format!("query {n} {what} embedding");
                        crate::validate_vector(&what, v, dim)?;
                        let mut v = v.clone();
                        l2_normalize(&what, &mut v)?;
                        Ok(Some(v))
                    }
                    None => Ok(None),
                }
            };
            let img = side(&q.image, "image")?;
            let txt = side(&q.text, "text")?;
            let push = |vectors: &mut Vec<f32>, v: &[f32]| {
                vectors.extend_from_slice(v);
                vectors.len() / dim - 1
            };
            let plan = match strategy {
                Strategy::Image => Plan::Dot {
                    v: push(
                        &mut vectors,
                        &img.ok_or_else(|| missing("an image embedding"))?,
                    ),
                },
                Strategy::Text => Plan::Dot {
                    v: push(
                        &mut vectors,
                        &txt.ok_or_else(|| missing("a text embedding"))?,
                    ),
                },
                Strategy::Union { text_weight } => {
                    let (Some(i), Some(t)) = (img, txt) else {
                        return Err(missing("both an image and a text embedding"));
                    };
                    let mut u: Vec<f32> = i
                        .iter()
                        .zip(&t)
                        .map(|(a, b)| (1.0 - text_weight) * a + text_weight * b)
                        .collect();
                    l2_normalize(&format!("query {n} union of image and text"), &mut u)?;
                    Plan::Dot {
                        v: push(&mut vectors, &u),
                    }
                }
                Strategy::Intersection { lambda } => {
                    let (Some(i), Some(t)) = (img, txt) else {
                        return Err(missing("both an image and a text embedding"));
                    };
                    let stats = stats.ok_or(CoreError::MissingStats)?;
                    if stats.dim() != dim {
                        return Err(CoreError::DimensionMismatch {
                            what: "gallery statistics".into(),
                            expected: dim,
                            found: stats.dim(),
                        });
                    }
                    let (mi, vi) = stats.moments(&i);
                    let (mt, vt) = stats.moments(&t);
                    let (a_img, b_img) = standardise(mi, vi);
                    let (a_txt, b_txt) = standardise(mt, vt);
                    Plan::Intersection {
                        v_img: push(&mut vectors, &i),
                        v_txt: push(&mut vectors, &t),
                        a_img,
                        b_img,
                        a_txt,
                        b_txt,
                        lambda,
                    }
                }
            };
            plans.push(plan);
        }
        Ok(PreparedBatch {
            dim,
            vectors,
            plans,
            strategy,
        })
    }

    /// Number of prepared query vectors.
    pub fn num_vectors(&self) -> usize {
        self.vectors.len() / self.dim
    }

    /// Prepared vector `i`.
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_strings_round_trip_and_bad_ones_fail() {
        for s in [
            "image",
            "text",
            "union",
            "union:0.25",
            "intersection",
            "intersection:0.5",
        ] {
            let parsed: Strategy = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
        }
        for s in [
            "",
            "and",
            "union:2",
            "intersection:x",
            "image:0.3",
            "union:-0.1",
        ] {
            assert!(s.parse::<Strategy>().is_err(), "{s}");
        }
        let json = serde_json::to_string(&Strategy::Union { text_weight: 0.25 }).unwrap();
        assert_eq!(json, "\"union:0.25\"");
        assert!(serde_json::from_str::<Strategy>("\"nope\"").is_err());
    }

    #[test]
    fn missing_sides_and_bad_vectors_are_refused() {
        let q = ComposedQuery {
            image: Some(vec![1.0, 0.0]),
            text: None,
        };
        let err =
            PreparedBatch::new(std::slice::from_ref(&q), Strategy::default(), 2, None).unwrap_err();
        assert!(matches!(err, CoreError::MissingQuerySide { .. }));
        assert!(PreparedBatch::new(&[q], Strategy::Image, 3, None).is_err());
        let nan = ComposedQuery {
            image: Some(vec![f32::NAN, 1.0]),
            text: None,
        };
        assert!(matches!(
            PreparedBatch::new(&[nan], Strategy::Image, 2, None).unwrap_err(),
            CoreError::NonFinite { .. }
        ));
        let zero = ComposedQuery {
            image: Some(vec![0.0, 0.0]),
            text: None,
        };
        assert!(matches!(
            PreparedBatch::new(&[zero], Strategy::Image, 2, None).unwrap_err(),
            CoreError::ZeroVector { .. }
        ));
    }
}
