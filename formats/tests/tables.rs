//! Every literal table equals what its construction rule generates, and SF4 behaves in nu.

use tquant_formats::catalog::{self, Format, NF4, SF4_NU5};
use tquant_formats::generate::{
    apot_magnitudes, bnb_create_normal_map, minifloat_magnitudes, quantile_table, sign_magnitude,
    NF3_OFFSET, NF4_OFFSET_BNB, SF4_OFFSET,
};

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

fn values(name: &str) -> Vec<f32> {
    name.parse::<Format>().unwrap().codebook().values().to_vec()
}

/// The paper code's literals (cornell-zhang/llm-datatypes, weight_only.py), ascending.
const SF4_LITERALS: [(f64, [f32; 16]); 4] = [
    (
        3.0,
        [
            -1.0, -0.575725, -0.403755, -0.29162, -0.204868, -0.131054, -0.064036, 0.0, 0.055934,
            0.113835, 0.176078, 0.246078, 0.329642, 0.438727, 0.60598, 1.0,
        ],
    ),
    (
        4.0,
        [
            -1.0, -0.608729, -0.435845, -0.318393, -0.225229, -0.144689, -0.070863, 0.0, 0.061908,
            0.125773, 0.193936, 0.269711, 0.358617, 0.471724, 0.638231, 1.0,
        ],
    ),
    (
        5.0,
        [
            -1.0, -0.627781, -0.454736, -0.334331, -0.237434, -0.152899, -0.074982, 0.0, 0.065513,
            0.132965, 0.204661, 0.283835, 0.375805, 0.491076, 0.656781, 1.0,
        ],
    ),
    (
        6.0,
        [
            -1.0, -0.640101, -0.467104, -0.344838, -0.245517, -0.15835, -0.077722, 0.0, 0.067911,
            0.137742, 0.211771, 0.293169, 0.387111, 0.503714, 0.66875, 1.0,
        ],
    ),
];
#[allow(clippy::excessive_precision)]
const SF4_7: [f32; 16] = [
    -1.0,
    -0.648695668605137,
    -0.4758049192191136,
    -0.35226650560941064,
    -0.25124728719118344,
    -0.16222176644114206,
    -0.07967003587244491,
    0.0,
    0.06961628484673037,
    0.1411376777420972,
    0.21681690757912492,
    0.2997785136806453,
    0.39509153065438735,
    0.5125912352606964,
    0.6770872505232854,
    1.0,
];
#[allow(clippy::excessive_precision)]
const NF3: [f32; 8] = [
    -1.0,
    -0.5350227084855379,
    -0.24693143181157517,
    0.0,
    0.18333748033548752,
    0.3819939543209139,
    0.6229857417143423,
    1.0,
];
#[allow(clippy::excessive_precision)]
const SF3_5: [f32; 8] = [
    -1.0,
    -0.41084770299806544,
    -0.1801188154332576,
    0.0,
    0.1329647268004446,
    0.2838347036415534,
    0.49107557131011725,
    1.0,
];

#[test]
fn nf4_is_bitsandbytes_recipe_bit_for_bit() {
    let generated = bnb_create_normal_map(NF4_OFFSET_BNB as f32);
    assert_eq!(generated, NF4.to_vec(), "bnb recipe in bnb's precisions");
    // The same recipe in f64 throughout differs by at most one f32 ulp (2^-23 below 1), from
    // bnb's f32 probabilities.
    let d = max_diff(&quantile_table(None, 8, 7, NF4_OFFSET_BNB), &NF4);
    assert!(d <= f32::EPSILON as f64, "{d}");
    assert_eq!(values("nf4"), NF4.to_vec());
}

#[test]
fn sf4_generator_matches_the_paper_literals() {
    for (nu, lit) in SF4_LITERALS {
        let generated = quantile_table(Some(nu), 8, 7, SF4_OFFSET);
        let d = max_diff(&generated, &lit);
        assert!(d < 1e-6, "nu = {nu}: max difference {d}");
        let by_name = values(&format!("sf4:nu={nu}"));
        assert!(max_diff(&by_name, &lit) < 1e-6, "sf4:nu={nu}");
    }
    // SF4_7 is printed in full double precision: the exact offset reproduces it to f32 rounding.
    let d = max_diff(&quantile_table(Some(7.0), 8, 7, SF4_OFFSET), &SF4_7);
    assert!(d < 1e-7, "nu = 7: {d}");
    // The default sf4 is the paper's literal itself.
    assert_eq!(values("sf4"), SF4_NU5.to_vec());
}

#[test]
fn three_bit_generators_match_the_paper_literals() {
    let d = max_diff(&quantile_table(None, 4, 3, NF3_OFFSET), &NF3);
    assert!(d < 1e-7, "nf3: {d}");
    assert!(max_diff(&values("nf3"), &NF3) < 1e-7);
    // SF3 uses the 4-bit offset (the paper code's SF3_5).
    let d = max_diff(&values("sf3"), &SF3_5);
    assert!(d < 1e-6, "sf3: {d}");
}

#[test]
fn minifloat_tables_come_from_their_bit_fields() {
    // E2M1: 1 sign, 2 exponent, 1 mantissa bit, bias 1, subnormals (OCP MX).
    let e2m1 = sign_magnitude(&minifloat_magnitudes(2, 1, 1));
    assert_eq!(e2m1, sign_magnitude(&catalog::E2M1_MAG));
    assert_eq!(values("e2m1"), e2m1);
    // Decode each code from its S|EE|M bits directly.
    for (code, v) in e2m1.iter().enumerate() {
        let (s, e, m) = (code >> 3, (code >> 1) & 3, code & 1);
        let mag = if e == 0 {
            0.5 * m as f32
        } else {
            (1.0 + 0.5 * m as f32) * 2f32.powi(e as i32 - 1)
        };
        assert_eq!(*v, if s == 1 { -mag } else { mag }, "code {code:04b}");
    }
    // E3M0: bias 3. E2M0: bias 1.
    assert_eq!(
        values("e3m0"),
        sign_magnitude(&minifloat_magnitudes(3, 0, 3))
    );
    assert_eq!(
        values("e2m0"),
        sign_magnitude(&minifloat_magnitudes(2, 0, 1))
    );
    // E2M1-I: E2M1 with the subnormal 0.5 replaced by 0.0625 (Intel neural-compressor).
    let mut i = minifloat_magnitudes(2, 1, 1);
    i[1] = 0.0625;
    assert_eq!(values("e2m1_i"), sign_magnitude(&i));
    // E2M1-B: bias 0 (bitsandbytes' fp4 magnitudes) with the subnormal 1 replaced by 0.0625.
    let mut b = minifloat_magnitudes(2, 1, 0);
    assert_eq!(b, [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0]);
    b[1] = 0.0625;
    assert_eq!(values("e2m1_b"), sign_magnitude(&b));
    // Supernormals sit on the negative-zero code, everything else is E2M1.
    for (name, extra) in [("e2m1_sr", 8.0), ("e2m1_sp", 5.0)] {
        let mut want = e2m1.clone();
        want[8] = extra;
        assert_eq!(values(name), want, "{name}");
    }
}

#[test]
fn apot_tables_are_sums_of_powers_of_two() {
    let mags = apot_magnitudes(&[0.0, 0.5, 0.25, 0.0625], &[0.0, 0.125]);
    assert_eq!(mags, catalog::APOT4_MAG.to_vec());
    let apot = sign_magnitude(&mags);
    assert_eq!(values("apot4"), apot);
    let mut sp = apot;
    sp[8] = ((0.25 + 0.0625) / 0.625) as f32;
    assert_eq!(sp[8], 0.5);
    assert_eq!(values("apot4_sp"), sp);
}

#[test]
fn integer_tables() {
    let int4: Vec<f32> = (0..16)
        .map(|c| {
            if c < 8 {
                c as f32
            } else if c == 8 {
                0.0
            } else {
                (c - 16) as f32
            }
        })
        .collect();
    assert_eq!(values("int4"), int4);
    let full: Vec<f32> = (0..16)
        .map(|c| if c < 8 { c } else { c - 16 } as f32)
        .collect();
    assert_eq!(values("int4_full"), full);
    assert_eq!(
        values("int3"),
        vec![0.0, 1.0, 2.0, 3.0, 0.0, -3.0, -2.0, -1.0]
    );
}

#[test]
fn sf4_tends_to_nf4_as_nu_grows() {
    let normal = quantile_table(None, 8, 7, SF4_OFFSET);
    let mut last = f64::INFINITY;
    for nu in [3.0, 5.0, 10.0, 30.0, 100.0, 1e3, 1e4, 1e5] {
        let d = max_diff(
            Format::student_float(4, nu).unwrap().codebook().values(),
            &normal,
        );
        assert!(d < last, "nu = {nu}: {d} not below {last}");
        last = d;
    }
    assert!(last < 1e-4, "{last}");
    // At the limit it is NF4 up to bitsandbytes' truncated offset.
    assert!(max_diff(&normal, &NF4) < 2e-7);
}

#[test]
fn huge_nu_does_not_hang_and_gives_the_normal_table() {
    let normal = quantile_table(None, 8, 7, SF4_OFFSET);
    for nu in [9.9e6, 1e7, 3e7, 1e8, 1e300, f64::MAX, f64::INFINITY] {
        let f = Format::student_float(4, nu).unwrap();
        assert!(max_diff(f.codebook().values(), &normal) < 1e-6, "nu = {nu}");
        // The name parses back to the same table.
        let again: Format = f.name().parse().unwrap();
        assert_eq!(again.codebook(), f.codebook(), "{}", f.name());
        assert!(f.name().len() < 32, "{}", f.name());
    }
    for bad in [0.0, -1.0, f64::NAN] {
        assert!(Format::student_float(4, bad).is_err());
    }
}
