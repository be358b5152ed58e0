//! E4M3 scales against torch's `float8_e4m3fn` (tests/data/e4m3.json, made by
//! scripts/fixtures/ct_layouts.py): every byte's value, and the byte stored for each probe
//! (midpoints between neighbouring codes and one ulp either side, values past 448, subnormals)
//! as compressed-tensors stores it (`clamp(x, ±448).to(float8_e4m3fn)`).

use tquant_formats::ScaleDtype;
use tquant_formats::{e4m3_to_f32, f32_to_e4m3};

fn data() -> serde_json::Value {
    serde_json::from_str(include_str!("data/e4m3.json")).unwrap()
}

fn ints(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn every_byte_decodes_as_torch() {
    let bits = ints(&data()["decoded_bits"]);
    assert_eq!(bits.len(), 256);
    for (b, &want) in bits.iter().enumerate() {
        let want = f32::from_bits(want as u32);
        let got = e4m3_to_f32(b as u8);
        if want.is_nan() {
            assert!(got.is_nan(), "{b:#04x}");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{b:#04x}");
        }
    }
}

#[test]
fn probes_encode_as_torch_including_ties() {
    let d = data();
    let (probes, bytes) = (ints(&d["probe_bits"]), ints(&d["probe_bytes"]));
    assert!(probes.len() > 700);
    for (&p, &want) in probes.iter().zip(&bytes) {
        let x = f32::from_bits(p as u32);
        assert_eq!(f32_to_e4m3(x) as i64, want, "{x:e}");
        let mut out = Vec::new();
        ScaleDtype::E4m3.push_bytes(ScaleDtype::E4m3.round(x), &mut out);
        assert_eq!(out, [want as u8], "{x:e} through ScaleDtype");
    }
}
