//! Thresholds match an independent reference computation
//! (`tests/reference/make_thresholds.py`, numpy + scipy) on the same histograms.

use hb_quant::calib::threshold;

#[test]
fn thresholds_match_the_reference() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/thresholds.json");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for c in cases.as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let counts: Vec<f64> = c["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (width, max) = (c["width"].as_f64().unwrap(), c["max"].as_f64().unwrap());
        let close = |got: f64, key: &str| {
            let want = c[key].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{name} {key}: got {got}, reference {want}"
            );
        };
        close(threshold::kl(&counts, width, 128), "kl");
        close(
            threshold::percentile(&counts, width, 0.99995, max),
            "percentile_0.99995",
        );
        close(
            threshold::percentile(&counts, width, 0.999, max),
            "percentile_0.999",
        );
        close(threshold::mse(&counts, width, max, 127.0, 100), "mse");
    }
}
