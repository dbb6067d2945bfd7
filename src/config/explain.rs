//! `sessiongate check --explain`: the privilege map of a config, one line
//! per route: what its upstream reads of the session and what it may
//! write, so that a reviewer sees every upstream's reach in one screen.

use super::{Config, ForwardMode, WriteScope};

fn list(keys: &Option<Vec<String>>, all: &str) -> String {
    match keys {
        None => all.to_string(),
        Some(k) if k.is_empty() => "nothing".to_string(),
        Some(k) => k.join(", "),
    }
}

fn actions(w: &WriteScope) -> String {
    let names: Vec<&str> = [
        (w.flush, "flush"),
        (w.cycle, "cycle"),
        (w.expiry, "expiry"),
        (w.revoke_others, "revoke-others"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The privilege map, as a plain-text table.
pub fn explain(config: &Config) -> String {
    let header = [
        "route", "upstream", "sees", "reads", "writes", "actions", "requires",
    ];
    let mut rows: Vec<[String; 7]> = vec![header.map(String::from)];
    for r in &config.routes {
        let f = &r.forward;
        let sees = match &f.mode {
            ForwardMode::Signed(_) => "signed token",
            ForwardMode::Json => "JSON header",
            ForwardMode::None => "nothing",
        };
        let reads = match f.mode {
            ForwardMode::None if f.headers.is_empty() => "nothing".to_string(),
            ForwardMode::None => {
                let copied: Vec<&str> = f.headers.iter().map(|(_, k)| k.as_str()).collect();
                copied.join(", ")
            }
            _ => list(&f.keys, "every key"),
        };
        let requires = if r.require.is_empty() {
            "-".to_string()
        } else {
            r.require.join(", ")
        };
        rows.push([
            r.label.clone(),
            config.upstreams[r.upstream].name.clone(),
            sees.to_string(),
            reads,
            list(&f.writes.keys, "every key"),
            actions(&f.writes),
            requires,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_shows_what_it_reads_and_writes() {
        let yaml = format!(
            r#"
secrets: ["{}"]
upstreams: {{core: {{url: "http://127.0.0.1:1"}}, shop: {{url: "http://127.0.0.1:2"}}}}
routes:
  - {{name: shop, match: {{path_prefix: /shop/}}, upstream: shop, forward: {{mode: json, keys: [cart], writable_keys: [cart], actions: []}}, require: [user_id]}}
  - {{name: core, match: {{path_prefix: /}}, upstream: core, forward: {{mode: json}}}}
"#,
            "s".repeat(32)
        );
        let text = super::explain(&crate::config::from_yaml(&yaml).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("route"), "{text}");
        assert!(
            lines[1].contains("shop")
                && lines[1].contains("cart")
                && lines[1].contains("none")
                && lines[1].contains("user_id"),
            "{text}"
        );
        assert!(
            lines[2].contains("every key")
                && lines[2].contains("flush, cycle, expiry, revoke-others"),
            "{text}"
        );
    }
}
