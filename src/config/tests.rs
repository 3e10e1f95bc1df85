use super::tenants::TENANT_KEYS;
use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("test.toml")).expect("parses")
}

fn file(listen: &str, inbound: &str, extra: &str) -> String {
    format!(
        "listen = \"{listen}\"\nstate_dir = \"/var/lib/ivrgate\"\n{extra}\n[[tenants]]\nid = \"acme\"\n\
         webhook_url = \"http://127.0.0.1:9/hooks\"\nwebhook_secret = \"{SECRET}\"\n{inbound}"
    )
}

const BASIC: &str =
    "[tenants.inbound]\nbasic_auth = { username = \"vc\", password = \"pa55-w0rd\" }\n";

#[test]
fn advertise_url_and_connector_settings_are_checked() {
    let adapters = crate::adapters::all();
    let check = |extra: &str| match parse(&file("127.0.0.1:8080", "", extra)).validate(adapters) {
        Ok(_) => String::new(),
        Err(ConfigError::Invalid(why)) => why,
        Err(other) => other.to_string(),
    };
    assert_eq!(
        check("[server]\nadvertise_url = \"https://gw1.example.net:8443/base\"\n[connectors]\nlease_ms = 3000\n"),
        ""
    );
    for (bad, expect) in [
        ("ftp://gw1.example.net", "is not http or https"),
        ("gw1.example.net:8443", "server.advertise_url"),
        (
            "https://u:secret@gw1.example.net",
            "must not carry credentials",
        ),
        ("https://gw1.example.net/?token=x", "must not have a query"),
        ("https://gw1.example.net/#top", "must not have a query"),
    ] {
        let why = check(&format!("[server]\nadvertise_url = \"{bad}\"\n"));
        assert!(why.contains(expect), "{bad}: {why}");
        assert!(!why.contains("secret@"), "{why}");
    }
    assert!(check("[connectors]\nlease_ms = 100\n").contains("connectors.lease_ms (100)"));
    assert!(check("[connectors]\nbackoff_min_ms = 0\n").contains("backoff_min_ms"));
    assert!(
        check("[connectors]\nbackoff_min_ms = 900\nbackoff_max_ms = 800\n")
            .contains("connectors.backoff_max_ms (800)")
    );
    // Strict like every table.
    let typo = Config::parse(
        &file("127.0.0.1:8080", "", "[connectors]\nlease = 3000\n"),
        Path::new("x.toml"),
    );
    assert!(typo.is_err());
    // Both reload-applied.
    let running = parse(&file("127.0.0.1:8080", "", ""));
    let changed = parse(&file(
        "127.0.0.1:8080",
        "",
        "[server]\nadvertise_url = \"https://gw1.example.net\"\n[connectors]\nlease_ms = 3000\n",
    ));
    assert!(changed.reload_refusals(&running).is_empty());
}

#[test]
fn reload_is_checked_against_the_bound_listener() {
    let adapters = crate::adapters::all();
    // Running: bound to every address, with credentials.
    let running = parse(&file("0.0.0.0:8080", BASIC, ""))
        .validate(adapters)
        .expect("valid");
    // The new file moves to loopback and drops the credentials: fine on its own ...
    let new = parse(&file("127.0.0.1:8080", "", ""));
    assert!(new.validate(adapters).is_ok());
    // ... but not for the gateway that is running: `listen` needs a restart, and the
    // socket still bound to 0.0.0.0 would take requests without credentials.
    let refusals = new.reload_refusals(&running.raw);
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].starts_with("listen changed from 0.0.0.0:8080 (bound) to 127.0.0.1:8080"));
    let Err(ConfigError::Invalid(why)) = new.validate_on(adapters, running.raw.listen) else {
        panic!("no inbound credentials on 0.0.0.0 must be refused");
    };
    assert!(why.contains("no inbound credentials on the non-loopback listener 0.0.0.0:8080"));
    // Keeping the listener and the credentials reloads.
    let same = parse(&file(
        "0.0.0.0:8080",
        BASIC,
        "[server]\nmax_body_bytes = 2048",
    ));
    assert!(same.reload_refusals(&running.raw).is_empty());
    let resolved = same
        .validate_on(adapters, running.raw.listen)
        .expect("valid");
    assert_eq!(resolved.raw.server.max_body_bytes, 2048);
}

#[test]
fn a_file_asking_for_any_port_matches_the_port_bound() {
    let mut running = parse(&file("127.0.0.1:0", "", ""));
    running.listen = "127.0.0.1:41234".parse().expect("addr");
    assert!(parse(&file("127.0.0.1:0", "", ""))
        .reload_refusals(&running)
        .is_empty());
    assert!(parse(&file("127.0.0.1:41234", "", ""))
        .reload_refusals(&running)
        .is_empty());
    assert_eq!(
        parse(&file("127.0.0.1:41235", "", ""))
            .reload_refusals(&running)
            .len(),
        1
    );
}

#[test]
fn restart_only_settings_refuse_a_reload_and_name_the_setting() {
    let running = parse(&file("127.0.0.1:8080", "", ""));
    let changed = parse(
        &file("127.0.0.1:8080", "", "[logging]\nformat = \"json\"\nlevel = \"debug\"\n[storage]\ngroup_commit_max = 8\n[delivery]\nworkers = 2\nbreaker_failures = 9\nbreaker_open_ms = 1\ntimeout_ms = 5")
            .replace("/var/lib/ivrgate", "/srv/other"),
    );
    let refusals = changed.reload_refusals(&running).join("\n");
    for name in [
        "state_dir",
        "logging.format",
        "storage.group_commit_max",
        "delivery.workers",
        "delivery.breaker_failures",
        "delivery.breaker_open_ms",
    ] {
        assert!(
            refusals.contains(&format!("{name} changed from")),
            "{name}: {refusals}"
        );
    }
    // Applied by a reload: not refused.
    assert!(!refusals.contains("timeout_ms"), "{refusals}");
    assert!(!refusals.contains("logging.level"), "{refusals}");
}

#[test]
fn unknown_keys_in_a_fallback_are_refused_with_the_valid_ones() {
    let adapters = crate::adapters::all();
    let with = |fallback: &str| {
        parse(&file(
            "127.0.0.1:8080",
            &format!("[tenants.decisions.ivr_action]\nfallback = {fallback}\n"),
            "",
        ))
        .validate(adapters)
    };
    let Err(ConfigError::Invalid(why)) = with("{ action = \"hangup\", promt = \"sorry\" }") else {
        panic!("promt must be refused");
    };
    assert!(
        why.contains("decisions.ivr_action.fallback: unknown key \"promt\"; valid keys:"),
        "{why}"
    );
    assert!(why.contains("prompt"), "{why}");
    let Err(ConfigError::Invalid(why)) = with(
        "{ action = \"dial\", targets = [\"100\"], on_failure = { target = \"m\", promt = \"x\" } }",
    ) else {
        panic!("a nested unknown key must be refused");
    };
    assert!(why.contains("unknown key \"on_failure.promt\""), "{why}");
    let Err(ConfigError::Invalid(why)) = with("{ native = { ACTION = \"HANGUP\" }, extra = 1 }")
    else {
        panic!("a key beside native must be refused");
    };
    assert!(
        why.contains("unknown key \"extra\"; valid keys: native"),
        "{why}"
    );
    // Every key the action reads is fine, `attach` is free-form.
    with("{ action = \"hangup\", prompt = \"bye\", cause = 16, language = \"he\", attach = { any = 1 } }")
        .expect("valid fallback");
}

#[test]
fn parse_errors_do_not_quote_secrets() {
    let text = file(
        "127.0.0.1:8080",
        "[tenants.inbound.basic_auth]\nusername = \"vc\"\npassword = \"hunter2-pa55\" x\n",
        "",
    );
    let Err(ConfigError::Parse { message, .. }) = Config::parse(&text, Path::new("t")) else {
        panic!("must not parse");
    };
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("password = \""), "{message}");
    let unclosed =
        file("127.0.0.1:8080", "", "").replace(&format!("\"{SECRET}\""), &format!("\"{SECRET}"));
    let Err(ConfigError::Parse { message, .. }) = Config::parse(&unclosed, Path::new("t")) else {
        panic!("must not parse");
    };
    assert!(!message.contains("MfKQ9r8"), "{message}");
}

#[test]
fn validation_problems_point_at_their_line_with_values_masked() {
    let adapters = crate::adapters::all();
    let text = file(
        "127.0.0.1:8080",
        "command_token = \"short-s3cret\"\n[tenants.decisions.ivr_acton]\ndeadline_ms = 10\n",
        "[connectors]\nlease_ms = 100\n",
    )
    .replace("http://127.0.0.1:9/hooks", "ftp://user:pw@x/hooks");
    let Err(ConfigError::Invalid(problems)) = parse(&text).validate(adapters) else {
        panic!("must be invalid");
    };
    let located = locate_problems(&text, &problems);
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{needle} not in {text}"))
    };
    for (problem, key) in [
        ("connectors.lease_ms (100)", "lease_ms"),
        ("tenant acme: webhook_url", "webhook_url"),
        ("tenant acme: command_token must be", "command_token"),
        (
            "tenant acme: unknown decision kind \"ivr_acton\"",
            "[tenants.decisions.ivr_acton]",
        ),
    ] {
        let at = located
            .lines()
            .position(|l| l.starts_with(problem))
            .unwrap_or_else(|| panic!("{problem} not in {located}"));
        let pointer = located.lines().nth(at + 1).unwrap_or("");
        assert!(
            pointer.contains(&format!("--> line {}, column ", line_of(key))),
            "{problem}: {pointer}\n{located}"
        );
    }
    // The excerpt shows keys, never values.
    assert!(
        located.contains("| command_token = \"************\""),
        "{located}"
    );
    assert!(!located.contains("short-s3cret"), "{located}");
    assert!(!located.contains("user:pw"), "{located}");
}

/// The list the unknown-key message names is the tenant's own fields: each one set is
/// read by a field, not collected as an adapter section.
#[test]
fn tenant_keys_are_the_tenants_own_fields() {
    let values = [
        ("decision_url", "\"http://127.0.0.1:9/d\""),
        ("fallback_url", "\"http://127.0.0.1:9/f\""),
        ("ca_file", "\"/etc/ssl/ca.pem\""),
        ("decision_deadline_ms", "1000"),
        ("outbox_quota", "10"),
        ("decisions_per_second", "10"),
        ("deliveries_per_second", "10"),
        ("command_token", "\"0123456789abcdef\""),
        ("decisions", "{}"),
        ("inbound", "{}"),
    ];
    let mut extra = String::new();
    for key in TENANT_KEYS {
        if ["id", "webhook_url", "webhook_secret"].contains(key) {
            continue; // written by `file`
        }
        let (_, value) = values
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no test value for {key}"));
        extra.push_str(&format!("{key} = {value}\n"));
    }
    let config = parse(&file("127.0.0.1:8080", &extra, ""));
    assert!(
        config.tenants[0].sections.is_empty(),
        "{:?}",
        config.tenants[0].sections.keys()
    );
    let typo = parse(&file("127.0.0.1:8080", "decision_deadline = 1\n", ""));
    let Err(ConfigError::Invalid(why)) = typo.validate(crate::adapters::all()) else {
        panic!("a typo must be refused");
    };
    assert!(
        why.starts_with(
            "tenant acme: decision_deadline is not a tenant setting; valid keys: id, \
             webhook_url, webhook_secret, decision_url, fallback_url, ca_file, \
             decision_deadline_ms, decisions, outbox_quota, decisions_per_second, \
             deliveries_per_second, inbound, command_token, voicenter_api, ptk, openscape, ctips"
        ),
        "{why}"
    );
}

/// A tenant key no adapter claims is refused at its line, like a TOML error would be.
#[test]
fn an_unknown_tenant_key_points_at_its_line() {
    let text = file("127.0.0.1:8080", "[tenants.ptkk]\nenabled = true\n", "");
    let Err(ConfigError::Invalid(problems)) = parse(&text).validate(crate::adapters::all()) else {
        panic!("an unclaimed section must be refused");
    };
    let located = locate_problems(&text, &problems);
    let line = text
        .lines()
        .position(|l| l == "[tenants.ptkk]")
        .map(|i| i + 1)
        .expect("line");
    assert!(
        located.contains(&format!("--> line {line}, column ")),
        "{located}"
    );
    assert!(located.starts_with("tenant acme: ptkk is not a tenant setting"));
}

#[test]
fn grace_shorter_than_a_deadline_warns() {
    let adapters = crate::adapters::all();
    let config = parse(&file(
        "127.0.0.1:8080",
        "",
        "[server]\nshutdown_grace_ms = 1000",
    ))
    .validate(adapters)
    .expect("valid");
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0]
        .contains("shutdown_grace_ms (1000) is shorter than the longest decision deadline"));
    let fine = parse(&file("127.0.0.1:8080", "", ""))
        .validate(adapters)
        .expect("valid");
    assert!(fine.warnings().is_empty());
}
