//! The CLIP tokenizer gives exactly transformers' `CLIPTokenizer` ids (77 per prompt) for a
//! tokenizer folder written from open_clip's vocabulary, with SD1.5's and SD2's pad tokens.
mod common;

use negimg::models::tokenizer::{self, ClipTokenizer, MAX_LEN};
use std::path::Path;

fn prompts() -> Vec<String> {
    let long = "a highly detailed matte painting of a castle on a hill, by greg rutkowski and \
                alphonse mucha, trending on artstation, 8k, octane render, volumetric lighting, \
                golden hour, sharp focus, intricate, elegant, concept art, smooth, illustration, \
                cinematic, dramatic clouds, wide angle lens, photorealistic, masterpiece";
    let mut p: Vec<String> = [
        "",
        "a photo of a cat",
        "A Photo Of A CAT!!!",
        "Hello, World!! it's <|endoftext|> ok",
        "<|startoftext|>already started",
        "I'll say you're right, we've done it, she'd go; don't",
        "price: $1,234.56 (approx.) -- 50% off!?",
        "café naïve résumé ÉCOLE Straße ΟΔΟΣ İstanbul",
        "e\u{301}te\u{301} vs été",
        "東京の夜景、美しい写真",
        "北京 上海 한국어 텍스트",
        "🐱🐶 x² ½ 🏳️‍🌈 👨‍👩‍👧",
        "مرحبا بالعالم नमस्ते",
        "  multiple   spaces\tand\nnew\r\nlines  ",
        "non\u{a0}breaking\u{2003}em\u{200b}zero-width",
        "numbers 0123456789 and 3.14159",
        "snake_case kebab-case camelCase #hashtag @user email@example.com https://x.org/a?b=c",
        "((masterpiece)), [worst quality:1.4], {curly}, <lora:x:0.8>",
        "'quoted' \"double\" `back` ''s ''",
        "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    p.push(long.to_string());
    p.push(format!("{long}, {long}"));
    p.push("a".repeat(300));
    p.push("cat ".repeat(100));
    p.push("0123456789".repeat(10));
    p
}

fn check(dir: &Path, tok: &ClipTokenizer, name: &str) {
    let prompts = prompts();
    let scratch = dir.parent().unwrap();
    let prompts_path = scratch.join(format!("{name}-prompts.json"));
    let out = scratch.join(format!("{name}-ids.json"));
    std::fs::write(&prompts_path, serde_json::to_string(&prompts).unwrap()).unwrap();
    common::run_python(
        "clip_tokenizer.py",
        &[
            dir.to_str().unwrap(),
            prompts_path.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(reference["pad_token_id"].as_i64().unwrap(), tok.pad_id());
    let expected: Vec<Vec<i64>> = serde_json::from_value(reference["ids"].clone()).unwrap();
    let mut truncated = 0;
    for (prompt, want) in prompts.iter().zip(&expected) {
        let got = tok.encode(prompt);
        assert_eq!(got.len(), MAX_LEN);
        assert_eq!(&got, want, "{name}: ids differ for {prompt:?}");
        truncated += usize::from(tok.tokens(prompt).len() > MAX_LEN - 2);
    }
    assert!(truncated >= 3, "the prompt list must exercise truncation");
    let batch = tok.encode_batch(&prompts.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(batch.size(), [prompts.len() as i64, MAX_LEN as i64]);
    assert_eq!(Vec::<i64>::try_from(batch.get(1)).unwrap(), expected[1]);
}

#[test]
fn parity_tokenizer_sd15_folder_and_open_clip_vocab() {
    let scratch = common::scratch("parity_tokenizer_sd15");
    let gz = tokenizer::find_open_clip_vocab().unwrap();
    let dir = scratch.join("tokenizer");
    tokenizer::write_tokenizer_folder(&dir, &gz).unwrap();
    let from_folder = ClipTokenizer::from_folder(&dir).unwrap();
    assert_eq!(from_folder.pad_id(), 49407);
    check(&dir, &from_folder, "folder");
    // Built straight from the .gz, the same ids.
    let from_gz = ClipTokenizer::from_open_clip_vocab(&gz).unwrap();
    for p in prompts() {
        assert_eq!(from_gz.encode(&p), from_folder.encode(&p), "{p:?}");
    }
}

#[test]
fn parity_tokenizer_sd2_pad_token() {
    // SD2's tokenizer folder pads with "!" (id 0) instead of <|endoftext|>.
    let scratch = common::scratch("parity_tokenizer_sd2");
    let gz = tokenizer::find_open_clip_vocab().unwrap();
    let dir = scratch.join("tokenizer");
    tokenizer::write_tokenizer_folder(&dir, &gz).unwrap();
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = dir.join(name);
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["pad_token"] = "!".into();
        std::fs::write(&path, json.to_string()).unwrap();
    }
    let tok = ClipTokenizer::from_folder(&dir).unwrap();
    assert_eq!(tok.pad_id(), 0);
    check(&dir, &tok, "sd2");
}

#[test]
fn tokenizer_folder_errors_name_the_file() {
    let scratch = common::scratch("tokenizer_errors");
    let err = ClipTokenizer::from_folder(&scratch).err().unwrap();
    assert!(format!("{err:#}").contains("vocab.json"), "{err:#}");
    std::fs::write(scratch.join("vocab.json"), "[1, 2]").unwrap();
    let err = ClipTokenizer::from_folder(&scratch).err().unwrap();
    assert!(format!("{err:#}").contains("vocab.json"), "{err:#}");
}
