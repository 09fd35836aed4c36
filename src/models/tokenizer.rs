//! CLIP's byte-level BPE tokenizer, built with the `tokenizers` crate exactly as transformers'
//! `CLIPTokenizer` builds it (transformers 5: NFC, whitespace runs -> one space, lowercase;
//! CLIP's split regex; byte-level; BPE with the `</w>` end-of-word suffix).
//!
//! Every prompt becomes exactly [`MAX_LEN`] ids: `<|startoftext|>`, the first 75 tokens
//! (the rest is dropped, as `truncation=True, max_length=77` does), `<|endoftext|>`, then the
//! pad token of the tokenizer folder (`<|endoftext|>` for SD1.5, `!` for SD2) up to 77.
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::Tensor;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormSeq};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// Sequence length of the SD text encoder.
pub const MAX_LEN: usize = 77;
pub const BOS: &str = "<|startoftext|>";
pub const EOS: &str = "<|endoftext|>";
/// CLIP's pre-tokenization pattern (transformers' `CLIPTokenizer`).
const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// Number of merges CLIP uses from its merge list (`49152 - 256 - 2`).
const CLIP_MERGES: usize = 48894;
/// BPE merges in rank order.
type Merges = Vec<(String, String)>;
const OPEN_CLIP_VOCAB: &str = "bpe_simple_vocab_16e6.txt.gz";

pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
}

impl ClipTokenizer {
    /// Reads a diffusers `tokenizer/` folder or a Hugging Face CLIP repository: `vocab.json`,
    /// `merges.txt` and, if present, the pad token of `tokenizer_config.json` /
    /// `special_tokens_map.json`.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let (vocab, merges) =
            if !dir.join("vocab.json").is_file() && dir.join("tokenizer.json").is_file() {
                vocab_from_tokenizer_json(&dir.join("tokenizer.json"))?
            } else {
                vocab_and_merges_files(dir)?
            };
        let mut pad = EOS.to_string();
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = dir.join(name);
            if let Ok(text) = std::fs::read_to_string(&path) {
                let json: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{}: invalid JSON", path.display()))?;
                // A token is a string or an AddedToken object {"content": ...}.
                let token = match &json["pad_token"] {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Object(o) => {
                        o.get("content").and_then(|c| c.as_str()).map(String::from)
                    }
                    _ => None,
                };
                if let Some(token) = token {
                    pad = token;
                }
            }
        }
        Self::build(vocab, merges, &pad)
            .with_context(|| format!("tokenizer folder {}", dir.display()))
    }

    /// Builds the tokenizer from CLIP's original merge list as open_clip ships it
    /// (`bpe_simple_vocab_16e6.txt.gz`), with SD1.5's pad token `<|endoftext|>`.
    pub fn from_open_clip_vocab(gz: &Path) -> Result<Self> {
        Self::from_open_clip_vocab_padded(gz, EOS)
    }

    /// As [`from_open_clip_vocab`](Self::from_open_clip_vocab), padding with `pad` (SDXL's
    /// `tokenizer_2` pads with `!`).
    pub fn from_open_clip_vocab_padded(gz: &Path, pad: &str) -> Result<Self> {
        let (vocab, merges) = vocab_from_open_clip(gz)?;
        let vocab = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        Self::build(vocab, merges, pad)
    }

    fn build(vocab: HashMap<String, u32>, merges: Merges, pad: &str) -> Result<Self> {
        let id = |token: &str| -> Result<i64> {
            vocab
                .get(token)
                .map(|&i| i as i64)
                .with_context(|| format!("the vocabulary has no token {token:?}"))
        };
        let (bos_id, eos_id, pad_id) = (id(BOS)?, id(EOS)?, id(pad)?);
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .unk_token(EOS.to_string())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_string())
            .build()
            .map_err(|e| anyhow::anyhow!("invalid BPE vocabulary/merges: {e}"))?;
        let err = |e: tokenizers::Error| anyhow::anyhow!("cannot build the CLIP tokenizer: {e}");
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_normalizer(Some(NormSeq::new(vec![
            NFC.into(),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .map_err(err)?
            .into(),
            Lowercase.into(),
        ])));
        tokenizer.with_pre_tokenizer(Some(PreSeq::new(vec![
            Split::new(
                SplitPattern::Regex(SPLIT_PATTERN.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(err)?
            .into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        // As in transformers, the special tokens (the pad token included: SD2's "!") are
        // matched in the raw prompt before normalization and map to their own ids.
        let special: Vec<AddedToken> = [BOS, EOS, pad]
            .iter()
            .map(|t| AddedToken::from(*t, true).normalized(false))
            .collect();
        tokenizer.add_special_tokens(&special);
        Ok(ClipTokenizer {
            tokenizer,
            bos_id,
            eos_id,
            pad_id,
        })
    }

    /// The BPE tokens of `text`, without start/end tokens or truncation.
    pub fn tokens(&self, text: &str) -> Vec<i64> {
        // Byte-level BPE cannot fail: every byte is a vocabulary symbol and unknown symbols map
        // to the unk token.
        let encoding = self
            .tokenizer
            .encode(text, false)
            .expect("byte-level BPE encoding is infallible");
        encoding.get_ids().iter().map(|&i| i as i64).collect()
    }

    /// Exactly 77 ids: start token, at most 75 tokens, end token, padding.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut ids = Vec::with_capacity(MAX_LEN);
        ids.push(self.bos_id);
        ids.extend(self.tokens(text).into_iter().take(MAX_LEN - 2));
        ids.push(self.eos_id);
        ids.resize(MAX_LEN, self.pad_id);
        ids
    }

    /// `[B, 77]` Int64 ids on the CPU.
    pub fn encode_batch(&self, texts: &[&str]) -> Tensor {
        let ids: Vec<i64> = texts.iter().flat_map(|t| self.encode(t)).collect();
        Tensor::from_slice(&ids).view([texts.len() as i64, MAX_LEN as i64])
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    pub fn eos_id(&self) -> i64 {
        self.eos_id
    }
}

/// `vocab.json` and `merges.txt` of a tokenizer folder.
fn vocab_and_merges_files(dir: &Path) -> Result<(HashMap<String, u32>, Merges)> {
    let vocab_path = dir.join("vocab.json");
    let text = std::fs::read_to_string(&vocab_path)
        .with_context(|| format!("cannot read tokenizer vocabulary {}", vocab_path.display()))?;
    let vocab: HashMap<String, u32> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON object of token -> id", vocab_path.display()))?;
    let merges_path = dir.join("merges.txt");
    let text = std::fs::read_to_string(&merges_path)
        .with_context(|| format!("cannot read tokenizer merges {}", merges_path.display()))?;
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let Some((a, b)) = line.split_once(' ') else {
            bail!(
                "{} line {}: a merge is two tokens separated by a space",
                merges_path.display(),
                n + 1
            );
        };
        merges.push((a.to_string(), b.to_string()));
    }
    Ok((vocab, merges))
}

/// The BPE vocabulary and merges of a `tokenizer.json` (what transformers 5 saves in place of
/// vocab.json and merges.txt); a merge is `"a b"` or `["a", "b"]`.
fn vocab_from_tokenizer_json(path: &Path) -> Result<(HashMap<String, u32>, Merges)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let model = &json["model"];
    let vocab: HashMap<String, u32> =
        serde_json::from_value(model["vocab"].clone()).with_context(|| {
            format!(
                "{}: model.vocab is not an object of token -> id",
                path.display()
            )
        })?;
    let list = model["merges"]
        .as_array()
        .with_context(|| format!("{}: model.merges is not a list", path.display()))?;
    let mut merges = Vec::with_capacity(list.len());
    for (n, m) in list.iter().enumerate() {
        let pair = match m {
            serde_json::Value::String(s) => s.split_once(' ').map(|(a, b)| (a.into(), b.into())),
            serde_json::Value::Array(p) => match (p.first(), p.get(1), p.len()) {
                (Some(a), Some(b), 2) => a
                    .as_str()
                    .zip(b.as_str())
                    .map(|(a, b)| (a.into(), b.into())),
                _ => None,
            },
            _ => None,
        };
        let Some(pair) = pair else {
            bail!(
                "{}: model.merges[{n}] is not a pair of tokens",
                path.display()
            );
        };
        merges.push(pair);
    }
    Ok((vocab, merges))
}

/// GPT-2's reversible map from bytes to printable characters, which CLIP's vocabulary uses.
fn bytes_to_unicode() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut chars: Vec<u32> = (0..256).filter(|&b| printable(b)).collect();
    let mut n = 0;
    for b in 0..256 {
        if !printable(b) {
            chars.push(256 + n);
            n += 1;
        }
    }
    // CLIP lists the symbols in this order (printable first), not in byte order.
    chars
        .into_iter()
        .map(|c| char::from_u32(c).unwrap_or('?'))
        .collect()
}

/// The vocabulary (tokens in id order) and merges of CLIP, built from open_clip's merge list
/// the way CLIP's `SimpleTokenizer` does: 256 byte symbols, the same with `</w>`, one token per
/// merge, then `<|startoftext|>` and `<|endoftext|>` (49408 tokens).
fn vocab_from_open_clip(gz: &Path) -> Result<(Vec<String>, Merges)> {
    let file = std::fs::File::open(gz)
        .with_context(|| format!("cannot open CLIP vocabulary {}", gz.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("{}: not a gzip'd UTF-8 text file", gz.display()))?;
    let lines: Vec<&str> = text.split('\n').collect();
    if lines.len() < CLIP_MERGES + 1 {
        bail!(
            "{}: {} lines, CLIP's merge list has more than {}",
            gz.display(),
            lines.len(),
            CLIP_MERGES
        );
    }
    let mut merges = Vec::with_capacity(CLIP_MERGES);
    for line in &lines[1..=CLIP_MERGES] {
        let Some((a, b)) = line.split_once(' ') else {
            bail!("{}: bad merge line {line:?}", gz.display());
        };
        merges.push((a.to_string(), b.to_string()));
    }
    let symbols: Vec<String> = bytes_to_unicode().into_iter().map(String::from).collect();
    let mut vocab = symbols.clone();
    vocab.extend(symbols.iter().map(|s| format!("{s}</w>")));
    vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    vocab.push(BOS.to_string());
    vocab.push(EOS.to_string());
    Ok((vocab, merges))
}

/// Writes a diffusers-style `tokenizer/` folder (vocab.json, merges.txt, tokenizer_config.json,
/// special_tokens_map.json as in SD1.5's) from open_clip's merge list.
pub fn write_tokenizer_folder(out_dir: &Path, vocab_gz: &Path) -> Result<()> {
    write_tokenizer_folder_padded(out_dir, vocab_gz, EOS)
}

/// As [`write_tokenizer_folder`], padding with `pad` (SDXL's `tokenizer_2` pads with `!`).
pub fn write_tokenizer_folder_padded(out_dir: &Path, vocab_gz: &Path, pad: &str) -> Result<()> {
    let (vocab, merges) = vocab_from_open_clip(vocab_gz)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let write = |name: &str, text: String| {
        let path = out_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    // Written by hand to keep the id order of the original file.
    let entries: Vec<String> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}: {i}", serde_json::Value::String(t.clone())))
        .collect();
    write("vocab.json", format!("{{{}}}", entries.join(", ")))?;
    let mut text = String::from("#version: 0.2\n");
    for (a, b) in &merges {
        text.push_str(&format!("{a} {b}\n"));
    }
    write("merges.txt", text)?;
    let special = serde_json::json!({
        "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad,
    });
    write(
        "special_tokens_map.json",
        serde_json::to_string_pretty(&special)?,
    )?;
    let config = serde_json::json!({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LEN, "do_lower_case": true,
        "errors": "replace", "add_prefix_space": false,
        "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad,
    });
    write(
        "tokenizer_config.json",
        serde_json::to_string_pretty(&config)?,
    )
}

/// Finds open_clip's `bpe_simple_vocab_16e6.txt.gz` in a Python environment:
/// `$NEGIMG_CLIP_VOCAB`, then the site-packages of `$VIRTUAL_ENV`, of the venv that holds
/// `$NEGIMG_PYTHON`, of `./.venv`, and of the project's `.venv`.
pub fn find_open_clip_vocab() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("NEGIMG_CLIP_VOCAB") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("NEGIMG_CLIP_VOCAB={} is not a file", path.display());
    }
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        venvs.push(v.into());
    }
    if let Some(py) = std::env::var_os("NEGIMG_PYTHON")
        && let Some(venv) = Path::new(&py).parent().and_then(Path::parent)
    {
        venvs.push(venv.to_path_buf());
    }
    venvs.push(PathBuf::from(".venv"));
    venvs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    for venv in &venvs {
        let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry
                .path()
                .join("site-packages/open_clip")
                .join(OPEN_CLIP_VOCAB);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    bail!(
        "cannot find open_clip's {OPEN_CLIP_VOCAB} (looked in the site-packages of {}); \
         `pip install open_clip_torch` in the project's venv or set NEGIMG_CLIP_VOCAB",
        venvs
            .iter()
            .map(|v| v.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
