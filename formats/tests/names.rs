//! Names: every format, scale dtype, block size and scale rule parses back from its Display, and
//! bad names give errors that say what is wrong and what would be right.

use proptest::prelude::*;
use tquant_formats::catalog::NAMES;
use tquant_formats::{BlockSize, Format, FormatError, ScaleDtype, ScaleRule};

#[test]
fn every_catalog_name_round_trips() {
    let all = Format::all();
    assert_eq!(all.len(), NAMES.len());
    for (f, name) in all.iter().zip(NAMES) {
        assert_eq!(f.name(), name);
        assert_eq!(f.to_string(), name);
        assert_eq!(&name.parse::<Format>().unwrap(), f);
        assert!(!f.source().is_empty(), "{name} names its source");
    }
    for name in [
        "sf4:nu=3",
        "sf4:nu=2.5",
        "sf3:nu=7",
        "sf4:nu=0.75",
        "sf4:nu=1e300",
        "sf4:nu=inf",
    ] {
        let f: Format = name.parse().unwrap();
        assert_eq!(f.name(), name);
        assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
    }
    // The default nu has the short name.
    assert_eq!("sf4:nu=5".parse::<Format>().unwrap().name(), "sf4");
    assert_eq!("sf4".parse::<Format>().unwrap().nu(), Some(5.0));
}

#[test]
fn other_names_round_trip() {
    for d in ScaleDtype::ALL {
        assert_eq!(d.to_string().parse::<ScaleDtype>().unwrap(), d);
    }
    for r in ScaleRule::ALL {
        assert_eq!(r.to_string().parse::<ScaleRule>().unwrap(), r);
    }
    for b in ["16", "64", "4096", "row"] {
        assert_eq!(b.parse::<BlockSize>().unwrap().to_string(), b);
    }
}

fn err<T: std::fmt::Debug>(r: Result<T, FormatError>) -> String {
    r.expect_err("must be rejected").to_string()
}

#[test]
fn bad_names_say_what_is_wrong() {
    let cases: [(&str, &[&str]); 12] = [
        (
            "nf5",
            &[
                "unknown format 'nf5'",
                "nf4",
                "e2m1_sp",
                "sf4:nu=X",
                "custom:",
            ],
        ),
        ("", &["unknown format ''"]),
        ("NF4", &["unknown format 'NF4'"]),
        ("sf4:3", &["sf4:nu=X"]),
        ("sf4:nu=abc", &["'abc' is not a number"]),
        ("sf4:nu=0", &["nu must be > 0"]),
        ("sf4:nu=-2", &["nu must be > 0"]),
        ("sf4:nu=nan", &["nu must be > 0"]),
        ("nf4:nu=3", &["takes no parameter"]),
        ("custom:1,2,3", &["2, 4, 8 or 16 values", "got 3"]),
        ("custom:1,x", &["'x' is not a number"]),
        ("custom:0,0", &["non-zero"]),
    ];
    for (name, needles) in cases {
        let msg = err(name.parse::<Format>());
        for n in needles {
            assert!(msg.contains(n), "'{name}': '{msg}' lacks '{n}'");
        }
    }
    assert!(err("custom:1,inf".parse::<Format>()).contains("finite"));
    assert!(err("f64".parse::<ScaleDtype>()).contains("f32, f16, bf16, e8m0"));
    assert!(err("best".parse::<ScaleRule>()).contains("absmax, search"));
    assert!(err("8".parse::<BlockSize>()).contains("16..=4096"));
    assert!(err("8192".parse::<BlockSize>()).contains("16..=4096"));
    assert!(err("abc".parse::<BlockSize>()).contains("not a number or 'row'"));
}

proptest! {
    #[test]
    fn custom_codebooks_round_trip(values in proptest::collection::vec(-1e6f32..1e6, 16)) {
        prop_assume!(values.iter().any(|&v| v != 0.0));
        let f = Format::custom(values.clone()).unwrap();
        let again: Format = f.name().parse().unwrap();
        prop_assert_eq!(again.codebook().values(), &values[..]);
        prop_assert_eq!(again.name(), f.name());
    }

    #[test]
    fn any_positive_nu_round_trips(nu in 0.01f64..1e9) {
        let f = Format::student_float(4, nu).unwrap();
        let again: Format = f.name().parse().unwrap();
        prop_assert_eq!(again.nu(), Some(nu));
    }
}
