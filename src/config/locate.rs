//! Validation problems pointed at the line of the file they are about.

/// Points each validation problem (one per line, as [`Config::validate`] reports them) at the
/// line of the file it is about, the way TOML parse errors do: the problem, then `--> line
/// N, column C` and the source line with every string value masked. A problem about no
/// particular setting (or a file that no longer parses) is left as it is.
pub fn locate_problems(text: &str, problems: &str) -> String {
    let Ok(root) = toml::de::DeTable::parse(text) else {
        return problems.to_owned();
    };
    let mut out = Vec::new();
    for problem in problems.lines() {
        out.push(problem.to_owned());
        let Some(offset) = locate(root.get_ref(), problem) else {
            continue;
        };
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        let source = text.lines().nth(line - 1).unwrap_or("");
        let gutter = " ".repeat(line.to_string().len());
        // The excerpt goes through the same masking as a TOML error's, so no value shows.
        let excerpt = crate::redact::toml_error(&format!("{line} | {source}"));
        out.push(format!("{gutter}--> line {line}, column {column}"));
        out.push(format!("{gutter} |"));
        out.push(excerpt);
    }
    out.join("\n")
}

/// The byte offset of the key a problem is about: `section.key ...` at the top level,
/// `tenant ID: key ...` in that tenant's table (its `id` when the key is not found).
fn locate(root: &toml::de::DeTable<'_>, problem: &str) -> Option<usize> {
    use toml::de::DeValue;
    fn find<'a, 'i>(
        table: &'a toml::de::DeTable<'i>,
        key: &str,
    ) -> Option<(usize, &'a DeValue<'i>)> {
        table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, v)| (k.span().start, v.get_ref()))
    }
    /// The deepest key of a dotted path that exists.
    fn descend(table: &toml::de::DeTable<'_>, path: &str) -> Option<usize> {
        let mut table = table;
        let mut found = None;
        for segment in path.split('.') {
            let Some((at, value)) = find(table, segment) else {
                break;
            };
            found = Some(at);
            match value {
                DeValue::Table(inner) => table = inner,
                _ => break,
            }
        }
        found
    }
    let tenant_table = |id: &str, last: bool| {
        let Some((_, DeValue::Array(tenants))) = find(root, "tenants") else {
            return None;
        };
        let mut matching = tenants.iter().filter_map(|t| match t.get_ref() {
            DeValue::Table(table)
                if find(table, "id")
                    .is_some_and(|(_, v)| matches!(v, DeValue::String(s) if s == id)) =>
            {
                Some(table)
            }
            _ => None,
        });
        if last {
            matching.next_back()
        } else {
            matching.next()
        }
    };
    // `tenant id "x": ...` and `tenant id "x" is used twice`: the (second) table's id.
    if let Some(rest) = problem.strip_prefix("tenant id \"") {
        let id = rest.split('"').next()?;
        let table = tenant_table(id, rest.contains("used twice"))?;
        return find(table, "id").map(|(at, _)| at);
    }
    let (table, rest) = match problem.strip_prefix("tenant ") {
        Some(rest) => {
            let (id, rest) = rest.split_once(": ")?;
            (tenant_table(id, false)?, rest)
        }
        None => (root, problem),
    };
    // What the problem is about, when its first word is not the key.
    let quoted = |after: &str| {
        rest.split_once(after)
            .and_then(|(_, r)| r.split('"').nth(1))
            .map(str::to_owned)
    };
    let key = if let Some(kind) = quoted("unknown decision kind ") {
        format!("decisions.{kind}")
    } else if let Some(kind) = rest
        .strip_prefix("the ")
        .and_then(|r| r.split_once(" deadline"))
        .map(|(kind, _)| kind)
    {
        format!("decisions.{kind}.deadline_ms")
    } else {
        rest.split(|c: char| c.is_whitespace() || c == ':' || c == '(')
            .next()
            .unwrap_or("")
            .to_owned()
    };
    descend(table, &key).or_else(|| {
        // A tenant's problem with no key of its own (inbound credentials) points at its id;
        // a deadline not set per kind at the tenant's default.
        (!std::ptr::eq(table, root))
            .then(|| {
                key.ends_with(".deadline_ms")
                    .then(|| find(table, "decision_deadline_ms").map(|(at, _)| at))
                    .flatten()
                    .or_else(|| find(table, "id").map(|(at, _)| at))
            })
            .flatten()
    })
}
