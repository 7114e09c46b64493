//! Writes the kubetwin CRDs as YAML, one file per CRD, into a folder (default `crds/`).
//!
//!     cargo run -p kubetwin-api --bin crdgen [-- OUT_DIR]

use std::{env, fs, path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let out_dir = PathBuf::from(env::args().nth(1).unwrap_or_else(|| "crds".to_string()));
    if let Err(error) = fs::create_dir_all(&out_dir) {
        eprintln!("crdgen: cannot create {}: {error}", out_dir.display());
        return ExitCode::FAILURE;
    }
    for crd in kubetwin_api::crds() {
        let path = out_dir.join(kubetwin_api::crd_file_name(&crd));
        let yaml = match kubetwin_api::crd_yaml(&crd) {
            Ok(yaml) => yaml,
            Err(error) => {
                eprintln!("crdgen: cannot render {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        };
        if let Err(error) = fs::write(&path, yaml) {
            eprintln!("crdgen: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
