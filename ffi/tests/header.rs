//! The committed `include/fewstep.h` must equal a fresh cbindgen run.
//! Regenerate with `FEWSTEP_BLESS=1 cargo test -p fewstep-ffi --test header`.
use std::path::Path;

#[test]
fn committed_header_is_up_to_date() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let header = crate_dir.join("../include/fewstep.h");
    if std::env::var_os("FEWSTEP_BLESS").is_some() {
        std::fs::write(&header, &fresh).expect("write include/fewstep.h");
        return;
    }
    let committed = std::fs::read(&header).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/fewstep.h is stale: regenerate it with `FEWSTEP_BLESS=1 cargo test -p fewstep-ffi --test header` and commit it"
    );
}
