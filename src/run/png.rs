//! PNG files with their parameters inside: an A1111-style `parameters` text chunk (what
//! image viewers and A1111's "PNG Info" show) and the full cell as JSON in a `negimg` chunk.
use crate::params::{GenParams, SchedulerKind};
use crate::sampling::methods;
use anyhow::{Context, Result};

/// The bytes of a PNG of `img` with the given text chunks (`(keyword, text)`). Deterministic:
/// the same image and texts give the same bytes.
pub fn encode(img: &image::RgbImage, texts: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (key, text) in texts {
            // tEXt is Latin-1; anything else goes in a UTF-8 iTXt chunk.
            if text.chars().all(|c| (c as u32) < 0x80) {
                enc.add_text_chunk(key.to_string(), text.to_string())
            } else {
                enc.add_itxt_chunk(key.to_string(), text.to_string())
            }
            .context("cannot add a PNG text chunk")?;
        }
        let mut writer = enc.write_header().context("cannot encode PNG")?;
        writer
            .write_image_data(img.as_raw())
            .context("cannot encode PNG")?;
        writer.finish().context("cannot encode PNG")?;
    }
    Ok(bytes)
}

fn sampler(s: SchedulerKind) -> &'static str {
    match s {
        SchedulerKind::Ddim => "DDIM",
        SchedulerKind::Euler => "Euler",
        SchedulerKind::DpmPp2m => "DPM++ 2M",
        SchedulerKind::DpmPp2mKarras => "DPM++ 2M Karras",
        SchedulerKind::EulerAncestral => "Euler a",
    }
}

/// A1111's `parameters` text: prompt, `Negative prompt:` line, then `Key: value` pairs.
/// `positive_image`/`negative_image` are the experiment's image names.
pub fn a1111_parameters(
    p: &GenParams,
    positive_image: Option<&str>,
    negative_image: Option<&str>,
    model: &str,
) -> String {
    let mut s = p.prompt.clone();
    if !p.uncond_text().is_empty() {
        s.push_str(&format!("\nNegative prompt: {}", p.uncond_text()));
    }
    let mut fields = vec![
        format!("Steps: {}", p.steps),
        format!("Sampler: {}", sampler(p.scheduler)),
        format!("CFG scale: {}", p.cfg),
        format!("Seed: {}", p.seed),
        format!("Size: {}x{}", p.width, p.height),
        format!("Model: {model}"),
        format!("IP-Adapter: {}", p.adapter),
        format!(
            "IP-Adapter weight: {}, IP-Adapter window: {}-{}",
            p.positive.weight, p.positive.start, p.positive.end
        ),
        format!("Negative mode: {}", p.negative),
        format!(
            "Negative weight: {}, Negative window: {}-{}",
            p.negative_branch.weight, p.negative_branch.start, p.negative_branch.end
        ),
    ];
    fields.push(format!("Window rule: {}", p.window));
    fields.push(format!("Negative method: {}", p.method));
    let method = methods::of(p.method);
    if method.keys().contains(&"neg_embed_scale") {
        fields.push(format!("Negative embed scale: {}", p.neg_embed_scale));
    }
    if method.keys().contains(&"neg_cfg") {
        fields.push(format!("Negative CFG scale: {}", p.neg_cfg()));
    }
    fields.extend(methods::params_text(
        p.method,
        |k| methods::value(p, k),
        |x| x.to_string(),
        (": ", ", "),
    ));
    // Quoted: a block list holds commas, which separate the fields.
    if !(p.blocks.is_all() && p.neg_blocks.is_all()) {
        fields.push(format!("IP-Adapter blocks: \"{}\"", p.blocks));
        fields.push(format!("Negative blocks: \"{}\"", p.neg_blocks));
    }
    if !p.ip_scaling.is_v() {
        fields.push(format!("IP-Adapter scaling: {}", p.ip_scaling));
    }
    // Quoted: a step set may hold commas.
    if let Some(set) = &p.steps_at {
        fields.push(format!("IP-Adapter steps: \"{set}\""));
    }
    if let Some(set) = &p.neg_steps_at {
        fields.push(format!("Negative steps: \"{set}\""));
    }
    if !p.neg_off.is_zero() {
        fields.push(format!("Negative off: {}", p.neg_off));
    }
    if p.negtome_on() {
        fields.push(format!(
            "NegToMe: on, NegToMe alpha: {}, NegToMe threshold: {}, NegToMe timesteps: {}-{}",
            p.negtome_alpha, p.negtome_threshold, p.negtome_t_min, p.negtome_t_max
        ));
    }
    if p.has_micro_conditioning() {
        let [oh, ow, ct, cl, th, tw] = p.time_ids();
        fields.push(format!(
            "Original size: {oh}x{ow}, Crop top-left: {ct}x{cl}, Target size: {th}x{tw}"
        ));
    }
    if p.has_negative_micro_conditioning() {
        let [oh, ow, ct, cl, th, tw] = p.negative_time_ids();
        fields.push(format!(
            "Negative original size: {oh}x{ow}, Negative crop top-left: {ct}x{cl}, \
             Negative target size: {th}x{tw}"
        ));
    }
    if let Some(name) = positive_image {
        fields.push(format!("Positive image: {name}"));
    }
    if let (Some(name), true) = (negative_image, p.negative.uses_image()) {
        fields.push(format!("Negative image: {name}"));
    }
    fields.push(format!("No-image tokens: {}", p.no_image));
    fields.push(format!("Version: negimg {}", env!("CARGO_PKG_VERSION")));
    s.push('\n');
    s.push_str(&fields.join(", "));
    s
}

/// The `parameters` and `negimg` texts of an x̂₀ trace of the image whose texts they are:
/// the same, with the trace's step (`Trace step: N` in the parameters, `trace_step` in the
/// JSON), so a trace file says which cell and step it shows.
pub fn trace_texts(parameters: &str, negimg: &str, step: usize) -> Result<(String, String)> {
    let mut json: serde_json::Value =
        serde_json::from_str(negimg).context("the `negimg` chunk is not JSON")?;
    let fields = json
        .as_object_mut()
        .context("the `negimg` chunk is not a JSON object")?;
    fields.insert("trace_step".into(), step.into());
    Ok((
        format!("{parameters}, Trace step: {step}"),
        serde_json::to_string(&json)?,
    ))
}

/// The text chunks of a PNG file (tEXt, zTXt and iTXt), by keyword.
pub fn read_texts(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .with_context(|| format!("{} is not a readable PNG", path.display()))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for c in &info.utf8_text {
        if let Ok(text) = c.get_text() {
            out.push((c.keyword.clone(), text));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_png_texts_are_the_images_with_the_step() {
        let (parameters, json) = trace_texts(
            "a house\nSteps: 25, Seed: 1",
            r#"{"cell_id":"c1","x":2}"#,
            5,
        )
        .unwrap();
        assert_eq!(parameters, "a house\nSteps: 25, Seed: 1, Trace step: 5");
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["trace_step"], 5);
        assert_eq!(json["cell_id"], "c1");
        assert_eq!(json["x"], 2);
        assert!(trace_texts("p", "[1]", 0).is_err());
    }

    #[test]
    fn png_carries_a1111_parameters_and_json_and_is_deterministic() {
        let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8, 7]));
        let mut p = GenParams::new(42);
        p.prompt = "a house".into();
        p.negative_prompt = "grass, lawn".into();
        p.negative = crate::params::NegativeMode::Both;
        let text = a1111_parameters(&p, Some("house"), Some("lawn"), "rv51");
        assert!(
            text.starts_with("a house\nNegative prompt: grass, lawn\nSteps: 25, Sampler: DDIM")
        );
        assert!(text.contains("Seed: 42") && text.contains("Negative image: lawn"));
        assert!(text.contains("Negative method: uncond") && !text.contains("Negative CFG"));
        assert!(text.contains("Window rule: steps"));
        p.method = crate::params::Method::PerpNeg;
        p.neg_cfg = Some(3.0);
        let perp = a1111_parameters(&p, Some("house"), Some("lawn"), "rv51");
        assert!(perp.contains("Negative method: perp_neg, Negative CFG scale: 3"));
        assert!(!perp.contains("blocks") && !perp.contains("scaling"));
        p.neg_blocks = "4:0.25, 5:1".parse().unwrap();
        p.ip_scaling = crate::params::IpScaling::KMeanVC;
        let blocks = a1111_parameters(&p, Some("house"), Some("lawn"), "rv51");
        assert!(
            blocks.contains(
                "IP-Adapter blocks: \"all\", Negative blocks: \"4:0.25, 5:1\", IP-Adapter scaling: k_mean_v_c"
            ),
            "{blocks}"
        );
        assert!(!perp.contains("NegToMe"));
        p.neg_steps_at = Some("3, 5, 7-9".parse().unwrap());
        p.neg_off = crate::params::NegOff::NoImage;
        let probe = a1111_parameters(&p, Some("house"), Some("lawn"), "rv51");
        assert!(
            probe.contains("Negative steps: \"3, 5, 7-9\", Negative off: no_image"),
            "{probe}"
        );
        p.neg_steps_at = None;
        p.neg_off = crate::params::NegOff::Zero;
        p.negtome = true;
        p.negtome_alpha = 0.5;
        let negtome = a1111_parameters(&p, Some("house"), Some("lawn"), "rv51");
        assert!(negtome.contains("NegToMe: on, NegToMe alpha: 0.5, NegToMe threshold: 0.65"));
        let json = "{\"cafe\": \"é\"}";
        let a = encode(&img, &[("parameters", &text), ("negimg", json)]).unwrap();
        let b = encode(&img, &[("parameters", &text), ("negimg", json)]).unwrap();
        assert_eq!(a, b);
        let dir = std::env::temp_dir().join(format!("negimg-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.png");
        std::fs::write(&f, &a).unwrap();
        let texts = read_texts(&f).unwrap();
        assert!(texts.contains(&("parameters".into(), text)));
        assert!(texts.contains(&("negimg".into(), json.into())));
        let back = image::open(&f).unwrap().to_rgb8();
        assert_eq!(back, img);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
