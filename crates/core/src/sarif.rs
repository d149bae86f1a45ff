//! The report's leaks as a SARIF 2.1.0 log, for code scanning: one result per finding, at the
//! holder's line, else the C line, else the Python line.

use crate::gate::{Finding, Kind};
use serde_json::{json, Value};
use std::path::Path;

const SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The rules, one per kind of finding, in the order of `Kind`.
fn rules() -> Value {
    json!([
        {
            "id": "refhunt/leaked-objects",
            "name": "LeakedObjects",
            "shortDescription": {"text": "Objects left with a reference that nothing releases"},
            "fullDescription": {"text": "Python objects created in the window survived it \
                with a reference that no object, frame or module holds: C code took a new \
                reference (or an extra one) and never released it."},
            "defaultConfiguration": {"level": "error"}
        },
        {
            "id": "refhunt/unexplained-references",
            "name": "UnexplainedReferences",
            "shortDescription": {"text": "An object's refcount grew beyond the references found"},
            "fullDescription": {"text": "An object gained references in the window that no \
                object, frame or module holds: C code increfed an object it did not make and \
                never released it."},
            "defaultConfiguration": {"level": "error"}
        },
        {
            "id": "refhunt/native-leak",
            "name": "NativeLeak",
            "shortDescription": {"text": "Native memory that C code allocated and lost"},
            "fullDescription": {"text": "Blocks of malloc, PyMem or PyObject allocators that \
                survived the window with no pointer to their start."},
            "defaultConfiguration": {"level": "error"}
        }
    ])
}

fn rule_index(kind: Kind) -> usize {
    match kind {
        Kind::Objects => 0,
        Kind::References => 1,
        Kind::Native => 2,
    }
}

/// The SARIF log of `findings`; paths under `root` are written relative to it.
pub fn log(findings: &[Finding], root: &Path) -> String {
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let index = rule_index(f.kind);
            let mut result = json!({
                "ruleId": rules()[index]["id"],
                "ruleIndex": index,
                "level": "error",
                "message": {"text": f.message},
                "properties": {"count": f.count, "type": f.type_name},
            });
            if let Some(l) = &f.location {
                result["locations"] = json!([{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&l.file, root)},
                        "region": {"startLine": l.line.max(1)}
                    }
                }]);
            }
            result
        })
        .collect();
    let log = json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "refhunt",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://pypi.org/project/refhunt/",
                "rules": rules(),
            }},
            "results": results,
        }]
    });
    serde_json::to_string_pretty(&log).expect("a SARIF log serializes") + "\n"
}

/// A path as a URI reference: relative to `root` when under it, else an absolute `file:`
/// URI; characters a URI cannot hold are percent-encoded.
fn uri(file: &str, root: &Path) -> String {
    let path = Path::new(file);
    let (prefix, path) = match path.strip_prefix(root) {
        Ok(relative) => ("", relative),
        Err(_) if path.is_absolute() => ("file://", path),
        Err(_) => ("", path),
    };
    let mut out = String::from(prefix);
    for b in path.to_string_lossy().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'-' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Location;

    #[test]
    fn results_point_at_their_line_relative_to_the_root() {
        let f = Finding {
            kind: Kind::Native,
            type_name: "malloc".into(),
            count: 10,
            site: Some("native.c:88".into()),
            holder: None,
            module: None,
            location: Some(Location {
                file: "/src/proj/zoo/native c.c".into(),
                line: 88,
            }),
            message: "10 native blocks".into(),
        };
        let log: Value = serde_json::from_str(&log(&[f], Path::new("/src/proj"))).unwrap();
        let result = &log["runs"][0]["results"][0];
        assert_eq!(result["ruleId"], "refhunt/native-leak");
        let place = &result["locations"][0]["physicalLocation"];
        assert_eq!(place["artifactLocation"]["uri"], "zoo/native%20c.c");
        assert_eq!(place["region"]["startLine"], 88);
        assert_eq!(
            uri("/elsewhere/a.c", Path::new("/src")),
            "file:///elsewhere/a.c"
        );
    }
}
