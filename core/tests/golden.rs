//! Schedules against golden values computed independently by
//! `core/golden/schedules.py` (Python float64 `math`, straight from
//! docs/MODEL_FORMAT.md); output pasted from `core/golden/schedules.txt`.
#![allow(clippy::approx_constant)] // pasted golden values, kept verbatim
use fewstep_core::Schedule;

#[rustfmt::skip]
const GOLDEN: &[(&str, f64, f64, f64, f64)] = &[
    ("cosine", 0.0, 15.0, 0.9999998470488748, 0.0005530842855529568),
    ("cosine", 0.1, 3.6797404349823455, 0.9876190267548528, 0.15687146965524792),
    ("cosine", 0.25, 1.7611832477357736, 0.9237736690837446, 0.3829389093674815),
    ("cosine", 0.5, 2.220446049250313e-16, 0.7071067811865476, 0.7071067811865476),
    ("cosine", 0.75, -1.7611832477357734, 0.38293890936748154, 0.9237736690837446),
    ("cosine", 0.9, -3.679740434982347, 0.1568714696552478, 0.9876190267548528),
    ("cosine", 1.0, -15.000000000000245, 0.0005530842855528891, 0.9999998470488748),
    ("shifted_cosine:0.5", 0.0, 13.61370563888011, 0.9999993881959205, 0.0011061680635371192),
    ("shifted_cosine:0.5", 0.1, 2.293446073862455, 0.9530649448778644, 0.3027659340892782),
    ("shifted_cosine:0.5", 0.25, 0.37488888661588304, 0.7698310044896032, 0.6382477767501652),
    ("shifted_cosine:0.5", 0.5, -1.3862943611198904, 0.447213595499958, 0.8944271909999159),
    ("shifted_cosine:0.5", 0.75, -3.147477608855664, 0.20295512450983696, 0.9791880398754861),
    ("shifted_cosine:0.5", 0.9, -5.066034796102238, 0.07916973522035611, 0.996861150323925),
    ("shifted_cosine:0.5", 1.0, -16.386294361120136, 0.00027654217449952145, 0.9999999617622122),
    ("interpolated_cosine:0.25:2", 0.0, 16.38629436111989, 0.9999999617622122, 0.00027654217449955533),
    ("interpolated_cosine:0.25:2", 0.1, 4.650146487766269, 0.9952539025652086, 0.09731222651199652),
    ("interpolated_cosine:0.25:2", 0.25, 2.1077568380157463, 0.9442747584852458, 0.3291582909295021),
    ("interpolated_cosine:0.25:2", 0.5, -0.6931471805599451, 0.5773502691896258, 0.816496580927726),
    ("interpolated_cosine:0.25:2", 0.75, -3.4940511991356367, 0.17170313593455022, 0.9851487365419708),
    ("interpolated_cosine:0.25:2", 0.9, -6.03644084888616, 0.048829823094471356, 0.998807112698224),
    ("interpolated_cosine:0.25:2", 1.0, -17.772588722240027, 0.0001382710912151462, 0.9999999904405525),
];

#[test]
fn schedules_match_independent_golden_values() {
    for &(name, t, logsnr, alpha, sigma) in GOLDEN {
        let schedule: Schedule = name.parse().expect("golden schedule names parse");
        let got = schedule.logsnr(t);
        assert!(
            (got - logsnr).abs() <= 1e-12 * (1.0 + logsnr.abs()),
            "{name} logsnr({t}) = {got}, want {logsnr}"
        );
        let at = schedule.alpha_sigma(t);
        assert!(
            (at.alpha - alpha).abs() <= 1e-13,
            "{name} alpha({t}) = {}, want {alpha}",
            at.alpha
        );
        assert!(
            (at.sigma - sigma).abs() <= 1e-13,
            "{name} sigma({t}) = {}, want {sigma}",
            at.sigma
        );
        let snr = schedule.snr(t);
        assert!((snr / logsnr.exp() - 1.0).abs() < 1e-12, "{name} snr({t})");
    }
}
