//! The warning text in one language.

use crate::MediaError;

/// One language's warning text.
///
/// Rendered top to bottom: `heading` large in the warning colour, `body`,
/// then `help` and `url`. A `\n` in `body` or `help` starts a new line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Language tag, e.g. `en` or `nb`. Not rendered; names the script.
    pub lang: String,
    pub heading: String,
    pub body: String,
    pub help: String,
    /// Where to get help; operators set their own service.
    pub url: String,
}

/// Built-in scripts, in the order [`Script::builtin_languages`] lists them.
const BUILTIN: &[(&str, &str)] = &[
    ("en", include_str!("../scripts/en.toml")),
    ("nb", include_str!("../scripts/nb.toml")),
];

const BUILTIN_LANGUAGES: &[&str] = &["en", "nb"];

impl Script {
    /// The shipped script for `lang` (`en`, `nb`), or `None`.
    pub fn builtin(lang: &str) -> Option<Script> {
        let (_, text) = BUILTIN.iter().find(|(l, _)| *l == lang)?;
        // The shipped files are checked by a unit test, so a parse failure
        // here is a build defect; report it as "no such script" rather than
        // panicking in a server.
        Script::from_toml_str(text).ok()
    }

    /// The languages [`Script::builtin`] knows.
    pub fn builtin_languages() -> &'static [&'static str] {
        BUILTIN_LANGUAGES
    }

    /// Parses a script file with the keys `lang`, `heading`, `body`, `help`
    /// and `url` (all required, no others).
    pub fn from_toml_str(s: &str) -> Result<Script, MediaError> {
        let script: Script = toml::from_str(s)?;
        script.validate()?;
        Ok(script)
    }

    fn validate(&self) -> Result<(), MediaError> {
        if self.lang.trim().is_empty() {
            return Err(MediaError::ScriptInvalid("lang is empty".into()));
        }
        if self.heading.trim().is_empty() {
            return Err(MediaError::ScriptInvalid(format!(
                "{}: heading is empty",
                self.lang
            )));
        }
        for (name, value) in [
            ("heading", &self.heading),
            ("body", &self.body),
            ("help", &self.help),
            ("url", &self.url),
        ] {
            // Newlines are line breaks; any other control character would
            // render as a missing-glyph box.
            if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\n') {
                return Err(MediaError::ScriptInvalid(format!(
                    "{}: {name} contains control character U+{:04X}",
                    self.lang, c as u32
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_matches_its_name() {
        assert_eq!(BUILTIN.len(), BUILTIN_LANGUAGES.len());
        for lang in Script::builtin_languages() {
            let s = Script::builtin(lang).expect("builtin parses");
            assert_eq!(&s.lang, lang);
            assert!(!s.body.is_empty() && !s.help.is_empty() && !s.url.is_empty());
        }
        assert!(Script::builtin("xx").is_none());
    }

    #[test]
    fn norwegian_keeps_its_letters() {
        let nb = Script::builtin("nb").unwrap();
        assert_eq!(nb.heading, "ADVARSEL");
        assert!(nb.help.contains('å'));
    }

    #[test]
    fn missing_or_unknown_keys_are_rejected() {
        let missing = "lang = \"en\"\nheading = \"W\"\nbody = \"b\"\nhelp = \"h\"\n";
        assert!(matches!(
            Script::from_toml_str(missing),
            Err(MediaError::ScriptToml(_))
        ));
        let extra =
            "lang = \"en\"\nheading = \"W\"\nbody = \"b\"\nhelp = \"h\"\nurl = \"u\"\ncolour = \"red\"\n";
        assert!(matches!(
            Script::from_toml_str(extra),
            Err(MediaError::ScriptToml(_))
        ));
    }

    #[test]
    fn empty_heading_and_control_characters_are_rejected() {
        let empty = "lang = \"en\"\nheading = \" \"\nbody = \"b\"\nhelp = \"h\"\nurl = \"u\"\n";
        assert!(matches!(
            Script::from_toml_str(empty),
            Err(MediaError::ScriptInvalid(_))
        ));
        let tab = "lang = \"en\"\nheading = \"W\"\nbody = \"a\\tb\"\nhelp = \"h\"\nurl = \"u\"\n";
        assert!(matches!(
            Script::from_toml_str(tab),
            Err(MediaError::ScriptInvalid(_))
        ));
    }

    #[test]
    fn multiline_body_is_allowed() {
        let s = "lang = \"en\"\nheading = \"W\"\nbody = \"\"\"\none\ntwo\"\"\"\nhelp = \"h\"\nurl = \"u\"\n";
        assert_eq!(Script::from_toml_str(s).unwrap().body, "one\ntwo");
    }
}
