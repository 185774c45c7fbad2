/// The `option.*` entries of the model's `serving.properties`, prefix removed.
///
/// `option.model_file=weights.bin` in the package reads as `config.get("model_file")`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Wraps the entries the host passed to `load`.
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Config { entries }
    }

    /// The value of `key`, if the package set it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every entry, in the order of the properties file.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_finds_a_key_and_misses_an_absent_one() {
        let config = Config::new(vec![("model_file".into(), "w.bin".into())]);
        assert_eq!(config.get("model_file"), Some("w.bin"));
        assert_eq!(config.get("other"), None);
        assert_eq!(config.entries().count(), 1);
    }
}
