//! The model names a tenant owns: its glob patterns, asked on every call.
//!
//! Most tenants' patterns are a name (`iris`) or a prefix (`acme-*`); those
//! are answered by a comparison, and only the others by `globset`, whose
//! general matcher costs several times more per call.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A tenant's patterns, sorted by how they are matched.
pub(super) struct NamePatterns {
    /// Patterns without a special character: the name itself.
    names: Vec<String>,
    /// Patterns that end in their only `*`: the part before it.
    prefixes: Vec<String>,
    /// Every other pattern, if there is one.
    globs: Option<GlobSet>,
}

/// The characters that make a pattern more than a name to `globset`.
const SPECIAL: &[char] = &['*', '?', '[', ']', '{', '}', '\\', '!'];

impl NamePatterns {
    /// The patterns as written in the file; an error names one that is not
    /// a pattern, or says that there are none.
    pub(super) fn new(written: &[String]) -> Result<Self, String> {
        if written.is_empty() {
            return Err("list at least one pattern of model names, such as \"acme-*\"".into());
        }
        let mut patterns = NamePatterns {
            names: Vec::new(),
            prefixes: Vec::new(),
            globs: None,
        };
        let mut globs = GlobSetBuilder::new();
        let mut any_glob = false;
        for pattern in written {
            // Every pattern is checked as globset reads it, so that a
            // pattern it refuses is refused whichever way it is matched.
            let glob =
                Glob::new(pattern).map_err(|e| format!("{pattern:?} is not a pattern: {e}"))?;
            match pattern.strip_suffix('*') {
                _ if !pattern.contains(SPECIAL) => patterns.names.push(pattern.clone()),
                Some(prefix) if !prefix.contains(SPECIAL) => {
                    patterns.prefixes.push(prefix.to_string())
                }
                _ => {
                    globs.add(glob);
                    any_glob = true;
                }
            }
        }
        if any_glob {
            patterns.globs = Some(globs.build().map_err(|e| e.to_string())?);
        }
        Ok(patterns)
    }

    /// Whether `name` matches one of the patterns.
    pub(super) fn matches(&self, name: &str) -> bool {
        self.names.iter().any(|known| known == name)
            || self
                .prefixes
                .iter()
                .any(|prefix| name.starts_with(prefix.as_str()))
            || self
                .globs
                .as_ref()
                .is_some_and(|globs| globs.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_match_as_globset_matches_them() {
        let written = [
            "iris",
            "acme-*",
            "*",
            "a*b",
            "x?z",
            "[ab]c",
            "{one,two}",
            "pre*fix*",
            "dot.*",
            "\\*lit",
            "",
        ];
        let names = [
            "iris",
            "iri",
            "irises",
            "acme-",
            "acme-1",
            "acme",
            "Acme-1",
            "ab",
            "axxb",
            "xyz",
            "xz",
            "ac",
            "bc",
            "cc",
            "one",
            "two",
            "three",
            "prefix",
            "pre-x-fix-y",
            "dot.",
            "dotx",
            "*lit",
            "xlit",
            "",
            "m/2",
        ];
        for pattern in written {
            let ours = NamePatterns::new(&[pattern.to_string()]).expect("a pattern");
            let theirs = Glob::new(pattern).expect("a glob").compile_matcher();
            for name in names {
                assert_eq!(
                    ours.matches(name),
                    theirs.is_match(name),
                    "{pattern:?} against {name:?}"
                );
            }
        }
        // Several patterns: any of them.
        let several =
            NamePatterns::new(&["iris".into(), "acme-*".into(), "x?z".into()]).expect("patterns");
        assert!(several.matches("iris") && several.matches("acme-7") && several.matches("xyz"));
        assert!(!several.matches("other"));
    }

    #[test]
    fn bad_or_missing_patterns_are_refused() {
        assert!(NamePatterns::new(&[]).is_err());
        let error = NamePatterns::new(&["acme-[".into()])
            .err()
            .expect("an unclosed class");
        assert!(error.contains("acme-["), "{error}");
    }
}
