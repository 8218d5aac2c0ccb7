//! Chat prompts of the Qwen3-VL Yes/No reranker: the checkpoint's chat template rendered
//! with minijinja as transformers renders it (`trim_blocks`, `lstrip_blocks`, Python
//! string methods), split before the candidate image so the prefix (reference image and
//! modification text) can be computed once per query, and image placeholders expanded to
//! one `<|image_pad|>` per merged patch.

use std::path::Path;

use minijinja::{context, Environment, ErrorKind};
use serde_json::{json, Value};

use crate::{ModelError, Result};

/// Marks the start of an image in Qwen-VL prompts.
pub const VISION_START: &str = "<|vision_start|>";
/// The placeholder of one image token; the chat template writes one per image.
pub const IMAGE_PAD: &str = "<|image_pad|>";

/// The texts of the rerank message around the candidate image. `{text}` is replaced by
/// the modification text in both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTemplate {
    /// Text between the reference image and the candidate image.
    pub before_candidate: String,
    /// Text after the candidate image (the question).
    pub after_candidate: String,
}

impl Default for PromptTemplate {
    fn default() -> Self {
        PromptTemplate {
            before_candidate: "Modification: {text}".into(),
            after_candidate:
                "Is the second image the first image after this modification? Answer Yes or No."
                    .into(),
        }
    }
}

/// A rendered rerank prompt, before the image placeholders are expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedPrompt {
    /// The whole prompt, `prefix + suffix`.
    pub full: String,
    /// Everything before the candidate image's `<|vision_start|>`: the chat header, the
    /// reference image placeholder and the modification text. Shared by all candidates.
    pub prefix: String,
    /// From the candidate image's `<|vision_start|>` to the end (generation prompt
    /// included).
    pub suffix: String,
}

/// The chat template of a checkpoint directory: `chat_template.jinja`, else
/// `chat_template.json` (`{"chat_template": ...}`), else `tokenizer_config.json`'s
/// `chat_template` (a string, or a list of `{name, template}` of which `default` is
/// taken).
pub fn load_chat_template(dir: &Path) -> Result<String> {
    let read = |name: &str| -> Result<Option<String>> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ModelError::io(path, e)),
        }
    };
    if let Some(template) = read("chat_template.jinja")? {
        return Ok(template);
    }
    for file in ["chat_template.json", "tokenizer_config.json"] {
        let Some(text) = read(file)? else { continue };
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::invalid(dir, format!("{file}: {e}")))?;
        if let Some(template) = template_entry(json.get("chat_template"))
            .map_err(|why| ModelError::invalid(dir, format!("{file}: {why}")))?
        {
            return Ok(template);
        }
    }
    Err(ModelError::invalid(
        dir,
        "no chat template (no chat_template.jinja, chat_template.json or `chat_template` in \
         tokenizer_config.json)",
    ))
}

/// A `chat_template` value: a string, or named templates of which `default` is used.
fn template_entry(value: Option<&Value>) -> std::result::Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let mut names = Vec::new();
            for item in list {
                let name = item.get("name").and_then(Value::as_str);
                let template = item.get("template").and_then(Value::as_str);
                let (Some(name), Some(template)) = (name, template) else {
                    return Err("`chat_template` list entries need `name` and `template`".into());
                };
                if name == "default" {
                    return Ok(Some(template.to_owned()));
                }
                names.push(name);
            }
            Err(format!(
                "named chat templates {names:?} but none is `default`"
            ))
        }
        Some(other) => Err(format!("`chat_template` is not a string: {other}")),
    }
}

/// Renders `messages` (a JSON list of `{role, content}`) with a Hugging Face chat
/// template, as `apply_chat_template(messages, add_generation_prompt=...)` does: jinja2
/// with `trim_blocks` and `lstrip_blocks`, no tools, `add_vision_id` false.
pub fn render_chat(
    template: &str,
    messages: &Value,
    add_generation_prompt: bool,
) -> Result<String> {
    let error = |e: minijinja::Error| ModelError::InvalidInput(format!("chat template: {e}"));
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<minijinja::Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    let template = env.template_from_str(template).map_err(error)?;
    template
        .render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            tools => (),
            add_vision_id => false,
        })
        .map_err(error)
}

/// Renders the rerank prompt for modification `text`: one user message with
/// [reference image, `before_candidate`, candidate image, `after_candidate`] and the
/// generation prompt, split before the candidate image. Fails when the rendered prompt
/// does not hold exactly two images (e.g. `text` contains vision tokens).
pub fn render_rerank_prompt(
    template: &str,
    instruction: &PromptTemplate,
    text: &str,
) -> Result<RenderedPrompt> {
    let messages = json!([{
        "role": "user",
        "content": [
            {"type": "image"},
            {"type": "text", "text": instruction.before_candidate.replace("{text}", text)},
            {"type": "image"},
            {"type": "text", "text": instruction.after_candidate.replace("{text}", text)},
        ],
    }]);
    let full = render_chat(template, &messages, true)?;
    let starts: Vec<usize> = full.match_indices(VISION_START).map(|(i, _)| i).collect();
    let pads = full.matches(IMAGE_PAD).count();
    if starts.len() != 2 || pads != 2 {
        return Err(ModelError::InvalidInput(format!(
            "the rerank prompt must hold exactly 2 images, it has {} {VISION_START} and {pads} \
             {IMAGE_PAD} (does the text contain vision tokens?)",
            starts.len()
        )));
    }
    let (prefix, suffix) = full.split_at(starts[1]);
    Ok(RenderedPrompt {
        prefix: prefix.to_owned(),
        suffix: suffix.to_owned(),
        full,
    })
}

/// Replaces the i-th `image_pad` of `prompt` by `counts[i]` copies (the image's
/// `grid_t * grid_h * grid_w / merge_size^2` tokens), as the Qwen-VL processor does.
/// Fails when `prompt` does not hold exactly `counts.len()` placeholders.
pub fn expand_image_pads(prompt: &str, image_pad: &str, counts: &[usize]) -> Result<String> {
    if image_pad.is_empty() {
        return Err(ModelError::InvalidInput("empty image placeholder".into()));
    }
    let parts: Vec<&str> = prompt.split(image_pad).collect();
    if parts.len() - 1 != counts.len() {
        return Err(ModelError::InvalidInput(format!(
            "the prompt has {} {image_pad} but {} images were given",
            parts.len() - 1,
            counts.len()
        )));
    }
    let total: usize = counts.iter().sum();
    let mut out = String::with_capacity(prompt.len() + total * image_pad.len());
    for (i, part) in parts.iter().enumerate() {
        out.push_str(part);
        if let Some(&n) = counts.get(i) {
            out.push_str(&image_pad.repeat(n));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use candle_core::Device;
    use sha2::{Digest, Sha256};

    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
    }

    fn golden(name: &str) -> Value {
        let path = fixtures().join("golden").join(format!("{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn ids(tensor: &candle_core::Tensor) -> Vec<u32> {
        let ids = tensor.flatten_all().unwrap().to_vec1::<i64>().unwrap();
        ids.into_iter().map(|i| i as u32).collect()
    }

    #[test]
    fn golden_prompts() {
        // a: chat_template.jinja (transformers 5 layout); b: chat_template.json (hub layout).
        for name in ["qwen3vl-a", "qwen3vl-b"] {
            let meta = golden(name);
            let dir = fixtures().join("models").join(name);
            let template = load_chat_template(&dir).unwrap();
            let sha: String = Sha256::digest(template.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                sha,
                meta["chat_template"]["sha256"].as_str().unwrap(),
                "{name}"
            );

            let text = meta["modification_text"].as_str().unwrap();
            let rendered =
                render_rerank_prompt(&template, &PromptTemplate::default(), text).unwrap();
            assert_eq!(
                rendered.full,
                meta["rerank"]["prompt"].as_str().unwrap(),
                "{name}"
            );
            assert_eq!(
                format!("{}{}", rendered.prefix, rendered.suffix),
                rendered.full
            );
            assert!(rendered.prefix.ends_with(&format!("Modification: {text}")));
            assert!(rendered.suffix.starts_with(VISION_START));
            assert_eq!(rendered.prefix.matches(IMAGE_PAD).count(), 1);

            let text_only = &meta["text_only"];
            let plain = render_chat(&template, &text_only["messages"], true).unwrap();
            assert_eq!(plain, text_only["prompt"].as_str().unwrap(), "{name}");

            // Expanded and tokenised, the prompt gives transformers' input ids.
            let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
            let tensors = candle_core::safetensors::load(
                fixtures()
                    .join("golden")
                    .join(format!("{name}.safetensors")),
                &Device::Cpu,
            )
            .unwrap();
            let merge = meta["image_processor"]["merge_size"].as_u64().unwrap() as usize;
            for candidate in meta["rerank"]["candidates"].as_array().unwrap() {
                let i = candidate["index"].as_u64().unwrap();
                let counts: Vec<usize> = candidate["image_grid_thw"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| {
                        let g: Vec<usize> = g
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_u64().unwrap() as usize)
                            .collect();
                        g.iter().product::<usize>() / (merge * merge)
                    })
                    .collect();
                let expanded = expand_image_pads(&rendered.full, IMAGE_PAD, &counts).unwrap();
                let got = tokenizer.encode(expanded.as_str(), true).unwrap();
                assert_eq!(
                    got.get_ids(),
                    ids(&tensors[&format!("input_ids_{i}")]),
                    "{name} #{i}"
                );
                let prefix = expand_image_pads(&rendered.prefix, IMAGE_PAD, &counts[..1]).unwrap();
                let got = tokenizer.encode(prefix.as_str(), true).unwrap();
                assert_eq!(
                    got.get_ids(),
                    ids(&tensors["prefix_input_ids"]),
                    "{name} prefix"
                );
            }
        }
    }

    #[test]
    fn template_sources() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_chat_template(dir.path()).is_err());
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "tokenizer_config.json",
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}]}"#,
        );
        assert!(load_chat_template(dir.path()).is_err());
        write(
            "tokenizer_config.json",
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        );
        assert_eq!(load_chat_template(dir.path()).unwrap(), "D");
        write("chat_template.json", r#"{"chat_template": "J"}"#);
        assert_eq!(load_chat_template(dir.path()).unwrap(), "J");
        write("chat_template.jinja", "K");
        assert_eq!(load_chat_template(dir.path()).unwrap(), "K");
    }

    #[test]
    fn python_methods_and_custom_instructions() {
        let template = "{% for m in messages %}{{ m.content[1].text.strip().upper() }}|\
                        {% if m.role.startswith('us') %}{% for c in m.content %}{% if c.type == 'image' %}\
                        <|vision_start|><|image_pad|><|vision_end|>{% endif %}{% endfor %}{% endif %}{% endfor %}";
        let instruction = PromptTemplate {
            before_candidate: "  change: {text} ".into(),
            after_candidate: "same? {text}".into(),
        };
        let out = render_rerank_prompt(template, &instruction, "red").unwrap();
        assert_eq!(
            out.prefix,
            "CHANGE: RED|<|vision_start|><|image_pad|><|vision_end|>"
        );
        assert_eq!(out.suffix, "<|vision_start|><|image_pad|><|vision_end|>");
        let failing = "{{ raise_exception('unsupported') }}";
        assert!(render_chat(failing, &json!([]), true).is_err());
    }

    #[test]
    fn vision_tokens_in_text_are_refused() {
        let template = load_chat_template(&fixtures().join("models").join("qwen3vl-a")).unwrap();
        let bad = format!("red {VISION_START}{IMAGE_PAD}");
        assert!(render_rerank_prompt(&template, &PromptTemplate::default(), &bad).is_err());
    }

    #[test]
    fn image_pads_expand() {
        let p = "a<|image_pad|>b<|image_pad|>c";
        assert_eq!(
            expand_image_pads(p, IMAGE_PAD, &[2, 1]).unwrap(),
            "a<|image_pad|><|image_pad|>b<|image_pad|>c"
        );
        assert!(expand_image_pads(p, IMAGE_PAD, &[2]).is_err());
        assert!(expand_image_pads(p, IMAGE_PAD, &[1, 1, 1]).is_err());
        assert_eq!(expand_image_pads("none", IMAGE_PAD, &[]).unwrap(), "none");
    }
}
