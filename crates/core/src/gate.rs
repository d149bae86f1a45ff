//! What a report's leaks mean to a CI job: each leak as one finding (an object group, an
//! object with unexplained references, or a native site), where it points in the source, the
//! suppressions that drop known ones, and the baseline that lists a run's findings as
//! suppressions.

use crate::holder::Holder;
use crate::native::ReportNative;
use crate::numfmt::thousands;
use crate::report::{NativeFrame, Report, ReportGroup, ReportUnexplained};
use serde::Serialize;

/// What a finding counts: leaked objects, references that nothing accounts for, or native
/// blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Objects,
    References,
    Native,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Objects => "objects",
            Kind::References => "references",
            Kind::Native => "native",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        [Kind::Objects, Kind::References, Kind::Native]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// A file and line to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: u32,
}

/// One leak, as suppressions match it and CI tools show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    /// The type of the objects, or the allocator of native blocks (`malloc`).
    pub type_name: String,
    /// Objects, references or blocks.
    pub count: u64,
    pub site: Option<String>,
    /// The function that kept the reference, when a watched object names it.
    pub holder: Option<String>,
    /// The extension (shared object file name) whose code made it, or else the Python file.
    pub module: Option<String>,
    /// The holder's line, else the C line, else the Python line.
    pub location: Option<Location>,
    pub message: String,
}

impl Finding {
    fn of_group(g: &ReportGroup) -> Finding {
        let rate = g
            .per_call
            .map(|r| format!(", {} per call", crate::numfmt::rate(r)))
            .unwrap_or_default();
        let mut message = format!(
            "{}: {} {} objects ({}{rate}), created at {}",
            g.class,
            thousands(g.count),
            g.type_name,
            g.evidence.as_deref().unwrap_or("no evidence"),
            g.site.as_deref().unwrap_or("an unknown site"),
        );
        add_holder(&mut message, g.holder.as_ref());
        Finding {
            kind: Kind::Objects,
            type_name: g.type_name.clone(),
            count: g.count,
            site: g.site.clone(),
            holder: g.holder.as_ref().map(|h| h.function.clone()),
            module: module(&g.native, &g.python),
            location: location(g.holder.as_ref(), &g.native, &g.python),
            message,
        }
    }

    fn of_unexplained(u: &ReportUnexplained) -> Finding {
        let mut message = format!(
            "{} {}: +{} references nothing accounts for ({})",
            u.type_name,
            u.repr,
            thousands(u.gained.max(0) as u64),
            u.evidence
        );
        add_holder(&mut message, u.holder.as_ref());
        Finding {
            kind: Kind::References,
            type_name: u.type_name.clone(),
            count: u.gained.max(0) as u64,
            site: u.site.clone(),
            holder: u.holder.as_ref().map(|h| h.function.clone()),
            module: module(&u.native, &u.python),
            location: location(u.holder.as_ref(), &u.native, &u.python),
            message,
        }
    }

    fn of_native(n: &ReportNative) -> Finding {
        Finding {
            kind: Kind::Native,
            type_name: n.allocator.clone(),
            count: n.count,
            site: n.site.clone(),
            holder: None,
            module: module(&n.native, &n.python),
            location: location(None, &n.native, &n.python),
            message: format!(
                "{} native blocks ({} bytes) from {} allocated at {}: {}",
                thousands(n.count),
                thousands(n.bytes),
                n.allocator,
                n.site.as_deref().unwrap_or("an unknown site"),
                n.evidence
            ),
        }
    }
}

fn add_holder(message: &mut String, holder: Option<&Holder>) {
    if let Some(h) = holder {
        message.push_str(&format!(
            "; reference taken at {} in {} and never released",
            h.site, h.function
        ));
    }
}

/// The first extension module among the native frames, or the innermost Python file.
fn module(native: &[NativeFrame], python: &[crate::capture::PyFrame]) -> Option<String> {
    native
        .iter()
        .find(|f| !f.interpreter)
        .map(|f| f.module.clone())
        .or_else(|| python.first().map(|f| f.file.clone()))
}

/// The holder's line, else the first extension frame's C line, else the innermost Python
/// line.
fn location(
    holder: Option<&Holder>,
    native: &[NativeFrame],
    python: &[crate::capture::PyFrame],
) -> Option<Location> {
    let file_line = |s: &str| {
        let (file, line) = s.rsplit_once(':')?;
        Some(Location {
            file: file.to_string(),
            line: line.parse().ok()?,
        })
    };
    holder
        .and_then(|h| file_line(&h.site))
        .or_else(|| {
            native.iter().filter(|f| !f.interpreter).find_map(|f| {
                Some(Location {
                    file: f.file.clone()?,
                    line: f.line?,
                })
            })
        })
        .or_else(|| {
            python.first().map(|f| Location {
                file: f.file.clone(),
                line: f.line,
            })
        })
}

impl Report {
    /// Every leak of the report as a finding, in the report's order: object groups, objects
    /// with unexplained references, native sites.
    pub fn findings(&self) -> Vec<Finding> {
        let groups = self.leaks.iter().map(Finding::of_group);
        let unexplained = self.unexplained.iter().map(Finding::of_unexplained);
        let native = self.native_leaks.iter().map(Finding::of_native);
        groups.chain(unexplained).chain(native).collect()
    }

    /// Drops every leak a rule matches, and lists it under `suppressed` with its rule.
    pub fn suppress(&mut self, rules: &Suppressions) {
        let mut suppressed = Vec::new();
        let mut keep = |f: Finding| match rules.matching(&f) {
            Some(rule) => {
                suppressed.push(Suppressed {
                    rule: rule.text.clone(),
                    kind: f.kind,
                    type_name: f.type_name,
                    count: f.count,
                    site: f.site,
                });
                false
            }
            None => true,
        };
        self.leaks.retain(|g| keep(Finding::of_group(g)));
        self.unexplained
            .retain(|u| keep(Finding::of_unexplained(u)));
        self.native_leaks.retain(|n| keep(Finding::of_native(n)));
        self.suppressed.extend(suppressed);
    }
}

/// A leak a suppression rule dropped from the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suppressed {
    pub rule: String,
    pub kind: Kind,
    pub type_name: String,
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// Rules, one a line: `key=pattern` terms that must all match, `*` and `?` as in the shell.
/// Keys: `kind` (objects, references, native), `type` (a type, or an allocator), `site`,
/// `holder` (the function that kept the reference), `module` (an extension's file name, or
/// a Python file). `#` starts a comment.
#[derive(Debug, Clone, Default)]
pub struct Suppressions {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    text: String,
    terms: Vec<(Key, String)>,
}

#[derive(Debug, Clone, Copy)]
enum Key {
    Kind,
    Type,
    Site,
    Holder,
    Module,
}

impl Suppressions {
    /// The rules of a suppression file, or what is wrong with it, with its line.
    pub fn parse(text: &str) -> Result<Suppressions, String> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let terms = line
                .split_whitespace()
                .map(|term| parse_term(term).map_err(|why| format!("line {}: {why}", n + 1)))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule {
                text: line.to_string(),
                terms,
            });
        }
        Ok(Suppressions { rules })
    }

    pub fn extend(&mut self, other: Suppressions) {
        self.rules.extend(other.rules);
    }

    fn matching(&self, f: &Finding) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.terms.iter().all(|(key, pattern)| {
                let value = match key {
                    Key::Kind => Some(f.kind.name()),
                    Key::Type => Some(f.type_name.as_str()),
                    Key::Site => f.site.as_deref(),
                    Key::Holder => f.holder.as_deref(),
                    Key::Module => f.module.as_deref(),
                };
                value.is_some_and(|v| glob(pattern, v))
            })
        })
    }
}

fn parse_term(term: &str) -> Result<(Key, String), String> {
    let (key, pattern) = term
        .split_once('=')
        .ok_or_else(|| format!("`{term}` is not key=pattern"))?;
    let key = match key {
        "kind" => {
            if !pattern.contains(['*', '?']) && Kind::parse(pattern).is_none() {
                return Err(format!(
                    "kind `{pattern}` is none of objects, references, native"
                ));
            }
            Key::Kind
        }
        "type" => Key::Type,
        "site" => Key::Site,
        "holder" => Key::Holder,
        "module" => Key::Module,
        other => {
            return Err(format!(
                "unknown key `{other}` (kind, type, site, holder, module)"
            ))
        }
    };
    Ok((key, pattern.to_string()))
}

/// Shell-style matching of the whole of `text`: `*` any run of characters, `?` one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A suppression file that drops exactly these findings: a project with known leaks gates
/// on new ones with `--suppress` of it. Wildcards in names are escaped by no rule, so a name
/// holding `*` or `?` matches more than itself.
pub fn baseline(findings: &[Finding]) -> String {
    let mut out = String::from(
        "# refhunt baseline: the leaks of one run; `refhunt run --suppress FILE` drops them\n",
    );
    for f in findings {
        let rule = format!("kind={} type={}", f.kind.name(), no_spaces(&f.type_name));
        // A holder is the C code at fault; the objects it keeps may come from anywhere. But
        // a holder is named only when a breakpoint saw it take the reference, which another
        // run may miss: the site goes beside it, a rule of its own.
        let terms: Vec<String> = match (&f.holder, &f.site) {
            (Some(holder), site) => std::iter::once(format!(" holder={}", no_spaces(holder)))
                .chain(site.iter().map(|s| format!(" site={}", no_spaces(s))))
                .collect(),
            (None, Some(site)) => vec![format!(" site={}", no_spaces(site))],
            (None, None) => vec![String::new()],
        };
        for term in terms {
            out.push_str(&rule);
            out.push_str(&term);
            out.push('\n');
        }
    }
    out
}

/// A rule's terms are split at spaces: a space in a name (`leak_new_reference (zoo.so)`)
/// becomes `?`, which matches it.
fn no_spaces(s: &str) -> String {
    s.replace(char::is_whitespace, "?")
}

/// Findings of at least `min` objects, references or blocks: what `--fail-on-leak=N`
/// counts.
pub fn failing(findings: &[Finding], min: u64) -> usize {
    findings.iter().filter(|f| f.count >= min.max(1)).count()
}

/// GitHub Actions workflow commands, one per finding: `::error file=F,line=L::message`.
pub fn github_annotations(findings: &[Finding]) -> String {
    let data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let property = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let mut out = String::new();
    for f in findings {
        let place = f
            .location
            .as_ref()
            .map(|l| format!(" file={},line={},", property(&l.file), l.line))
            .unwrap_or_else(|| " ".to_string());
        out.push_str(&format!(
            "::error{place}title=refhunt leak ({})::{}\n",
            f.kind.name(),
            data(&f.message)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: Kind, type_name: &str, site: &str, holder: Option<&str>) -> Finding {
        Finding {
            kind,
            type_name: type_name.into(),
            count: 10,
            site: Some(site.into()),
            holder: holder.map(Into::into),
            module: Some("zoo.cpython-311-x86_64-linux-gnu.so".into()),
            location: None,
            message: String::new(),
        }
    }

    #[test]
    fn globs_match_the_whole_text() {
        assert!(glob("*zoo.c:19", "/src/zoo/zoo.c:19"));
        assert!(!glob("zoo.c:1", "zoo.c:19"));
        assert!(glob("zoo.c:1?", "zoo.c:19"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYbc"));
        assert!(!glob("a*b*c", "aXXbYYb"));
    }

    #[test]
    fn a_baseline_still_matches_a_leak_whose_holder_goes_unnamed() {
        let held = finding(
            Kind::References,
            "tuple",
            "holders.c:292",
            Some("singleton"),
        );
        let text = baseline(&[
            held.clone(),
            finding(Kind::Objects, "int", "zoo.c:19", None),
        ]);
        let rules = Suppressions::parse(&text).unwrap();
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 3);
        assert!(rules.matching(&held).is_some());
        let unnamed = finding(Kind::References, "tuple", "holders.c:292", None);
        assert!(rules.matching(&unnamed).is_some());
        assert!(rules
            .matching(&finding(Kind::Objects, "int", "zoo.c:20", None))
            .is_none());
    }

    #[test]
    fn a_rule_matches_when_all_its_terms_do() {
        let rules =
            Suppressions::parse("# known\ntype=int site=*zoo.c:19\n\nholder=keep_*  # ours\n")
                .unwrap();
        assert!(rules
            .matching(&finding(Kind::Objects, "int", "zoo.c:19", None))
            .is_some());
        assert!(rules
            .matching(&finding(Kind::Objects, "str", "zoo.c:19", None))
            .is_none());
        let held = finding(Kind::Objects, "object", "app.py:3", Some("keep_arg"));
        assert_eq!(rules.matching(&held).unwrap().text, "holder=keep_*");
        let module = Suppressions::parse("kind=native module=zoo.*").unwrap();
        assert!(module
            .matching(&finding(Kind::Native, "malloc", "native.c:8", None))
            .is_some());
        assert!(module
            .matching(&finding(Kind::Objects, "malloc", "native.c:8", None))
            .is_none());
    }

    #[test]
    fn a_bad_rule_is_named_with_its_line() {
        let e = Suppressions::parse("type=int\nsite\n").unwrap_err();
        assert_eq!(e, "line 2: `site` is not key=pattern");
        let e = Suppressions::parse("colour=red").unwrap_err();
        assert!(e.starts_with("line 1: unknown key `colour`"), "{e}");
        let e = Suppressions::parse("kind=blocks").unwrap_err();
        assert!(e.contains("none of objects, references, native"), "{e}");
    }

    #[test]
    fn the_threshold_counts_findings_at_least_that_large() {
        let mut small = finding(Kind::Objects, "int", "a.c:1", None);
        small.count = 3;
        let big = finding(Kind::Native, "malloc", "b.c:2", None);
        assert_eq!(failing(&[small.clone(), big.clone()], 1), 2);
        assert_eq!(failing(&[small.clone(), big.clone()], 0), 2);
        assert_eq!(failing(&[small, big], 4), 1);
    }

    #[test]
    fn annotations_escape_what_the_runner_would_read() {
        let mut f = finding(Kind::Objects, "int", "zoo.c:19", None);
        f.location = Some(Location {
            file: "src/a,b:c.c".into(),
            line: 19,
        });
        f.message = "100% lost\nhere".into();
        assert_eq!(
            github_annotations(&[f]),
            "::error file=src/a%2Cb%3Ac.c,line=19,title=refhunt leak (objects)::100%25 lost%0Ahere\n"
        );
    }
}
