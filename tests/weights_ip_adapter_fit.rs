//! IP-Adapter files that do not fit the UNet: wrong cross-attention widths, wrong token width,
//! wrong layer count. Each is refused with the file and the tensor named, and the UNet is left
//! as it was.
mod common;

use negimg::models::ip_adapter::{AdapterFile, write_random};
use negimg::models::unet::{IpLayout, UNet2DConditionConfig, UNet2DConditionModel, ip_attn_layers};
use negimg::params::AdapterKind;
use std::path::Path;
use tch::{Device, nn};

fn tiny_unet() -> (UNet2DConditionModel, UNet2DConditionConfig, nn::VarStore) {
    let cfg = UNet2DConditionConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let unet =
        UNet2DConditionModel::new(vs.root(), &cfg, Some(IpLayout::for_config(&cfg))).unwrap();
    (unet, cfg, vs)
}

fn load_err(path: &Path) -> String {
    let (mut unet, _, _) = tiny_unet();
    let adapter = AdapterFile::open(path).unwrap();
    format!(
        "{:#}",
        unet.load_ip_adapter(adapter.tensors())
            .expect_err("adapter should not fit")
    )
}

#[test]
fn weights_ip_adapter_that_fits_loads() {
    let dir = common::scratch("weights_ip_fit");
    let (mut unet, cfg, _) = tiny_unet();
    let widths: Vec<i64> = ip_attn_layers(&cfg).iter().map(|(_, w)| *w).collect();
    let path = dir.join("fits.safetensors");
    write_random(&path, AdapterKind::Base, cfg.context_dim(), 16, &widths, 0).unwrap();
    let adapter = AdapterFile::open(&path).unwrap();
    unet.load_ip_adapter(adapter.tensors()).unwrap();
}

#[test]
fn weights_ip_adapter_with_wrong_layer_widths_is_refused() {
    let dir = common::scratch("weights_ip_widths");
    let (_, cfg, _) = tiny_unet();
    let widths: Vec<i64> = ip_attn_layers(&cfg).iter().map(|(_, w)| 2 * w).collect();
    let path = dir.join("wide.safetensors");
    write_random(&path, AdapterKind::Base, cfg.context_dim(), 16, &widths, 0).unwrap();
    let msg = load_err(&path);
    assert!(
        msg.contains("wide.safetensors") && msg.contains("ip_adapter.1.to_k_ip.weight"),
        "{msg}"
    );
}

#[test]
fn weights_ip_adapter_with_wrong_token_width_is_refused() {
    let dir = common::scratch("weights_ip_tokens");
    let (_, cfg, _) = tiny_unet();
    let widths: Vec<i64> = ip_attn_layers(&cfg).iter().map(|(_, w)| *w).collect();
    let path = dir.join("tokens.safetensors");
    write_random(
        &path,
        AdapterKind::Plus,
        cfg.context_dim() + 8,
        16,
        &widths,
        0,
    )
    .unwrap();
    let msg = load_err(&path);
    assert!(
        msg.contains("tokens.safetensors") && msg.contains("to_k_ip"),
        "{msg}"
    );
}

#[test]
fn weights_ip_adapter_for_another_unet_layer_count_is_refused() {
    let dir = common::scratch("weights_ip_layers");
    let (_, cfg, _) = tiny_unet();
    let mut widths: Vec<i64> = ip_attn_layers(&cfg).iter().map(|(_, w)| *w).collect();
    widths.push(widths[0]);
    let path = dir.join("more_layers.safetensors");
    write_random(&path, AdapterKind::Base, cfg.context_dim(), 16, &widths, 0).unwrap();
    let msg = load_err(&path);
    assert!(
        msg.contains("more_layers.safetensors") && msg.contains("cross-attention layers"),
        "{msg}"
    );
}
