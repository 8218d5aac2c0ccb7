//! `config.json` of `Qwen3VLForConditionalGeneration`, in both layouts found on the hub:
//!
//! Field names and meanings are exactly those of `config.json`.
#![allow(missing_docs)]
//! transformers 5 (`text_config.rope_parameters`) and 4.57 (`text_config.rope_scaling` plus
//! `rope_theta`).

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RopeParams {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub mrope_section: Option<Vec<usize>>,
    #[serde(default)]
    pub rope_type: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "d_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d_silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParams>,
    #[serde(default)]
    pub rope_scaling: Option<RopeParams>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    #[serde(default = "d_3")]
    pub in_channels: usize,
    #[serde(default = "d_16")]
    pub patch_size: usize,
    #[serde(default = "d_2")]
    pub spatial_merge_size: usize,
    #[serde(default = "d_2")]
    pub temporal_patch_size: usize,
    pub out_hidden_size: usize,
    pub num_position_embeddings: usize,
    #[serde(default)]
    pub deepstack_visual_indexes: Vec<usize>,
    #[serde(default = "d_gelu_tanh")]
    pub hidden_act: String,
    #[serde(default)]
    pub rope_parameters: Option<RopeParams>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
    #[serde(default = "d_image_token")]
    pub image_token_id: u32,
    #[serde(default = "d_vision_start")]
    pub vision_start_token_id: u32,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
}

fn d_rms_eps() -> f64 {
    1e-6
}
fn d_silu() -> String {
    "silu".into()
}
fn d_gelu_tanh() -> String {
    "gelu_pytorch_tanh".into()
}
fn d_3() -> usize {
    3
}
fn d_16() -> usize {
    16
}
fn d_2() -> usize {
    2
}
fn d_image_token() -> u32 {
    151_655
}
fn d_vision_start() -> u32 {
    151_652
}

impl Config {
    /// Checks what the implementation relies on; returns why not.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.text_config;
        let v = &self.vision_config;
        if t.hidden_act != "silu" {
            return Err(format!("text hidden_act {} (only silu)", t.hidden_act));
        }
        if t.num_attention_heads == 0
            || t.num_key_value_heads == 0
            || !t.num_attention_heads.is_multiple_of(t.num_key_value_heads)
        {
            return Err("text heads must be a multiple of key/value heads".into());
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err("text head_dim must be even".into());
        }
        let sections = self.mrope_section();
        if sections.len() != 3 || sections.iter().sum::<usize>() != self.head_dim() / 2 {
            return Err(format!(
                "mrope_section {sections:?} must have 3 parts summing to head_dim/2 = {}",
                self.head_dim() / 2
            ));
        }
        let side = (v.num_position_embeddings as f64).sqrt() as usize;
        if side * side != v.num_position_embeddings || side < 2 {
            return Err("vision num_position_embeddings must be a square".into());
        }
        if v.num_heads == 0
            || !v.hidden_size.is_multiple_of(v.num_heads)
            || !(v.hidden_size / v.num_heads).is_multiple_of(4)
        {
            return Err("vision head size must divide hidden size and be a multiple of 4".into());
        }
        if v.temporal_patch_size != 2 && v.temporal_patch_size != 1 {
            return Err(format!("temporal_patch_size {}", v.temporal_patch_size));
        }
        if v.deepstack_visual_indexes.iter().any(|&i| i >= v.depth)
            || v.deepstack_visual_indexes.len() > t.num_hidden_layers
        {
            return Err("deepstack_visual_indexes out of range".into());
        }
        if !matches!(
            v.hidden_act.as_str(),
            "gelu_pytorch_tanh" | "gelu" | "gelu_new" | "silu" | "quick_gelu"
        ) {
            return Err(format!("vision hidden_act {}", v.hidden_act));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        let t = &self.text_config;
        t.head_dim.unwrap_or(t.hidden_size / t.num_attention_heads)
    }

    fn rope(&self) -> Option<&RopeParams> {
        self.text_config
            .rope_parameters
            .as_ref()
            .or(self.text_config.rope_scaling.as_ref())
    }

    pub fn rope_theta(&self) -> f64 {
        self.rope()
            .and_then(|r| r.rope_theta)
            .or(self.text_config.rope_theta)
            .unwrap_or(5_000_000.0)
    }

    pub fn mrope_section(&self) -> Vec<usize> {
        self.rope()
            .and_then(|r| r.mrope_section.clone())
            .unwrap_or_else(|| vec![24, 20, 20])
    }

    pub fn vision_rope_theta(&self) -> f64 {
        self.vision_config
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .unwrap_or(10_000.0)
    }

    pub fn tied_embeddings(&self) -> bool {
        self.text_config
            .tie_word_embeddings
            .or(self.tie_word_embeddings)
            .unwrap_or(false)
    }
}
