use fewstep_core::f16::{f16, f16_to_f32, f32_to_f16, fits_f16};
use fewstep_core::format::*;

#[test]
fn image_shape_parses_and_prints() {
    let s: ImageShape = "3,32,32".parse().unwrap();
    assert_eq!(
        s,
        ImageShape {
            channels: 3,
            height: 32,
            width: 32
        }
    );
    assert_eq!(s.len(), Some(3072));
    assert_eq!(s.to_string(), "3,32,32");
    assert_eq!(" 1, 28 ,28".parse::<ImageShape>().unwrap().len(), Some(784));
    for bad in [
        "",
        "3,32",
        "3,32,32,1",
        "0,32,32",
        "3,-1,32",
        "a,b,c",
        "3,32,",
    ] {
        assert!(bad.parse::<ImageShape>().is_err(), "{bad:?}");
    }
}

#[test]
fn data_range_maps_to_pixels_per_spec() {
    let r = DataRange::default();
    assert_eq!((r.lo, r.hi), (-1.0, 1.0));
    assert_eq!(r.to_u8(-1.0), 0);
    assert_eq!(r.to_u8(1.0), 255);
    assert_eq!(r.to_u8(5.0), 255);
    assert_eq!(r.to_u8(-5.0), 0);
    assert_eq!(r.to_u8(0.0), 128); // round(127.5) = 128
    assert_eq!(r.to_u8(f32::NAN), 0);
    for p in 0..=255u8 {
        assert_eq!(r.to_u8(r.from_u8(p)), p);
    }
    let u: DataRange = "0,1".parse().unwrap();
    assert_eq!(u.to_u8(0.5), 128);
    assert_eq!(u.to_string(), "0,1");
    for bad in ["1", "1,0", "0,0", "0,1,2", "a,1", "0,inf"] {
        assert!(bad.parse::<DataRange>().is_err(), "{bad:?}");
    }
}

#[test]
fn xvar_table_parsing() {
    assert_eq!(xvar_table_len("0.1,0.2,0.05"), Ok(3));
    let v: Vec<f32> = parse_xvar_table("0.1, 0.2").map(|r| r.unwrap()).collect();
    assert_eq!(v, vec![0.1, 0.2]);
    assert_eq!(xvar_table_len("0.1"), Err(ValueError::WrongCount));
    assert_eq!(xvar_table_len(""), Err(ValueError::NotANumber));
    assert_eq!(xvar_table_len("0.1,-1"), Err(ValueError::Negative));
    assert_eq!(xvar_table_len("0.1,nan"), Err(ValueError::Negative));
    assert_eq!(parse_u32("4"), Ok(4));
    assert!(parse_u32("-4").is_err());
    assert_eq!(KEY_FORMAT, "fewstep.format");
}

#[test]
fn f16_storage_round_trips() {
    let src = [0.0f32, 1.0, -2.5, 1e-3, 65504.0];
    let mut h = [f16::ZERO; 5];
    f32_to_f16(&src, &mut h).unwrap();
    let mut back = [0.0f32; 5];
    f16_to_f32(&h, &mut back).unwrap();
    for (a, b) in src.iter().zip(&back) {
        assert!((a - b).abs() <= a.abs() * 1e-3);
    }
    assert!(fits_f16(&src));
    assert!(!fits_f16(&[1e6]));
    assert!(f32_to_f16(&src, &mut [f16::ZERO; 4]).is_err());
}
