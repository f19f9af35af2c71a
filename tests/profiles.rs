//! Every device profile in firmware-config/ loads and validates; a bad one names the setting.

use std::path::Path;

use audio_jepa::Profile;

#[test]
fn every_profile_loads_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = Profile::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(p.frontend.n_mels, 128, "{}", path.display());
            names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["apple-m", "jetson-orin-nano", "laptop", "raspberry-pi-5"]
    );
}

#[test]
fn a_bad_stream_section_is_a_clear_error() {
    let origin = Path::new("bad.toml");
    for (text, field) in [
        ("[stream]\nhop_columns = 9\n", "stream.hop_columns"),
        ("[stream]\nmodel_preset = \"huge\"\n", "stream.model_preset"),
        (
            "[stream]\nlatency_budget_ms = 500.0\n",
            "stream.latency_budget_ms",
        ),
        ("[stream]\nthreads = 0\n", "stream.threads"),
    ] {
        let err = Profile::from_toml_str(text, origin)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{text}: {err}");
    }
    assert!(Profile::from_toml_str("[stream]\nquantization = \"q3\"\n", origin).is_err());
}
