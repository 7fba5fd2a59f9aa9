//! OpenMetrics (what `prometheus-client` encodes) → the Prometheus text format 0.0.4,
//! which `promtool check metrics` lints and every Prometheus scrapes: a counter's
//! HELP and TYPE name its `_total` series, there is no `# UNIT` or `# EOF`, and series
//! come out sorted by their labels (the crate keeps them in hash order), so two
//! scrapes of the same state read the same.

/// One metric family while it is read: its HELP text, TYPE and series lines.
#[derive(Default)]
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    series: Vec<&'a str>,
}

/// Convert one OpenMetrics exposition.
pub fn prometheus(open: &str) -> String {
    let mut out = String::with_capacity(open.len());
    let mut family = Family::default();
    for line in open.lines() {
        let mut words = line.splitn(4, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("HELP"), Some(name)) => {
                family.write(&mut out);
                family = Family {
                    name,
                    help: words.next().unwrap_or(""),
                    ..Family::default()
                };
            }
            (Some("#"), Some("TYPE"), Some(_)) => family.kind = words.next().unwrap_or(""),
            (Some("#"), ..) | (Some(""), ..) => {}
            _ => family.series.push(line),
        }
    }
    family.write(&mut out);
    out
}

impl Family<'_> {
    /// HELP and TYPE (a counter's named for its `_total` series), then the series
    /// sorted by labels; a histogram's lines keep their order within one series.
    fn write(&mut self, out: &mut String) {
        if self.name.is_empty() {
            return;
        }
        let total = if self.kind == "counter" { "_total" } else { "" };
        let name = self.name;
        out.push_str(&format!("# HELP {name}{total} {}\n", self.help));
        out.push_str(&format!("# TYPE {name}{total} {}\n", self.kind));
        self.series.sort_by_cached_key(|s| sort_key(s));
        for s in &self.series {
            out.push_str(s);
            out.push('\n');
        }
    }
}

/// A series' labels without `le`.
fn sort_key(line: &str) -> String {
    let labels = line
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or("", |(l, _)| l);
    labels
        .split(',')
        .filter(|l| !l.starts_with("le="))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_get_total_names_series_are_sorted_and_buckets_keep_order() {
        let open = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{route=\"b\"} 1\nx_requests_total{route=\"a\"} 2\n\
                    # HELP x_d Duration.\n# TYPE x_d histogram\n# UNIT x_d seconds\nx_d_sum{r=\"b\"} 1\nx_d_bucket{r=\"b\",le=\"0.5\"} 1\nx_d_bucket{r=\"b\",le=\"+Inf\"} 1\nx_d_sum{r=\"a\"} 0\nx_d_bucket{r=\"a\",le=\"0.5\"} 0\nx_d_bucket{r=\"a\",le=\"+Inf\"} 0\n# EOF\n";
        assert_eq!(
            super::prometheus(open),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{route=\"a\"} 2\nx_requests_total{route=\"b\"} 1\n\
             # HELP x_d Duration.\n# TYPE x_d histogram\nx_d_sum{r=\"a\"} 0\nx_d_bucket{r=\"a\",le=\"0.5\"} 0\nx_d_bucket{r=\"a\",le=\"+Inf\"} 0\nx_d_sum{r=\"b\"} 1\nx_d_bucket{r=\"b\",le=\"0.5\"} 1\nx_d_bucket{r=\"b\",le=\"+Inf\"} 1\n"
        );
    }
}
