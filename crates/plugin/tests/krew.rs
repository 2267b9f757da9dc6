//! The krew manifest template (deploy/krew/nsdebug.yaml.in) stays one krew
//! accepts once a release fills it in: the keys krew requires, a `v` version,
//! and a platform for every OS and architecture the plugin is built for.

use std::collections::BTreeSet;

use serde_json::Value;

const TEMPLATE: &str = include_str!("../../../deploy/krew/nsdebug.yaml.in");

/// The template as a release fills it in.
fn rendered() -> Value {
    let mut text = TEMPLATE
        .replace("@VERSION@", "v0.1.0")
        .replace("@HOMEPAGE@", "https://example.com/nsdebug");
    for platform in [
        "LINUX_AMD64",
        "LINUX_ARM64",
        "DARWIN_AMD64",
        "DARWIN_ARM64",
        "WINDOWS_AMD64",
    ] {
        text = text
            .replace(
                &format!("@URI_{platform}@"),
                &format!("https://example.com/{platform}.tar.gz"),
            )
            .replace(&format!("@SHA256_{platform}@"), &"ab".repeat(32));
    }
    let unfilled: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && line.contains('@'))
        .collect();
    assert!(
        unfilled.is_empty(),
        "placeholders nobody fills: {unfilled:?}"
    );
    serde_saphyr::from_str(&text).expect("the manifest is YAML")
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| panic!("{what} is missing or empty"))
}

#[test]
fn krew_manifest() {
    let manifest = rendered();
    assert_eq!(
        text(&manifest["apiVersion"], "apiVersion"),
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(text(&manifest["kind"], "kind"), "Plugin");
    // The plugin's name is what `kubectl nsdebug` is called by.
    assert_eq!(
        text(&manifest["metadata"]["name"], "metadata.name"),
        "nsdebug"
    );
    let spec = &manifest["spec"];
    assert!(text(&spec["version"], "spec.version").starts_with('v'));
    text(&spec["homepage"], "spec.homepage");
    assert!(text(&spec["shortDescription"], "spec.shortDescription").len() <= 80);
    let platforms = spec["platforms"].as_array().expect("spec.platforms");
    let mut covered = BTreeSet::new();
    for platform in platforms {
        let labels = &platform["selector"]["matchLabels"];
        let os = text(&labels["os"], "selector os");
        let arch = text(&labels["arch"], "selector arch");
        assert!(
            covered.insert((os.to_string(), arch.to_string())),
            "{os}/{arch} twice"
        );
        assert!(text(&platform["uri"], "uri").starts_with("https://"));
        let sha256 = text(&platform["sha256"], "sha256");
        assert!(sha256.len() == 64 && sha256.chars().all(|c| c.is_ascii_hexdigit()));
        let bin = text(&platform["bin"], "bin");
        let expected = if os == "windows" {
            "kubectl-nsdebug.exe"
        } else {
            "kubectl-nsdebug"
        };
        assert_eq!(bin, expected, "{os}/{arch}");
    }
    let wanted: BTreeSet<(String, String)> = [
        ("linux", "amd64"),
        ("linux", "arm64"),
        ("darwin", "amd64"),
        ("darwin", "arm64"),
        ("windows", "amd64"),
    ]
    .into_iter()
    .map(|(os, arch)| (os.to_string(), arch.to_string()))
    .collect();
    assert_eq!(covered, wanted);
}
