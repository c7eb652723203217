//! The `private_registry` example against a real registry: the second
//! push sends no byte of the shared base layer.

use super::harness::{Auth, TestRegistry};
use super::push_pull::options;
use super::tools::Scratch;

#[test]
fn the_private_registry_example_sends_the_shared_layer_once() {
    let test = "the_private_registry_example_sends_the_shared_layer_once";
    let Some(reg) = TestRegistry::start(test, Auth::Htpasswd) else {
        return;
    };
    let s = Scratch::new(test);
    let mut out = Vec::new();
    super::private_registry::run(&reg.host, &options(), &s.path("layout"), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let host = &reg.host;
    assert!(
        lines[1].starts_with(&format!("push demo -> {host}/demo:1.0.0: 2 blobs sent, ")),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "push demo-web -> {host}/demo-web:1.0.0: 2 blobs sent, "
        )),
        "{out}"
    );
    assert!(
        lines[2].ends_with("; 1 mounted from demo, 0 already there"),
        "{out}"
    );
    assert_eq!(
        lines[3],
        "bytes of the shared base layer sent by the second push: 0"
    );
    // Both repositories link the one stored blob.
    let hex = lines[4]
        .split("blobs/sha256/")
        .nth(1)
        .and_then(|rest| rest.split('/').nth(1))
        .unwrap()
        .to_owned();
    assert!(reg.blob_data(&hex).is_file());
    for repo in ["demo", "demo-web"] {
        let link = std::fs::read_to_string(reg.storage().join(format!(
            "docker/registry/v2/repositories/{repo}/_layers/sha256/{hex}/link"
        )))
        .unwrap();
        assert_eq!(link, format!("sha256:{hex}"));
    }
}
