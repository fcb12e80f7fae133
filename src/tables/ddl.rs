//! Databricks SQL DDL for the declared tables, and a reader of that DDL, so the files in `sql/ddl/` can be
//! checked against `spec.rs` column by column (and `pfsync ddl` can print them).

use super::spec::TableSpec;

/// One table's DDL as the checks see it: what a reader of the file would take from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ddl {
    pub name: String,
    /// `(name, SQL type, NOT NULL, comment)`.
    pub columns: Vec<(String, String, bool, String)>,
    pub partitioned_by: Vec<String>,
    pub comment: String,
    pub properties: Vec<(String, String)>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "\\'"))
}

/// `CREATE TABLE IF NOT EXISTS ...` for Unity Catalog.
pub fn render(spec: &TableSpec) -> String {
    let mut out = format!("CREATE TABLE IF NOT EXISTS {} (\n", spec.name);
    let cols: Vec<String> = spec
        .columns
        .iter()
        .map(|c| {
            let nn = if c.nullable { "" } else { " NOT NULL" };
            format!("  {} {}{} COMMENT {}", c.name, c.kind.sql(), nn, quote(c.comment))
        })
        .collect();
    out.push_str(&cols.join(",\n"));
    out.push_str("\n)\nUSING DELTA\n");
    if !spec.partition_columns.is_empty() {
        out.push_str(&format!("PARTITIONED BY ({})\n", spec.partition_columns.join(", ")));
    }
    if spec.properties.is_empty() {
        out.push_str(&format!("COMMENT {};\n", quote(spec.comment)));
        return out;
    }
    out.push_str(&format!("COMMENT {}\n", quote(spec.comment)));
    let props: Vec<String> = spec.properties.iter().map(|(k, v)| format!("  {} = {}", quote(k), quote(v))).collect();
    out.push_str(&format!("TBLPROPERTIES (\n{}\n);\n", props.join(",\n")));
    out
}

/// Take a quoted string off the front of `s`: `('text', rest)`.
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let body = s.strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '\'' => return Some((out, &body[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// Read a DDL file written in the form [`render`] produces (one column per line; `--` comments allowed).
pub fn parse(text: &str) -> Result<Ddl, String> {
    let lines: Vec<&str> = text.lines().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with("--")).collect();
    let mut ddl = Ddl::default();
    let mut i = 0;
    let head = lines.first().ok_or("empty DDL")?;
    let name = head
        .strip_prefix("CREATE TABLE IF NOT EXISTS ")
        .and_then(|r| r.strip_suffix('('))
        .ok_or_else(|| format!("first line must be `CREATE TABLE IF NOT EXISTS <name> (`, got {head:?}"))?;
    ddl.name = name.trim().to_string();
    i += 1;
    while i < lines.len() && !lines[i].starts_with(')') {
        let line = lines[i].trim_end_matches(',');
        let (col, rest) = line.split_once(' ').ok_or_else(|| format!("bad column line {line:?}"))?;
        let (ty_part, comment_part) =
            rest.split_once(" COMMENT ").ok_or_else(|| format!("column {col} has no COMMENT"))?;
        let (ty, not_null) = match ty_part.strip_suffix(" NOT NULL") {
            Some(t) => (t, true),
            None => (ty_part, false),
        };
        let (comment, _) = take_quoted(comment_part).ok_or_else(|| format!("column {col}: bad COMMENT"))?;
        ddl.columns.push((col.to_string(), ty.trim().to_string(), not_null, comment));
        i += 1;
    }
    i += 1;
    while i < lines.len() {
        let l = lines[i];
        if let Some(p) = l.strip_prefix("PARTITIONED BY (") {
            ddl.partitioned_by = p.trim_end_matches(')').split(',').map(|s| s.trim().to_string()).collect();
        } else if let Some(c) = l.strip_prefix("COMMENT ") {
            ddl.comment = take_quoted(c.trim_end_matches(';')).ok_or("bad table COMMENT")?.0;
        } else if l.starts_with('\'') {
            let (k, rest) = take_quoted(l).ok_or("bad property key")?;
            let rest = rest.trim_start().strip_prefix('=').ok_or("property without =")?;
            let (v, _) = take_quoted(rest).ok_or("bad property value")?;
            ddl.properties.push((k, v));
        }
        i += 1;
    }
    Ok(ddl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::ALL;

    #[test]
    fn render_then_parse_gives_the_spec_back() {
        for spec in ALL {
            let ddl = parse(&render(spec)).unwrap();
            assert_eq!(ddl.name, spec.name);
            assert_eq!(ddl.columns.len(), spec.columns.len());
            for (c, (name, ty, nn, comment)) in spec.columns.iter().zip(&ddl.columns) {
                assert_eq!(
                    (c.name, c.kind.sql(), !c.nullable, c.comment),
                    (name.as_str(), ty.as_str(), *nn, comment.as_str())
                );
            }
            assert_eq!(ddl.comment, spec.comment);
        }
    }
}
