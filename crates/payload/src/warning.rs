/// The warning every node can serve with no set-up: plain text in English
/// and Norwegian Bokmål. Operators replace it with their own payload file
/// (`payload.file` in `warnseed.toml`).
pub const BUILTIN_WARNING: &str = "\
WARNING - POLICE NOTICE

You downloaded this file from a police computer.
Your IP address and this download have been registered.

Looking at sexual images of children is a crime, and it harms children.
If you are worried about your own thoughts or behaviour, confidential help
is available. Contact a help service in your country before you act.

ADVARSEL - MELDING FRA POLITIET

Du lastet ned denne filen fra en datamaskin som tilhører politiet.
IP-adressen din og denne nedlastingen er registrert.

Å se på seksuelle bilder av barn er straffbart og skader barn.
Er du bekymret for egne tanker eller egen atferd, kan du få hjelp
i fortrolighet. Kontakt et hjelpetilbud før du handler.
";
